// Kernel 2 of NF4: double quantization of the fp32 absmax ("compress_statistics" in bitsandbytes).
// offset = mean(absmax); absmax - offset is quantized in blocks of 256 to the signed 8-bit dynamic
// code with one fp32 nested absmax per block; the inverse is
// absmax[i] = code[q[i]] * nested_absmax[i / 256] + offset (qk/nf4.h has the rules).
// The mean is summed in double in one fixed order (256 strided partial sums, then a halving tree), the
// same on the GPU and the CPU, so the offset agrees bit for bit.
#pragma once
#include <cstddef>
#include <cstdint>

namespace qk {
inline constexpr int kNf4OffsetLanes = 256;  // the fixed summation order of the offset
}

namespace qk::cpu {
// The 256 values of the dynamic code, ascending.
void nf4_dynamic_code(float* code256);
// mean(absmax) in the fixed order above.
float nf4_absmax_offset(const float* absmax, size_t nblocks);
// q: nblocks bytes; nested_absmax: ceil(nblocks / 256) floats. Returns the offset.
float nf4_double_quantize(const float* absmax, size_t nblocks, uint8_t* q, float* nested_absmax);
// As above with a given offset (to check against another implementation's offset).
void nf4_double_quantize_with_offset(const float* absmax, size_t nblocks, float offset, uint8_t* q,
                                     float* nested_absmax);
void nf4_double_dequantize(const uint8_t* q, const float* nested_absmax, float offset, size_t nblocks,
                           float* absmax);
}  // namespace qk::cpu

#if __has_include(<cuda_runtime.h>)
#include <cuda_runtime.h>
namespace qk {
// offset: one float in device memory, written (the caller copies it to the host for the checkpoint).
void nf4_double_quantize(const float* absmax, size_t nblocks, uint8_t* q, float* nested_absmax, float* offset,
                         cudaStream_t stream);
void nf4_double_dequantize(const uint8_t* q, const float* nested_absmax, float offset, size_t nblocks, float* absmax,
                           cudaStream_t stream);
}  // namespace qk
#endif
