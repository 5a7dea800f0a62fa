// NF4 and its double-quantized absmax, as bitsandbytes stores them (FORMATS.md, "NF4" and "Double
// quantization"): the code tables and every per-element decision, as QK_HD functions shared by the
// CUDA kernels (nf4_quantize.cu, nf4_double_quant.cu, nf4_dequantize.cu) and their CPU twins, so the
// CPU tests pin down the arithmetic the GPU runs. The arithmetic is spelled out (no contraction,
// correctly rounded reciprocal and products) because the GPU and CPU results must agree bit for bit.
//
// Choices where bitsandbytes itself is not uniform (documented here once):
//  - An all-zero block gets code 7 (0.0) everywhere, as bitsandbytes' CPU path writes; its CUDA path
//    writes code 0 (-1.0 * 0). Both dequantize to zero, so such blocks are compared by value.
//  - The NF4 midpoints are the exact midpoints of the fp32 code values rounded to fp32 (the constants
//    of bitsandbytes' CUDA kernel); a value exactly on one goes to the lower code.
//  - 8-bit (dynamic code) quantization scales by the reciprocal of the block absmax like the NF4 path,
//    then takes the nearest code by fp32 midpoints (c[k] + c[k+1]) * 0.5 with ties to the lower code,
//    as bitsandbytes' CUDA kernel and its PyTorch fallback do; its SIMD CPU kernel rounds differently
//    near midpoints (tests/data/nf4/README.md).
//  - An all-equal group of 256 absmax values (nested absmax 0) quantizes to code 127 (0.0), so the
//    reconstruction is exactly the offset.
#pragma once
#include <cstddef>
#include <cstdint>

#include "qk/bf16_bits.h"
#include "qk/dynamic_code.h"
#include "qk/hd.h"

