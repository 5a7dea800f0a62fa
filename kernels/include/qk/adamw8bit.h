// 8-bit AdamW with blockwise-quantized moments over fp32 master weights, for many tensors in one
// launch: bitsandbytes' AdamW8bit / PagedAdamW8bit (optim_bits=8, block_wise=True), read from its CUDA
// kernels kOptimizerStatic8bit2StateBlockwise and kOptimizer32bit2State (csrc/cuda/optimizers.cu,
// bitsandbytes 0.50). What it does, element by element, with g = grad * grad_scale,
// c1 = 1 - beta1^t, c2 = sqrt(1 - beta2^t), step_size = -lr * c2 / c1:
//
//  - A tensor of n >= 4096 elements (kAdamW8bitMinSize, bnb's min_8bit_size) keeps m and v as one byte
//    each, in blocks of 256 elements with one fp32 absmax per block per moment: m with the signed
//    dynamic code, v with the unsigned one (create_dynamic_map(signed=True/False)). Smaller tensors
//    keep fp32 m and v (bnb does the same).
//  - 8-bit tensors: m = code1[q1] * absmax1 * beta1 + (1 - beta1) g;
//                   v = code2[q2] * absmax2 * beta2 + ((1 - beta2) g) g;
//    the new absmax of a block is max |m| (max |v|) over it; p += step_size * m / (sqrt(v) + c2 eps),
//    then p *= 1 - lr wd when wd > 0: bitsandbytes decays AFTER the step, unlike torch's AdamW.
//  - Requantization: the nearest code of m / absmax by bnb's 7-step binary search (quantize_2D), whose
//    midpoint ties go toward the search's last pivot; then, when the chosen code of m has the other sign
//    than m, one code step toward m's sign (bnb keeps the sign of the momentum; a byte wraps, so an
//    all-zero block, which divides 0 by 0, stores code 255 with absmax 0, as bnb does).
//  - A non-finite gradient element (NaN or +-inf, before scaling) of an 8-bit tensor resets its m and v
//    to 0, leaves its parameter untouched (no step, no decay), and counts as 0 in the block's absmax.
//    In a 32-bit (small) tensor bitsandbytes has no such guard: the NaN flows into m, v and p.
//  - A partial last block: bnb's kernel loads the missing lanes as g = 0 with codes 128 (m) and 0 (v), so
//    they add |code1[128]| * absmax1_old * beta1 (about 5.5e-7 of the old absmax) to the new absmax1;
//    we do the same.
//  - 32-bit tensors: m = m beta1 + (1 - beta1) g; v = v beta2 + (1 - beta2)(g g);
//    p += step_size * m / (sqrt(v) + c2 eps); then the same decay.
// Where we differ from bnb's kernel on purpose: IEEE division where it uses __fdividef (<= 2 ulp apart,
// so a value within 2 ulp of a code midpoint may pick the neighbouring code), and c1, c2, step_size
// computed on the host in double where it uses __powf on the device.
// New states are all zero bytes with absmax 0, as bnb allocates them (they dequantize to 0).
// Every operation below is one IEEE rounding (no contraction), so the GPU and the CPU twin agree bit
// for bit.
#pragma once
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "qk/adamw.h"
#include "qk/dynamic_code.h"
#include "qk/hd.h"

namespace qk {

constexpr int kAdamW8bitBlock = 256;        // elements per absmax block, and per thread block
constexpr int64_t kAdamW8bitMinSize = 4096;  // smaller tensors keep fp32 moments

QK_HD constexpr bool adamw8bit_is_quantized(int64_t n) { return n >= kAdamW8bitMinSize; }
QK_HD constexpr int64_t adamw8bit_blocks(int64_t n) { return (n + kAdamW8bitBlock - 1) / kAdamW8bitBlock; }

// One tensor. Quantized (n >= kAdamW8bitMinSize): q1, q2 (n bytes), absmax1, absmax2
// (adamw8bit_blocks(n) floats), m = v = nullptr. Otherwise m, v (n floats) and the rest nullptr.
struct AdamW8bitTensor {
  float* param;
  const float* grad;
  uint8_t* q1;
  uint8_t* q2;
  float* absmax1;
  float* absmax2;
  float* m;
  float* v;
  int64_t n;
  int64_t chunk_begin;  // filled by adamw8bit_plan_chunks
};

// Checks each tensor's buffers against its size, fills chunk_begin (one chunk = one 256-block) and
// returns the total number of chunks (the grid size).
int64_t adamw8bit_plan_chunks(AdamW8bitTensor* tensors, int count);

// ---- fp32 arithmetic with one rounding each (nvcc would otherwise contract into fma) ----------------
namespace a8 {
QK_HD uint32_t bits(float x) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(x);
#else
  uint32_t u;
  std::memcpy(&u, &x, sizeof u);
  return u;
#endif
}
QK_HD bool finite(float x) { return (bits(x) & 0x7f800000u) != 0x7f800000u; }
QK_HD bool sign(float x) { return (bits(x) >> 31) != 0; }
// NaN-ignoring, as CUDA's fmaxf.
QK_HD float fmax(float a, float b) {
#if defined(__CUDA_ARCH__)
  return fmaxf(a, b);
#else
  return std::fmax(a, b);
#endif
}
}  // namespace a8

