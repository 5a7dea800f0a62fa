// Causal attention, softmax(Q K^T * scale) V, flash-attention style: K/V tiles stream through
// shared memory with an online softmax, so the [T x T] scores never reach global memory and memory
// grows with T. Grouped-query attention (query head h reads KV head h / (heads / kv_heads)),
// head_dim 64, 80, 96 or 128, bf16 in and out, fp32 accumulation and statistics.
//
// Layout (what the Llama block has after the fused QKV projection, token-major):
//   q, o  [total_tokens, heads,    head_dim]   bf16, row = one token
//   k, v  [total_tokens, kv_heads, head_dim]   bf16
//   lse   [heads, total_tokens]                fp32, natural log of sum_j exp(scale * q.k_j), saved
//                                              by the forward for the backward
// Variable length: the rows hold num_seqs examples back to back; example b is tokens
// [cu_seqlens[b], cu_seqlens[b+1]) (int32, num_seqs + 1 entries, cu_seqlens[0] = 0, non-decreasing,
// cu_seqlens[num_seqs] = total_tokens; empty examples are allowed). A token attends to the tokens
// of its own example up to itself, never across a boundary. max_seqlen must be at least every
// example's length (it sizes the grid; the kernels trust cu_seqlens, which lives on the device).
//
// Sliding window (Mistral): with window W > 0, query i of an example sees keys j with
// i - W < j <= i, at most W keys ending at itself (transformers' sliding-window causal mask; the
// index is the position within the example). Key tiles wholly outside every row's window are
// skipped, so the work grows as T * W rather than T^2. A window of at least max_seqlen masks
// nothing and runs the plain causal path.
//
// Padded batches [B, S] with per-row lengths len_b go through the same path: pass
// cu_seqlens = {0, len_0, S, S + len_1, 2S, ..., (B-1)S + len_{B-1}, BS} (2B sequences), so each
// row's padding is an example of its own (attention_padded_cu_seqlens builds it). Real tokens see
// only their row's real tokens, every output row is written (pads attend among themselves) and no
// work is spent on pads attending to real tokens. A right-padded batch with all-causal use may also
// simply pass {0, S, 2S, ...}: causally, real tokens never see the padding behind them.
//
// Backward (FlashAttention-2): delta = rowsum(dO * O) first, then P is recomputed from Q, K and the
// saved lse. It is always deterministic: one kernel owns each KV tile and loops over the query
// heads of its group and the query tiles (dK, dV summed in registers), another owns each query tile
// and loops over the key tiles (dQ); no atomics, at the price of recomputing Q K^T and dO V^T twice.
//
// Decode: n_b new query tokens of example b against a K/V cache holding L_b >= n_b tokens (the new
// ones already appended), the new queries sitting at positions L_b - n_b .. L_b - 1 (causal,
// aligned to the end of the cache). Forward only. With a window W the query at position p sees
// cache rows p - W < j <= p, so keys before L_b - n_b + 1 - W are never read.
#pragma once
#include <cmath>
#include <cstdint>
#include <vector>

#include "qk/hd.h"

