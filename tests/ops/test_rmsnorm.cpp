// Op cases: RMSNorm forward (plain, residual-fused, in place), backward (dx with and without the
// residual gradient, dw accumulated and bitwise repeatable), CUDA vs the fp64 CPU twin.
#include <cuda_bf16.h>

#include <string>
#include <tuple>
#include <vector>

#include "harness.h"
#include "qk/rmsnorm.h"

namespace qtrain::test {
namespace {

using Shape = std::tuple<int64_t, int64_t>;  // rows, cols
constexpr float kEps = 1e-5f;

__nv_bfloat16* bf(const DeviceBuffer<uint16_t>& b) { return b.as<__nv_bfloat16>(); }

class RmsNorm : public ::testing::TestWithParam<Shape> {};

TEST_P(RmsNorm, Forward) {
  QTRAIN_REQUIRE_DEVICE();
  const auto [rows, cols] = GetParam();
  const size_t n = static_cast<size_t>(rows * cols);
  const auto x = random_bf16(n, 1 + cols, 2.0f), w = random_bf16(static_cast<size_t>(cols), 2 + cols);
  std::vector<uint16_t> want(n);
  std::vector<float> want_rstd(static_cast<size_t>(rows));
  qk::cpu::rmsnorm_forward(x.data(), w.data(), want.data(), want_rstd.data(), rows, cols, kEps);

  DeviceBuffer<uint16_t> dx(x), dw(w), y(n);
  DeviceBuffer<float> rstd(static_cast<size_t>(rows));
  y.poison();
  rstd.poison();
  qk::rmsnorm_forward(bf(dx), bf(dw), bf(y), rstd.get(), rows, cols, kEps, nullptr);
  EXPECT_TRUE(close(y.download(), want, kTolBf16));
  EXPECT_TRUE(close(rstd.download(), want_rstd, kTolF32));
  // Without rstd (inference) the output is the same.
  y.poison();
  qk::rmsnorm_forward(bf(dx), bf(dw), bf(y), nullptr, rows, cols, kEps, nullptr);
  EXPECT_TRUE(close(y.download(), want, kTolBf16));
}

TEST_P(RmsNorm, ResidualForward) {
  QTRAIN_REQUIRE_DEVICE();
  const auto [rows, cols] = GetParam();
  const size_t n = static_cast<size_t>(rows * cols);
  const auto x = random_bf16(n, 3 + cols, 2.0f), r = random_bf16(n, 4 + cols, 1.5f);
  const auto w = random_bf16(static_cast<size_t>(cols), 5 + cols);
  std::vector<uint16_t> want_h(n), want_y(n);
  std::vector<float> want_rstd(static_cast<size_t>(rows));
  qk::cpu::residual_rmsnorm_forward(x.data(), r.data(), w.data(), want_h.data(), want_y.data(), want_rstd.data(),
                                    rows, cols, kEps);

  DeviceBuffer<uint16_t> dx(x), dr(r), dw(w), h(n), y(n);
  DeviceBuffer<float> rstd(static_cast<size_t>(rows));
  h.poison();
  y.poison();
  rstd.poison();
  qk::residual_rmsnorm_forward(bf(dx), bf(dr), bf(dw), bf(h), bf(y), rstd.get(), rows, cols, kEps, nullptr);
  EXPECT_TRUE(identical(h.download(), want_h));
  EXPECT_TRUE(close(y.download(), want_y, kTolBf16));
  EXPECT_TRUE(close(rstd.download(), want_rstd, kTolF32));
  // In place: the residual stream x becomes h.
  y.poison();
  qk::residual_rmsnorm_forward(bf(dx), bf(dr), bf(dw), bf(dx), bf(y), nullptr, rows, cols, kEps, nullptr);
  EXPECT_TRUE(identical(dx.download(), want_h));
  EXPECT_TRUE(close(y.download(), want_y, kTolBf16));
}

TEST_P(RmsNorm, Backward) {
  QTRAIN_REQUIRE_DEVICE();
  const auto [rows, cols] = GetParam();
  const size_t n = static_cast<size_t>(rows * cols);
  const auto x = random_bf16(n, 6 + cols, 2.0f), w = random_bf16(static_cast<size_t>(cols), 7 + cols);
  const auto dy = random_bf16(n, 8 + cols), dres = random_bf16(n, 9 + cols, 0.5f);
  std::vector<uint16_t> y(n);
  std::vector<float> rstd(static_cast<size_t>(rows));
  qk::cpu::rmsnorm_forward(x.data(), w.data(), y.data(), rstd.data(), rows, cols, kEps);
  const auto dw_init = random_f32(static_cast<size_t>(cols), 10 + cols, 0.1f);
  std::vector<uint16_t> want_dx(n), want_dx_res(n);
  std::vector<float> want_dw = dw_init;
  qk::cpu::rmsnorm_backward(dy.data(), x.data(), w.data(), rstd.data(), nullptr, want_dx.data(), want_dw.data(),
                            rows, cols);
  qk::cpu::rmsnorm_backward(dy.data(), x.data(), w.data(), rstd.data(), dres.data(), want_dx_res.data(), nullptr,
                            rows, cols);

  DeviceBuffer<uint16_t> ddy(dy), dx_in(x), dwt(w), ddres(dres), dx(n);
  DeviceBuffer<float> drstd(rstd), dw1(dw_init), dw2(dw_init);
  DeviceBuffer<float> work(static_cast<size_t>(qk::rmsnorm_backward_workspace(rows, cols)));
  dx.poison();
  qk::rmsnorm_backward(bf(ddy), bf(dx_in), bf(dwt), drstd.get(), nullptr, bf(dx), dw1.get(), work.get(), rows, cols,
                       nullptr);
  EXPECT_TRUE(close(dx.download(), want_dx, kTolBf16));
  const auto got_dw = dw1.download();
  EXPECT_TRUE(close(got_dw, want_dw, kTolF32));
  qk::rmsnorm_backward(bf(ddy), bf(dx_in), bf(dwt), drstd.get(), nullptr, bf(dx), dw2.get(), work.get(), rows, cols,
                       nullptr);
  EXPECT_TRUE(identical(dw2.download(), got_dw));

  // The residual gradient, no dw (frozen weight), dx written over dres in place.
  qk::rmsnorm_backward(bf(ddy), bf(dx_in), bf(dwt), drstd.get(), bf(ddres), bf(ddres), nullptr, nullptr, rows, cols,
                       nullptr);
  EXPECT_TRUE(close(ddres.download(), want_dx_res, kTolBf16));
}

// cols 7, 13 (scalar), 6 (pairs), 12 (4-wide), 64..4096 (16-byte).
INSTANTIATE_TEST_SUITE_P(Ops, RmsNorm,
                         ::testing::Values(Shape{1, 64}, Shape{5, 7}, Shape{7, 13}, Shape{11, 6}, Shape{13, 12},
                                           Shape{11, 128}, Shape{13, 80}, Shape{3, 4096}),
                         [](const auto& p) {
                           return "r" + std::to_string(std::get<0>(p.param)) + "_c" +
                                  std::to_string(std::get<1>(p.param));
                         });

// More rows than partial dw rows, so each block takes several rows (one launch: 512 emulated
// blocks are slow).
TEST(RmsNormManyRows, BackwardStridesOverRows) {
  QTRAIN_REQUIRE_DEVICE();
  const int64_t rows = qk::kRmsNormMaxPartials + 3, cols = 8;
  const size_t n = static_cast<size_t>(rows * cols);
  const auto x = random_bf16(n, 31, 2.0f), w = random_bf16(cols, 32), dy = random_bf16(n, 33);
  std::vector<uint16_t> y(n), want_dx(n);
  std::vector<float> rstd(static_cast<size_t>(rows)), want_dw(cols, 0.0f);
  qk::cpu::rmsnorm_forward(x.data(), w.data(), y.data(), rstd.data(), rows, cols, kEps);
  qk::cpu::rmsnorm_backward(dy.data(), x.data(), w.data(), rstd.data(), nullptr, want_dx.data(), want_dw.data(), rows,
                            cols);
  DeviceBuffer<uint16_t> ddy(dy), dx_in(x), dwt(w), dx(n);
  DeviceBuffer<float> drstd(rstd), dw(std::vector<float>(cols, 0.0f));
  DeviceBuffer<float> work(static_cast<size_t>(qk::rmsnorm_backward_workspace(rows, cols)));
  dx.poison();
  qk::rmsnorm_backward(bf(ddy), bf(dx_in), bf(dwt), drstd.get(), nullptr, bf(dx), dw.get(), work.get(), rows, cols,
                       nullptr);
  EXPECT_TRUE(close(dx.download(), want_dx, kTolBf16));
  EXPECT_TRUE(close(dw.download(), want_dw, kTolF32));
}

TEST(RmsNormErrors, BadArgumentsThrow) {
  QTRAIN_REQUIRE_DEVICE();
  DeviceBuffer<uint16_t> a(64), b(64), c(64);
  DeviceBuffer<float> rstd(1), dw(64);
  EXPECT_THROW(qk::rmsnorm_forward(bf(a), bf(b), nullptr, nullptr, 1, 64, kEps, nullptr), qk::Error);
  EXPECT_THROW(qk::rmsnorm_forward(bf(a), bf(b), bf(c), nullptr, 1, 0, kEps, nullptr), qk::Error);
  // dw without workspace, and cols beyond what the backward supports.
  EXPECT_THROW(qk::rmsnorm_backward(bf(a), bf(b), bf(c), rstd.get(), nullptr, bf(a), dw.get(), nullptr, 1, 64,
                                    nullptr),
               qk::Error);
  EXPECT_THROW(qk::rmsnorm_backward(bf(a), bf(b), bf(c), rstd.get(), nullptr, bf(a), dw.get(), dw.get(), 1,
                                    qk::kRmsNormMaxCols + 8, nullptr),
               qk::Error);
  EXPECT_THROW(qk::residual_rmsnorm_forward(bf(a), bf(b), bf(c), bf(a), bf(a), nullptr, 1, 64, kEps, nullptr),
               qk::Error);
}

}  // namespace
}  // namespace qtrain::test
