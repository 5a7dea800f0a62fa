// Op cases: fused cross-entropy forward + backward, CUDA vs the CPU twin, with ignored rows, odd
// and round vocabularies, in place and out of place, and forward only.
#include <cuda_bf16.h>

#include <tuple>

#include "harness.h"
#include "qk/cross_entropy.h"

namespace qtrain::test {
namespace {

using Param = std::tuple<int64_t, int64_t, bool>;  // rows, vocab, in place

std::vector<int32_t> random_labels(int64_t rows, int64_t vocab, uint64_t seed) {
  Rng r(seed);
  std::vector<int32_t> y(static_cast<size_t>(rows));
  for (auto& v : y) v = static_cast<int32_t>(r.next() % static_cast<uint64_t>(vocab));
  if (rows > 2) y[1] = qk::kIgnoreIndex;
  return y;
}

class CrossEntropy : public ::testing::TestWithParam<Param> {};

TEST_P(CrossEntropy, MatchesTheTwin) {
  QTRAIN_REQUIRE_DEVICE();
  const auto [rows, vocab, in_place] = GetParam();
  const size_t n = static_cast<size_t>(rows * vocab);
  const auto logits = random_bf16(n, 5 + n, 4.0f);
  const auto labels = random_labels(rows, vocab, 9 + n);
  const float dscale = 1.0f / static_cast<float>(rows);
  std::vector<float> want_loss(rows), want_lp(rows);
  std::vector<uint16_t> want_d(n);
  qk::cpu::cross_entropy(logits.data(), labels.data(), rows, vocab, dscale, want_loss.data(), want_lp.data(),
                         want_d.data());

  DeviceBuffer<uint16_t> dx(logits), dd(n);
  DeviceBuffer<int32_t> dy(labels);
  DeviceBuffer<float> dloss(rows), dlp(rows);
  dloss.poison();
  dlp.poison();
  dd.poison();
  __nv_bfloat16* out = in_place ? dx.as<__nv_bfloat16>() : dd.as<__nv_bfloat16>();
  qk::cross_entropy(dx.as<__nv_bfloat16>(), dy.get(), rows, vocab, dscale, dloss.get(), dlp.get(), out, nullptr);
  EXPECT_TRUE(close(dloss.download(), want_loss, 1e-5));
  EXPECT_TRUE(close(dlp.download(), want_lp, 1e-5));
  EXPECT_TRUE(close(in_place ? dx.download() : dd.download(), want_d, kTolBf16));
}

class CrossEntropyForwardOnly : public ::testing::TestWithParam<Param> {};

TEST_P(CrossEntropyForwardOnly, LeavesLogitsAlone) {
  QTRAIN_REQUIRE_DEVICE();
  const auto [rows, vocab, unused] = GetParam();
  const size_t n = static_cast<size_t>(rows * vocab);
  const auto logits = random_bf16(n, 15 + n, 2.0f);
  const auto labels = random_labels(rows, vocab, 19 + n);
  std::vector<float> want_loss(rows);
  qk::cpu::cross_entropy(logits.data(), labels.data(), rows, vocab, 1.0f, want_loss.data(), nullptr, nullptr);
  DeviceBuffer<uint16_t> dx(logits);
  DeviceBuffer<int32_t> dy(labels);
  DeviceBuffer<float> dloss(rows);
  dloss.poison();
  qk::cross_entropy(dx.as<__nv_bfloat16>(), dy.get(), rows, vocab, 1.0f, dloss.get(), nullptr, nullptr, nullptr);
  EXPECT_TRUE(close(dloss.download(), want_loss, 1e-5));
  EXPECT_TRUE(identical(dx.download(), logits));
}

INSTANTIATE_TEST_SUITE_P(Ops, CrossEntropyForwardOnly,
                         ::testing::Values(Param{1, 7, false}, Param{3, 64, false}, Param{4, 1003, false},
                                           Param{2, 32000, false}),
                         [](const auto& p) {
                           return "rows" + std::to_string(std::get<0>(p.param)) + "_vocab" +
                                  std::to_string(std::get<1>(p.param));
                         });

TEST(CrossEntropyLabels, OutOfRangeLabelGivesNanLossNotACrash) {
  QTRAIN_REQUIRE_DEVICE();
  const auto logits = random_bf16(2 * 11, 3);
  DeviceBuffer<uint16_t> dx(logits);
  DeviceBuffer<int32_t> dy(std::vector<int32_t>{11, 4});
  DeviceBuffer<float> dloss(2);
  qk::cross_entropy(dx.as<__nv_bfloat16>(), dy.get(), 2, 11, 1.0f, dloss.get(), nullptr, dx.as<__nv_bfloat16>(),
                    nullptr);
  const auto l = dloss.download();
  EXPECT_TRUE(std::isnan(l[0]));
  EXPECT_TRUE(std::isfinite(l[1]));
}

INSTANTIATE_TEST_SUITE_P(Ops, CrossEntropy,
                         ::testing::Values(Param{1, 7, false}, Param{5, 13, true}, Param{3, 64, false},
                                           Param{7, 1000, true}, Param{4, 1003, false}, Param{2, 32000, true},
                                           Param{2, 32000, false}),
                         [](const auto& p) {
                           return "rows" + std::to_string(std::get<0>(p.param)) + "_vocab" +
                                  std::to_string(std::get<1>(p.param)) + (std::get<2>(p.param) ? "_inplace" : "");
                         });

}  // namespace
}  // namespace qtrain::test
