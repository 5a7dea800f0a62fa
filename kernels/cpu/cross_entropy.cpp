// CPU twin of kernels/cuda/cross_entropy.cu: the same softmax statistics, one row at a time.
#include "qk/cross_entropy.h"

#include <vector>

#include "qk/bf16_bits.h"
#include "qk/error.h"

namespace qk::cpu {

void cross_entropy(const uint16_t* logits, const int32_t* labels, int64_t rows, int64_t vocab, float dscale,
                   float* loss, float* logprob, uint16_t* dlogits) {
  QK_REQUIRE(rows >= 0 && vocab > 0, "bad shape");
  for (int64_t r = 0; r < rows; ++r) {
    const uint16_t* x = logits + r * vocab;
    const int32_t y = labels[r];
    QK_REQUIRE(y == kIgnoreIndex || (y >= 0 && y < vocab), "label out of range");
    uint16_t* d = dlogits != nullptr ? dlogits + r * vocab : nullptr;
    if (y == kIgnoreIndex) {
      if (loss != nullptr) loss[r] = 0.0f;
      if (logprob != nullptr) logprob[r] = 0.0f;
      if (d != nullptr)
        for (int64_t j = 0; j < vocab; ++j) d[j] = 0;
      continue;
    }
    SoftmaxStat s{-INFINITY, 0.0f};
    for (int64_t j = 0; j < vocab; ++j) s = softmax_stat_add(s, bf16_to_f32(x[j]));
    const float lse = s.max + logf(s.sum);
    const float xy = bf16_to_f32(x[y]);
    if (loss != nullptr) loss[r] = lse - xy;
    if (logprob != nullptr) logprob[r] = xy - lse;
    if (d != nullptr)
      for (int64_t j = 0; j < vocab; ++j) {
        const float p = expf(bf16_to_f32(x[j]) - lse);
        d[j] = f32_to_bf16_rn((p - (j == y ? 1.0f : 0.0f)) * dscale);
      }
  }
}

}  // namespace qk::cpu
