// CPU twin of kernels/cuda/attention.cu: plain loops over examples, heads and rows. The forward
// walks the keys in tiles of 64 with the same online-softmax update as the kernel (qk/attention.h);
// the backward recomputes P from the saved lse as the kernel does. A sliding window starts the walk
// at the kernel's first key tile and masks the keys before the window inside it. Accumulation is in the element
// type of the core (fp32 behind the bf16 entry points, fp64 behind the double ones).
#include <algorithm>
#include <cmath>
#include <vector>

#include "qk/attention.h"
#include "qk/bf16_bits.h"
#include "qk/error.h"

namespace qk::cpu {
namespace {

constexpr int kKeyTile = 64;  // the kernel's K/V tile: same folding order in the online softmax

// One example: its query rows and key rows (row indices into q/o and k/v), offset = keys - queries.
struct Segment {
  int64_t q_start, q_len, k_start, k_len;
};

struct Dims {
  int heads, kv_heads, d;
  double scale;
  int window;  // 0: none
};

// First key a query at position `pos` (= its index + offset) sees.
int64_t first_visible_key(int64_t pos, int window) { return window > 0 ? std::max<int64_t>(0, pos - window + 1) : 0; }

void check_dims(int heads, int kv_heads, int head_dim) {
  QK_REQUIRE(heads > 0 && kv_heads > 0 && heads % kv_heads == 0, "kv_heads must divide heads");
  QK_REQUIRE(head_dim > 0, "head_dim must be positive");
}

std::vector<Segment> packed_segments(const int32_t* cu, const AttentionShape& s) {
  QK_REQUIRE(cu != nullptr && s.num_seqs >= 0, "bad cu_seqlens");
  QK_REQUIRE(cu[0] == 0 && cu[s.num_seqs] == s.total_tokens, "cu_seqlens must run from 0 to total_tokens");
  std::vector<Segment> segs;
  for (int b = 0; b < s.num_seqs; ++b) {
    const int64_t len = cu[b + 1] - cu[b];
    QK_REQUIRE(len >= 0 && len <= s.max_seqlen, "cu_seqlens not non-decreasing or an example exceeds max_seqlen");
    segs.push_back({cu[b], len, cu[b], len});
  }
  return segs;
}

template <typename T>
void forward_core(const T* q, const T* k, const T* v, T* o, T* lse, int64_t total_q, const std::vector<Segment>& segs,
                  const Dims& dm) {
  const int d = dm.d, group = dm.heads / dm.kv_heads;
  const int64_t qs = static_cast<int64_t>(dm.heads) * d, ks = static_cast<int64_t>(dm.kv_heads) * d;
  const T scale_log2 = static_cast<T>(dm.scale) * static_cast<T>(kAttentionLog2e);
  std::vector<T> acc(d), s2(kKeyTile);
  for (const Segment& sg : segs) {
    const int64_t offset = sg.k_len - sg.q_len;
    for (int h = 0; h < dm.heads; ++h) {
      const int kvh = h / group;
      for (int64_t i = 0; i < sg.q_len; ++i) {
        const T* qi = q + (sg.q_start + i) * qs + h * d;
        std::fill(acc.begin(), acc.end(), T(0));
        T m = -INFINITY, l = 0;
        const int64_t horizon = std::min(sg.k_len, i + offset + 1);  // keys [lo, horizon) are visible
        const int64_t lo = first_visible_key(i + offset, dm.window);
        for (int64_t j0 = lo / kKeyTile * kKeyTile; j0 < horizon; j0 += kKeyTile) {
          const int64_t n = std::min<int64_t>(kKeyTile, horizon - j0);
          T tile_max = -INFINITY;
          for (int64_t j = 0; j < n; ++j) {
            if (j0 + j < lo) {
              s2[j] = -INFINITY;
              continue;
            }
            const T* kj = k + (sg.k_start + j0 + j) * ks + kvh * d;
            T dot = 0;
            for (int c = 0; c < d; ++c) dot += qi[c] * kj[c];
            s2[j] = dot * scale_log2;
            tile_max = std::max(tile_max, s2[j]);
          }
          const T factor = online_softmax_update(&m, tile_max);
          l *= factor;
          for (auto& a : acc) a *= factor;
          const T shift = online_softmax_shift(m);
          for (int64_t j = 0; j < n; ++j) {
            if (j0 + j < lo) continue;
            const T p = attention_exp2(s2[j] - shift);
            l += p;
            const T* vj = v + (sg.k_start + j0 + j) * ks + kvh * d;
            for (int c = 0; c < d; ++c) acc[c] += p * vj[c];
          }
        }
        T* oi = o + (sg.q_start + i) * qs + h * d;
        for (int c = 0; c < d; ++c) oi[c] = acc[c] / l;
        if (lse != nullptr) lse[h * total_q + sg.q_start + i] = attention_lse(m, l);
      }
    }
  }
}

template <typename T>
void backward_core(const T* q, const T* k, const T* v, const T* o, const T* dout, const T* lse, T* dq, T* dk, T* dv,
                   int64_t total, const std::vector<Segment>& segs, const Dims& dm) {
  const int d = dm.d, group = dm.heads / dm.kv_heads;
  const int64_t qs = static_cast<int64_t>(dm.heads) * d, ks = static_cast<int64_t>(dm.kv_heads) * d;
  const T scale = static_cast<T>(dm.scale), scale_log2 = scale * static_cast<T>(kAttentionLog2e);
  std::fill(dq, dq + total * qs, T(0));
  std::fill(dk, dk + total * ks, T(0));
  std::fill(dv, dv + total * ks, T(0));
  for (const Segment& sg : segs) {
    const int64_t offset = sg.k_len - sg.q_len;
    for (int h = 0; h < dm.heads; ++h) {
      const int kvh = h / group;
      for (int64_t i = 0; i < sg.q_len; ++i) {
        const int64_t row = (sg.q_start + i) * qs + h * d;
        T delta = 0;
        for (int c = 0; c < d; ++c) delta += dout[row + c] * o[row + c];
        const T lse2 = lse[h * total + sg.q_start + i] * static_cast<T>(kAttentionLog2e);
        for (int64_t j = first_visible_key(i + offset, dm.window); j < sg.k_len; ++j) {
          if (!attention_visible(i, j, offset)) break;
          const int64_t krow = (sg.k_start + j) * ks + kvh * d;
          T dot = 0, dp = 0;
          for (int c = 0; c < d; ++c) {
            dot += q[row + c] * k[krow + c];
            dp += dout[row + c] * v[krow + c];
          }
          const T p = attention_exp2(dot * scale_log2 - lse2);
          const T ds = p * (dp - delta);
          for (int c = 0; c < d; ++c) {
            dq[row + c] += scale * ds * k[krow + c];
            dk[krow + c] += scale * ds * q[row + c];
            dv[krow + c] += p * dout[row + c];
          }
        }
      }
    }
  }
}

std::vector<float> widen(const uint16_t* x, size_t n) {
  std::vector<float> y(n);
  for (size_t i = 0; i < n; ++i) y[i] = bf16_to_f32(x[i]);
  return y;
}

void narrow(const std::vector<float>& x, uint16_t* y) {
  for (size_t i = 0; i < x.size(); ++i) y[i] = f32_to_bf16_rn(x[i]);
}

// The bf16 entry points use the kernels' fp32 scale; the fp64 ones the exact 1 / sqrt(head_dim).
Dims dims_of(const AttentionShape& s, bool fp64) {
  check_dims(s.heads, s.kv_heads, s.head_dim);
  QK_REQUIRE(s.total_tokens >= 0, "negative total_tokens");
  QK_REQUIRE(s.window >= 0, "negative window");
  const double exact = s.scale != 0 ? s.scale : 1.0 / std::sqrt(static_cast<double>(s.head_dim));
  return {s.heads, s.kv_heads, s.head_dim, fp64 ? exact : attention_scale(s.scale, s.head_dim), s.window};
}

}  // namespace

void attention_forward(const uint16_t* q, const uint16_t* k, const uint16_t* v, uint16_t* o, float* lse,
                       const int32_t* cu_seqlens, const AttentionShape& s) {
  const Dims dm = dims_of(s, false);
  const auto segs = packed_segments(cu_seqlens, s);
  const size_t nq = static_cast<size_t>(s.total_tokens) * s.heads * s.head_dim;
  const size_t nk = static_cast<size_t>(s.total_tokens) * s.kv_heads * s.head_dim;
  const auto qf = widen(q, nq), kf = widen(k, nk), vf = widen(v, nk);
  std::vector<float> of(nq);
  forward_core(qf.data(), kf.data(), vf.data(), of.data(), lse, s.total_tokens, segs, dm);
  narrow(of, o);
}

void attention_forward(const double* q, const double* k, const double* v, double* o, double* lse,
                       const int32_t* cu_seqlens, const AttentionShape& s) {
  forward_core(q, k, v, o, lse, s.total_tokens, packed_segments(cu_seqlens, s), dims_of(s, true));
}

void attention_backward(const uint16_t* q, const uint16_t* k, const uint16_t* v, const uint16_t* o,
                        const uint16_t* dout, const float* lse, uint16_t* dq, uint16_t* dk, uint16_t* dv,
                        const int32_t* cu_seqlens, const AttentionShape& s) {
  const Dims dm = dims_of(s, false);
  const auto segs = packed_segments(cu_seqlens, s);
  const size_t nq = static_cast<size_t>(s.total_tokens) * s.heads * s.head_dim;
  const size_t nk = static_cast<size_t>(s.total_tokens) * s.kv_heads * s.head_dim;
  const auto qf = widen(q, nq), kf = widen(k, nk), vf = widen(v, nk), of = widen(o, nq), dof = widen(dout, nq);
  std::vector<float> dqf(nq), dkf(nk), dvf(nk);
  backward_core(qf.data(), kf.data(), vf.data(), of.data(), dof.data(), lse, dqf.data(), dkf.data(), dvf.data(),
                s.total_tokens, segs, dm);
  narrow(dqf, dq);
  narrow(dkf, dk);
  narrow(dvf, dv);
}

void attention_backward(const double* q, const double* k, const double* v, const double* o, const double* dout,
                        const double* lse, double* dq, double* dk, double* dv, const int32_t* cu_seqlens,
                        const AttentionShape& s) {
  backward_core(q, k, v, o, dout, lse, dq, dk, dv, s.total_tokens, packed_segments(cu_seqlens, s), dims_of(s, true));
}

void attention_decode_forward(const uint16_t* q, const uint16_t* k_cache, const uint16_t* v_cache, uint16_t* o,
                              float* lse, const int32_t* cu_seqlens_q, const int32_t* seqlens_k,
                              const AttentionDecodeShape& s) {
  check_dims(s.heads, s.kv_heads, s.head_dim);
  QK_REQUIRE(cu_seqlens_q != nullptr && seqlens_k != nullptr, "null cu_seqlens_q / seqlens_k");
  QK_REQUIRE(cu_seqlens_q[0] == 0 && cu_seqlens_q[s.num_seqs] == s.total_q, "cu_seqlens_q must run 0..total_q");
  std::vector<Segment> segs;
  for (int b = 0; b < s.num_seqs; ++b) {
    const int64_t n = cu_seqlens_q[b + 1] - cu_seqlens_q[b], len = seqlens_k[b];
    QK_REQUIRE(n >= 0 && n <= s.max_seqlen_q, "bad cu_seqlens_q");
    QK_REQUIRE(len >= n && len <= s.cache_capacity && len <= s.max_seqlen_k, "need n_b <= L_b <= capacity");
    segs.push_back({cu_seqlens_q[b], n, b * s.cache_capacity, len});
  }
  QK_REQUIRE(s.window >= 0, "negative window");
  const Dims dm{s.heads, s.kv_heads, s.head_dim, attention_scale(s.scale, s.head_dim), s.window};
  const size_t nq = static_cast<size_t>(s.total_q) * s.heads * s.head_dim;
  const size_t nk = static_cast<size_t>(s.num_seqs) * s.cache_capacity * s.kv_heads * s.head_dim;
  const auto qf = widen(q, nq), kf = widen(k_cache, nk), vf = widen(v_cache, nk);
  std::vector<float> of(nq);
  forward_core(qf.data(), kf.data(), vf.data(), of.data(), lse, s.total_q, segs, dm);
  narrow(of, o);
}

}  // namespace qk::cpu
