// The full fine-tuning linear (see full_linear.h).
#include "runtime/model/cuda/full_linear.h"

#if QTRAIN_HAS_CUDA
#include "csrc/core/error.h"
#include "qk/matmul.h"
#include "qk/nvtx.h"

namespace qtrain::model::cuda {

namespace {

void check(const DeviceLinear& l, int64_t t, const __nv_bfloat16* ones) {
  if (l.w == nullptr) throw_internal("full_linear: no bf16 weight (an NF4 base cannot be fully fine-tuned)");
  if (t < 0 || t >= (int64_t{1} << 31)) throw_internal("full_linear: token count out of range");
  if (l.bias != nullptr && ones == nullptr) throw_internal("full_linear: a bias needs the ones column");
}

}  // namespace

void full_linear_forward(cublasHandle_t blas, const DeviceLinear& l, const __nv_bfloat16* x, int64_t t,
                         const __nv_bfloat16* ones, __nv_bfloat16* y, cudaStream_t stream) {
  QK_NVTX_RANGE("full_linear_forward");
  check(l, t, ones);
  const int n = static_cast<int>(t);
  qk::matmul_bf16(blas, qk::GemmShape{false, true, n, l.out, l.in}, 1.0f, x, l.w, 0.0f, y, stream);
  // Y += ones[t, 1] b[1, out]: the fp32 sum of the bf16 Y and b, rounded once.
  if (l.bias != nullptr)
    qk::matmul_bf16(blas, qk::GemmShape{false, false, n, l.out, 1}, 1.0f, ones, l.bias, 1.0f, y, stream);
}

void full_linear_backward(cublasHandle_t blas, const DeviceLinear& l, const __nv_bfloat16* x,
                          const __nv_bfloat16* dy, int64_t t, const __nv_bfloat16* ones, __nv_bfloat16* dx,
                          const FullLinearGrads& g, cudaStream_t stream) {
  QK_NVTX_RANGE("full_linear_backward");
  check(l, t, ones);
  if (g.dw == nullptr || (l.bias != nullptr && g.db == nullptr)) throw_internal("full_linear: null gradient");
  const int n = static_cast<int>(t);
  qk::matmul_bf16(blas, qk::GemmShape{false, false, n, l.in, l.out}, 1.0f, dy, l.w, 0.0f, dx, stream);
  // dW [out, in] += dY^T X.
  qk::matmul_bf16_f32(blas, qk::GemmShape{true, false, l.out, l.in, n}, 1.0f, dy, x, 1.0f, g.dw, stream);
  // db [out, 1] += dY^T ones.
  if (l.bias != nullptr)
    qk::matmul_bf16_f32(blas, qk::GemmShape{true, false, l.out, 1, n}, 1.0f, dy, ones, 1.0f, g.db, stream);
}

}  // namespace qtrain::model::cuda
#endif