// bnb's quantize_2D: a binary search from code[127] in steps of 64, 32, ..., 1, then the nearer of the
// last pivot and the bracketing value on x's side, a midpoint tie staying at the pivot. NaN: code 0.
template <bool Is_signed>
QK_HD unsigned adamw8bit_quantize(const float* code, float x) {
  int pivot = 127, upper_pivot = 255, lower_pivot = 0;
  float lower = Is_signed ? -1.0f : 0.0f, upper = 1.0f;
  float val = code[pivot];
  for (int i = 64; i > 0; i >>= 1) {
    if (x > val) {
      lower_pivot = pivot;
      lower = val;
      pivot += i;
    } else {
      upper_pivot = pivot;
      upper = val;
      pivot -= i;
    }
    val = code[pivot];
  }
  if (x > val) return x > mul_rn(add_rn(upper, val), 0.5f) ? upper_pivot : pivot;
  return x < mul_rn(add_rn(lower, val), 0.5f) ? lower_pivot : pivot;
}

// The code byte of the first moment: nearest code, then bnb's sign fix (with byte wrap-around).
QK_HD uint8_t adamw8bit_quantize_m(const float* code1, float m, float absmax) {
  unsigned c = adamw8bit_quantize<true>(code1, div_rn(m, absmax));
  if (a8::sign(code1[c]) != a8::sign(m)) c = m > 0.0f ? c + 1 : c - 1;
  return static_cast<uint8_t>(c & 255u);
}
QK_HD uint8_t adamw8bit_quantize_v(const float* code2, float v, float absmax) {
  return static_cast<uint8_t>(adamw8bit_quantize<false>(code2, div_rn(v, absmax)));
}

// Per-step constants, computed once on the host.
struct AdamW8bitStepConsts {
  float beta1, beta2, one_minus_beta1, one_minus_beta2;
  float step_size;  // -lr * c2 / c1 (negative)
  float eps_c2;     // c2 * eps
  float decay;      // 1 - lr * wd
  bool has_decay;   // wd > 0
  float grad_scale;
};
inline AdamW8bitStepConsts adamw8bit_step_consts(const AdamWParams& p) {
  const double c1 = 1.0 - std::pow(static_cast<double>(p.beta1), static_cast<double>(p.step));
  const double c2 = std::sqrt(1.0 - std::pow(static_cast<double>(p.beta2), static_cast<double>(p.step)));
  AdamW8bitStepConsts c{};
  c.beta1 = p.beta1;
  c.beta2 = p.beta2;
  c.one_minus_beta1 = 1.0f - p.beta1;
  c.one_minus_beta2 = 1.0f - p.beta2;
  c.step_size = static_cast<float>(-static_cast<double>(p.lr) * c2 / c1);
  c.eps_c2 = static_cast<float>(c2) * p.eps;
  c.decay = 1.0f - p.lr * p.weight_decay;
  c.has_decay = p.weight_decay > 0.0f;
  c.grad_scale = p.grad_scale;
  return c;
}

// Moments of one element of a quantized tensor from the dequantized old ones (m_old = code1[q1] *
// absmax1 etc.). A lane past the tensor's end passes g = 0 with its padding codes, as bnb's kernel.
QK_HD void adamw8bit_moments(const AdamW8bitStepConsts& c, float g_raw, float m_old, float v_old, float& m, float& v) {
  if (!a8::finite(g_raw)) {
    m = 0.0f;
    v = 0.0f;
    return;
  }
  const float g = mul_rn(g_raw, c.grad_scale);
  v = add_rn(mul_rn(v_old, c.beta2), mul_rn(mul_rn(c.one_minus_beta2, g), g));
  m = add_rn(mul_rn(m_old, c.beta1), mul_rn(c.one_minus_beta1, g));
}
// The parameter after the step, given the new moments; unchanged for a non-finite gradient.
QK_HD float adamw8bit_param(const AdamW8bitStepConsts& c, float p, float g_raw, float m, float v) {
  if (!a8::finite(g_raw)) return p;
  p = add_rn(p, mul_rn(c.step_size, div_rn(m, add_rn(sqrt_rn(v), c.eps_c2))));
  if (c.has_decay) p = mul_rn(p, c.decay);
  return p;
}
// One element of a small (32-bit state) tensor.
QK_HD void adamw8bit_element32(const AdamW8bitStepConsts& c, float& p, float g_raw, float& m, float& v) {
  const float g = mul_rn(c.grad_scale, g_raw);
  m = add_rn(mul_rn(m, c.beta1), mul_rn(c.one_minus_beta1, g));
  v = add_rn(mul_rn(v, c.beta2), mul_rn(c.one_minus_beta2, mul_rn(g, g)));
  p = add_rn(p, mul_rn(c.step_size, div_rn(m, add_rn(sqrt_rn(v), c.eps_c2))));
  if (c.has_decay) p = mul_rn(p, c.decay);
}

}  // namespace qk

namespace qk::cpu {
// Host pointers in `tensors`.
void adamw8bit_update(const AdamW8bitTensor* tensors, int count, const AdamWParams& params);
}  // namespace qk::cpu

#if __has_include(<cuda_runtime.h>)
#include <cuda_runtime.h>
namespace qk {
// `device_tensors`: a device table of `count` entries planned by adamw8bit_plan_chunks, holding device
// pointers; total_chunks is what the planning returned.
void adamw8bit_update(const AdamW8bitTensor* device_tensors, int count, int64_t total_chunks,
                      const AdamWParams& params, cudaStream_t stream);
}  // namespace qk
#endif
