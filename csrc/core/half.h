// Host conversions between f32 and the 16-bit float formats (bf16, f16), rounding to nearest even
// like the GPU's __float2bfloat16_rn / __float2half_rn. NaN stays NaN (quiet), infinities and signed
// zeros are kept, f16 subnormals are produced and read exactly.
#pragma once
#include <bit>
#include <cstdint>
#include <cstring>

namespace qtrain {

inline uint16_t f32_to_bf16_bits(float f) noexcept {
  uint32_t u = std::bit_cast<uint32_t>(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x0040u);  // quiet NaN
  const uint32_t lsb = (u >> 16) & 1u;
  u += 0x7fffu + lsb;  // ties to even; overflow carries into the exponent and gives inf
  return static_cast<uint16_t>(u >> 16);
}

inline float bf16_bits_to_f32(uint16_t h) noexcept { return std::bit_cast<float>(static_cast<uint32_t>(h) << 16); }

uint16_t f32_to_f16_bits(float f) noexcept;
float f16_bits_to_f32(uint16_t h) noexcept;

// Value types with explicit conversions, for host buffers of 16-bit floats.
struct bf16 {
  uint16_t bits = 0;
  bf16() = default;
  explicit bf16(float f) noexcept : bits(f32_to_bf16_bits(f)) {}
  static bf16 from_bits(uint16_t b) noexcept { bf16 r; r.bits = b; return r; }
  explicit operator float() const noexcept { return bf16_bits_to_f32(bits); }
};
struct f16 {
  uint16_t bits = 0;
  f16() = default;
  explicit f16(float f) noexcept : bits(f32_to_f16_bits(f)) {}
  static f16 from_bits(uint16_t b) noexcept { f16 r; r.bits = b; return r; }
  explicit operator float() const noexcept { return f16_bits_to_f32(bits); }
};
static_assert(sizeof(bf16) == 2 && sizeof(f16) == 2);

}  // namespace qtrain
