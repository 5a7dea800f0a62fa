// SwiGLU, the activation of a Llama MLP: out = silu(gate) * up, silu(g) = g * sigmoid(g).
// Backward, recomputing sigmoid from gate instead of storing anything:
//   dup = dout * silu(g),   dgate = dout * up * sigmoid(g) * (1 + g * (1 - sigmoid(g)))
// Rows of `cols` values with a leading dimension per tensor, so gate and up can be the two halves
// of one fused [T, 2 * I] gate/up projection (gate = p, up = p + I, ld = 2 I), and dgate/dup the
// halves of the gradient that feeds the fused backward GEMM.
#pragma once
#include <cmath>
#include <cstdint>

#include "qk/hd.h"

namespace qk {

// Shared by the kernel and its twin (fp32) and by the fp64 reference.
QK_HD float swiglu_sigmoid(float g) { return 1.0f / (1.0f + expf(-g)); }
QK_HD double swiglu_sigmoid(double g) { return 1.0 / (1.0 + exp(-g)); }

template <typename F>
QK_HD F swiglu_value(F g, F u) {
  return g * swiglu_sigmoid(g) * u;
}

template <typename F>
QK_HD void swiglu_grad(F g, F u, F dout, F& dg, F& du) {
  const F s = swiglu_sigmoid(g);
  du = dout * g * s;
  dg = dout * u * s * (F(1) + g * (F(1) - s));
}

}  // namespace qk

namespace qk::cpu {
// The references: fp32 math through the functions above, as the kernel does it. ld_* are the
// row strides in elements (>= cols).
void swiglu_forward(const uint16_t* gate, const uint16_t* up, uint16_t* out, int64_t rows, int64_t cols,
                    int64_t ld_in, int64_t ld_out);
void swiglu_backward(const uint16_t* dout, const uint16_t* gate, const uint16_t* up, uint16_t* dgate, uint16_t* dup,
                     int64_t rows, int64_t cols, int64_t ld_in, int64_t ld_dout, int64_t ld_grad);
// fp64 versions, for the finite-difference check.
void swiglu_forward(const double* gate, const double* up, double* out, int64_t rows, int64_t cols, int64_t ld_in,
                    int64_t ld_out);
void swiglu_backward(const double* dout, const double* gate, const double* up, double* dgate, double* dup,
                     int64_t rows, int64_t cols, int64_t ld_in, int64_t ld_dout, int64_t ld_grad);
}  // namespace qk::cpu

#if __has_include(<cuda_runtime.h>)
#include <cuda_bf16.h>
#include <cuda_runtime.h>
namespace qk {
// gate and up share ld_in; out has ld_out. out may alias gate or up when ld_out == ld_in (each
// element is read and written by the same thread).
void swiglu_forward(const __nv_bfloat16* gate, const __nv_bfloat16* up, __nv_bfloat16* out, int64_t rows,
                    int64_t cols, int64_t ld_in, int64_t ld_out, cudaStream_t stream);
// dgate and dup share ld_grad; they may alias gate and up when ld_grad == ld_in (the fused
// buffer overwritten in place).
void swiglu_backward(const __nv_bfloat16* dout, const __nv_bfloat16* gate, const __nv_bfloat16* up,
                     __nv_bfloat16* dgate, __nv_bfloat16* dup, int64_t rows, int64_t cols, int64_t ld_in,
                     int64_t ld_dout, int64_t ld_grad, cudaStream_t stream);
}  // namespace qk
#endif
