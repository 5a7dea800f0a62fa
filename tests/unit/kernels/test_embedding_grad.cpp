// Finite-difference check, in fp64, of the embedding CPU backward (the reference the CUDA backward
// is compared with): L = sum(c * table[ids]) with repeated ids, so rows used twice must get both
// contributions, unused rows nothing, and the gradient lands on top of what dtable held.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "qk/bf16_bits.h"
#include "qk/embedding.h"
#include "qk/error.h"

namespace {

TEST(EmbeddingGrad, BackwardMatchesFiniteDifferences) {
  const int64_t vocab = 6, hidden = 5;
  const std::vector<int32_t> ids = {3, 0, 3, 5, 3, 1, 0};
  const int64_t tokens = static_cast<int64_t>(ids.size());
  std::vector<double> table(vocab * hidden), c(tokens * hidden);
  for (size_t i = 0; i < table.size(); ++i) table[i] = std::sin(0.37 * static_cast<double>(i) + 0.2);
  for (size_t i = 0; i < c.size(); ++i) c[i] = std::cos(0.53 * static_cast<double>(i) + 0.1);
  auto loss = [&](const std::vector<double>& t) {
    std::vector<double> out(tokens * hidden);
    qk::cpu::embedding_forward(t.data(), ids.data(), out.data(), tokens, vocab, hidden);
    double s = 0;
    for (size_t i = 0; i < out.size(); ++i) s += c[i] * out[i];
    return s;
  };
  std::vector<double> grad(vocab * hidden, 0.5);
  qk::cpu::embedding_backward(c.data(), ids.data(), grad.data(), tokens, vocab, hidden);
  const double h = 1e-6;
  for (size_t i = 0; i < table.size(); ++i) {
    auto p = table, m = table;
    p[i] += h, m[i] -= h;
    const double fd = (loss(p) - loss(m)) / (2 * h);
    EXPECT_NEAR(grad[i] - 0.5, fd, 1e-8) << i;
  }
  // Row 2 and row 4 are never looked up.
  for (int64_t j = 0; j < hidden; ++j) {
    EXPECT_EQ(grad[2 * hidden + j], 0.5);
    EXPECT_EQ(grad[4 * hidden + j], 0.5);
  }
}

TEST(EmbeddingGrad, Bf16TwinCopiesRowsAndSumsInFp32) {
  const int64_t vocab = 3, hidden = 4;
  const std::vector<int32_t> ids = {2, 2, 0};
  std::vector<uint16_t> table(vocab * hidden), out(3 * hidden), dout(3 * hidden);
  for (size_t i = 0; i < table.size(); ++i) table[i] = qk::f32_to_bf16_rn(0.25f * static_cast<float>(i) - 1.0f);
  for (size_t i = 0; i < dout.size(); ++i) dout[i] = qk::f32_to_bf16_rn(0.5f + static_cast<float>(i));
  qk::cpu::embedding_forward(table.data(), ids.data(), out.data(), 3, vocab, hidden);
  for (int64_t j = 0; j < hidden; ++j) {
    EXPECT_EQ(out[j], table[2 * hidden + j]);
    EXPECT_EQ(out[hidden + j], table[2 * hidden + j]);
    EXPECT_EQ(out[2 * hidden + j], table[j]);
  }
  std::vector<float> dtable(vocab * hidden, 1.0f);
  qk::cpu::embedding_backward(dout.data(), ids.data(), dtable.data(), 3, vocab, hidden);
  for (int64_t j = 0; j < hidden; ++j) {
    EXPECT_EQ(dtable[2 * hidden + j], 1.0f + (0.5f + j) + (0.5f + hidden + j));
    EXPECT_EQ(dtable[hidden + j], 1.0f);
    EXPECT_EQ(dtable[j], 1.0f + (0.5f + 2 * hidden + j));
  }
}

TEST(EmbeddingGrad, OutOfRangeIdsThrow) {
  std::vector<double> table(6), out(2), dtable(6);
  const std::vector<int32_t> bad = {0, 3};
  EXPECT_THROW(qk::cpu::embedding_forward(table.data(), bad.data(), out.data(), 2, 3, 2), qk::Error);
  EXPECT_THROW(qk::cpu::embedding_backward(out.data(), bad.data(), dtable.data(), 2, 3, 2), qk::Error);
  const std::vector<int32_t> negative = {-1};
  EXPECT_THROW(qk::embedding_check_ids(negative.data(), 1, 3), qk::Error);
}

}  // namespace
