// Op cases: SwiGLU forward and backward on separate tensors and on the halves of one fused gate/up
// buffer (leading dimension 2 I, odd I misaligning `up`), in place too, CUDA vs the CPU twin.
#include <cuda_bf16.h>

#include <string>
#include <tuple>
#include <vector>

#include "harness.h"
#include "qk/swiglu.h"

namespace qtrain::test {
namespace {

using Shape = std::tuple<int64_t, int64_t, bool>;  // rows, cols, fused gate/up buffer

__nv_bfloat16* bf(const DeviceBuffer<uint16_t>& b, int64_t offset = 0) { return b.as<__nv_bfloat16>() + offset; }

class SwiGlu : public ::testing::TestWithParam<Shape> {};

TEST_P(SwiGlu, ForwardAndBackward) {
  QTRAIN_REQUIRE_DEVICE();
  const auto [rows, cols, fused] = GetParam();
  // Fused: one [rows, 2 cols] buffer, gate then up in each row. Separate: gate rows then up rows.
  const int64_t ld_in = fused ? 2 * cols : cols;
  const int64_t up_off = fused ? cols : rows * cols;
  const auto gu = random_bf16(static_cast<size_t>(2 * rows * cols), 1 + cols, 6.0f);  // into silu's tails
  const auto dout = random_bf16(static_cast<size_t>(rows * cols), 2 + cols);
  std::vector<uint16_t> want_out(static_cast<size_t>(rows * cols)), want_grad(gu.size());
  qk::cpu::swiglu_forward(gu.data(), gu.data() + up_off, want_out.data(), rows, cols, ld_in, cols);
  qk::cpu::swiglu_backward(dout.data(), gu.data(), gu.data() + up_off, want_grad.data(), want_grad.data() + up_off,
                           rows, cols, ld_in, cols, ld_in);

  DeviceBuffer<uint16_t> dgu(gu), ddout(dout), out(want_out.size()), grad(gu.size());
  out.poison();
  grad.poison();
  qk::swiglu_forward(bf(dgu), bf(dgu, up_off), bf(out), rows, cols, ld_in, cols, nullptr);
  EXPECT_TRUE(close(out.download(), want_out, kTolBf16));
  qk::swiglu_backward(bf(ddout), bf(dgu), bf(dgu, up_off), bf(grad), bf(grad, up_off), rows, cols, ld_in, cols, ld_in,
                      nullptr);
  EXPECT_TRUE(close(grad.download(), want_grad, kTolBf16));
  // In place: the gradient overwrites the activations it is computed from.
  qk::swiglu_backward(bf(ddout), bf(dgu), bf(dgu, up_off), bf(dgu), bf(dgu, up_off), rows, cols, ld_in, cols, ld_in,
                      nullptr);
  EXPECT_TRUE(close(dgu.download(), want_grad, kTolBf16));
}

INSTANTIATE_TEST_SUITE_P(Ops, SwiGlu,
                         ::testing::Values(Shape{1, 1, false}, Shape{5, 7, false}, Shape{7, 13, true},
                                           Shape{11, 6, true}, Shape{13, 12, true}, Shape{5, 64, true},
                                           Shape{3, 128, false}, Shape{2, 4096, true}, Shape{3, 11008, false}),
                         [](const auto& p) {
                           return "r" + std::to_string(std::get<0>(p.param)) + "_c" +
                                  std::to_string(std::get<1>(p.param)) + (std::get<2>(p.param) ? "_fused" : "");
                         });

TEST(SwiGluErrors, BadArgumentsThrow) {
  QTRAIN_REQUIRE_DEVICE();
  DeviceBuffer<uint16_t> a(64), b(64), c(64);
  EXPECT_THROW(qk::swiglu_forward(bf(a), bf(b), nullptr, 1, 64, 64, 64, nullptr), qk::Error);
  EXPECT_THROW(qk::swiglu_forward(bf(a), bf(b), bf(c), 1, 64, 32, 64, nullptr), qk::Error);
  EXPECT_THROW(qk::swiglu_forward(bf(a), bf(b), bf(a), 1, 8, 16, 8, nullptr), qk::Error);
  EXPECT_THROW(qk::swiglu_backward(bf(a), bf(b), bf(c), bf(a), bf(a), 1, 64, 64, 64, 64, nullptr), qk::Error);
}

}  // namespace
}  // namespace qtrain::test
