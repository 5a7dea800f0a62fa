// Causal attention on the CPU in fp32 with GQA and segment masks: a plain [T x T] score matrix per
// row and head, fine for the tiny models this backend runs. Query i of a row attends key j when
// j <= i and both tokens have the same non-zero segment id; a padding query (segment 0) attends only
// itself, which keeps its softmax defined (nothing reads it and it carries no label). With a sliding
// window W (Mistral) it also needs i - j < W: at most W keys ending at itself, counted within the
// example (packed examples start their own windows, since their tokens are contiguous in the row).
// Layouts: q [B*T, heads*head_dim], k and v [B*T, kv_heads*head_dim], out like q,
// probs [B, heads, T, T] (kept for the backward).
#pragma once
#include <cstdint>

namespace qtrain::model::cpu {

struct AttentionShape {
  int64_t rows = 0;
  int64_t seq = 0;
  int64_t heads = 0;
  int64_t kv_heads = 0;
  int64_t head_dim = 0;
  int64_t window = 0;  // > 0: sliding window of that many keys; 0: full causal
};

void attention_forward(const AttentionShape& s, const float* q, const float* k, const float* v,
                       const int32_t* segment_ids, float* out, float* probs);
// dq, dk, dv are written, not accumulated.
void attention_backward(const AttentionShape& s, const float* q, const float* k, const float* v,
                        const int32_t* segment_ids, const float* probs, const float* dout, float* dq, float* dk,
                        float* dv);

}  // namespace qtrain::model::cpu
