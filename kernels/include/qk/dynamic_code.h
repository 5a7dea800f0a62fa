// Arithmetic with exactly one IEEE rounding per operation, and bitsandbytes' 8-bit dynamic codes
// (create_dynamic_map, signed and unsigned), shared by NF4 double quantization and 8-bit AdamW so
// that kernels and CPU twins compute the same bits.
#pragma once
#include <cmath>
#include <cstdint>

#include "qk/hd.h"

namespace qk {

// ---- one rounding per operation ---------------------------------------------------------------
// nvcc would contract a*b+c into an fma and --use_fast_math would approximate 1/x and sqrt; the
// intrinsics pin one IEEE rounding each. Host code: the x86-64 baseline has no fma, and g++ in ISO
// mode does not contract.
QK_HD float mul_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}
QK_HD float add_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}
QK_HD float sub_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fsub_rn(a, b);
#else
  return a - b;
#endif
}
QK_HD float div_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fdiv_rn(a, b);
#else
  return a / b;
#endif
}
QK_HD float rcp_rn(float a) {
#if defined(__CUDA_ARCH__)
  return __frcp_rn(a);
#else
  return 1.0f / a;
#endif
}
QK_HD float sqrt_rn(float a) {
#if defined(__CUDA_ARCH__)
  return __fsqrt_rn(a);
#else
  return std::sqrt(a);
#endif
}

// ---- the dynamic codes ---------------------------------------------------------------------------
// Value k of decade i is f32(10^(i-6)) * mean(b_k, b_{k+1}) with b = torch.linspace(0.1, 1, steps)
// in fp32: one fp32 step, then start + step*j for the lower half and end - step*(steps-1-j) for the
// upper half, each rounded once (exact in double first). Decades do not overlap, so no sort is needed.
QK_HD float dynamic_linspace(int steps, int j) {
  const float start = 0.1f, end = 1.0f;
  const float step = (end - start) / static_cast<float>(steps - 1);
  if (j < steps / 2) return static_cast<float>(static_cast<double>(start) + static_cast<double>(step) * j);
  return static_cast<float>(static_cast<double>(end) - static_cast<double>(step) * (steps - 1 - j));
}
QK_HD float dynamic_decade_value(int i, int steps, int k) {
  // A switch, not a table: a dynamically indexed local array would live in device stack memory.
  float decade = 1.0f;
  switch (i) {
    case 0: decade = static_cast<float>(1e-6); break;
    case 1: decade = static_cast<float>(1e-5); break;
    case 2: decade = static_cast<float>(1e-4); break;
    case 3: decade = static_cast<float>(1e-3); break;
    case 4: decade = static_cast<float>(1e-2); break;
    case 5: decade = static_cast<float>(1e-1); break;
    default: break;
  }
  const float mean = (dynamic_linspace(steps, k) + dynamic_linspace(steps, k + 1)) / 2.0f;
  return mul_rn(decade, mean);
}

// The signed code, ascending: 127 negative values, 0 at 127, 127 positive values, 1.0 at 255
// (code[0] ~ -0.99296875); decade i (0..6) holds 2^i values per sign.
QK_HD float dynamic_code_signed(int idx) {
  if (idx == 255) return 1.0f;
  if (idx == 127) return 0.0f;
  const int p = idx >= 128 ? idx - 128 : 126 - idx;
  int i = 0;
  while ((2 << i) <= p + 1) ++i;
  const float x = dynamic_decade_value(i, (1 << i) + 1, p + 1 - (1 << i));
  return idx >= 128 ? x : -x;
}

// The unsigned code, ascending: 0 at 0, 254 positive values, 1.0 at 255; decade i holds 2^(i+1).
QK_HD float dynamic_code_unsigned(int idx) {
  if (idx == 0) return 0.0f;
  if (idx == 255) return 1.0f;
  const int q = idx - 1;
  int i = 0;
  while ((2 << (i + 1)) - 2 <= q) ++i;
  return dynamic_decade_value(i, (2 << i) + 1, q - ((2 << i) - 2));
}

}  // namespace qk
