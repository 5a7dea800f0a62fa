// Paged optimizer states live outside the device arena: with the arena capped so that the states
// could never fit in what is left of it, a paged optimizer still trains (and its updates equal the
// CPU AdamW's). On a GPU this is the case where the driver may evict state pages to host memory;
// on the emulated device it checks the same wiring.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "csrc/core/error.h"
#include "qk/adamw.h"
#include "runtime/device/device.h"
#include "runtime/memory/arena.h"
#include "runtime/optim/optimizer.h"

namespace qtrain::rt {
namespace {

TEST(PagedOptimizer, TrainsWhenStatesDoNotFitUnderTheArenaCap) {
  if (!query_device(0).available) GTEST_SKIP() << "no CUDA device";
  const int64_t n = 3 * 4096 + 7;  // fp32 params and grads: 2 * 4n bytes
  const size_t param_bytes = static_cast<size_t>(n) * 4;
  // The arena holds the parameters and gradients and 4 KiB more; the 32-bit states need 8n bytes.
  DeviceArena arena(2 * ((param_bytes + 255) / 256 * 256) + 4096);
  auto* p = static_cast<float*>(arena.allocate(param_bytes, "params"));
  auto* g = static_cast<float*>(arena.allocate(param_bytes, "grads"));
  const size_t left = arena.capacity() - arena.used();
  EXPECT_THROW(arena.allocate(optimizer_state_bytes(OptimizerKind::AdamW, {n}), "states"), Error);
  ASSERT_LT(left, optimizer_state_bytes(OptimizerKind::PagedAdamW32bit, {n}));

  std::vector<float> hp(static_cast<size_t>(n)), hg(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    hp[static_cast<size_t>(i)] = std::sin(0.1 * static_cast<double>(i)) + 0.01f;
    hg[static_cast<size_t>(i)] = std::cos(0.3 * static_cast<double>(i)) * 0.1f + 0.001f;
  }
  ASSERT_EQ(cudaMemcpy(p, hp.data(), param_bytes, cudaMemcpyHostToDevice), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(g, hg.data(), param_bytes, cudaMemcpyHostToDevice), cudaSuccess);

  OptimizerConfig cfg;
  cfg.kind = OptimizerKind::PagedAdamW32bit;
  Optimizer opt(cfg, {{"w", p, g, n}});
  std::vector<float> m(hp.size(), 0.0f), v(hp.size(), 0.0f);
  qk::AdamWParams prm;
  prm.lr = 1e-2f;
  for (int step = 1; step <= 3; ++step) {
    opt.step(prm.lr);
    prm.step = step;
    qk::AdamWTensor t{hp.data(), hg.data(), m.data(), v.data(), n, 0};
    qk::cpu::adamw_update(&t, 1, prm);
  }
  std::vector<float> got(hp.size());
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(got.data(), p, param_bytes, cudaMemcpyDeviceToHost), cudaSuccess);
  double num = 0, den = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    num += (got[i] - hp[i]) * (got[i] - hp[i]);
    den += hp[i] * hp[i];
  }
  EXPECT_LT(std::sqrt(num / den), 1e-6);
  EXPECT_EQ(opt.step_count(), 3);
}

}  // namespace
}  // namespace qtrain::rt