namespace qk::nf4 {

inline constexpr int kDefaultBlocksize = 64;
inline constexpr int kMinBlocksize = 32;
inline constexpr int kMaxBlocksize = 4096;
inline constexpr int kNestedBlocksize = 256;  // double quantization of the absmax
inline constexpr unsigned kZeroCode = 7;      // NF4 code of 0.0; also pads an odd count's last nibble

// Powers of two 32..4096, as bitsandbytes accepts for quantize_4bit.
QK_HD constexpr bool valid_blocksize(long long b) {
  return b >= kMinBlocksize && b <= kMaxBlocksize && (b & (b - 1)) == 0;
}
QK_HD constexpr int log2_blocksize(int b) {
  int l = 0;
  while ((1 << l) < b) ++l;
  return l;
}
QK_HD constexpr size_t packed_bytes(size_t n) { return (n + 1) / 2; }
QK_HD constexpr size_t num_blocks(size_t n, size_t blocksize) { return (n + blocksize - 1) / blocksize; }

// One rounding per operation (qk/dynamic_code.h), also reachable as nf4::mul_rn etc.
using qk::add_rn;
using qk::mul_rn;
using qk::rcp_rn;
using qk::sub_rn;

QK_HD float abs_bits(float x) { return f32_from_bits(f32_bits(x) & 0x7fffffffu); }
// Running max of |x|; a NaN x leaves m unchanged on both sides (no fmaxf/std::fmax subtleties).
QK_HD float max_abs(float m, float x) {
  const float a = abs_bits(x);
  return a > m ? a : m;
}
// 1/absmax, or 0 for an all-zero block so that every element scales to 0.0 (code 7 / code 127).
QK_HD float inv_absmax(float absmax) { return absmax > 0.0f ? rcp_rn(absmax) : 0.0f; }

// ---- NF4 -----------------------------------------------------------------------------------------
QK_HD float code_value(unsigned q) {
  constexpr float t[16] = {-1.0f,
                           -0.6961928009986877f,
                           -0.5250730514526367f,
                           -0.39491748809814453f,
                           -0.28444138169288635f,
                           -0.18477343022823334f,
                           -0.09105003625154495f,
                           0.0f,
                           0.07958029955625534f,
                           0.16093020141124725f,
                           0.24611230194568634f,
                           0.33791524171829224f,
                           0.44070982933044434f,
                           0.5626170039176941f,
                           0.7229568362236023f,
                           1.0f};
  return t[q & 15u];
}
// Midpoint between codes k and k+1 (k = 0..14), as bitsandbytes' CUDA kernel writes it: the exact
// (double) midpoint of the fp32 codes in 16-17 significant digits, read as a float literal. That differs
// from rounding the exact midpoint to float (ties to even) for k = 0 and 8, where the exact midpoint is
// halfway between two floats; the unit tests pin these values.
QK_HD constexpr float midpoint(unsigned k) {
  switch (k) {
    case 0: return -0.8480964004993439f;
    case 1: return -0.6106329262256622f;
    case 2: return -0.4599952697753906f;
    case 3: return -0.33967943489551544f;
    case 4: return -0.23460740596055984f;
    case 5: return -0.13791173323988914f;
    case 6: return -0.045525018125772476f;
    case 7: return 0.03979014977812767f;
    case 8: return 0.1202552504837513f;
    case 9: return 0.2035212516784668f;
    case 10: return 0.2920137718319893f;
    case 11: return 0.3893125355243683f;
    case 12: return 0.5016634166240692f;
    case 13: return 0.6427869200706482f;
    default: return 0.8614784181118011f;
  }
}

// The code of a scaled value s = x * (1/absmax): the number of midpoints strictly below s, i.e. the
// nearest code with a tie going to the lower one. NaN compares false everywhere: code 0.
QK_HD unsigned quantize_scaled(float s) {
  unsigned q = 0;
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
  for (unsigned k = 0; k < 15; ++k) q += s > midpoint(k) ? 1u : 0u;
  return q;
}
QK_HD unsigned quantize_value(float x, float inv) { return quantize_scaled(mul_rn(x, inv)); }

// Byte j holds elements 2j (high nibble) and 2j+1 (low nibble).
QK_HD uint8_t pack(unsigned first, unsigned second) { return static_cast<uint8_t>((first << 4) | (second & 15u)); }
QK_HD unsigned high_nibble(uint8_t b) { return b >> 4; }
QK_HD unsigned low_nibble(uint8_t b) { return b & 15u; }

QK_HD float dequantize_value(unsigned q, float absmax) { return mul_rn(code_value(q), absmax); }

// ---- Double quantization: the signed 8-bit dynamic code is qk::dynamic_code_signed -------------
// Midpoint k (0..254) of the dynamic code, computed in fp32 as bitsandbytes does.
QK_HD float dynamic_midpoint(const float* code, int k) { return mul_rn(add_rn(code[k], code[k + 1]), 0.5f); }

// Nearest 8-bit code of s in [-1, 1]: the number of midpoints strictly below s (ties to the lower
// code), by binary search over mid[0..254].
QK_HD unsigned quantize_dynamic_scaled(float s, const float* mid) {
  unsigned lo = 0;  // count of midpoints known to be < s
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
  for (unsigned step = 128; step > 0; step >>= 1)
    if (lo + step <= 255 && s > mid[lo + step - 1]) lo += step;
  return lo;
}

// absmax[i] = code[q[i]] * nested_absmax[i / 256] + offset, two roundings as bitsandbytes does it.
QK_HD float double_dequantize_value(float code_q, float nested_absmax, float offset) {
  return add_rn(mul_rn(code_q, nested_absmax), offset);
}

// ---- f16 bits (the CPU twins keep f16 as uint16_t, like bf16) -------------------------------------
QK_HD float f16_bits_to_f32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
  if (e == 0x1f) return f32_from_bits(sign | 0x7f800000u | (m << 13));
  if (e != 0) return f32_from_bits(sign | ((e + 112u) << 23) | (m << 13));
  const float v = static_cast<float>(m) * 5.9604644775390625e-8f;  // m * 2^-24, exact
  return sign ? -v : v;
}
// Round to nearest even, as __float2half_rn: overflow to inf, subnormals, NaN kept quiet.
QK_HD uint16_t f32_to_f16_bits_rn(float f) {
  const uint32_t u = f32_bits(f);
  const uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
  const uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return static_cast<uint16_t>(sign | 0x7e00u | ((a >> 13) & 0x3ffu));
  if (a >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // >= 65520: inf
  if (a >= 0x38800000u) {                                              // normal half (>= 2^-14)
    const uint32_t r = a + 0xfffu + ((a >> 13) & 1u) - 0x38000000u;
    return static_cast<uint16_t>(sign | (r >> 13));
  }
  // Subnormal or zero: adding 0.5 rounds |f| to a multiple of 2^-24 (ties to even) in one step.
  const float t = add_rn(abs_bits(f), 0.5f);
  return static_cast<uint16_t>(sign | (f32_bits(t) - 0x3f000000u));
}

}  // namespace qk::nf4
