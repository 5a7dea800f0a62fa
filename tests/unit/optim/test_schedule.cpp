// Learning-rate schedules against their closed forms (transformers' definitions).
#include <gtest/gtest.h>

#include <cmath>
#include <numbers>

#include "csrc/core/error.h"
#include "runtime/optim/schedule.h"

namespace qtrain::rt {
namespace {

TEST(LrSchedule, WarmupIsLinearFromZero) {
  for (auto s : {LrSchedule::Constant, LrSchedule::Linear, LrSchedule::Cosine}) {
    EXPECT_DOUBLE_EQ(lr_multiplier(s, 0, 10, 100), 0.0);
    EXPECT_DOUBLE_EQ(lr_multiplier(s, 3, 10, 100), 0.3);
    EXPECT_DOUBLE_EQ(lr_multiplier(s, 10, 10, 100), 1.0);
  }
}

TEST(LrSchedule, ClosedForms) {
  const int64_t w = 7, total = 53;
  for (int64_t t = w; t <= total + 3; ++t) {
    EXPECT_DOUBLE_EQ(lr_multiplier(LrSchedule::Constant, t, w, total), 1.0);
    EXPECT_NEAR(lr_multiplier(LrSchedule::Linear, t, w, total), std::max(0.0, double(total - t) / double(total - w)),
                1e-15);
    const double p = double(t - w) / double(total - w);
    EXPECT_NEAR(lr_multiplier(LrSchedule::Cosine, t, w, total),
                std::max(0.0, 0.5 * (1 + std::cos(std::numbers::pi * p))), 1e-15);
  }
  EXPECT_NEAR(lr_multiplier(LrSchedule::Cosine, (w + total) / 2, w, total), 0.5, 1e-12);
  EXPECT_DOUBLE_EQ(lr_multiplier(LrSchedule::Linear, total, w, total), 0.0);
}

TEST(LrSchedule, NoWarmup) {
  EXPECT_DOUBLE_EQ(lr_multiplier(LrSchedule::Linear, 0, 0, 10), 1.0);
  EXPECT_DOUBLE_EQ(lr_multiplier(LrSchedule::Cosine, 0, 0, 10), 1.0);
}

TEST(LrSchedule, Parse) {
  EXPECT_EQ(parse_lr_schedule("cosine"), LrSchedule::Cosine);
  try {
    parse_lr_schedule("cosine_with_restarts");
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::BadInput);
    EXPECT_NE(std::string(e.what()).find("lr_scheduler"), std::string::npos);
  }
}

}  // namespace
}  // namespace qtrain::rt
