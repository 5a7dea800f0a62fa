// Attention forward and backward (see attention.h). Dot products and softmax sums accumulate in
// double; stored values are fp32.
#include "runtime/model/cpu/attention.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

namespace qtrain::model::cpu {

namespace {
bool allowed(const int32_t* seg_row, int64_t i, int64_t j, int64_t window) {
  if (seg_row[i] == 0) return i == j;
  return j <= i && seg_row[j] == seg_row[i] && (window <= 0 || i - j < window);
}
}  // namespace

void attention_forward(const AttentionShape& s, const float* q, const float* k, const float* v,
                       const int32_t* segment_ids, float* out, float* probs) {
  const int64_t T = s.seq, D = s.head_dim, group = s.heads / s.kv_heads;
  const int64_t qs = s.heads * D, ks = s.kv_heads * D;
  const double scale = 1.0 / std::sqrt(static_cast<double>(D));
  std::vector<double> sc(static_cast<size_t>(T));
  for (int64_t b = 0; b < s.rows; ++b) {
    const int32_t* seg = segment_ids + b * T;
    for (int64_t h = 0; h < s.heads; ++h) {
      const int64_t kh = h / group;
      for (int64_t i = 0; i < T; ++i) {
        const float* qi = q + (b * T + i) * qs + h * D;
        double mx = -std::numeric_limits<double>::infinity();
        for (int64_t j = 0; j < T; ++j) {
          if (!allowed(seg, i, j, s.window)) continue;
          const float* kj = k + (b * T + j) * ks + kh * D;
          double dot = 0.0;
          for (int64_t d = 0; d < D; ++d) dot += static_cast<double>(qi[d]) * kj[d];
          sc[static_cast<size_t>(j)] = dot * scale;
          mx = std::max(mx, sc[static_cast<size_t>(j)]);
        }
        double sum = 0.0;
        for (int64_t j = 0; j < T; ++j) {
          if (!allowed(seg, i, j, s.window)) continue;
          sc[static_cast<size_t>(j)] = std::exp(sc[static_cast<size_t>(j)] - mx);
          sum += sc[static_cast<size_t>(j)];
        }
        float* p = probs + ((b * s.heads + h) * T + i) * T;
        for (int64_t j = 0; j < T; ++j)
          p[j] = allowed(seg, i, j, s.window) ? static_cast<float>(sc[static_cast<size_t>(j)] / sum) : 0.0f;
        float* o = out + (b * T + i) * qs + h * D;
        for (int64_t d = 0; d < D; ++d) {
          double acc = 0.0;
          for (int64_t j = 0; j <= i; ++j) acc += static_cast<double>(p[j]) * v[(b * T + j) * ks + kh * D + d];
          o[d] = static_cast<float>(acc);
        }
      }
    }
  }
}

void attention_backward(const AttentionShape& s, const float* q, const float* k, const float* v,
                        const int32_t* segment_ids, const float* probs, const float* dout, float* dq, float* dk,
                        float* dv) {
  const int64_t T = s.seq, D = s.head_dim, group = s.heads / s.kv_heads;
  const int64_t qs = s.heads * D, ks = s.kv_heads * D;
  const double scale = 1.0 / std::sqrt(static_cast<double>(D));
  std::fill(dq, dq + s.rows * T * qs, 0.0f);
  std::fill(dk, dk + s.rows * T * ks, 0.0f);
  std::fill(dv, dv + s.rows * T * ks, 0.0f);
  std::vector<double> dp(static_cast<size_t>(T));
  for (int64_t b = 0; b < s.rows; ++b) {
    const int32_t* seg = segment_ids + b * T;
    for (int64_t h = 0; h < s.heads; ++h) {
      const int64_t kh = h / group;
      for (int64_t i = 0; i < T; ++i) {
        const float* p = probs + ((b * s.heads + h) * T + i) * T;
        const float* doi = dout + (b * T + i) * qs + h * D;
        // dP_ij = dO_i . V_j; dS_ij = P_ij (dP_ij - sum_j P_ij dP_ij)
        double row = 0.0;
        for (int64_t j = 0; j <= i; ++j) {
          if (!allowed(seg, i, j, s.window)) continue;
          const float* vj = v + (b * T + j) * ks + kh * D;
          double acc = 0.0;
          for (int64_t d = 0; d < D; ++d) acc += static_cast<double>(doi[d]) * vj[d];
          dp[static_cast<size_t>(j)] = acc;
          row += acc * p[j];
          float* dvj = dv + (b * T + j) * ks + kh * D;
          for (int64_t d = 0; d < D; ++d) dvj[d] += p[j] * doi[d];
        }
        const float* qi = q + (b * T + i) * qs + h * D;
        float* dqi = dq + (b * T + i) * qs + h * D;
        for (int64_t j = 0; j <= i; ++j) {
          if (!allowed(seg, i, j, s.window)) continue;
          const float ds = static_cast<float>(p[j] * (dp[static_cast<size_t>(j)] - row) * scale);
          const float* kj = k + (b * T + j) * ks + kh * D;
          float* dkj = dk + (b * T + j) * ks + kh * D;
          for (int64_t d = 0; d < D; ++d) {
            dqi[d] += ds * kj[d];
            dkj[d] += ds * qi[d];
          }
        }
      }
    }
  }
}

}  // namespace qtrain::model::cpu
