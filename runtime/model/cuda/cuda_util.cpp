// Device helpers of the CUDA model (see cuda_util.h).
#include "runtime/model/cuda/cuda_util.h"

#if QTRAIN_HAS_CUDA
#include <algorithm>
#include <string>

#include "csrc/core/error.h"

namespace qtrain::model::cuda {

void check_cuda(cudaError_t e, const char* what) {
  if (e == cudaSuccess) return;
  (void)cudaGetLastError();
  if (e == cudaErrorMemoryAllocation) throw_out_of_memory(std::string(what) + ": " + cudaGetErrorString(e));
  throw_internal(std::string(what) + ": " + cudaGetErrorString(e));
}

void check_cublas(cublasStatus_t s, const char* what) {
  if (s != CUBLAS_STATUS_SUCCESS) throw_internal(std::string(what) + ": cuBLAS status " + std::to_string(s));
}

void copy_to_device(void* dst, const void* src, size_t bytes, cudaStream_t stream) {
  if (bytes) check_cuda(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, stream), "host-to-device copy");
}

void copy_to_host(void* dst, const void* src, size_t bytes, cudaStream_t stream) {
  if (!bytes) return;
  check_cuda(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, stream), "device-to-host copy");
  check_cuda(cudaStreamSynchronize(stream), "device-to-host copy");
}

void copy_rows(cublasHandle_t blas, const __nv_bfloat16* one, const __nv_bfloat16* src, int64_t src_stride,
               __nv_bfloat16* dst, int64_t dst_stride, int64_t width, int64_t count, cudaStream_t stream) {
  if (width <= 0 || count <= 0) return;
  check_cublas(cublasSetStream(blas, stream), "copy_rows");
  const float alpha = 1.0f, beta = 0.0f;
  // Column-major view: each row is a [width x 1] matrix, scaled by the [1 x 1]
  // one.
  constexpr int64_t kMaxBatch = 65535;
  for (int64_t first = 0; first < count; first += kMaxBatch) {
    const int n = static_cast<int>(std::min(kMaxBatch, count - first));
    check_cublas(
        cublasGemmStridedBatchedEx(blas, CUBLAS_OP_N, CUBLAS_OP_N, static_cast<int>(width), 1, 1, &alpha,
                                   src + first * src_stride, CUDA_R_16BF, static_cast<int>(width), src_stride, one,
                                   CUDA_R_16BF, 1, 0, &beta, dst + first * dst_stride, CUDA_R_16BF,
                                   static_cast<int>(width), dst_stride, n, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
        "copy_rows");
  }
}

}  // namespace qtrain::model::cuda
#endif
