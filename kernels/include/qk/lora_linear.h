// The fused LoRA linear of QLoRA training (DESIGN.md "Fused LoRA linear", FORMATS.md "PEFT LoRA"):
//   Y = X W^T (+ bias) + sum over groups g of s_g (Xd A_g^T) B_g^T,   Xd = dropout(X)
// with the frozen base W in bf16 or NF4 (qk/nf4_gemm.h), A_g [r_g, in] and B_g [out_g, r_g] the adapter,
// s_g = alpha / r_g (alpha / sqrt(r_g) with rsLoRA, lora_scale()).
//
// Grouped form: q/k/v (and gate/up) run as one linear over the concatenated base weight
// [out_0 + out_1 + ..., in], so X is read once by the base GEMM; the adapters' A are concatenated too
// ([r_0 + r_1 + ..., in]) so XA = Xd A^T is one GEMM, and each group's B_g [out_g, r_g] adds its own
// column slice of Y. One group is the plain LoRA linear. Y is [T, out_total] with the groups' columns
// side by side; XA is [T, r_total] likewise. All groups share one dropout mask (PEFT draws one per
// module; the expectation is the same, and one mask is what lets the A products be one GEMM).
// A group may have rank 0 (a projection of a fused linear that has no adapter): it keeps its columns
// of Y but has no rows of A, no columns of XA and no B (b and db may be null). With every group at rank
// 0 (r_total 0) the linear is its base alone: a, xa, grads.da and the workspace may be null.
//
// Dropout: inverted, on the LoRA branch's input only. Element (t, i) of X is kept iff
// lora_dropout_keep(lora_dropout_key(seed), t * in + i, lora_dropout_threshold(p)); kept values are
// scaled by 1 / (1 - p) and rounded to bf16. The mask is a counter-based hash, so backward regenerates
// it from the seed instead of storing it; the caller passes the same seed to both directions (and a
// fresh one per step and module).
//
// Backward (dW is never formed; dA and dB accumulate, as gradient accumulation needs):
//   dXA_g = s_g dY_g B_g                    [T, r_g]
//   dB_g += s_g dY_g^T XA_g                 (XA as forward saved it, unscaled)
//   dA   += dXA^T Xd                        (the dropped, scaled input)
//   dX    = dY W + mask / (1 - p) * (dXA A) (the LoRA term masked and scaled like the forward input)
//
// Precision (GPU and CPU twin alike, the twin rounds at the same points):
//  - every GEMM takes bf16 operands and accumulates in fp32 (cuBLAS CUBLAS_COMPUTE_32F / OpenBLAS sgemm
//    on widened values), as PEFT under bf16 autocast does. A and B enter as bf16 copies of the fp32
//    master weights (the caller refreshes them after each optimizer step, qk::cast_f32_to_bf16).
//  - forward: Y = bf16(X W^T); with a bias Y = bf16(Y + bias); Xd = bf16(X * 1/(1-p)) where kept;
//    XA = bf16(Xd A^T) (saved, bf16 [T, r_total]); then Y_g = bf16(Y_g + s_g XA_g B_g^T), the LoRA
//    product summed in fp32 and added to the bf16 Y in the same GEMM (cuBLAS beta = 1 epilogue).
//  - backward: dX = bf16(dY W); dXA = bf16(s_g dY_g B_g); dB_g, dA accumulate in fp32 (beta = 1 on the
//    fp32 gradients); without dropout dX = bf16(dX + dXA A) in the GEMM's epilogue, with dropout
//    P = bf16(dXA A), then dX = bf16(dX + (kept ? P * 1/(1-p) : 0)).
// Saved for backward: X (the caller keeps it) and XA. Workspace (GPU): lora_linear_workspace_bytes.
#pragma once
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>

#include "qk/error.h"
#include "qk/hd.h"
#include "qk/nf4_gemm.h"

namespace qk {

constexpr int kLoraMaxGroups = 4;  // q/k/v take 3, gate/up 2

// s = alpha / r, or alpha / sqrt(r) with rsLoRA (PEFT use_rslora).
inline float lora_scale(float alpha, int r, bool rslora) {
  return rslora ? static_cast<float>(alpha / std::sqrt(static_cast<double>(r))) : alpha / static_cast<float>(r);
}

// The dropout mask, shared by the kernels and the CPU twin. The key mixes the seed once per call (on the
// host), each element then costs one 64-bit mix of (key, index).
QK_HD uint64_t lora_mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}
QK_HD uint64_t lora_dropout_key(uint64_t seed) { return lora_mix64(seed + 0x6A09E667F3BCC909ull); }
// Elements whose 24-bit hash is below the threshold are dropped: probability threshold / 2^24 ~= p.
inline uint32_t lora_dropout_threshold(float p) {
  return static_cast<uint32_t>(std::lround(static_cast<double>(p) * 16777216.0));
}
QK_HD bool lora_dropout_keep(uint64_t key, uint64_t index, uint32_t threshold) {
  return static_cast<uint32_t>(lora_mix64(key + index * 0x9E3779B97F4A7C15ull) >> 40) >= threshold;
}
// The scale of kept elements, 1 / (1 - p), computed once in fp32 on the host by both builds.
inline float lora_dropout_inv_keep(float p) { return 1.0f / (1.0f - p); }

// One adapter of a (grouped) LoRA linear. E is the bf16 element type (uint16_t bits for the CPU twin,
// __nv_bfloat16 on the GPU) or double (the fp64 reference).
template <typename E>
struct LoraGroupT {
  const E* b = nullptr;  // [out, r]
  int out = 0;           // this group's columns of Y
  int r = 0;             // this group's rows of the concatenated A (0: no adapter on this group)
  float scale = 0.0f;    // s = lora_scale(alpha, r, rslora)
};

