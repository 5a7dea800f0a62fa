// RMSNorm over the rows of x [rows, cols], as Llama uses it (no +1 on w, statistics in fp32):
//   y = x * rstd * w,   rstd = 1 / sqrt(mean(x^2) + eps)   (rstd saved per row for the backward)
// y is rounded to bf16 once (HF rounds x * rstd to bf16 before multiplying by w: a rounding apart).
// and the fused residual form of a Llama block: h = x + r (rounded to bf16 and written out, the
// next residual stream), y = rmsnorm(h).
// Backward, with g = dy * w and n = cols:
//   dx = rstd * (g - x * rstd^2 * sum(g * x) / n) [+ dres],   dw += sum over rows of dy * x * rstd
// dres is the gradient arriving through the residual branch (h feeds both the norm and the next
// residual add), added here so the caller needs no separate pass. dw is for full fine-tuning; it is
// deterministic: each block sums its rows into a partial row, then a second kernel adds the partials
// in a fixed order. Their number depends only on `rows`, so results repeat bit for bit.
#pragma once
#include <cstdint>

namespace qk {

// The backward keeps one partial dw row per block in shared memory (fp32), which bounds cols.
constexpr int64_t kRmsNormMaxCols = 11264;

// Blocks of the backward, each one partial dw row: enough to fill a large GPU, and a function of
// `rows` alone so that the reduction order never depends on the device.
constexpr int64_t kRmsNormMaxPartials = 512;
inline int64_t rmsnorm_backward_partials(int64_t rows) {
  return rows < kRmsNormMaxPartials ? rows : kRmsNormMaxPartials;
}

// Floats of device workspace rmsnorm_backward needs when it computes dw.
inline int64_t rmsnorm_backward_workspace(int64_t rows, int64_t cols) { return rmsnorm_backward_partials(rows) * cols; }

}  // namespace qk

namespace qk::cpu {
// The references, fp64 inside. rstd may be null.
void rmsnorm_forward(const uint16_t* x, const uint16_t* w, uint16_t* y, float* rstd, int64_t rows, int64_t cols,
                     float eps);
void residual_rmsnorm_forward(const uint16_t* x, const uint16_t* r, const uint16_t* w, uint16_t* h, uint16_t* y,
                              float* rstd, int64_t rows, int64_t cols, float eps);
// dres and dw may be null; dw is accumulated into (+=).
void rmsnorm_backward(const uint16_t* dy, const uint16_t* x, const uint16_t* w, const float* rstd,
                      const uint16_t* dres, uint16_t* dx, float* dw, int64_t rows, int64_t cols);
// fp64 versions, for the finite-difference check.
void rmsnorm_forward(const double* x, const double* w, double* y, double* rstd, int64_t rows, int64_t cols,
                     double eps);
void rmsnorm_backward(const double* dy, const double* x, const double* w, const double* rstd, const double* dres,
                      double* dx, double* dw, int64_t rows, int64_t cols);
}  // namespace qk::cpu

#if __has_include(<cuda_runtime.h>)
#include <cuda_bf16.h>
#include <cuda_runtime.h>
namespace qk {
// rstd (fp32 [rows]) may be null when no backward follows.
void rmsnorm_forward(const __nv_bfloat16* x, const __nv_bfloat16* w, __nv_bfloat16* y, float* rstd, int64_t rows,
                     int64_t cols, float eps, cudaStream_t stream);
// h may alias x or r (the residual stream updated in place); y must not alias any input.
void residual_rmsnorm_forward(const __nv_bfloat16* x, const __nv_bfloat16* r, const __nv_bfloat16* w,
                              __nv_bfloat16* h, __nv_bfloat16* y, float* rstd, int64_t rows, int64_t cols,
                              float eps, cudaStream_t stream);
// x is the norm's input (h in the residual form), rstd what the forward saved. dres may be null;
// dx may alias dy or dres. dw (fp32 [cols], +=) may be null (frozen weight); otherwise workspace
// holds rmsnorm_backward_workspace(rows, cols) floats. cols <= kRmsNormMaxCols.
void rmsnorm_backward(const __nv_bfloat16* dy, const __nv_bfloat16* x, const __nv_bfloat16* w, const float* rstd,
                      const __nv_bfloat16* dres, __nv_bfloat16* dx, float* dw, float* workspace, int64_t rows,
                      int64_t cols, cudaStream_t stream);
}  // namespace qk
#endif
