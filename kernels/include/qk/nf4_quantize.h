// Kernel 1 of NF4: a weight [out, in] (flattened row-major, blocks along `in`) in f32, bf16 or f16 ->
// packed NF4 nibbles ((n + 1) / 2 bytes, first element in the high nibble) and one fp32 absmax per
// block of `blocksize` elements (a power of two 32..4096; the last block may be partial). Bytes match
// bitsandbytes' quantize_4bit; the per-element rules live in qk/nf4.h.
#pragma once
#include <cstddef>
#include <cstdint>

namespace qk::cpu {
void nf4_quantize_f32(const float* x, size_t n, int blocksize, uint8_t* packed, float* absmax);
void nf4_quantize_bf16(const uint16_t* x, size_t n, int blocksize, uint8_t* packed, float* absmax);
void nf4_quantize_f16(const uint16_t* x, size_t n, int blocksize, uint8_t* packed, float* absmax);
}  // namespace qk::cpu

#if __has_include(<cuda_runtime.h>)
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
namespace qk {
// packed: (n + 1) / 2 bytes; absmax: ceil(n / blocksize) floats. Any n; element-aligned pointers.
void nf4_quantize_f32(const float* x, size_t n, int blocksize, uint8_t* packed, float* absmax, cudaStream_t stream);
void nf4_quantize_bf16(const __nv_bfloat16* x, size_t n, int blocksize, uint8_t* packed, float* absmax,
                       cudaStream_t stream);
void nf4_quantize_f16(const __half* x, size_t n, int blocksize, uint8_t* packed, float* absmax, cudaStream_t stream);
}  // namespace qk
#endif
