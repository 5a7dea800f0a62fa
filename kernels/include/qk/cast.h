// Casts between f32 and bf16 (round to nearest even). The first ops of the library: they prove the
// op harness and the emulator, and the runtime uses them to move weights and activations.
#pragma once
#include <cstddef>
#include <cstdint>

namespace qk::cpu {
void cast_f32_to_bf16(const float* x, uint16_t* y, size_t n);
void cast_bf16_to_f32(const uint16_t* x, float* y, size_t n);
}  // namespace qk::cpu

#if __has_include(<cuda_runtime.h>)
#include <cuda_bf16.h>
#include <cuda_runtime.h>
namespace qk {
// y[i] = bf16(x[i]) for i < n. Any n; pointers need only element alignment.
void cast_f32_to_bf16(const float* x, __nv_bfloat16* y, size_t n, cudaStream_t stream);
// y[i] = f32(x[i]) for i < n.
void cast_bf16_to_f32(const __nv_bfloat16* x, float* y, size_t n, cudaStream_t stream);
}  // namespace qk
#endif
