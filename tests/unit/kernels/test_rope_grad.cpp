// Finite-difference check, in fp64, of the RoPE CPU backward (the reference the CUDA backward is
// compared with): L = sum(cq * rope(q)) + sum(ck * rope(k)) over GQA heads, packed positions and
// llama3-scaled frequencies; and the bf16 entry points against the fp64 ones.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "qk/bf16_bits.h"
#include "qk/rope.h"

namespace {

std::vector<double> wave(size_t n, double a, double b) {
  std::vector<double> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = std::sin(a * static_cast<double>(i) + b);
  return v;
}

TEST(RopeGrad, BackwardMatchesFiniteDifferences) {
  const int64_t tokens = 4;
  const int heads = 3, kv_heads = 1, d = 10;
  qk::RopeConfig cfg;
  cfg.theta = 500000.0;
  cfg.llama3 = true;
  cfg.original_max_position = 64;  // puts some of the 5 frequencies in each llama3 regime
  const auto freqs = qk::rope_freqs(cfg, d);
  const std::vector<int32_t> pos = {0, 1, 0, 977};
  const size_t nq = tokens * heads * d, nk = tokens * kv_heads * d;
  const auto q = wave(nq, 0.31, 0.2), k = wave(nk, 0.83, 1.4);
  const auto cq = wave(nq, 0.57, 0.9), ck = wave(nk, 0.29, 0.6);
  auto loss = [&](std::vector<double> qv, std::vector<double> kv) {
    qk::cpu::rope_forward(qv.data(), kv.data(), pos.data(), tokens, heads, kv_heads, freqs);
    double s = 0;
    for (size_t i = 0; i < nq; ++i) s += cq[i] * qv[i];
    for (size_t i = 0; i < nk; ++i) s += ck[i] * kv[i];
    return s;
  };
  auto dq = cq, dk = ck;
  qk::cpu::rope_backward(dq.data(), dk.data(), pos.data(), tokens, heads, kv_heads, freqs);
  const double h = 1e-6;
  for (size_t i = 0; i < nq; ++i) {
    auto p = q, m = q;
    p[i] += h, m[i] -= h;
    const double fd = (loss(p, k) - loss(m, k)) / (2 * h);
    EXPECT_NEAR(dq[i], fd, 1e-8) << "dq " << i;
  }
  for (size_t i = 0; i < nk; ++i) {
    auto p = k, m = k;
    p[i] += h, m[i] -= h;
    const double fd = (loss(q, p) - loss(q, m)) / (2 * h);
    EXPECT_NEAR(dk[i], fd, 1e-8) << "dk " << i;
  }
}

TEST(RopeGrad, Bf16TwinAgreesWithFp64) {
  const int64_t tokens = 3;
  const int heads = 2, d = 6;
  const auto freqs = qk::rope_freqs(qk::RopeConfig{}, d);
  const std::vector<int32_t> pos = {5, 0, 123};
  const size_t n = tokens * heads * d;
  const auto src = wave(n, 0.71, 0.3);
  std::vector<uint16_t> qb(n);
  std::vector<double> q(n);
  for (size_t i = 0; i < n; ++i) qb[i] = qk::f32_to_bf16_rn(static_cast<float>(src[i])), q[i] = qk::bf16_to_f32(qb[i]);
  auto qb2 = qb;
  auto q2 = q;
  qk::cpu::rope_forward(qb.data(), nullptr, pos.data(), tokens, heads, 0, freqs);
  qk::cpu::rope_forward(q.data(), nullptr, pos.data(), tokens, heads, 0, freqs);
  qk::cpu::rope_backward(qb2.data(), nullptr, pos.data(), tokens, heads, 0, freqs);
  qk::cpu::rope_backward(q2.data(), nullptr, pos.data(), tokens, heads, 0, freqs);
  for (size_t i = 0; i < n; ++i) {
    EXPECT_NEAR(qk::bf16_to_f32(qb[i]), q[i], 4e-3 * std::abs(q[i]) + 1e-30) << i;
    EXPECT_NEAR(qk::bf16_to_f32(qb2[i]), q2[i], 4e-3 * std::abs(q2[i]) + 1e-30) << i;
  }
}

}  // namespace
