// The attention CPU twin (the reference the CUDA kernels are compared with): its fp64 forward
// against a plain softmax written here, a finite-difference check of its fp64 backward (GQA, packed
// examples, an empty one), the bf16 entry points against fp64, and the decode twin against the
// forward over the whole sequence; the same with sliding windows.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "qk/attention.h"
#include "qk/bf16_bits.h"

namespace {

std::vector<double> wave(size_t n, double a, double b) {
  std::vector<double> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = std::sin(a * static_cast<double>(i) + b);
  return v;
}

qk::AttentionShape shape_of(const std::vector<int32_t>& cu, int heads, int kv_heads, int d) {
  qk::AttentionShape s;
  s.total_tokens = cu.back();
  s.num_seqs = static_cast<int>(cu.size()) - 1;
  for (size_t b = 0; b + 1 < cu.size(); ++b) s.max_seqlen = std::max(s.max_seqlen, cu[b + 1] - cu[b]);
  s.heads = heads;
  s.kv_heads = kv_heads;
  s.head_dim = d;
  return s;
}

// softmax over the causal row (keys i - window < j <= i with a window) with an explicit max, in
// fp64: no tiles, no online update.
void plain_forward(const std::vector<double>& q, const std::vector<double>& k, const std::vector<double>& v,
                   std::vector<double>& o, std::vector<double>& lse, const std::vector<int32_t>& cu,
                   const qk::AttentionShape& s) {
  const int d = s.head_dim, group = s.heads / s.kv_heads;
  const double scale = 1.0 / std::sqrt(static_cast<double>(d));
  o.assign(q.size(), 0.0);
  lse.assign(static_cast<size_t>(s.total_tokens) * s.heads, 0.0);
  for (size_t b = 0; b + 1 < cu.size(); ++b)
    for (int h = 0; h < s.heads; ++h)
      for (int32_t i = cu[b]; i < cu[b + 1]; ++i) {
        std::vector<double> sc;
        const int32_t j0 = s.window > 0 ? std::max(cu[b], i - s.window + 1) : cu[b];
        for (int32_t j = j0; j <= i; ++j) {
          double dot = 0;
          for (int c = 0; c < d; ++c) dot += q[(i * s.heads + h) * d + c] * k[(j * s.kv_heads + h / group) * d + c];
          sc.push_back(dot * scale);
        }
        const double mx = *std::max_element(sc.begin(), sc.end());
        double sum = 0;
        for (double x : sc) sum += std::exp(x - mx);
        lse[h * s.total_tokens + i] = mx + std::log(sum);
        for (int32_t j = j0; j <= i; ++j)
          for (int c = 0; c < d; ++c)
            o[(i * s.heads + h) * d + c] += std::exp(sc[j - j0] - mx) / sum * v[(j * s.kv_heads + h / group) * d + c];
      }
}

TEST(AttentionCpu, Fp64ForwardMatchesPlainSoftmax) {
  // 70 tokens: the twin folds keys in tiles of 64, so the online update is exercised. Windows: none,
  // 1, under a tile (the walk starts at a later tile), not a tile multiple, longer than the examples.
  const std::vector<int32_t> cu = {0, 3, 3, 73, 80};
  for (const int window : {0, 1, 5, 66, 100}) {
    auto s = shape_of(cu, 4, 2, 16);
    s.window = window;
    const auto q = wave(80 * 4 * 16, 0.37, 0.1), k = wave(80 * 2 * 16, 0.71, 0.5), v = wave(80 * 2 * 16, 0.13, 0.9);
    std::vector<double> o(q.size()), lse(80 * 4), o_ref, lse_ref;
    qk::cpu::attention_forward(q.data(), k.data(), v.data(), o.data(), lse.data(), cu.data(), s);
    plain_forward(q, k, v, o_ref, lse_ref, cu, s);
    for (size_t i = 0; i < o.size(); ++i) ASSERT_NEAR(o[i], o_ref[i], 1e-12) << "window " << window << " " << i;
    for (size_t i = 0; i < lse.size(); ++i) ASSERT_NEAR(lse[i], lse_ref[i], 1e-12) << "window " << window << " " << i;
  }
}

class AttentionCpuFd : public ::testing::TestWithParam<int> {};  // the window (0: none)

TEST_P(AttentionCpuFd, Fp64BackwardMatchesFiniteDifferences) {
  // GQA 2, two examples and an empty one; L = sum(c * O), so dO = c.
  const std::vector<int32_t> cu = {0, 3, 3, 8};
  const int heads = 4, kv_heads = 2, d = 6;
  auto s = shape_of(cu, heads, kv_heads, d);
  s.scale = 0.7f;
  s.window = GetParam();
  const size_t nq = 8 * heads * d, nk = 8 * kv_heads * d;
  const auto q = wave(nq, 0.31, 0.2), k = wave(nk, 0.83, 1.4), v = wave(nk, 0.29, 0.6), c = wave(nq, 0.57, 0.9);
  auto loss = [&](const std::vector<double>& qv, const std::vector<double>& kv, const std::vector<double>& vv) {
    std::vector<double> o(nq), lse(8 * heads);
    qk::cpu::attention_forward(qv.data(), kv.data(), vv.data(), o.data(), lse.data(), cu.data(), s);
    double sum = 0;
    for (size_t i = 0; i < nq; ++i) sum += c[i] * o[i];
    return sum;
  };
  std::vector<double> o(nq), lse(8 * heads), dq(nq), dk(nk), dv(nk);
  qk::cpu::attention_forward(q.data(), k.data(), v.data(), o.data(), lse.data(), cu.data(), s);
  qk::cpu::attention_backward(q.data(), k.data(), v.data(), o.data(), c.data(), lse.data(), dq.data(), dk.data(),
                              dv.data(), cu.data(), s);
  const double h = 1e-6;
  for (size_t i = 0; i < nq; ++i) {
    auto p = q, m = q;
    p[i] += h, m[i] -= h;
    EXPECT_NEAR(dq[i], (loss(p, k, v) - loss(m, k, v)) / (2 * h), 1e-8) << "dq " << i;
  }
  for (size_t i = 0; i < nk; ++i) {
    auto p = k, m = k;
    p[i] += h, m[i] -= h;
    EXPECT_NEAR(dk[i], (loss(q, p, v) - loss(q, m, v)) / (2 * h), 1e-8) << "dk " << i;
    p = v, m = v;
    p[i] += h, m[i] -= h;
    EXPECT_NEAR(dv[i], (loss(q, k, p) - loss(q, k, m)) / (2 * h), 1e-8) << "dv " << i;
  }
}

// Windows 1 (each query sees itself only) and 2 (shorter than both examples).
INSTANTIATE_TEST_SUITE_P(Windows, AttentionCpuFd, ::testing::Values(0, 1, 2),
                         [](const auto& p) { return "window" + std::to_string(p.param); });

double rel_err(const std::vector<uint16_t>& got, const std::vector<double>& want) {
  double num = 0, den = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double g = qk::bf16_to_f32(got[i]);
    num += (g - want[i]) * (g - want[i]);
    den += want[i] * want[i];
  }
  return std::sqrt(num / den);
}

