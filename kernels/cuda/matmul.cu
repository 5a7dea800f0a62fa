// Plain GEMMs through cuBLAS (bf16 in, fp32 accumulate). Row-major C = op(A) op(B) is computed as
// the column-major product C^T = op(B)^T op(A)^T, so no data is transposed.
#include <algorithm>

#include "qk/cuda_check.h"
#include "qk/matmul.h"
#include "qk/nvtx.h"

namespace qk {
namespace {

void gemm(cublasHandle_t handle, const GemmShape& s, float alpha, const void* a, const void* b, float beta, void* c,
          cudaDataType c_type, cudaStream_t stream) {
  QK_REQUIRE(handle != nullptr, "null cuBLAS handle");
  QK_REQUIRE(s.m >= 0 && s.n >= 0 && s.k >= 0, "negative GEMM dimension");
  QK_REQUIRE(s.row_stride_a() >= (s.trans_a ? s.m : s.k) && s.row_stride_b() >= (s.trans_b ? s.k : s.n) &&
                 s.row_stride_c() >= s.n,
             "a row stride is smaller than the row");
  if (s.m == 0 || s.n == 0) return;
  QK_REQUIRE(a != nullptr && b != nullptr && c != nullptr, "null pointer");
  QK_CUBLAS_CHECK(cublasSetStream(handle, stream));
  // cuBLAS wants leading dimensions of at least 1 even when k == 0 (C is then just scaled by beta).
  const int lda = std::max(1, s.row_stride_a());
  const int ldb = std::max(1, s.row_stride_b());
  QK_CUBLAS_CHECK(cublasGemmEx(handle, s.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N, s.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N,
                               s.n, s.m, s.k, &alpha, b, CUDA_R_16BF, ldb, a, CUDA_R_16BF, lda, &beta, c, c_type, s.row_stride_c(),
                               CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

}  // namespace

void matmul_bf16_f32(cublasHandle_t handle, const GemmShape& s, float alpha, const __nv_bfloat16* a,
                     const __nv_bfloat16* b, float beta, float* c, cudaStream_t stream) {
  QK_NVTX_FUNC();
  gemm(handle, s, alpha, a, b, beta, c, CUDA_R_32F, stream);
}

void matmul_bf16(cublasHandle_t handle, const GemmShape& s, float alpha, const __nv_bfloat16* a,
                 const __nv_bfloat16* b, float beta, __nv_bfloat16* c, cudaStream_t stream) {
  QK_NVTX_FUNC();
  gemm(handle, s, alpha, a, b, beta, c, CUDA_R_16BF, stream);
}

}  // namespace qk