template <typename E>
struct LoraLinearT {
  int in = 0;
  const E* w = nullptr;        // bf16 base weight [out_total, in]; null when `nf4` holds the base
  Nf4GemmWeight nf4{};         // NF4 base [out_total, in] (ignored when w is set)
  const E* bias = nullptr;     // optional [out_total] (Qwen2 q/k/v)
  const E* a = nullptr;        // concatenated A [r_total, in]
  std::array<LoraGroupT<E>, kLoraMaxGroups> groups{};
  int num_groups = 1;
  float dropout = 0.0f;        // p in [0, 1)
  uint64_t seed = 0;           // the dropout mask's seed; the same in forward and backward

  int out_total() const {
    int n = 0;
    for (int g = 0; g < num_groups; ++g) n += groups[g].out;
    return n;
  }
  int r_total() const {
    int n = 0;
    for (int g = 0; g < num_groups; ++g) n += groups[g].r;
    return n;
  }
};

// The argument checks both the kernels and their twins make (QK_REQUIRE: qk::Error on a violation).
// bf16_base_only: a path that takes no NF4 base (the bf16 reference twins).
template <typename E>
void check_lora_linear(const LoraLinearT<E>& l, int t, bool bf16_base_only = false) {
  QK_REQUIRE(t >= 0, "negative token count");
  QK_REQUIRE(l.in > 0, "in must be positive");
  QK_REQUIRE(l.num_groups >= 1 && l.num_groups <= kLoraMaxGroups, "1 to kLoraMaxGroups groups");
  for (int g = 0; g < l.num_groups; ++g) {
    QK_REQUIRE(l.groups[g].out > 0 && l.groups[g].r >= 0, "every group needs out > 0 and r >= 0");
    QK_REQUIRE(l.groups[g].r == 0 || l.groups[g].b != nullptr, "null B");
  }
  QK_REQUIRE(l.r_total() == 0 || l.a != nullptr, "null A");
  QK_REQUIRE(l.dropout >= 0.0f && l.dropout < 1.0f, "dropout must lie in [0, 1)");
  if (bf16_base_only || l.w != nullptr) {
    QK_REQUIRE(l.w != nullptr, "null base weight");
  } else {
    QK_REQUIRE(l.nf4.packed != nullptr, "no base weight (w and nf4.packed both null)");
    QK_REQUIRE(l.nf4.out == l.out_total() && l.nf4.in == l.in, "NF4 base shape differs from [out_total, in]");
  }
}

// fp32 gradients, accumulated into: dA [r_total, in] (the concatenated A's), dB_g [out_g, r_g].
struct LoraGrads {
  float* da = nullptr;
  std::array<float*, kLoraMaxGroups> db{};
};

}  // namespace qk

namespace qk::cpu {
using LoraLinear = LoraLinearT<uint16_t>;
using LoraLinearF64 = LoraLinearT<double>;

// The twin: qk::cpu matmuls (OpenBLAS), rounding where the GPU path rounds (see above). Y [T, out_total],
// XA [T, r_total] written; bf16 as raw bits.
void lora_linear_forward(const LoraLinear& l, const uint16_t* x, int t, uint16_t* y, uint16_t* xa);
void lora_linear_backward(const LoraLinear& l, const uint16_t* x, const uint16_t* xa, const uint16_t* dy, int t,
                          uint16_t* dx, const LoraGrads& grads);

// fp64 reference for the finite-difference check: plain loops, no rounding, the bf16 base only (w set).
// Gradients accumulate into da/db as in the twin.
struct LoraGradsF64 {
  double* da = nullptr;
  std::array<double*, kLoraMaxGroups> db{};
};
void lora_linear_forward(const LoraLinearF64& l, const double* x, int t, double* y, double* xa);
void lora_linear_backward(const LoraLinearF64& l, const double* x, const double* xa, const double* dy, int t,
                          double* dx, const LoraGradsF64& grads);
}  // namespace qk::cpu

#if __has_include(<cuda_runtime.h>)
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
namespace qk {

using LoraLinear = LoraLinearT<__nv_bfloat16>;

struct LoraLinearContext {
  cublasHandle_t cublas = nullptr;  // every LoRA GEMM and the bf16 base
  Nf4GemmContext nf4{};             // the NF4 base's (its cublas defaults to the one above)
  void* workspace = nullptr;        // >= lora_linear_workspace_bytes(...), 256-byte aligned
  size_t workspace_bytes = 0;
};

// Workspace for either direction: the dropped input Xd (bf16 [T, in], reused for the masked dXA A in
// backward) when p > 0, and dXA (bf16 [T, r_total]) in backward.
inline size_t lora_linear_workspace_bytes(int t, int in, int r_total, float dropout) {
  auto round_up = [](size_t n) { return (n + 255) / 256 * 256; };
  const size_t xd = dropout > 0.0f ? round_up(size_t{2} * static_cast<size_t>(t) * static_cast<size_t>(in)) : 0;
  return xd + round_up(size_t{2} * static_cast<size_t>(t) * static_cast<size_t>(r_total));
}

// t >= 0 (t = 0 does nothing). y [T, out_total] and xa [T, r_total] are written.
void lora_linear_forward(const LoraLinearContext& ctx, const LoraLinear& l, const __nv_bfloat16* x, int t,
                         __nv_bfloat16* y, __nv_bfloat16* xa, cudaStream_t stream);
// dx [T, in] written; grads.da and grads.db[g] accumulated into.
void lora_linear_backward(const LoraLinearContext& ctx, const LoraLinear& l, const __nv_bfloat16* x,
                          const __nv_bfloat16* xa, const __nv_bfloat16* dy, int t, __nv_bfloat16* dx,
                          const LoraGrads& grads, cudaStream_t stream);

}  // namespace qk
#endif
