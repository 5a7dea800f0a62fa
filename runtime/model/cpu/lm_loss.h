// The LM head and per-token log-probabilities on the CPU: logits = h W^T for a chunk of tokens at a
// time (never all [tokens x vocab] at once), log p(label) = logit[label] - logsumexp(logits), with
// the log-sum-exp in double. The backward recomputes each chunk's logits from h and the kept
// log-sum-exp.
#pragma once
#include <cstdint>

namespace qtrain::model::cpu {

struct LmHeadShape {
  int64_t tokens = 0;
  int64_t hidden = 0;
  int64_t vocab = 0;
};

// token_logp [tokens] gets log p(label), 0 where the label is -100; lse [tokens] is kept for the
// backward.
void lm_logprobs_forward(const LmHeadShape& s, const float* h, const float* head, const int32_t* labels,
                         float* token_logp, float* lse);
// dh [tokens, hidden] = d/dh of sum_t dlogp[t] * log p_t(label_t); written, not accumulated.
// dhead [vocab, hidden], when given (full fine-tuning), accumulates the head's gradient dZ^T h.
void lm_logprobs_backward(const LmHeadShape& s, const float* h, const float* head, const int32_t* labels,
                          const float* lse, const float* dlogp, float* dh, float* dhead = nullptr);

}  // namespace qtrain::model::cpu
