// The linear layer of full fine-tuning: a trainable bf16 weight, no adapter (what the grouped LoRA
// linear computes with its LoRA groups switched off, plus the weight's own gradient):
//   forward   Y = bf16(X W^T), with a bias Y = bf16(Y + b)
//   backward  dX = bf16(dY W),  dW += dY^T X,  db += column sums of dY   (dW, db fp32)
// All through qk::matmul (cuBLAS, fp32 accumulation; the fp32 gradients accumulate with beta = 1).
// The bias terms are GEMMs with a column of ones: the add is the GEMM's beta = 1 epilogue on the bf16
// Y, and the column sums run in a fixed order, so results repeat bit for bit.
#pragma once
#if QTRAIN_HAS_CUDA
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "runtime/model/cuda/device_weights.h"
#include "runtime/model/cuda/full_weights.h"

namespace qtrain::model::cuda {

// ones: a device bf16 [t] of 1.0 (only read with a bias).
void full_linear_forward(cublasHandle_t blas, const DeviceLinear& l, const __nv_bfloat16* x, int64_t t,
                         const __nv_bfloat16* ones, __nv_bfloat16* y, cudaStream_t stream);
// dx [t, in] written; g.dw (and g.db with a bias) accumulated into.
void full_linear_backward(cublasHandle_t blas, const DeviceLinear& l, const __nv_bfloat16* x,
                          const __nv_bfloat16* dy, int64_t t, const __nv_bfloat16* ones, __nv_bfloat16* dx,
                          const FullLinearGrads& g, cudaStream_t stream);

}  // namespace qtrain::model::cuda
#endif
