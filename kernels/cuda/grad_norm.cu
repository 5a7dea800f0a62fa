// Global gradient norm in two deterministic passes. Pass 1: each block sums the squares of one
// chunk (warp shuffles, then one partial per warp through shared memory). Pass 2: a single block
// sums the partials in a fixed order and takes the square root.
#include "qk/block_reduce.h"
#include "qk/cuda_check.h"
#include "qk/grad_norm.h"
#include "qk/multi_tensor.h"
#include "qk/nvtx.h"
#include "qk/simt.h"

namespace qk {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;

__global__ void QK_LAUNCH_BOUNDS(kThreads)
    partial_sums_kernel(const NormTensor* __restrict__ tensors, int count, float* __restrict__ partials) {
  __shared__ float scratch[kWarps];
  const int64_t chunk = blockIdx.x;
  const NormTensor t = tensors[tensor_of_chunk(tensors, count, chunk)];
  const int64_t begin = (chunk - t.chunk_begin) * kNormChunk;
  const int64_t end = begin + kNormChunk < t.n ? begin + kNormChunk : t.n;
  float acc = 0.0f;
  for (int64_t i = begin + threadIdx.x; i < end; i += kThreads) acc += t.data[i] * t.data[i];
  acc = block_sum(acc, scratch);
  if (threadIdx.x == 0) partials[chunk] = acc;
}

__global__ void QK_LAUNCH_BOUNDS(kThreads)
    finish_kernel(const float* __restrict__ partials, int64_t n, float* __restrict__ out) {
  __shared__ float scratch[kWarps];
  float acc = 0.0f;
  for (int64_t i = threadIdx.x; i < n; i += kThreads) acc += partials[i];
  acc = block_sum(acc, scratch);
  if (threadIdx.x == 0) *out = sqrtf(acc);
}

}  // namespace

void global_l2_norm(const NormTensor* device_tensors, int count, int64_t total_chunks, float* partials, float* out,
                    cudaStream_t stream) {
  QK_NVTX_FUNC();
  QK_REQUIRE(count >= 0 && total_chunks >= 0, "negative size");
  QK_REQUIRE(total_chunks < (int64_t{1} << 31), "too many chunks for one grid");
  QK_REQUIRE(out != nullptr, "null output");
  if (total_chunks > 0) {
    QK_REQUIRE(device_tensors != nullptr && partials != nullptr, "null tensor table or workspace");
    QK_LAUNCH(partial_sums_kernel, dim3(static_cast<unsigned>(total_chunks)), dim3(kThreads), 0, stream,
              device_tensors, count, partials);
    QK_CHECK_LAUNCH();
  }
  // Also runs with no chunks, so that the norm of nothing is written as 0.
  QK_LAUNCH(finish_kernel, dim3(1), dim3(kThreads), 0, stream, static_cast<const float*>(partials), total_chunks, out);
  QK_CHECK_LAUNCH();
}

}  // namespace qk
