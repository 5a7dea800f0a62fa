// The AdamW CPU twin against PyTorch's AdamW written out in double precision, over ten steps.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "qk/adamw.h"
#include "qk/error.h"

namespace {

TEST(AdamWCpu, FollowsTheDoublePrecisionFormula) {
  const int n = 37;
  std::vector<float> p(n), m(n, 0.0f), v(n, 0.0f), g(n);
  std::vector<double> pd(n), md(n, 0.0), vd(n, 0.0);
  for (int i = 0; i < n; ++i) p[i] = static_cast<float>(pd[i] = std::sin(i + 1.0));
  qk::AdamWParams prm;
  prm.lr = 1e-2f;
  prm.weight_decay = 0.05f;
  prm.grad_scale = 0.5f;
  for (int step = 1; step <= 10; ++step) {
    prm.step = step;
    for (int i = 0; i < n; ++i) g[i] = static_cast<float>(std::cos(step * 0.7 + i));
    qk::AdamWTensor t{p.data(), g.data(), m.data(), v.data(), n, 0};
    qk::cpu::adamw_update(&t, 1, prm);
    const double b1 = prm.beta1, b2 = prm.beta2, lr = prm.lr;
    for (int i = 0; i < n; ++i) {
      const double gi = static_cast<double>(g[i]) * prm.grad_scale;
      pd[i] *= 1.0 - lr * prm.weight_decay;
      md[i] = b1 * md[i] + (1 - b1) * gi;
      vd[i] = b2 * vd[i] + (1 - b2) * gi * gi;
      const double denom = std::sqrt(vd[i]) / std::sqrt(1 - std::pow(b2, step)) + prm.eps;
      pd[i] -= lr / (1 - std::pow(b1, step)) * md[i] / denom;
    }
  }
  for (int i = 0; i < n; ++i) {
    EXPECT_NEAR(p[i], pd[i], 2e-6 * (1 + std::abs(pd[i]))) << i;
    EXPECT_NEAR(m[i], md[i], 1e-6) << i;
    EXPECT_NEAR(v[i], vd[i], 1e-7) << i;
  }
}

TEST(AdamWCpu, ChunkPlanSkipsEmptyTensors) {
  qk::AdamWTensor t[3] = {{nullptr, nullptr, nullptr, nullptr, qk::kAdamWChunk + 1, 0},
                          {nullptr, nullptr, nullptr, nullptr, 0, 0},
                          {nullptr, nullptr, nullptr, nullptr, 5, 0}};
  EXPECT_EQ(qk::adamw_plan_chunks(t, 3), 3);
  EXPECT_EQ(t[0].chunk_begin, 0);
  EXPECT_EQ(t[1].chunk_begin, 2);
  EXPECT_EQ(t[2].chunk_begin, 2);
}

TEST(AdamWCpu, StepZeroIsRejected) {
  qk::AdamWParams prm;
  prm.step = 0;
  EXPECT_THROW(qk::cpu::adamw_update(nullptr, 0, prm), qk::Error);
}

}  // namespace
