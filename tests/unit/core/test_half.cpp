// bf16 / f16 host conversions: round to nearest even, ties, overflow, NaN, infinities, subnormals.
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>

#include "csrc/core/half.h"

namespace qtrain {
namespace {

float f(uint32_t bits) { return std::bit_cast<float>(bits); }

TEST(Bf16, ExactValuesRoundTrip) {
  for (float v : {1.0f, -2.0f, 0.5f, 3.0f, -0.0f, 0.0f, 0x1p100f, -65536.0f, -0x1.fep-120f}) {
    EXPECT_EQ(bf16_bits_to_f32(f32_to_bf16_bits(v)), v) << v;
  }
  EXPECT_EQ(f32_to_bf16_bits(-0.0f), 0x8000);
}

TEST(Bf16, TiesGoToEven) {
  EXPECT_EQ(f32_to_bf16_bits(f(0x3f808000u)), 0x3f80);  // tie, even below: down
  EXPECT_EQ(f32_to_bf16_bits(f(0x3f818000u)), 0x3f82);  // tie, odd below: up
  EXPECT_EQ(f32_to_bf16_bits(f(0x3f808001u)), 0x3f81);  // just above the tie: up
  EXPECT_EQ(f32_to_bf16_bits(f(0x3f807fffu)), 0x3f80);  // just below: down
}

TEST(Bf16, OverflowInfNan) {
  EXPECT_EQ(f32_to_bf16_bits(f(0x7f7fffffu)), 0x7f80);  // FLT_MAX rounds to inf
  EXPECT_EQ(f32_to_bf16_bits(std::numeric_limits<float>::infinity()), 0x7f80);
  EXPECT_EQ(f32_to_bf16_bits(-std::numeric_limits<float>::infinity()), 0xff80);
  const uint16_t nan = f32_to_bf16_bits(f(0x7f800001u));  // signalling NaN with a low payload
  EXPECT_TRUE(std::isnan(bf16_bits_to_f32(nan)));
  EXPECT_TRUE(std::isnan(bf16_bits_to_f32(f32_to_bf16_bits(std::nanf("")))));
}

TEST(Bf16, Subnormals) {
  EXPECT_EQ(f32_to_bf16_bits(f(0x00010000u)), 0x0001);  // exact bf16 subnormal
  EXPECT_EQ(f32_to_bf16_bits(f(0x00008000u)), 0x0000);  // tie to even: 0
  EXPECT_EQ(f32_to_bf16_bits(f(0x00018000u)), 0x0002);  // tie, odd below: up
  EXPECT_EQ(bf16_bits_to_f32(0x0001), f(0x00010000u));
}

// Nearest-even against a brute-force reference on many bit patterns.
TEST(Bf16, MatchesNearestEvenReference) {
  uint64_t s = 12345;
  for (int i = 0; i < 200000; ++i) {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    const uint32_t bits = static_cast<uint32_t>(s >> 32);
    const float x = f(bits);
    if (std::isnan(x)) continue;
    const uint16_t lo = static_cast<uint16_t>(bits >> 16);
    const uint16_t hi = static_cast<uint16_t>(lo + 1);
    const double dx = x, dlo = bf16_bits_to_f32(lo);
    // Past the largest finite bf16 the next step up is infinity: round as if it were 2^128.
    double dhi = bf16_bits_to_f32(hi);
    if (std::isinf(dhi) && !std::isinf(dlo)) dhi = std::copysign(std::ldexp(1.0, 128), dhi);
    uint16_t want;
    if (std::isnan(dhi) || std::abs(dx - dlo) < std::abs(dhi - dx)) want = lo;
    else if (std::abs(dx - dlo) > std::abs(dhi - dx)) want = hi;
    else want = (lo & 1) ? hi : lo;
    ASSERT_EQ(f32_to_bf16_bits(x), want) << std::hex << bits;
  }
}

#if defined(__FLT16_MAX__)
// The compiler's _Float16 conversion rounds to nearest even: use it as the f16 reference.
TEST(F16, MatchesCompilerConversion) {
  uint64_t s = 99;
  for (int i = 0; i < 300000; ++i) {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    // Bias toward the f16 range so normals, subnormals and overflow are all hit.
    uint32_t bits = static_cast<uint32_t>(s >> 32);
    bits = (bits & 0x807fffffu) | ((100u + ((bits >> 23) % 50u)) << 23);
    const float x = f(bits);
    const _Float16 h = static_cast<_Float16>(x);
    ASSERT_EQ(f32_to_f16_bits(x), std::bit_cast<uint16_t>(h)) << std::hex << bits;
  }
}
#endif

TEST(F16, EveryValueRoundTrips) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const float x = f16_bits_to_f32(static_cast<uint16_t>(h));
    if (std::isnan(x)) {
      EXPECT_TRUE(std::isnan(f16_bits_to_f32(f32_to_f16_bits(x))));
      continue;
    }
    ASSERT_EQ(f32_to_f16_bits(x), h) << h;
  }
}

TEST(F16, EdgeValues) {
  EXPECT_EQ(f32_to_f16_bits(65504.0f), 0x7bff);
  EXPECT_EQ(f32_to_f16_bits(65519.0f), 0x7bff);  // below the midpoint to 65536: stays finite
  EXPECT_EQ(f32_to_f16_bits(65520.0f), 0x7c00);  // the midpoint ties to even: inf
  EXPECT_EQ(f32_to_f16_bits(std::numeric_limits<float>::infinity()), 0x7c00);
  EXPECT_EQ(f32_to_f16_bits(-0.0f), 0x8000);
  EXPECT_EQ(f32_to_f16_bits(std::ldexp(1.0f, -24)), 0x0001);   // smallest subnormal
  EXPECT_EQ(f32_to_f16_bits(std::ldexp(1.0f, -25)), 0x0000);   // half of it: tie to even, 0
  EXPECT_EQ(f32_to_f16_bits(std::ldexp(1.5f, -24)), 0x0002);   // 1.5 units: tie, odd below: up
  EXPECT_EQ(f32_to_f16_bits(std::ldexp(1.0f, -14)), 0x0400);   // smallest normal
  EXPECT_EQ(f16_bits_to_f32(0x03ff), std::ldexp(1023.0f, -24));  // largest subnormal
  EXPECT_TRUE(std::isnan(f16_bits_to_f32(f32_to_f16_bits(std::nanf("")))));
}

}  // namespace
}  // namespace qtrain
