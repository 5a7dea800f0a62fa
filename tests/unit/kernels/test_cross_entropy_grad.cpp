// Finite-difference checks (fp64) of the CPU twins' backward: cross-entropy's dlogits and the
// chunked LM head's dhidden and dweight. The twins take bf16 inputs, so the fp64 function is
// evaluated at those exact values; the tolerance reflects the bf16 rounding of the outputs.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "qk/bf16_bits.h"
#include "qk/cross_entropy.h"
#include "qk/lm_head_loss.h"

namespace {

std::vector<uint16_t> bf16_values(size_t n, uint64_t seed, float scale) {
  std::vector<uint16_t> v(n);
  uint64_t s = seed;
  for (auto& x : v) {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    const float u = static_cast<float>(s >> 40) / static_cast<float>(1ull << 24);
    x = qk::f32_to_bf16_rn(scale * (2 * u - 1) + (u > 0.5f ? 0.01f : -0.01f));
  }
  return v;
}

double ce_row(const std::vector<double>& x, int y) {
  double m = x[0];
  for (double v : x) m = std::max(m, v);
  double s = 0;
  for (double v : x) s += std::exp(v - m);
  return m + std::log(s) - x[static_cast<size_t>(y)];
}

double rel_err(const std::vector<double>& a, const std::vector<double>& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    num += (a[i] - b[i]) * (a[i] - b[i]);
    den += b[i] * b[i];
  }
  return std::sqrt(num / den);
}

TEST(CrossEntropyGrad, DlogitsMatchFiniteDifferences) {
  const int rows = 3, vocab = 29;
  const auto logits = bf16_values(rows * vocab, 7, 3.0f);
  const std::vector<int32_t> labels = {4, qk::kIgnoreIndex, 28};
  const float dscale = 0.5f;
  std::vector<uint16_t> d(logits.size());
  std::vector<float> loss(rows);
  qk::cpu::cross_entropy(logits.data(), labels.data(), rows, vocab, dscale, loss.data(), nullptr, d.data());
  std::vector<double> got, want;
  for (int r = 0; r < rows; ++r) {
    std::vector<double> x(vocab);
    for (int j = 0; j < vocab; ++j) x[j] = qk::bf16_to_f32(logits[r * vocab + j]);
    if (labels[r] == qk::kIgnoreIndex) {
      for (int j = 0; j < vocab; ++j) EXPECT_EQ(d[r * vocab + j], 0);
      continue;
    }
    EXPECT_NEAR(loss[r], ce_row(x, labels[r]), 1e-5);
    for (int j = 0; j < vocab; ++j) {
      const double h = 1e-6;
      auto xp = x, xm = x;
      xp[j] += h;
      xm[j] -= h;
      want.push_back(dscale * (ce_row(xp, labels[r]) - ce_row(xm, labels[r])) / (2 * h));
      got.push_back(qk::bf16_to_f32(d[r * vocab + j]));
    }
  }
  EXPECT_LT(rel_err(got, want), 5e-3);
}

// L(h, W) = dscale * sum_t CE(h_t W^T, y_t), evaluated in fp64.
double lm_loss(const std::vector<double>& h, const std::vector<double>& w, const std::vector<int32_t>& y, int t,
               int hd, int v, double dscale) {
  double total = 0;
  for (int i = 0; i < t; ++i) {
    if (y[i] == qk::kIgnoreIndex) continue;
    std::vector<double> logits(v, 0.0);
    for (int j = 0; j < v; ++j)
      for (int k = 0; k < hd; ++k) logits[j] += h[i * hd + k] * w[j * hd + k];
    total += ce_row(logits, y[i]);
  }
  return dscale * total;
}

TEST(LmHeadLossGrad, DhiddenAndDweightMatchFiniteDifferences) {
  const int t = 5, hd = 6, v = 11;
  const qk::LmHeadShape s{t, hd, v, 2};  // chunks of 2: 2 + 2 + 1
  const auto h16 = bf16_values(t * hd, 3, 1.0f);
  const auto w16 = bf16_values(v * hd, 4, 0.5f);
  const std::vector<int32_t> y = {1, 10, qk::kIgnoreIndex, 0, 7};
  const double dscale = 0.25;
  std::vector<float> loss(t), dw(v * hd, 0.0f);
  std::vector<uint16_t> dh(t * hd);
  qk::cpu::lm_head_loss(s, h16.data(), w16.data(), y.data(), static_cast<float>(dscale), loss.data(), nullptr,
                        dh.data(), dw.data());
  std::vector<double> h(h16.size()), w(w16.size());
  for (size_t i = 0; i < h.size(); ++i) h[i] = qk::bf16_to_f32(h16[i]);
  for (size_t i = 0; i < w.size(); ++i) w[i] = qk::bf16_to_f32(w16[i]);
  const double eps = 1e-6;
  std::vector<double> got, want;
  for (size_t i = 0; i < h.size(); ++i) {
    auto hp = h, hm = h;
    hp[i] += eps;
    hm[i] -= eps;
    want.push_back((lm_loss(hp, w, y, t, hd, v, dscale) - lm_loss(hm, w, y, t, hd, v, dscale)) / (2 * eps));
    got.push_back(qk::bf16_to_f32(dh[i]));
  }
  EXPECT_LT(rel_err(got, want), 2e-2);
  got.clear();
  want.clear();
  for (size_t i = 0; i < w.size(); ++i) {
    auto wp = w, wm = w;
    wp[i] += eps;
    wm[i] -= eps;
    want.push_back((lm_loss(h, wp, y, t, hd, v, dscale) - lm_loss(h, wm, y, t, hd, v, dscale)) / (2 * eps));
    got.push_back(dw[i]);
  }
  EXPECT_LT(rel_err(got, want), 2e-2);
}

TEST(LmHeadLoss, WorkspaceIsUnderTenPercentOfFullLogits) {
  // T = 8192 tokens, Llama-3 vocabulary: the memory criterion.
  const qk::LmHeadShape s{8192, 4096, 128256, 1024};
  const double full_fp32 = 8192.0 * 128256.0 * 4.0;
  EXPECT_LT(static_cast<double>(qk::lm_head_loss_workspace_bytes(s)), 0.10 * full_fp32);
  EXPECT_EQ(qk::lm_head_loss_workspace_bytes({5, 8, 100, 1024}), 5u * 100u * 2u);
}

}  // namespace
