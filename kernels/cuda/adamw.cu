// Multi-tensor AdamW: one launch updates every trainable tensor. Each block owns one chunk of
// kAdamWChunk elements of one tensor, found by a binary search over the tensors' first chunks, so
// the grid covers all tensors without a launch per tensor. Memory-bound: 4 reads and 3 writes of
// fp32 per element.
#include "qk/adamw.h"
#include "qk/cuda_check.h"
#include "qk/multi_tensor.h"
#include "qk/nvtx.h"
#include "qk/simt.h"

namespace qk {
namespace {

constexpr int kThreads = 256;

__global__ void QK_LAUNCH_BOUNDS(kThreads)
    adamw_kernel(const AdamWTensor* __restrict__ tensors, int count, AdamWStepConsts c) {
  const int64_t chunk = blockIdx.x;
  const AdamWTensor t = tensors[tensor_of_chunk(tensors, count, chunk)];
  const int64_t begin = (chunk - t.chunk_begin) * kAdamWChunk;
  const int64_t end = begin + kAdamWChunk < t.n ? begin + kAdamWChunk : t.n;
  for (int64_t i = begin + threadIdx.x; i < end; i += kThreads) {
    float p = t.param[i], m = t.m[i], v = t.v[i];
    adamw_element(c, p, t.grad[i], m, v);
    t.param[i] = p;
    t.m[i] = m;
    t.v[i] = v;
  }
}

}  // namespace

void adamw_update(const AdamWTensor* device_tensors, int count, int64_t total_chunks, const AdamWParams& params,
                  cudaStream_t stream) {
  QK_NVTX_FUNC();
  QK_REQUIRE(params.step >= 1, "AdamW step counts from 1");
  QK_REQUIRE(count >= 0 && total_chunks >= 0, "negative size");
  QK_REQUIRE(total_chunks < (int64_t{1} << 31), "too many chunks for one grid");
  if (count == 0 || total_chunks == 0) return;
  QK_REQUIRE(device_tensors != nullptr, "null tensor table");
  QK_LAUNCH(adamw_kernel, dim3(static_cast<unsigned>(total_chunks)), dim3(kThreads), 0, stream, device_tensors, count,
            adamw_step_consts(params));
  QK_CHECK_LAUNCH();
}

}  // namespace qk