std::vector<uint16_t> to_bf16(const std::vector<double>& x) {
  std::vector<uint16_t> y(x.size());
  for (size_t i = 0; i < x.size(); ++i) y[i] = qk::f32_to_bf16_rn(static_cast<float>(x[i]));
  return y;
}
std::vector<double> from_bf16(const std::vector<uint16_t>& x) {
  std::vector<double> y(x.size());
  for (size_t i = 0; i < x.size(); ++i) y[i] = qk::bf16_to_f32(x[i]);
  return y;
}

TEST(AttentionCpu, Bf16TwinAgreesWithFp64) {
  const std::vector<int32_t> cu = {0, 1, 70, 83};
  const int heads = 4, kv_heads = 1, d = 64;
  const auto s = shape_of(cu, heads, kv_heads, d);
  const size_t nq = 83 * heads * d, nk = 83 * kv_heads * d;
  const auto q16 = to_bf16(wave(nq, 0.37, 0.1)), k16 = to_bf16(wave(nk, 0.71, 0.5)),
             v16 = to_bf16(wave(nk, 0.13, 0.9)), do16 = to_bf16(wave(nq, 0.23, 0.4));
  const auto q = from_bf16(q16), k = from_bf16(k16), v = from_bf16(v16), dout = from_bf16(do16);
  std::vector<double> o(nq), lse(83 * heads), dq(nq), dk(nk), dv(nk);
  qk::cpu::attention_forward(q.data(), k.data(), v.data(), o.data(), lse.data(), cu.data(), s);
  qk::cpu::attention_backward(q.data(), k.data(), v.data(), o.data(), dout.data(), lse.data(), dq.data(), dk.data(),
                              dv.data(), cu.data(), s);
  std::vector<uint16_t> o16(nq), dq16(nq), dk16(nk), dv16(nk);
  std::vector<float> lse32(lse.size());
  qk::cpu::attention_forward(q16.data(), k16.data(), v16.data(), o16.data(), lse32.data(), cu.data(), s);
  qk::cpu::attention_backward(q16.data(), k16.data(), v16.data(), o16.data(), do16.data(), lse32.data(), dq16.data(),
                              dk16.data(), dv16.data(), cu.data(), s);
  EXPECT_LT(rel_err(o16, o), 4e-3);
  for (size_t i = 0; i < lse.size(); ++i) ASSERT_NEAR(lse32[i], lse[i], 1e-5 * (1 + std::abs(lse[i])));
  EXPECT_LT(rel_err(dq16, dq), 1e-2);
  EXPECT_LT(rel_err(dk16, dk), 1e-2);
  EXPECT_LT(rel_err(dv16, dv), 4e-3);
}