namespace qk {

struct AttentionShape {
  int64_t total_tokens = 0;  // rows of q, k, v, o
  int num_seqs = 0;          // cu_seqlens has num_seqs + 1 entries
  int max_seqlen = 0;        // >= cu_seqlens[b + 1] - cu_seqlens[b] for every b
  int heads = 0;
  int kv_heads = 0;          // divides heads
  int head_dim = 0;          // 64, 80, 96 or 128
  float scale = 0;           // softmax scale; 0 means 1 / sqrt(head_dim)
  int window = 0;            // > 0: a query sees at most `window` keys ending at itself; 0: full causal
};

// Decode: q, o [total_q, heads, head_dim] packed by cu_seqlens_q (n_b tokens each);
// k_cache, v_cache [num_seqs, cache_capacity, kv_heads, head_dim]; seqlens_k[b] = L_b
// (n_b <= L_b <= cache_capacity); lse (optional) [heads, total_q].
struct AttentionDecodeShape {
  int64_t total_q = 0;
  int num_seqs = 0;
  int max_seqlen_q = 0;        // >= every n_b
  int64_t cache_capacity = 0;  // rows per example in the cache
  int max_seqlen_k = 0;        // >= every L_b
  int heads = 0;
  int kv_heads = 0;
  int head_dim = 0;
  float scale = 0;  // 0 means 1 / sqrt(head_dim)
  int window = 0;   // as AttentionShape::window, on positions in the cache
};

inline float attention_scale(float scale, int head_dim) {
  return scale != 0 ? scale : 1.0f / std::sqrt(static_cast<float>(head_dim));
}

// cu_seqlens for a padded batch [batch, padded_len] with lengths[b] real tokens in row b (see above).
inline std::vector<int32_t> attention_padded_cu_seqlens(const std::vector<int32_t>& lengths, int32_t padded_len) {
  std::vector<int32_t> cu{0};
  for (size_t b = 0; b < lengths.size(); ++b) {
    cu.push_back(static_cast<int32_t>(b) * padded_len + lengths[b]);
    cu.push_back(static_cast<int32_t>(b + 1) * padded_len);
  }
  return cu;
}

// ---- Logic shared by the kernels and the CPU twin. Scores are kept in the log2 domain,
// s2 = scale * log2(e) * q.k, so that every exponential is one exp2.

constexpr double kAttentionLog2e = 1.4426950408889634074;  // kernels use it as float

QK_HD float attention_exp2(float x) { return exp2f(x); }
QK_HD double attention_exp2(double x) { return exp2(x); }
QK_HD float attention_log2(float x) { return log2f(x); }
QK_HD double attention_log2(double x) { return log2(x); }

// Key k_index of an example is visible to its query q_index, where `offset` = keys - queries of the
// example (0 in training; L - n in decode, aligning the queries to the end of the keys).
QK_HD bool attention_visible(int64_t q_index, int64_t k_index, int64_t offset) { return k_index <= q_index + offset; }

// The same with a sliding window of `window` keys (> 0): also k_index > position - window.
QK_HD bool attention_visible(int64_t q_index, int64_t k_index, int64_t offset, int64_t window) {
  return k_index <= q_index + offset && q_index + offset - k_index < window;
}

// The window a kernel must apply: 0 (none) when it cannot mask anything, i.e. when it is at least
// the longest key range, so such a call runs the plain causal path.
inline int attention_effective_window(int window, int64_t max_keys) {
  return window > 0 && window < max_keys ? window : 0;
}

// Online softmax: folding a tile whose largest score is tile_max into a row whose running maximum
// is *m; returns the factor the running sum and output accumulator must be multiplied by. A row
// that has seen only masked scores (-inf) has nothing to rescale.
template <typename T>
QK_HD T online_softmax_update(T* m, T tile_max) {
  const T m_new = *m > tile_max ? *m : tile_max;
  const T factor = *m == -INFINITY ? T(0) : attention_exp2(*m - m_new);
  *m = m_new;
  return factor;
}

// What each score of the row is shifted by before exp2: the running maximum, or 0 while it is
// -inf (every score so far masked), which keeps exp2(-inf - shift) = 0 instead of NaN.
template <typename T>
QK_HD T online_softmax_shift(T m) {
  return m == -INFINITY ? T(0) : m;
}

// Natural-log log-sum-exp of a finished row from its log2-domain maximum and sum.
template <typename T>
QK_HD T attention_lse(T m, T l) {
  return (m + attention_log2(l)) / static_cast<T>(kAttentionLog2e);
}

}  // namespace qk

namespace qk::cpu {
// The CPU twins: plain loops, fp32 accumulation (the bf16 entry points) or fp64 throughout (the
// double ones, for finite differences). Pointers are host pointers, same layouts as the kernels.
void attention_forward(const uint16_t* q, const uint16_t* k, const uint16_t* v, uint16_t* o, float* lse,
                       const int32_t* cu_seqlens, const AttentionShape& shape);
void attention_forward(const double* q, const double* k, const double* v, double* o, double* lse,
                       const int32_t* cu_seqlens, const AttentionShape& shape);
void attention_backward(const uint16_t* q, const uint16_t* k, const uint16_t* v, const uint16_t* o,
                        const uint16_t* dout, const float* lse, uint16_t* dq, uint16_t* dk, uint16_t* dv,
                        const int32_t* cu_seqlens, const AttentionShape& shape);
void attention_backward(const double* q, const double* k, const double* v, const double* o, const double* dout,
                        const double* lse, double* dq, double* dk, double* dv, const int32_t* cu_seqlens,
                        const AttentionShape& shape);
void attention_decode_forward(const uint16_t* q, const uint16_t* k_cache, const uint16_t* v_cache, uint16_t* o,
                              float* lse, const int32_t* cu_seqlens_q, const int32_t* seqlens_k,
                              const AttentionDecodeShape& shape);
}  // namespace qk::cpu

#if __has_include(<cuda_runtime.h>)
#include <cuda_bf16.h>
#include <cuda_runtime.h>
namespace qk {
// o and lse (lse may be null when no backward follows). Device pointers, 16-byte aligned.
void attention_forward(const __nv_bfloat16* q, const __nv_bfloat16* k, const __nv_bfloat16* v, __nv_bfloat16* o,
                       float* lse, const int32_t* cu_seqlens, const AttentionShape& shape, cudaStream_t stream);

// dq, dk, dv (every element written; dk/dv summed over the query heads of each KV head).
// delta is scratch of heads * total_tokens floats.
void attention_backward(const __nv_bfloat16* q, const __nv_bfloat16* k, const __nv_bfloat16* v,
                        const __nv_bfloat16* o, const __nv_bfloat16* dout, const float* lse, __nv_bfloat16* dq,
                        __nv_bfloat16* dk, __nv_bfloat16* dv, float* delta, const int32_t* cu_seqlens,
                        const AttentionShape& shape, cudaStream_t stream);

// o (and lse if not null) for the new tokens; see AttentionDecodeShape for the layouts.
void attention_decode_forward(const __nv_bfloat16* q, const __nv_bfloat16* k_cache, const __nv_bfloat16* v_cache,
                              __nv_bfloat16* o, float* lse, const int32_t* cu_seqlens_q, const int32_t* seqlens_k,
                              const AttentionDecodeShape& shape, cudaStream_t stream);
}  // namespace qk
#endif
