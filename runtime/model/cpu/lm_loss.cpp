// LM head log-probabilities, chunked (see lm_loss.h).
#include "runtime/model/cpu/lm_loss.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "qk/matmul.h"
#include "runtime/model/batch.h"

namespace qtrain::model::cpu {

namespace {
constexpr int64_t kChunk = 64;
}

void lm_logprobs_forward(const LmHeadShape& s, const float* h, const float* head, const int32_t* labels,
                         float* token_logp, float* lse) {
  std::vector<float> logits(static_cast<size_t>(std::min(kChunk, s.tokens) * s.vocab));
  for (int64_t t0 = 0; t0 < s.tokens; t0 += kChunk) {
    const int64_t m = std::min(kChunk, s.tokens - t0);
    qk::cpu::matmul_f32({false, true, static_cast<int>(m), static_cast<int>(s.vocab), static_cast<int>(s.hidden)},
                        1.0f, h + t0 * s.hidden, head, 0.0f, logits.data());
    for (int64_t i = 0; i < m; ++i) {
      const float* z = logits.data() + i * s.vocab;
      const double mx = *std::max_element(z, z + s.vocab);
      double sum = 0.0;
      for (int64_t v = 0; v < s.vocab; ++v) sum += std::exp(static_cast<double>(z[v]) - mx);
      const double l = mx + std::log(sum);
      lse[t0 + i] = static_cast<float>(l);
      const int32_t lab = labels[t0 + i];
      token_logp[t0 + i] = lab == kIgnoreLabel ? 0.0f : static_cast<float>(static_cast<double>(z[lab]) - l);
    }
  }
}

void lm_logprobs_backward(const LmHeadShape& s, const float* h, const float* head, const int32_t* labels,
                          const float* lse, const float* dlogp, float* dh, float* dhead) {
  std::vector<float> logits(static_cast<size_t>(std::min(kChunk, s.tokens) * s.vocab));
  for (int64_t t0 = 0; t0 < s.tokens; t0 += kChunk) {
    const int64_t m = std::min(kChunk, s.tokens - t0);
    qk::cpu::matmul_f32({false, true, static_cast<int>(m), static_cast<int>(s.vocab), static_cast<int>(s.hidden)},
                        1.0f, h + t0 * s.hidden, head, 0.0f, logits.data());
    // d log p(label) / d z_v = [v == label] - softmax(z)_v, scaled by the token's weight
    for (int64_t i = 0; i < m; ++i) {
      float* z = logits.data() + i * s.vocab;
      const int32_t lab = labels[t0 + i];
      const float w = lab == kIgnoreLabel ? 0.0f : dlogp[t0 + i];
      const double l = lse[t0 + i];
      for (int64_t v = 0; v < s.vocab; ++v) {
        const double p = std::exp(static_cast<double>(z[v]) - l);
        z[v] = static_cast<float>(w * ((v == lab ? 1.0 : 0.0) - p));
      }
    }
    qk::cpu::matmul_f32({false, false, static_cast<int>(m), static_cast<int>(s.hidden), static_cast<int>(s.vocab)},
                        1.0f, logits.data(), head, 0.0f, dh + t0 * s.hidden);
    if (dhead) {
      qk::cpu::matmul_f32({true, false, static_cast<int>(s.vocab), static_cast<int>(s.hidden), static_cast<int>(m)},
                          1.0f, logits.data(), h + t0 * s.hidden, 1.0f, dhead);
    }
  }
}

}  // namespace qtrain::model::cpu
