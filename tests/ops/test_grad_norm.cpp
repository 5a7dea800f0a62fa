// Op cases: global gradient norm over several tensors, CUDA vs the fp64 CPU twin; the CUDA result
// must also be bitwise repeatable.
#include <memory>
#include <vector>

#include "harness.h"
#include "qk/grad_norm.h"

namespace qtrain::test {
namespace {

class GradNorm : public ::testing::TestWithParam<std::vector<int64_t>> {};

TEST_P(GradNorm, MatchesTheTwinAndRepeats) {
  QTRAIN_REQUIRE_DEVICE();
  const auto sizes = GetParam();
  const int count = static_cast<int>(sizes.size());
  std::vector<std::vector<float>> host(count);
  std::vector<std::unique_ptr<DeviceBuffer<float>>> dev;
  std::vector<qk::NormTensor> ht(count), dt(count);
  for (int i = 0; i < count; ++i) {
    host[i] = random_f32(static_cast<size_t>(sizes[i]), 40 + i, 0.5f + i);
    dev.push_back(std::make_unique<DeviceBuffer<float>>(host[i]));
    ht[i] = {host[i].data(), sizes[i], 0};
    dt[i] = {dev[i]->get(), sizes[i], 0};
  }
  const double want = qk::cpu::global_l2_norm(ht.data(), count);
  const int64_t chunks = qk::norm_plan_chunks(dt.data(), count);
  DeviceBuffer<qk::NormTensor> table(dt);
  DeviceBuffer<float> partials(static_cast<size_t>(chunks)), out(1), out2(1);
  out.poison();
  qk::global_l2_norm(table.get(), count, chunks, partials.get(), out.get(), nullptr);
  qk::global_l2_norm(table.get(), count, chunks, partials.get(), out2.get(), nullptr);
  const std::vector<float> got = out.download();
  EXPECT_TRUE(close(got, {static_cast<float>(want)}, 1e-6));
  EXPECT_TRUE(identical(out2.download(), got));
}

INSTANTIATE_TEST_SUITE_P(Ops, GradNorm,
                         ::testing::Values(std::vector<int64_t>{5}, std::vector<int64_t>{7, 0, 4096, 4097, 13},
                                           std::vector<int64_t>{1, 128, 3 * 4096 + 11}),
                         [](const auto& p) {
                           std::string s = "n";
                           for (int64_t n : p.param) s += "_" + std::to_string(n);
                           return s;
                         });

TEST(GradNormEmpty, NothingGivesZero) {
  QTRAIN_REQUIRE_DEVICE();
  DeviceBuffer<float> out(1);
  out.poison();
  qk::global_l2_norm(nullptr, 0, 0, nullptr, out.get(), nullptr);
  EXPECT_EQ(out.download()[0], 0.0f);
}

}  // namespace
}  // namespace qtrain::test
