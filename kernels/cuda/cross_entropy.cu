// Fused cross-entropy forward + backward over rows of bf16 logits: one block per row, two passes
// over the row (softmax statistics, then dlogits written in place), 16-byte loads when the row
// allows. Memory-bound: 2 reads + 1 write of the row.
#include <cuda_bf16.h>

#include "qk/bf16_pack.h"
#include "qk/cross_entropy.h"
#include "qk/cuda_check.h"
#include "qk/nvtx.h"
#include "qk/simt.h"

namespace qk {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;

__device__ __forceinline__ SoftmaxStat warp_merge(SoftmaxStat s) {
  for (int offset = 16; offset > 0; offset /= 2) {
    SoftmaxStat o;
    o.max = __shfl_xor_sync(0xffffffffu, s.max, offset);
    o.sum = __shfl_xor_sync(0xffffffffu, s.sum, offset);
    s = softmax_stat_merge(s, o);
  }
  return s;
}

template <bool Has_grad>
__global__ void QK_LAUNCH_BOUNDS(kThreads)
    cross_entropy_kernel(const __nv_bfloat16* logits, const int32_t* __restrict__ labels, int64_t vocab,
                         float dscale, float* __restrict__ loss, float* __restrict__ logprob, __nv_bfloat16* dlogits,
                         bool vec) {
  __shared__ SoftmaxStat warp_stats[kWarps];
  __shared__ float row_lse;
  const int64_t row = blockIdx.x;
  const __nv_bfloat16* x = logits + row * vocab;
  const int32_t y = labels[row];
  // A label outside the vocabulary cannot raise an error from here: it gives a NaN loss (the
  // trainer's non-finite check stops on it) and a zero gradient, and nothing is read out of bounds.
  const bool bad_label = y != kIgnoreIndex && (y < 0 || y >= vocab);
  if (y == kIgnoreIndex || bad_label) {
    if (threadIdx.x == 0) {
      const float v = bad_label ? __int_as_float(0x7fc00000) : 0.0f;
      if (loss != nullptr) loss[row] = v;
      if (logprob != nullptr) logprob[row] = v;
    }
    if (Has_grad) {
      __nv_bfloat16* d = dlogits + row * vocab;
      for (int64_t j = threadIdx.x; j < vocab; j += kThreads) d[j] = __float2bfloat16_rn(0.0f);
    }
    return;
  }

  SoftmaxStat s{-INFINITY, 0.0f};
  if (vec) {
    for (int64_t j = threadIdx.x; j < vocab / 8; j += kThreads) {
      float v[8];
      pack::load<8>(x + j * 8, v);
#pragma unroll
      for (int k = 0; k < 8; ++k) s = softmax_stat_add(s, v[k]);
    }
  } else {
    for (int64_t j = threadIdx.x; j < vocab; j += kThreads) s = softmax_stat_add(s, __bfloat162float(x[j]));
  }
  s = warp_merge(s);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) warp_stats[warp] = s;
  __syncthreads();
  if (warp == 0) {
    s = lane < kWarps ? warp_stats[lane] : SoftmaxStat{-INFINITY, 0.0f};
    s = warp_merge(s);
    if (lane == 0) {
      const float lse = s.max + logf(s.sum);
      const float xy = __bfloat162float(x[y]);  // read before pass 2 may overwrite it
      row_lse = lse;
      if (loss != nullptr) loss[row] = lse - xy;
      if (logprob != nullptr) logprob[row] = xy - lse;
    }
  }
  __syncthreads();
  if (!Has_grad) return;
  const float lse = row_lse;
  __nv_bfloat16* d = dlogits + row * vocab;
  if (vec) {
    for (int64_t j = threadIdx.x; j < vocab / 8; j += kThreads) {
      float v[8];
      pack::load<8>(x + j * 8, v);
#pragma unroll
      for (int k = 0; k < 8; ++k) v[k] = (expf(v[k] - lse) - (j * 8 + k == y ? 1.0f : 0.0f)) * dscale;
      pack::store<8>(d + j * 8, v);
    }
  } else {
    for (int64_t j = threadIdx.x; j < vocab; j += kThreads) {
      const float p = expf(__bfloat162float(x[j]) - lse) - (j == y ? 1.0f : 0.0f);
      d[j] = __float2bfloat16_rn(p * dscale);
    }
  }
}

}  // namespace

void cross_entropy(const __nv_bfloat16* logits, const int32_t* labels, int64_t rows, int64_t vocab, float dscale,
                   float* loss, float* logprob, __nv_bfloat16* dlogits, cudaStream_t stream) {
  QK_NVTX_FUNC();
  QK_REQUIRE(rows >= 0 && vocab > 0, "bad shape");
  QK_REQUIRE(rows < (int64_t{1} << 31), "too many rows for one grid");
  if (rows == 0) return;
  QK_REQUIRE(logits != nullptr && labels != nullptr, "null pointer");
  const bool vec = vocab % 8 == 0 && reinterpret_cast<uintptr_t>(logits) % 16 == 0 &&
                   (dlogits == nullptr || reinterpret_cast<uintptr_t>(dlogits) % 16 == 0);
  if (dlogits != nullptr) {
    QK_LAUNCH((cross_entropy_kernel<true>), dim3(static_cast<unsigned>(rows)), dim3(kThreads), 0, stream, logits,
              labels, vocab, dscale, loss, logprob, dlogits, vec);
  } else {
    QK_LAUNCH((cross_entropy_kernel<false>), dim3(static_cast<unsigned>(rows)), dim3(kThreads), 0, stream, logits,
              labels, vocab, dscale, loss, logprob, dlogits, vec);
  }
  QK_CHECK_LAUNCH();
}

}  // namespace qk