class AttentionCpuDecode : public ::testing::TestWithParam<int> {};  // the window (0: none)

TEST_P(AttentionCpuDecode, MatchesTheLastRowsOfTheForward) {
  const int heads = 2, kv_heads = 1, d = 8;
  const int32_t len = 70, n = 3, capacity = 72;
  const std::vector<int32_t> cu = {0, len};
  auto s = shape_of(cu, heads, kv_heads, d);
  s.window = GetParam();
  const auto q = to_bf16(wave(len * heads * d, 0.37, 0.1)), k = to_bf16(wave(len * kv_heads * d, 0.71, 0.5)),
             v = to_bf16(wave(len * kv_heads * d, 0.13, 0.9));
  std::vector<uint16_t> o(q.size());
  std::vector<float> lse(len * heads);
  qk::cpu::attention_forward(q.data(), k.data(), v.data(), o.data(), lse.data(), cu.data(), s);

  qk::AttentionDecodeShape ds;
  ds.total_q = n;
  ds.num_seqs = 1;
  ds.max_seqlen_q = n;
  ds.cache_capacity = capacity;
  ds.max_seqlen_k = len;
  ds.heads = heads;
  ds.kv_heads = kv_heads;
  ds.head_dim = d;
  ds.window = s.window;
  std::vector<uint16_t> kc(capacity * kv_heads * d, 0x7fc0), vc(kc.size(), 0x7fc0), o_dec(n * heads * d);
  std::copy(k.begin(), k.end(), kc.begin());
  std::copy(v.begin(), v.end(), vc.begin());
  std::vector<float> lse_dec(n * heads);
  const std::vector<int32_t> cu_q = {0, n}, lens = {len};
  qk::cpu::attention_decode_forward(q.data() + (len - n) * heads * d, kc.data(), vc.data(), o_dec.data(),
                                    lse_dec.data(), cu_q.data(), lens.data(), ds);
  for (int i = 0; i < n * heads * d; ++i) ASSERT_EQ(o_dec[i], o[(len - n) * heads * d + i]) << i;
  for (int h = 0; h < heads; ++h)
    for (int i = 0; i < n; ++i) ASSERT_EQ(lse_dec[h * n + i], lse[h * len + len - n + i]);
}

INSTANTIATE_TEST_SUITE_P(Windows, AttentionCpuDecode, ::testing::Values(0, 4, 66),
                         [](const auto& p) { return "window" + std::to_string(p.param); });

TEST(AttentionCpu, BadShapesAreErrors) {
  const std::vector<int32_t> cu = {0, 4};
  std::vector<uint16_t> x(4 * 3 * 8);
  std::vector<float> lse(12);
  auto s = shape_of(cu, 3, 2, 8);  // kv_heads does not divide heads
  EXPECT_ANY_THROW(qk::cpu::attention_forward(x.data(), x.data(), x.data(), x.data(), lse.data(), cu.data(), s));
  s = shape_of(cu, 3, 1, 8);
  const std::vector<int32_t> short_cu = {0, 3};  // does not end at total_tokens
  EXPECT_ANY_THROW(qk::cpu::attention_forward(x.data(), x.data(), x.data(), x.data(), lse.data(), short_cu.data(), s));
  s.max_seqlen = 3;  // an example longer than max_seqlen
  EXPECT_ANY_THROW(qk::cpu::attention_forward(x.data(), x.data(), x.data(), x.data(), lse.data(), cu.data(), s));
}

}  // namespace
