// Op cases: RoPE forward and backward in place on q and k (GQA head counts, packed positions that
// restart, plain and llama3-scaled frequencies), CUDA vs the CPU twin; position 0 is the identity and
// backward undoes forward.
#include <cuda_bf16.h>

#include <string>
#include <tuple>
#include <vector>

#include "harness.h"
#include "qk/rope.h"

namespace qtrain::test {
namespace {

using Shape = std::tuple<int64_t, int, int, int, bool>;  // tokens, heads, kv_heads, head_dim, llama3

__nv_bfloat16* bf(const DeviceBuffer<uint16_t>& b) { return b.as<__nv_bfloat16>(); }

qk::RopeFreqs freqs_for(int head_dim, bool llama3) {
  qk::RopeConfig c;
  if (llama3) {
    c.theta = 500000.0;
    c.llama3 = true;
  }
  return qk::rope_freqs(c, head_dim);
}

// Two packed examples (positions restart at 0), the second starting far out where angles are large.
std::vector<int32_t> packed_positions(int64_t tokens) {
  std::vector<int32_t> pos(static_cast<size_t>(tokens));
  const int64_t first = tokens / 2;
  for (int64_t t = 0; t < tokens; ++t) pos[static_cast<size_t>(t)] = static_cast<int32_t>(t < first ? t : 30000 + t);
  return pos;
}

class Rope : public ::testing::TestWithParam<Shape> {};

TEST_P(Rope, ForwardAndBackwardMatchTheTwin) {
  QTRAIN_REQUIRE_DEVICE();
  const auto [tokens, heads, kv_heads, head_dim, llama3] = GetParam();
  const auto freqs = freqs_for(head_dim, llama3);
  const auto pos = packed_positions(tokens);
  const auto q = random_bf16(static_cast<size_t>(tokens * heads * head_dim), 1 + head_dim);
  const auto k = random_bf16(static_cast<size_t>(tokens * kv_heads * head_dim), 2 + head_dim);
  for (const bool backward : {false, true}) {
    auto want_q = q, want_k = k;
    DeviceBuffer<uint16_t> dq(q), dk(k);
    DeviceBuffer<int32_t> dpos(pos);
    if (backward) {
      qk::cpu::rope_backward(want_q.data(), want_k.data(), pos.data(), tokens, heads, kv_heads, freqs);
      qk::rope_backward(bf(dq), bf(dk), dpos.get(), tokens, heads, kv_heads, freqs, nullptr);
    } else {
      qk::cpu::rope_forward(want_q.data(), want_k.data(), pos.data(), tokens, heads, kv_heads, freqs);
      qk::rope_forward(bf(dq), bf(dk), dpos.get(), tokens, heads, kv_heads, freqs, nullptr);
    }
    EXPECT_TRUE(close(dq.download(), want_q, kTolBf16)) << "backward " << backward;
    EXPECT_TRUE(close(dk.download(), want_k, kTolBf16)) << "backward " << backward;
  }
}

TEST_P(Rope, BackwardUndoesForwardAndPositionZeroIsIdentity) {
  QTRAIN_REQUIRE_DEVICE();
  const auto [tokens, heads, kv_heads, head_dim, llama3] = GetParam();
  const auto freqs = freqs_for(head_dim, llama3);
  const auto q = random_bf16(static_cast<size_t>(tokens * heads * head_dim), 3 + head_dim);
  const auto k = random_bf16(static_cast<size_t>(tokens * kv_heads * head_dim), 4 + head_dim);
  DeviceBuffer<uint16_t> dq(q), dk(k);
  DeviceBuffer<int32_t> dpos(packed_positions(tokens));
  qk::rope_forward(bf(dq), bf(dk), dpos.get(), tokens, heads, kv_heads, freqs, nullptr);
  qk::rope_backward(bf(dq), bf(dk), dpos.get(), tokens, heads, kv_heads, freqs, nullptr);
  EXPECT_TRUE(close(dq.download(), q, 2 * kTolBf16));
  EXPECT_TRUE(close(dk.download(), k, 2 * kTolBf16));

  DeviceBuffer<uint16_t> zq(q), zk(k);
  DeviceBuffer<int32_t> zero(std::vector<int32_t>(static_cast<size_t>(tokens), 0));
  qk::rope_forward(bf(zq), bf(zk), zero.get(), tokens, heads, kv_heads, freqs, nullptr);
  EXPECT_TRUE(identical(zq.download(), q));
  EXPECT_TRUE(identical(zk.download(), k));
}

// head_dim 6 and 10 (odd halves: scalar), 4 (pairs), 8 (4-wide), 64..128 (16-byte); GQA and MHA.
INSTANTIATE_TEST_SUITE_P(Ops, Rope,
                         ::testing::Values(Shape{5, 3, 1, 6, false}, Shape{7, 2, 2, 10, true},
                                           Shape{11, 1, 1, 4, false}, Shape{13, 4, 2, 8, true},
                                           Shape{7, 4, 1, 64, true}, Shape{5, 2, 1, 80, false},
                                           Shape{6, 3, 3, 96, false}, Shape{9, 4, 2, 128, true},
                                           Shape{4, 32, 8, 128, true}),
                         [](const auto& p) {
                           return "t" + std::to_string(std::get<0>(p.param)) + "_h" +
                                  std::to_string(std::get<1>(p.param)) + "_kv" + std::to_string(std::get<2>(p.param)) +
                                  "_d" + std::to_string(std::get<3>(p.param)) +
                                  (std::get<4>(p.param) ? "_llama3" : "");
                         });

TEST(RopeNoKv, QOnly) {
  QTRAIN_REQUIRE_DEVICE();
  const auto freqs = freqs_for(64, false);
  const auto q = random_bf16(3 * 2 * 64, 5);
  const std::vector<int32_t> pos = {0, 7, 100};
  auto want = q;
  qk::cpu::rope_forward(want.data(), nullptr, pos.data(), 3, 2, 0, freqs);
  DeviceBuffer<uint16_t> dq(q);
  DeviceBuffer<int32_t> dpos(pos);
  qk::rope_forward(bf(dq), nullptr, dpos.get(), 3, 2, 0, freqs, nullptr);
  EXPECT_TRUE(close(dq.download(), want, kTolBf16));
}

TEST(RopeErrors, BadArgumentsThrow) {
  QTRAIN_REQUIRE_DEVICE();
  EXPECT_THROW(qk::rope_freqs(qk::RopeConfig{}, 7), qk::Error);
  EXPECT_THROW(qk::rope_freqs(qk::RopeConfig{}, 512), qk::Error);
  const auto freqs = freqs_for(8, false);
  DeviceBuffer<uint16_t> q(8);
  EXPECT_THROW(qk::rope_forward(bf(q), nullptr, nullptr, 1, 1, 0, freqs, nullptr), qk::Error);
  DeviceBuffer<int32_t> pos(1);
  EXPECT_THROW(qk::rope_forward(bf(q), nullptr, pos.get(), 1, 1, 1, freqs, nullptr), qk::Error);
  EXPECT_THROW(qk::rope_forward(bf(q), nullptr, pos.get(), 1, 1, 0, qk::RopeFreqs{}, nullptr), qk::Error);
}

}  // namespace
}  // namespace qtrain::test
