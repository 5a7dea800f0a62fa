// Cross-entropy over rows of bf16 logits, fused with its gradient: for each row (a token) with
// label y (or -100 = ignored), lse = log sum_j exp(x_j), loss = lse - x_y, logprob = x_y - lse,
// and dlogits_j = (softmax_j - [j == y]) * dscale, written over the logits in place on the GPU so
// a chunk of logits never needs a second buffer. Ignored rows get loss 0, logprob 0, dlogits 0.
// dscale is usually 1 / (number of unmasked tokens in the batch) for a mean loss.
#pragma once
#include <cmath>
#include <cstddef>
#include <cstdint>

#include "qk/hd.h"

namespace qk {

constexpr int32_t kIgnoreIndex = -100;

// Running (max, sum of exp(x - max)) of a softmax, merged in any order.
struct SoftmaxStat {
  float max;
  float sum;
};

QK_HD SoftmaxStat softmax_stat_add(SoftmaxStat s, float x) {
  if (x <= s.max) return {s.max, s.sum + expf(x - s.max)};
  return {x, s.sum * expf(s.max - x) + 1.0f};
}

QK_HD SoftmaxStat softmax_stat_merge(SoftmaxStat a, SoftmaxStat b) {
  if (b.sum == 0.0f) return a;
  if (a.sum == 0.0f) return b;
  if (a.max >= b.max) return {a.max, a.sum + b.sum * expf(b.max - a.max)};
  return {b.max, b.sum + a.sum * expf(a.max - b.max)};
}

}  // namespace qk

namespace qk::cpu {
// logits and dlogits are bf16 bits, [rows, vocab]; dlogits may be null (forward only) and may
// equal logits. loss and logprob are [rows] (either may be null).
void cross_entropy(const uint16_t* logits, const int32_t* labels, int64_t rows, int64_t vocab, float dscale,
                   float* loss, float* logprob, uint16_t* dlogits);
}  // namespace qk::cpu

#if __has_include(<cuda_runtime.h>)
#include <cuda_bf16.h>
#include <cuda_runtime.h>
namespace qk {
// Same contract on the device; dlogits may be null or equal to logits (in place).
void cross_entropy(const __nv_bfloat16* logits, const int32_t* labels, int64_t rows, int64_t vocab, float dscale,
                   float* loss, float* logprob, __nv_bfloat16* dlogits, cudaStream_t stream);
}  // namespace qk
#endif
