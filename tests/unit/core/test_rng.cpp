// The seeded generator: known values, stream independence, and the shape of its distributions.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "csrc/core/rng.h"

namespace qtrain {
namespace {

TEST(Rng, Splitmix64KnownValues) {
  // Published splitmix64 outputs for state 0.
  uint64_t st = 0;
  EXPECT_EQ(splitmix64(st), 0xe220a8397b1dcdafull);
  EXPECT_EQ(splitmix64(st), 0x6e789e6aa1b965f4ull);
  EXPECT_EQ(splitmix64(st), 0x06c45d188009454full);
}

TEST(Rng, SameSeedSameStream) {
  Rng a(42), b(42), c(43);
  bool differs = false;
  for (int i = 0; i < 1000; ++i) {
    const uint64_t x = a.next_u64();
    EXPECT_EQ(x, b.next_u64());
    differs |= x != c.next_u64();
  }
  EXPECT_TRUE(differs);
}

TEST(Rng, NamedStreamsAreIndependentOfOrder) {
  Rng a1 = Rng::for_stream(7, "model.norm.weight");
  Rng b1 = Rng::for_stream(7, "lm_head.weight");
  Rng b2 = Rng::for_stream(7, "lm_head.weight");
  Rng a2 = Rng::for_stream(7, "model.norm.weight");
  EXPECT_EQ(a1.next_u64(), a2.next_u64());
  EXPECT_EQ(b1.next_u64(), b2.next_u64());
  EXPECT_NE(Rng::for_stream(7, "x").next_u64(), Rng::for_stream(8, "x").next_u64());
}

TEST(Rng, UniformRange) {
  Rng r(1);
  double sum = 0;
  for (int i = 0; i < 100000; ++i) {
    const double u = r.uniform();
    ASSERT_GE(u, 0.0);
    ASSERT_LT(u, 1.0);
    sum += u;
  }
  EXPECT_NEAR(sum / 100000, 0.5, 0.01);
}

TEST(Rng, BelowIsUniform) {
  Rng r(2);
  std::vector<int> counts(7, 0);
  for (int i = 0; i < 70000; ++i) {
    const uint64_t v = r.below(7);
    ASSERT_LT(v, 7u);
    ++counts[v];
  }
  for (int c : counts) EXPECT_NEAR(c, 10000, 500);
  EXPECT_EQ(r.below(1), 0u);
}

TEST(Rng, NormalMoments) {
  Rng r(3);
  const int n = 200000;
  double s1 = 0, s2 = 0, s4 = 0;
  for (int i = 0; i < n; ++i) {
    const double x = r.normal(1.5, 0.5);
    ASSERT_TRUE(std::isfinite(x));
    const double z = (x - 1.5) / 0.5;
    s1 += z;
    s2 += z * z;
    s4 += z * z * z * z;
  }
  EXPECT_NEAR(s1 / n, 0.0, 0.01);
  EXPECT_NEAR(s2 / n, 1.0, 0.02);
  EXPECT_NEAR(s4 / n, 3.0, 0.1);  // kurtosis of a normal
}

}  // namespace
}  // namespace qtrain
