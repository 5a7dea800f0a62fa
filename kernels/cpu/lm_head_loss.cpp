// CPU twin of kernels/cuda/lm_head_loss.cu: the same chunked schedule over the CPU matmul and
// cross-entropy twins (bf16 logits and dlogits, as on the GPU).
#include "qk/lm_head_loss.h"

#include <algorithm>
#include <vector>

#include "qk/cross_entropy.h"
#include "qk/error.h"
#include "qk/matmul.h"

namespace qk::cpu {

void lm_head_loss(const LmHeadShape& s, const uint16_t* hidden, const uint16_t* weight, const int32_t* labels,
                  float dscale, float* loss, float* logprob, uint16_t* dhidden, float* dweight) {
  QK_REQUIRE(s.tokens >= 0 && s.hidden > 0 && s.vocab > 0 && s.chunk_tokens > 0, "bad shape");
  std::vector<uint16_t> logits(lm_head_loss_workspace_bytes(s) / 2);
  const bool grad = dhidden != nullptr || dweight != nullptr;
  for (int64_t c0 = 0; c0 < s.tokens; c0 += s.chunk_tokens) {
    const int n = static_cast<int>(std::min(s.chunk_tokens, s.tokens - c0));
    const int h = static_cast<int>(s.hidden), v = static_cast<int>(s.vocab);
    const uint16_t* hc = hidden + c0 * s.hidden;
    matmul_bf16(GemmShape{false, true, n, v, h}, 1.0f, hc, weight, 0.0f, logits.data());
    cross_entropy(logits.data(), labels + c0, n, s.vocab, dscale, loss != nullptr ? loss + c0 : nullptr,
                  logprob != nullptr ? logprob + c0 : nullptr, grad ? logits.data() : nullptr);
    if (dhidden != nullptr)
      matmul_bf16(GemmShape{false, false, n, h, v}, 1.0f, logits.data(), weight, 0.0f, dhidden + c0 * s.hidden);
    if (dweight != nullptr)
      matmul_bf16_f32(GemmShape{true, false, v, h, n}, 1.0f, logits.data(), hc, 1.0f, dweight);
  }
}

}  // namespace qk::cpu
