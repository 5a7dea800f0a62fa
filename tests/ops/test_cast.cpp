// Op cases: f32 <-> bf16 casts, bitwise against the CPU twin (both round to nearest even).
#include <cuda_bf16.h>

#include "harness.h"
#include "qk/cast.h"

namespace qtrain::test {
namespace {

class Cast : public ::testing::TestWithParam<size_t> {};

TEST_P(Cast, F32ToBf16) {
  QTRAIN_REQUIRE_DEVICE();
  const size_t n = GetParam();
  auto x = random_f32(n, 11 + n, 3.0f);
  if (n > 4) {  // edge values: ties, overflow to inf, NaN, subnormal
    x[0] = qk::f32_from_bits(0x3f808000u);  // exactly between two bf16 values: ties to even
    x[1] = qk::f32_from_bits(0x7f7fffffu);  // largest float: rounds to inf
    x[2] = qk::f32_from_bits(0x00000001u);  // smallest subnormal
    x[3] = qk::f32_from_bits(0x3f818000u);  // tie, odd lower neighbour: rounds up
  }
  std::vector<uint16_t> want(n);
  qk::cpu::cast_f32_to_bf16(x.data(), want.data(), n);

  DeviceBuffer<float> dx(x);
  DeviceBuffer<uint16_t> dy(n);
  dy.poison();
  qk::cast_f32_to_bf16(dx.get(), dy.as<__nv_bfloat16>(), n, nullptr);
  EXPECT_TRUE(identical(dy.download(), want));
}

TEST_P(Cast, Bf16ToF32) {
  QTRAIN_REQUIRE_DEVICE();
  const size_t n = GetParam();
  const auto x = random_bf16(n, 17 + n, 5.0f);
  std::vector<float> want(n);
  qk::cpu::cast_bf16_to_f32(x.data(), want.data(), n);

  DeviceBuffer<uint16_t> dx(x);
  DeviceBuffer<float> dy(n);
  dy.poison();
  qk::cast_bf16_to_f32(dx.as<__nv_bfloat16>(), dy.get(), n, nullptr);
  EXPECT_TRUE(identical(dy.download(), want));
}

TEST(CastErrors, NullPointerIsAnError) {
  QTRAIN_REQUIRE_DEVICE();
  EXPECT_THROW(qk::cast_f32_to_bf16(nullptr, nullptr, 5, nullptr), qk::Error);
}

INSTANTIATE_TEST_SUITE_P(Ops, Cast, ::testing::Values(1, 5, 7, 11, 13, 128, 1027, 4096 + 3),
                         [](const auto& p) { return "n" + std::to_string(p.param); });

}  // namespace
}  // namespace qtrain::test
