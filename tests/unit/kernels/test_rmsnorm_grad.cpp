// Finite-difference check, in fp64, of the RMSNorm CPU backward (the reference the CUDA backward is
// compared with): L = sum(c * y) + sum(e * x), so dx must also carry the residual gradient e, and
// dw must accumulate onto what is already there. The fp64 forward is itself checked against the
// formula, and the bf16 entry points against the fp64 ones.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "qk/bf16_bits.h"
#include "qk/error.h"
#include "qk/rmsnorm.h"

namespace {

std::vector<double> wave(size_t n, double a, double b, double offset = 0.0) {
  std::vector<double> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = offset + std::sin(a * static_cast<double>(i) + b);
  return v;
}

double dot(const std::vector<double>& a, const std::vector<double>& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

TEST(RmsNormGrad, BackwardMatchesFiniteDifferences) {
  const int64_t rows = 3, cols = 7;
  const size_t n = rows * cols;
  const double eps = 1e-5;
  auto x = wave(n, 0.7, 0.3), w = wave(cols, 1.3, 0.9, 0.5);
  const auto c = wave(n, 0.45, 1.1), e = wave(n, 0.2, 2.0);
  auto loss = [&](const std::vector<double>& xv, const std::vector<double>& wv) {
    std::vector<double> y(n);
    qk::cpu::rmsnorm_forward(xv.data(), wv.data(), y.data(), nullptr, rows, cols, eps);
    return dot(c, y) + dot(e, xv);
  };
  std::vector<double> y(n), rstd(rows), dx(n), dw(cols, 0.25);
  qk::cpu::rmsnorm_forward(x.data(), w.data(), y.data(), rstd.data(), rows, cols, eps);
  qk::cpu::rmsnorm_backward(c.data(), x.data(), w.data(), rstd.data(), e.data(), dx.data(), dw.data(), rows, cols);

  const double h = 1e-6;
  for (size_t i = 0; i < n; ++i) {
    auto xp = x, xm = x;
    xp[i] += h, xm[i] -= h;
    const double fd = (loss(xp, w) - loss(xm, w)) / (2 * h);
    EXPECT_NEAR(dx[i], fd, 1e-7 * (1 + std::abs(fd))) << "dx " << i;
  }
  for (int64_t j = 0; j < cols; ++j) {
    auto wp = w, wm = w;
    wp[j] += h, wm[j] -= h;
    const double fd = (loss(x, wp) - loss(x, wm)) / (2 * h);
    EXPECT_NEAR(dw[j] - 0.25, fd, 1e-7 * (1 + std::abs(fd))) << "dw " << j;
  }
}

TEST(RmsNormGrad, ForwardFollowsTheFormula) {
  const int64_t rows = 2, cols = 5;
  const double eps = 1e-6;
  const auto x = wave(rows * cols, 0.9, 0.1), w = wave(cols, 0.6, 0.4, 1.0);
  std::vector<double> y(rows * cols), rstd(rows);
  qk::cpu::rmsnorm_forward(x.data(), w.data(), y.data(), rstd.data(), rows, cols, eps);
  for (int64_t i = 0; i < rows; ++i) {
    double ms = 0;
    for (int64_t j = 0; j < cols; ++j) ms += x[i * cols + j] * x[i * cols + j] / cols;
    EXPECT_NEAR(rstd[i], 1 / std::sqrt(ms + eps), 1e-12);
    for (int64_t j = 0; j < cols; ++j)
      EXPECT_NEAR(y[i * cols + j], x[i * cols + j] / std::sqrt(ms + eps) * w[j], 1e-12);
  }
}

// The bf16 entry points (what the CUDA kernels are compared with) agree with the fp64 ones on the
// same bf16-representable values, up to the final rounding.
TEST(RmsNormGrad, Bf16TwinAgreesWithFp64) {
  const int64_t rows = 4, cols = 13;
  const size_t n = rows * cols;
  std::vector<uint16_t> xb(n), wb(cols), dyb(n), rb(n);
  std::vector<double> x(n), w(cols), dy(n), r(n);
  const auto xs = wave(n, 0.8, 0.2), ws = wave(cols, 0.5, 0.7, 0.8), ds = wave(n, 0.3, 1.9), rs = wave(n, 0.6, 2.2);
  for (size_t i = 0; i < n; ++i) {
    xb[i] = qk::f32_to_bf16_rn(static_cast<float>(xs[i])), x[i] = qk::bf16_to_f32(xb[i]);
    dyb[i] = qk::f32_to_bf16_rn(static_cast<float>(ds[i])), dy[i] = qk::bf16_to_f32(dyb[i]);
    rb[i] = qk::f32_to_bf16_rn(static_cast<float>(rs[i])), r[i] = qk::bf16_to_f32(rb[i]);
  }
  for (int64_t j = 0; j < cols; ++j) {
    wb[j] = qk::f32_to_bf16_rn(static_cast<float>(ws[j]));
    w[j] = qk::bf16_to_f32(wb[j]);
  }

  std::vector<uint16_t> yb(n), dxb(n);
  std::vector<float> rstdf(rows), dwf(cols, 0.0f);
  std::vector<double> y(n), rstd(rows), dx(n), dw(cols, 0.0);
  qk::cpu::rmsnorm_forward(xb.data(), wb.data(), yb.data(), rstdf.data(), rows, cols, 1e-5f);
  qk::cpu::rmsnorm_forward(x.data(), w.data(), y.data(), rstd.data(), rows, cols, static_cast<double>(1e-5f));
  qk::cpu::rmsnorm_backward(dyb.data(), xb.data(), wb.data(), rstdf.data(), rb.data(), dxb.data(), dwf.data(), rows,
                            cols);
  qk::cpu::rmsnorm_backward(dy.data(), x.data(), w.data(), rstd.data(), r.data(), dx.data(), dw.data(), rows, cols);
  for (size_t i = 0; i < n; ++i) {
    EXPECT_NEAR(qk::bf16_to_f32(yb[i]), y[i], 1e-2 * std::abs(y[i]) + 1e-6) << i;
    EXPECT_NEAR(qk::bf16_to_f32(dxb[i]), dx[i], 1e-2 * std::abs(dx[i]) + 1e-6) << i;
  }
  for (int64_t i = 0; i < rows; ++i) EXPECT_NEAR(rstdf[i], rstd[i], 1e-6 * rstd[i]);
  for (int64_t j = 0; j < cols; ++j) EXPECT_NEAR(dwf[j], dw[j], 1e-5 * (1 + std::abs(dw[j])));

  // The residual form: h = bf16(x + r), then the norm of h.
  std::vector<uint16_t> hb(n), yb2(n);
  qk::cpu::residual_rmsnorm_forward(xb.data(), rb.data(), wb.data(), hb.data(), yb2.data(), nullptr, rows, cols,
                                    1e-5f);
  std::vector<uint16_t> want_y(n);
  qk::cpu::rmsnorm_forward(hb.data(), wb.data(), want_y.data(), nullptr, rows, cols, 1e-5f);
  for (size_t i = 0; i < n; ++i) {
    EXPECT_EQ(hb[i], qk::f32_to_bf16_rn(static_cast<float>(x[i] + r[i]))) << i;
    EXPECT_EQ(yb2[i], want_y[i]) << i;
  }
}

TEST(RmsNormGrad, BadSizesThrow) {
  std::vector<double> a(4);
  EXPECT_THROW(qk::cpu::rmsnorm_forward(a.data(), a.data(), a.data(), nullptr, 1, 0, 1e-5), qk::Error);
}

}  // namespace
