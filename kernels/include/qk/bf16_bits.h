// bf16 as raw bits, shared by kernels and CPU twins: round to nearest even (as __float2bfloat16_rn),
// NaN kept quiet. The CPU twins store bf16 as uint16_t so they need no CUDA header.
#pragma once
#include <cstdint>
#include <cstring>

#include "qk/hd.h"

namespace qk {

QK_HD uint32_t f32_bits(float f) {
  uint32_t u;
  memcpy(&u, &f, sizeof u);
  return u;
}

QK_HD float f32_from_bits(uint32_t u) {
  float f;
  memcpy(&f, &u, sizeof f);
  return f;
}

QK_HD uint16_t f32_to_bf16_rn(float f) {
  uint32_t u = f32_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x0040u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

QK_HD float bf16_to_f32(uint16_t h) { return f32_from_bits(static_cast<uint32_t>(h) << 16); }

}  // namespace qk
