// Kernel 3 of NF4: packed NF4 -> f32, bf16 or f16, with plain fp32 absmax or double-quantized absmax
// (Nf4Nested: the 8-bit codes, the nested fp32 absmax per 256 blocks and the offset). On the training
// path for every linear layer, so the GPU version reads each byte once with 16-byte loads and writes
// through a per-warp shared-memory stage so that every store is a coalesced 16-byte one.
#pragma once
#include <cstddef>
#include <cstdint>

namespace qk {
// Double-quantized absmax of a weight with nblocks NF4 blocks: q has nblocks bytes, nested_absmax
// ceil(nblocks / 256) floats.
struct Nf4Nested {
  const uint8_t* q = nullptr;
  const float* nested_absmax = nullptr;
  float offset = 0.0f;
};
}  // namespace qk

namespace qk::cpu {
// y[i] = code[nibble i] * absmax[i / blocksize], rounded once to the output type.
void nf4_dequantize_f32(const uint8_t* packed, const float* absmax, size_t n, int blocksize, float* y);
void nf4_dequantize_bf16(const uint8_t* packed, const float* absmax, size_t n, int blocksize, uint16_t* y);
void nf4_dequantize_f16(const uint8_t* packed, const float* absmax, size_t n, int blocksize, uint16_t* y);
void nf4_dequantize_f32(const uint8_t* packed, const Nf4Nested& absmax, size_t n, int blocksize, float* y);
void nf4_dequantize_bf16(const uint8_t* packed, const Nf4Nested& absmax, size_t n, int blocksize, uint16_t* y);
void nf4_dequantize_f16(const uint8_t* packed, const Nf4Nested& absmax, size_t n, int blocksize, uint16_t* y);
}  // namespace qk::cpu

#if __has_include(<cuda_runtime.h>)
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
namespace qk {
// Any n. The fast path wants packed and y 16-byte aligned (cudaMalloc'd buffers are); otherwise a
// scalar path runs.
void nf4_dequantize_f32(const uint8_t* packed, const float* absmax, size_t n, int blocksize, float* y,
                        cudaStream_t stream);
void nf4_dequantize_bf16(const uint8_t* packed, const float* absmax, size_t n, int blocksize, __nv_bfloat16* y,
                         cudaStream_t stream);
void nf4_dequantize_f16(const uint8_t* packed, const float* absmax, size_t n, int blocksize, __half* y,
                        cudaStream_t stream);
void nf4_dequantize_f32(const uint8_t* packed, const Nf4Nested& absmax, size_t n, int blocksize, float* y,
                        cudaStream_t stream);
void nf4_dequantize_bf16(const uint8_t* packed, const Nf4Nested& absmax, size_t n, int blocksize, __nv_bfloat16* y,
                         cudaStream_t stream);
void nf4_dequantize_f16(const uint8_t* packed, const Nf4Nested& absmax, size_t n, int blocksize, __half* y,
                        cudaStream_t stream);
}  // namespace qk
#endif
