// Op cases: multi-tensor AdamW, CUDA (one launch for all tensors) vs the CPU twin, over several
// steps on tensors of odd and round sizes, an empty one among them.
#include <memory>
#include <vector>

#include "harness.h"
#include "qk/adamw.h"

namespace qtrain::test {
namespace {

struct AdamWCase {
  std::vector<int64_t> sizes;
  float weight_decay;
  float grad_scale;
};

class AdamW : public ::testing::TestWithParam<AdamWCase> {};

TEST_P(AdamW, ThreeStepsMatchTheTwin) {
  QTRAIN_REQUIRE_DEVICE();
  const AdamWCase c = GetParam();
  const int count = static_cast<int>(c.sizes.size());
  std::vector<std::vector<float>> p(count), g(count), m(count), v(count);
  std::vector<std::unique_ptr<DeviceBuffer<float>>> dp, dg, dm, dv;
  for (int i = 0; i < count; ++i) {
    const size_t n = static_cast<size_t>(c.sizes[i]);
    p[i] = random_f32(n, 100 + i);
    m[i] = random_f32(n, 200 + i, 0.1f);
    v[i] = random_f32(n, 300 + i, 0.01f);
    for (auto& x : v[i]) x = std::abs(x);  // second moments are non-negative
    dp.push_back(std::make_unique<DeviceBuffer<float>>(p[i]));
    dg.push_back(std::make_unique<DeviceBuffer<float>>(n));
    dm.push_back(std::make_unique<DeviceBuffer<float>>(m[i]));
    dv.push_back(std::make_unique<DeviceBuffer<float>>(v[i]));
  }
  std::vector<qk::AdamWTensor> host(count), dev(count);
  for (int i = 0; i < count; ++i) {
    host[i] = {p[i].data(), nullptr, m[i].data(), v[i].data(), c.sizes[i], 0};
    dev[i] = {dp[i]->get(), dg[i]->get(), dm[i]->get(), dv[i]->get(), c.sizes[i], 0};
  }
  qk::adamw_plan_chunks(host.data(), count);
  const int64_t chunks = qk::adamw_plan_chunks(dev.data(), count);
  DeviceBuffer<qk::AdamWTensor> table(dev);

  qk::AdamWParams params;
  params.lr = 2e-3f;
  params.weight_decay = c.weight_decay;
  params.grad_scale = c.grad_scale;
  for (int64_t step = 1; step <= 3; ++step) {
    params.step = step;
    for (int i = 0; i < count; ++i) {
      g[i] = random_f32(static_cast<size_t>(c.sizes[i]), 1000 * step + i);
      host[i].grad = g[i].data();
      dg[i]->upload(g[i]);
    }
    qk::cpu::adamw_update(host.data(), count, params);
    qk::adamw_update(table.get(), count, chunks, params, nullptr);
  }
  for (int i = 0; i < count; ++i) {
    SCOPED_TRACE("tensor " + std::to_string(i));
    EXPECT_TRUE(close(dp[i]->download(), p[i], 1e-6));
    EXPECT_TRUE(close(dm[i]->download(), m[i], 1e-6));
    EXPECT_TRUE(close(dv[i]->download(), v[i], 1e-6));
  }
}

INSTANTIATE_TEST_SUITE_P(
    Ops, AdamW,
    ::testing::Values(AdamWCase{{5}, 0.0f, 1.0f}, AdamWCase{{7, 2048, 0, 2049, 13}, 0.01f, 1.0f},
                      AdamWCase{{4096 + 11, 1, 128}, 0.1f, 0.25f}),
    [](const auto& p) {
      std::string s = "n";
      for (int64_t n : p.param.sizes) s += "_" + std::to_string(n);
      return s + "_wd" + std::to_string(static_cast<int>(p.param.weight_decay * 100)) + "_gs" +
             std::to_string(static_cast<int>(p.param.grad_scale * 100));
    });

}  // namespace
}  // namespace qtrain::test
