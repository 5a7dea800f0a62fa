// Finite-difference check, in fp64, of the SwiGLU CPU backward (the reference the CUDA backward is
// compared with), over gates that reach into silu's saturated tails; the fp64 forward against the
// formula; and the bf16 entry points (fp32 math, as the kernel) against the fp64 ones.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "qk/bf16_bits.h"
#include "qk/error.h"
#include "qk/swiglu.h"

namespace {

std::vector<double> wave(size_t n, double a, double b, double scale) {
  std::vector<double> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = scale * std::sin(a * static_cast<double>(i) + b);
  return v;
}

TEST(SwiGluGrad, BackwardMatchesFiniteDifferences) {
  const int64_t rows = 3, cols = 5, ld = 2 * cols;  // a fused [rows, 2 cols] gate/up buffer
  const size_t n = rows * ld;
  const auto gu = wave(n, 0.77, 0.1, 9.0);
  const auto c = wave(rows * cols, 0.41, 0.5, 1.0);
  auto loss = [&](const std::vector<double>& v) {
    std::vector<double> out(rows * cols);
    qk::cpu::swiglu_forward(v.data(), v.data() + cols, out.data(), rows, cols, ld, cols);
    double s = 0;
    for (size_t i = 0; i < out.size(); ++i) s += c[i] * out[i];
    return s;
  };
  std::vector<double> grad(n, -7.0);
  qk::cpu::swiglu_backward(c.data(), gu.data(), gu.data() + cols, grad.data(), grad.data() + cols, rows, cols, ld, cols,
                           ld);
  const double h = 1e-6;
  for (size_t i = 0; i < n; ++i) {
    auto p = gu, m = gu;
    p[i] += h, m[i] -= h;
    const double fd = (loss(p) - loss(m)) / (2 * h);
    EXPECT_NEAR(grad[i], fd, 1e-7 * (1 + std::abs(fd))) << i;
  }
}

TEST(SwiGluGrad, ForwardFollowsTheFormula) {
  const auto g = wave(9, 1.7, 0.2, 12.0), u = wave(9, 0.9, 1.0, 2.0);
  std::vector<double> out(9);
  qk::cpu::swiglu_forward(g.data(), u.data(), out.data(), 1, 9, 9, 9);
  for (size_t i = 0; i < 9; ++i) EXPECT_NEAR(out[i], g[i] / (1 + std::exp(-g[i])) * u[i], 1e-12) << i;
  // Far tails stay finite: silu(-100) is -0-ish, silu(100) is 100.
  const double gt[2] = {-100.0, 100.0}, ut[2] = {1.0, 1.0};
  double ot[2];
  qk::cpu::swiglu_forward(gt, ut, ot, 1, 2, 2, 2);
  EXPECT_NEAR(ot[0], 0.0, 1e-40);
  EXPECT_EQ(ot[1], 100.0);
  EXPECT_EQ(qk::swiglu_value(-200.0f, 1.0f), 0.0f);
}

TEST(SwiGluGrad, Bf16TwinAgreesWithFp64) {
  const int64_t cols = 29;
  std::vector<uint16_t> gb(cols), ub(cols), db(cols), outb(cols), dgb(cols), dub(cols);
  std::vector<double> g(cols), u(cols), d(cols), out(cols), dg(cols), du(cols);
  const auto gs = wave(cols, 0.9, 0.3, 10.0), us = wave(cols, 0.5, 1.3, 2.0), ds = wave(cols, 0.7, 0.9, 1.0);
  for (int64_t i = 0; i < cols; ++i) {
    gb[i] = qk::f32_to_bf16_rn(static_cast<float>(gs[i])), g[i] = qk::bf16_to_f32(gb[i]);
    ub[i] = qk::f32_to_bf16_rn(static_cast<float>(us[i])), u[i] = qk::bf16_to_f32(ub[i]);
    db[i] = qk::f32_to_bf16_rn(static_cast<float>(ds[i])), d[i] = qk::bf16_to_f32(db[i]);
  }
  qk::cpu::swiglu_forward(gb.data(), ub.data(), outb.data(), 1, cols, cols, cols);
  qk::cpu::swiglu_forward(g.data(), u.data(), out.data(), 1, cols, cols, cols);
  qk::cpu::swiglu_backward(db.data(), gb.data(), ub.data(), dgb.data(), dub.data(), 1, cols, cols, cols, cols);
  qk::cpu::swiglu_backward(d.data(), g.data(), u.data(), dg.data(), du.data(), 1, cols, cols, cols, cols);
  for (int64_t i = 0; i < cols; ++i) {
    EXPECT_NEAR(qk::bf16_to_f32(outb[i]), out[i], 8e-3 * std::abs(out[i]) + 1e-30) << i;
    EXPECT_NEAR(qk::bf16_to_f32(dgb[i]), dg[i], 8e-3 * std::abs(dg[i]) + 1e-30) << i;
    EXPECT_NEAR(qk::bf16_to_f32(dub[i]), du[i], 8e-3 * std::abs(du[i]) + 1e-30) << i;
  }
}

TEST(SwiGluGrad, BadLeadingDimensionThrows) {
  std::vector<double> a(8);
  EXPECT_THROW(qk::cpu::swiglu_forward(a.data(), a.data(), a.data(), 2, 4, 3, 4), qk::Error);
}

}  // namespace
