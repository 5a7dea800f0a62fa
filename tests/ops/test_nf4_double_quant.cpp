// Op cases: double quantization of the NF4 absmax (offset, signed 8-bit dynamic code, nested
// absmax) and its inverse, CUDA vs the CPU twin, bitwise.
#include <cmath>

#include "harness.h"
#include "qk/nf4.h"
#include "qk/nf4_double_quant.h"

namespace qtrain::test {
namespace {

class Nf4DoubleQuant : public ::testing::TestWithParam<size_t> {};

TEST_P(Nf4DoubleQuant, MatchesCpuBitwise) {
  QTRAIN_REQUIRE_DEVICE();
  const size_t nb = GetParam(), nn = qk::nf4::num_blocks(nb, 256);
  auto absmax = random_f32(nb, 7 + nb, 0.5f);
  for (auto& v : absmax) v = std::abs(v);
  std::vector<uint8_t> want_q(nb);
  std::vector<float> want_nested(nn);
  const float want_offset = qk::cpu::nf4_double_quantize(absmax.data(), nb, want_q.data(), want_nested.data());
  std::vector<float> want_back(nb);
  qk::cpu::nf4_double_dequantize(want_q.data(), want_nested.data(), want_offset, nb, want_back.data());

  DeviceBuffer<float> da(absmax);
  DeviceBuffer<uint8_t> dq(nb);
  DeviceBuffer<float> dn(nn), doff(1), dback(nb);
  dq.poison();
  dn.poison();
  doff.poison();
  dback.poison();
  qk::nf4_double_quantize(da.get(), nb, dq.get(), dn.get(), doff.get(), nullptr);
  EXPECT_TRUE(identical(doff.download(), std::vector<float>{want_offset}));
  EXPECT_TRUE(identical(dq.download(), want_q));
  EXPECT_TRUE(identical(dn.download(), want_nested));
  qk::nf4_double_dequantize(dq.get(), dn.get(), want_offset, nb, dback.get(), nullptr);
  EXPECT_TRUE(identical(dback.download(), want_back));
}

INSTANTIATE_TEST_SUITE_P(Ops, Nf4DoubleQuant, ::testing::Values(1, 5, 7, 13, 255, 256, 257, 1000, 65536 + 11),
                         [](const auto& p) { return "nb" + std::to_string(p.param); });

}  // namespace
}  // namespace qtrain::test
