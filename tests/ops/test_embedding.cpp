// Op cases: embedding lookup (bitwise: a copy) and its deterministic scatter-add gradient, CUDA vs
// the CPU twin, including repeated ids, untouched rows and ids out of range.
#include <cuda_bf16.h>

#include <cmath>
#include <string>
#include <tuple>
#include <vector>

#include "harness.h"
#include "qk/embedding.h"

namespace qtrain::test {
namespace {

using Shape = std::tuple<int64_t, int64_t, int64_t>;  // tokens, vocab, hidden

std::vector<int32_t> random_ids(int64_t tokens, int64_t vocab, uint64_t seed) {
  Rng r(seed);
  std::vector<int32_t> ids(static_cast<size_t>(tokens));
  for (auto& id : ids) id = static_cast<int32_t>(r.next() % static_cast<uint64_t>(vocab));
  return ids;
}

class Embedding : public ::testing::TestWithParam<Shape> {};

TEST_P(Embedding, ForwardCopiesRows) {
  QTRAIN_REQUIRE_DEVICE();
  const auto [tokens, vocab, hidden] = GetParam();
  const auto table = random_bf16(static_cast<size_t>(vocab * hidden), 3 + hidden);
  const auto ids = random_ids(tokens, vocab, 5 + tokens);
  std::vector<uint16_t> want(static_cast<size_t>(tokens * hidden));
  qk::cpu::embedding_forward(table.data(), ids.data(), want.data(), tokens, vocab, hidden);

  DeviceBuffer<uint16_t> dtable(table), out(want.size());
  DeviceBuffer<int32_t> did(ids);
  out.poison();
  qk::embedding_forward(dtable.as<__nv_bfloat16>(), did.get(), out.as<__nv_bfloat16>(), tokens, vocab, hidden,
                        nullptr);
  EXPECT_TRUE(identical(out.download(), want));
}

TEST_P(Embedding, BackwardAccumulatesDeterministically) {
  QTRAIN_REQUIRE_DEVICE();
  const auto [tokens, vocab, hidden] = GetParam();
  const auto dout = random_bf16(static_cast<size_t>(tokens * hidden), 7 + hidden);
  const auto ids = random_ids(tokens, vocab, 9 + tokens);
  const auto init = random_f32(static_cast<size_t>(vocab * hidden), 11 + vocab, 0.1f);
  std::vector<float> want = init;
  qk::cpu::embedding_backward(dout.data(), ids.data(), want.data(), tokens, vocab, hidden);

  const qk::EmbeddingGradPlan plan = qk::embedding_grad_plan(ids.data(), tokens, vocab);
  DeviceBuffer<uint16_t> ddout(dout);
  DeviceBuffer<int32_t> dplan(plan.data);
  DeviceBuffer<float> g1(init), g2(init);
  qk::embedding_backward(ddout.as<__nv_bfloat16>(), dplan.get(), tokens, plan.groups, g1.get(), vocab, hidden,
                         nullptr);
  qk::embedding_backward(ddout.as<__nv_bfloat16>(), dplan.get(), tokens, plan.groups, g2.get(), vocab, hidden,
                         nullptr);
  const auto got = g1.download();
  EXPECT_TRUE(close(got, want, kTolF32));
  EXPECT_TRUE(identical(g2.download(), got));
  // Rows no token uses are left exactly as they were.
  std::vector<bool> used(static_cast<size_t>(vocab), false);
  for (int32_t id : ids) used[static_cast<size_t>(id)] = true;
  for (int64_t v = 0; v < vocab; ++v) {
    if (used[static_cast<size_t>(v)]) continue;
    for (int64_t c = 0; c < hidden; ++c) {
      ASSERT_EQ(got[static_cast<size_t>(v * hidden + c)], init[static_cast<size_t>(v * hidden + c)]) << v;
    }
  }
}

// hidden 13 (scalar), 6 (pairs), 12 (4-wide), 64/80/4096 (16-byte rows); more tokens than vocab
// rows so that ids repeat.
INSTANTIATE_TEST_SUITE_P(Ops, Embedding,
                         ::testing::Values(Shape{1, 5, 8}, Shape{13, 7, 13}, Shape{11, 5, 6}, Shape{7, 3, 12},
                                           Shape{11, 37, 64}, Shape{13, 11, 80}, Shape{5, 3, 4096},
                                           Shape{128, 13, 128}),
                         [](const auto& p) {
                           return "t" + std::to_string(std::get<0>(p.param)) + "_v" +
                                  std::to_string(std::get<1>(p.param)) + "_h" + std::to_string(std::get<2>(p.param));
                         });

TEST(EmbeddingErrors, OutOfRangeIdsGiveNanRowsOnTheDeviceAndThrowOnTheHost) {
  QTRAIN_REQUIRE_DEVICE();
  const int64_t vocab = 5, hidden = 16, tokens = 4;
  const auto table = random_bf16(static_cast<size_t>(vocab * hidden), 21);
  const std::vector<int32_t> ids = {2, 5, -1, 4};
  EXPECT_THROW(qk::embedding_check_ids(ids.data(), tokens, vocab), qk::Error);
  EXPECT_THROW(qk::embedding_grad_plan(ids.data(), tokens, vocab), qk::Error);
  std::vector<uint16_t> ref(static_cast<size_t>(tokens * hidden));
  EXPECT_THROW(qk::cpu::embedding_forward(table.data(), ids.data(), ref.data(), tokens, vocab, hidden), qk::Error);

  DeviceBuffer<uint16_t> dtable(table), out(static_cast<size_t>(tokens * hidden));
  DeviceBuffer<int32_t> did(ids);
  out.poison();
  qk::embedding_forward(dtable.as<__nv_bfloat16>(), did.get(), out.as<__nv_bfloat16>(), tokens, vocab, hidden,
                        nullptr);
  const auto got = out.download();
  for (int64_t t = 0; t < tokens; ++t)
    for (int64_t c = 0; c < hidden; ++c) {
      const uint16_t g = got[static_cast<size_t>(t * hidden + c)];
      if (ids[static_cast<size_t>(t)] >= 0 && ids[static_cast<size_t>(t)] < vocab)
        EXPECT_EQ(g, table[static_cast<size_t>(ids[static_cast<size_t>(t)] * hidden + c)]);
      else
        EXPECT_TRUE(std::isnan(qk::bf16_to_f32(g))) << t;
    }
}

TEST(EmbeddingErrors, BadArgumentsThrow) {
  QTRAIN_REQUIRE_DEVICE();
  EXPECT_THROW(qk::embedding_forward(nullptr, nullptr, nullptr, 3, 5, 8, nullptr), qk::Error);
  EXPECT_THROW(qk::embedding_backward(nullptr, nullptr, 3, 0, nullptr, 5, 8, nullptr), qk::Error);
  EXPECT_THROW(qk::embedding_forward(nullptr, nullptr, nullptr, 3, 5, 0, nullptr), qk::Error);
}

TEST(EmbeddingPlan, GroupsTokensByIdInOrder) {
  const std::vector<int32_t> ids = {4, 1, 4, 0, 1, 4};
  const auto plan = qk::embedding_grad_plan(ids.data(), 6, 5);
  ASSERT_EQ(plan.groups, 3);
  EXPECT_EQ(std::vector<int32_t>(plan.order(), plan.order() + 6), (std::vector<int32_t>{3, 1, 4, 0, 2, 5}));
  EXPECT_EQ(std::vector<int32_t>(plan.offsets(), plan.offsets() + 4), (std::vector<int32_t>{0, 1, 3, 6}));
  EXPECT_EQ(std::vector<int32_t>(plan.rows(), plan.rows() + 3), (std::vector<int32_t>{0, 1, 4}));
}

}  // namespace
}  // namespace qtrain::test
