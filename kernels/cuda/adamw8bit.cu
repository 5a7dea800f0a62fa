// Multi-tensor 8-bit AdamW (qk/adamw8bit.h): one launch over every trainable tensor. A thread block
// owns one 256-element chunk of one tensor, found by a binary search over the tensors' first chunks;
// for a quantized tensor the chunk is exactly one absmax block, so the block's new absmax is a block
// reduction and no other block touches its states. One thread per element, as bitsandbytes' kernel.
// The code tables are rebuilt in shared memory by each block (a few flops per thread) so the entry
// point needs no table argument.
#include "qk/adamw8bit.h"
#include "qk/cuda_check.h"
#include "qk/multi_tensor.h"
#include "qk/nvtx.h"
#include "qk/simt.h"

namespace qk {
namespace {

constexpr int kThreads = kAdamW8bitBlock;
constexpr int kWarps = kThreads / 32;

__device__ __forceinline__ float warp_max(float v) {
  for (int offset = 16; offset > 0; offset /= 2) v = a8::fmax(v, __shfl_xor_sync(0xffffffffu, v, offset));
  return v;
}

// Max over the block (max is exact, so the order does not matter); every thread gets the result.
__device__ __forceinline__ float block_max(float v, float* scratch) {
  v = warp_max(v);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  __syncthreads();  // scratch may still be read from the previous call
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  float r = scratch[0];
  for (int w = 1; w < kWarps; ++w) r = a8::fmax(r, scratch[w]);
  return r;
}

__global__ void QK_LAUNCH_BOUNDS(kThreads)
    adamw8bit_kernel(const AdamW8bitTensor* __restrict__ tensors, int count, AdamW8bitStepConsts c) {
  __shared__ float code1[256];
  __shared__ float code2[256];
  __shared__ float scratch[kWarps];
  const int64_t chunk = blockIdx.x;
  const AdamW8bitTensor t = tensors[tensor_of_chunk(tensors, count, chunk)];
  const int64_t block = chunk - t.chunk_begin;
  const int64_t i = block * kAdamW8bitBlock + threadIdx.x;
  const bool valid = i < t.n;

  if (!adamw8bit_is_quantized(t.n)) {
    if (valid) {
      float p = t.param[i], m = t.m[i], v = t.v[i];
      adamw8bit_element32(c, p, t.grad[i], m, v);
      t.param[i] = p;
      t.m[i] = m;
      t.v[i] = v;
    }
    return;
  }

  code1[threadIdx.x] = dynamic_code_signed(static_cast<int>(threadIdx.x));
  code2[threadIdx.x] = dynamic_code_unsigned(static_cast<int>(threadIdx.x));
  __syncthreads();

  // Lanes past the end are bnb's padding: g = 0, codes 128 and 0.
  const float g = valid ? t.grad[i] : 0.0f;
  const unsigned q1 = valid ? t.q1[i] : 128u;
  const unsigned q2 = valid ? t.q2[i] : 0u;
  const float old_absmax1 = t.absmax1[block], old_absmax2 = t.absmax2[block];
  float m, v;
  adamw8bit_moments(c, g, mul_rn(code1[q1], old_absmax1), mul_rn(code2[q2], old_absmax2), m, v);

  // Every thread has read the old absmax before block_max's barriers; thread 0 then overwrites it.
  const float absmax1 = block_max(a8::fmax(-3.402823466e38f, fabsf(m)), scratch);
  const float absmax2 = block_max(a8::fmax(-3.402823466e38f, fabsf(v)), scratch);
  if (threadIdx.x == 0) {
    t.absmax1[block] = absmax1;
    t.absmax2[block] = absmax2;
  }
  if (!valid) return;
  t.param[i] = adamw8bit_param(c, t.param[i], g, m, v);
  t.q1[i] = adamw8bit_quantize_m(code1, m, absmax1);
  t.q2[i] = adamw8bit_quantize_v(code2, v, absmax2);
}

}  // namespace

void adamw8bit_update(const AdamW8bitTensor* device_tensors, int count, int64_t total_chunks,
                      const AdamWParams& params, cudaStream_t stream) {
  QK_NVTX_FUNC();
  QK_REQUIRE(params.step >= 1, "AdamW step counts from 1");
  QK_REQUIRE(count >= 0 && total_chunks >= 0, "negative size");
  QK_REQUIRE(total_chunks < (int64_t{1} << 31), "too many chunks for one grid");
  if (count == 0 || total_chunks == 0) return;
  QK_REQUIRE(device_tensors != nullptr, "null tensor table");
  QK_LAUNCH(adamw8bit_kernel, dim3(static_cast<unsigned>(total_chunks)), dim3(kThreads), 0, stream, device_tensors,
            count, adamw8bit_step_consts(params));
  QK_CHECK_LAUNCH();
}

}  // namespace qk
