// Global L2 norm over many fp32 tensors (the gradients of every trainable tensor), for gradient
// clipping: sqrt(sum over tensors of sum x^2). Two deterministic passes: per-chunk partial sums
// (each block one chunk of one tensor), then one block adds the partials in a fixed order, so the
// same gradients always give the same bits. The result stays on the device; clipping reads it.
#pragma once
#include <cstddef>
#include <cstdint>

namespace qk {

struct NormTensor {
  const float* data;
  int64_t n;
  int64_t chunk_begin;  // filled by norm_plan_chunks
};

constexpr int64_t kNormChunk = 4096;  // elements per block in the first pass

// Fills chunk_begin and returns the number of chunks (= partial sums, = workspace floats).
int64_t norm_plan_chunks(NormTensor* tensors, int count);

}  // namespace qk

namespace qk::cpu {
// fp64 accumulation: the reference.
double global_l2_norm(const NormTensor* tensors, int count);
}  // namespace qk::cpu

#if __has_include(<cuda_runtime.h>)
#include <cuda_runtime.h>
namespace qk {
// device_tensors: a device table planned by norm_plan_chunks; partials: total_chunks floats of
// device workspace; out: one float on the device.
void global_l2_norm(const NormTensor* device_tensors, int count, int64_t total_chunks, float* partials, float* out,
                    cudaStream_t stream);
}  // namespace qk
#endif
