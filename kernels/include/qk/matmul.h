// Plain GEMM in row-major terms, as the engine's linear layers use it:
//   C[M, N] = alpha * op(A) * op(B) + beta * C,  op(A) is [M, K], op(B) is [K, N];
//   A is stored [M, K] (or [K, M] when trans_a), B is stored [K, N] (or [N, K] when trans_b),
//   so a linear layer Y = X W^T with W [out, in] is matmul(trans_b = true).
// lda / ldb / ldc are row strides in elements; 0 means packed (the stored width), so column blocks
// of wider matrices (one group of a fused q/k/v output) can be used in place.
// GPU: cuBLAS, bf16 inputs with fp32 accumulation, C in f32 or bf16. CPU twin: OpenBLAS sgemm on
// the inputs widened to f32.
#pragma once
#include <cstdint>

namespace qk {
struct GemmShape {
  bool trans_a = false;
  bool trans_b = false;
  int m = 0, n = 0, k = 0;
  int lda = 0, ldb = 0, ldc = 0;
  int row_stride_a() const { return lda > 0 ? lda : (trans_a ? m : k); }
  int row_stride_b() const { return ldb > 0 ? ldb : (trans_b ? k : n); }
  int row_stride_c() const { return ldc > 0 ? ldc : n; }
};
}  // namespace qk

namespace qk::cpu {
void matmul_f32(const GemmShape& s, float alpha, const float* a, const float* b, float beta, float* c);
// bf16 stored as raw bits; C in f32.
void matmul_bf16_f32(const GemmShape& s, float alpha, const uint16_t* a, const uint16_t* b, float beta, float* c);
// bf16 in and out (C read as bf16 when beta != 0, the result rounded to nearest even).
void matmul_bf16(const GemmShape& s, float alpha, const uint16_t* a, const uint16_t* b, float beta, uint16_t* c);
}  // namespace qk::cpu

#if __has_include(<cuda_runtime.h>)
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
namespace qk {
// The handle's stream is set to `stream` for the call.
void matmul_bf16_f32(cublasHandle_t handle, const GemmShape& s, float alpha, const __nv_bfloat16* a,
                     const __nv_bfloat16* b, float beta, float* c, cudaStream_t stream);
void matmul_bf16(cublasHandle_t handle, const GemmShape& s, float alpha, const __nv_bfloat16* a,
                 const __nv_bfloat16* b, float beta, __nv_bfloat16* c, cudaStream_t stream);
}  // namespace qk
#endif
