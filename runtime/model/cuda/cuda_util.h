// Small device helpers of the CUDA model: CUDA/cuBLAS status checks that raise
// qtrain::Error, host <-> device copies on a stream, and a strided row copy
// (the fused q/k/v output split into the contiguous q, k, v the RoPE and
// attention kernels take, and head_dim padding for head sizes the attention
// kernel has no tile for).
#pragma once
#if QTRAIN_HAS_CUDA
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace qtrain::model::cuda {

void check_cuda(cudaError_t e, const char* what);
void check_cublas(cublasStatus_t s, const char* what);

void copy_to_device(void* dst, const void* src, size_t bytes, cudaStream_t stream);
void copy_to_host(void* dst, const void* src, size_t bytes, cudaStream_t stream);

// dst[i * dst_stride + j] = src[i * src_stride + j] for i < count, j < width
// (bf16 elements). There is no strided-copy kernel in the op library yet, so
// this runs as a cuBLAS strided-batched GEMM of each row by a 1x1 one (exact: x
// * 1 accumulated in fp32 and rounded back to bf16 is x). It is memory-bound
// either way; a plain kernel would save the launch overhead of cuBLAS's
// dispatch. `one` is a device bf16 holding 1.0.
void copy_rows(cublasHandle_t blas, const __nv_bfloat16* one, const __nv_bfloat16* src, int64_t src_stride,
               __nv_bfloat16* dst, int64_t dst_stride, int64_t width, int64_t count, cudaStream_t stream);

}  // namespace qtrain::model::cuda
#endif
