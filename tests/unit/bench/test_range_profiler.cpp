// The range profiler (qk/range_profiler.h) and the per-op table built from it
// (runtime/bench/op_shares.h): nested ranges, self against inclusive time, calls, enable/disable, and
// shares that add up to the whole step. A scripted clock makes every time exact.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "qk/nvtx.h"
#include "qk/range_profiler.h"
#include "runtime/bench/op_shares.h"

namespace {

// Each mark is the previous one plus the next step of `steps_ms` (then 1 ms), in microseconds.
class ScriptedClock final : public qk::prof::Clock {
 public:
  explicit ScriptedClock(std::vector<double> steps_ms = {}) : steps_(std::move(steps_ms)) {}
  int64_t mark() override {
    const double step = i_ < steps_.size() ? steps_[i_] : 1.0;
    ++i_;
    now_ += static_cast<int64_t>(step * 1000.0);
    ++marks;
    return now_;
  }
  double ms(int64_t begin, int64_t end) override { return static_cast<double>(end - begin) / 1000.0; }
  void settle() override { ++settles; }
  void reset() override { ++resets; }
  int marks = 0, settles = 0, resets = 0;

 private:
  std::vector<double> steps_;
  size_t i_ = 0;
  int64_t now_ = 0;
};

// Turns the profiler off, drops any clock of the test (declared after the guard, it is gone by
// now) and empties the log, whatever the test did.
struct ProfilerGuard {
  ~ProfilerGuard() {
    qk::prof::disable();
    qk::prof::set_clock(nullptr);
    (void)qk::prof::take();
  }
};

const qk::prof::RangeStat* find(const qk::prof::Profile& p, const std::string& name) {
  for (const auto& r : p.ranges)
    if (r.name == name) return &r;
  return nullptr;
}

TEST(RangeProfiler, OffByDefaultRecordsNothing) {
  ProfilerGuard guard;
  ASSERT_FALSE(qk::prof::enabled());
  ScriptedClock clock;
  qk::prof::set_clock(&clock);
  {
    QK_NVTX_RANGE("outer");
    QK_NVTX_FUNC();
  }
  EXPECT_EQ(clock.marks, 0);
  EXPECT_TRUE(qk::prof::take().ranges.empty());
}

TEST(RangeProfiler, NestedRangesSelfAndInclusive) {
  ProfilerGuard guard;
  // Marks, in order: step+ (1) a+ (2) a- (5: a = 3) b+ (1) c+ (1) c- (4: c = 4) b- (2: b = 7)
  // b+ (1) b- (2: b = 2) step- (3: step = 1+2+3+1+1+4+2+1+2+3 - 1 = 19).
  ScriptedClock clock({1, 2, 3, 1, 1, 4, 2, 1, 2, 3});
  qk::prof::enable(&clock);
  {
    qk::prof::Range step("step");
    { QK_NVTX_RANGE("a"); }
    {
      QK_NVTX_RANGE("b");
      QK_NVTX_RANGE("c");
    }
    { QK_NVTX_RANGE("b"); }
  }
  qk::prof::disable();
  EXPECT_EQ(clock.marks, 10);
  const qk::prof::Profile p = qk::prof::take();
  EXPECT_EQ(clock.settles, 1);
  EXPECT_EQ(clock.resets, 1);
  ASSERT_EQ(p.ranges.size(), 4u);
  EXPECT_EQ(p.ranges[0].name, "step");  // first appearance order
  EXPECT_DOUBLE_EQ(p.total_ms, 19.0);
  const auto* step = find(p, "step");
  const auto* a = find(p, "a");
  const auto* b = find(p, "b");
  const auto* c = find(p, "c");
  ASSERT_TRUE(step && a && b && c);
  EXPECT_EQ(step->calls, 1);
  EXPECT_EQ(a->calls, 1);
  EXPECT_EQ(b->calls, 2);
  EXPECT_EQ(c->calls, 1);
  EXPECT_DOUBLE_EQ(a->inclusive_ms, 3.0);
  EXPECT_DOUBLE_EQ(a->self_ms, 3.0);
  EXPECT_DOUBLE_EQ(c->inclusive_ms, 4.0);
  EXPECT_DOUBLE_EQ(b->inclusive_ms, 7.0 + 2.0);
  EXPECT_DOUBLE_EQ(b->self_ms, 3.0 + 2.0);
  EXPECT_DOUBLE_EQ(step->inclusive_ms, 19.0);
  EXPECT_DOUBLE_EQ(step->self_ms, 19.0 - 3.0 - 9.0);
  double self = 0.0;
  for (const auto& r : p.ranges) self += r.self_ms;
  EXPECT_DOUBLE_EQ(self, p.total_ms);
  // The log is consumed.
  EXPECT_TRUE(qk::prof::take().ranges.empty());
}

TEST(RangeProfiler, EnableAndDisableMidRange) {
  ProfilerGuard guard;
  ScriptedClock clock;
  qk::prof::set_clock(&clock);
  {
    QK_NVTX_RANGE("before");  // opened while off: never recorded, its close is ignored
    qk::prof::enable(&clock);
    {
      QK_NVTX_RANGE("inside");
      qk::prof::disable();  // an open range still closes
      QK_NVTX_RANGE("after");
    }
  }
  const qk::prof::Profile p = qk::prof::take();
  ASSERT_EQ(p.ranges.size(), 1u);
  EXPECT_EQ(p.ranges[0].name, "inside");
  EXPECT_EQ(clock.marks, 2);
  EXPECT_DOUBLE_EQ(p.total_ms, 1.0);
}

TEST(RangeProfiler, TakeInsideAnOpenRangeThrows) {
  ProfilerGuard guard;
  ScriptedClock clock;
  qk::prof::enable(&clock);
  qk::prof::Range r("open");
  EXPECT_THROW((void)qk::prof::take(), std::logic_error);
}

TEST(RangeProfiler, HostClockMeasuresRealTime) {
  ProfilerGuard guard;
  qk::prof::enable();
  {
    QK_NVTX_RANGE("outer");
    volatile double x = 0;
    for (int i = 0; i < 100000; ++i) x = x + 1.0;
  }
  qk::prof::disable();
  const qk::prof::Profile p = qk::prof::take();
  ASSERT_EQ(p.ranges.size(), 1u);
  EXPECT_GT(p.ranges[0].inclusive_ms, 0.0);
  EXPECT_DOUBLE_EQ(p.ranges[0].self_ms, p.ranges[0].inclusive_ms);
}

TEST(OpShares, MergesStepsAndSortsBySelfShare) {
  qk::prof::Profile s1, s2;
  s1.total_ms = 10.0;
  s1.ranges = {{"train_step", 1, 1.0, 10.0}, {"gemm", 4, 6.0, 6.0}, {"norm", 2, 3.0, 3.0}};
  s2.total_ms = 14.0;
  s2.ranges = {{"train_step", 1, 3.0, 14.0}, {"gemm", 4, 8.0, 8.0}, {"norm", 2, 2.0, 2.0}, {"rare", 1, 1.0, 1.0}};
  const qtrain::bench::OpShares s = qtrain::bench::summarize_op_shares({s1, s2}, "test clock");
  EXPECT_EQ(s.steps, 2);
  EXPECT_DOUBLE_EQ(s.step_ms, 12.0);
  ASSERT_EQ(s.ops.size(), 4u);
  EXPECT_EQ(s.ops[0].name, "gemm");
  EXPECT_DOUBLE_EQ(s.ops[0].calls, 4.0);
  EXPECT_DOUBLE_EQ(s.ops[0].self_ms, 7.0);
  EXPECT_DOUBLE_EQ(s.ops[0].self_share, 14.0 / 24.0);
  EXPECT_EQ(s.ops[1].name, "norm");
  EXPECT_EQ(s.ops[2].name, "train_step");
  EXPECT_DOUBLE_EQ(s.ops[2].inclusive_share, 1.0);
  EXPECT_EQ(s.ops[3].name, "rare");
  EXPECT_DOUBLE_EQ(s.ops[3].calls, 0.5);
  double sum = 0.0;
  for (const auto& o : s.ops) sum += o.self_share;
  EXPECT_NEAR(sum, 1.0, 1e-12);
  const std::string text = qtrain::bench::format_op_shares(s);
  EXPECT_NE(text.find("op shares: 2 profiled steps"), std::string::npos) << text;
  EXPECT_NE(text.find("(test clock)"), std::string::npos) << text;
  EXPECT_NE(text.find("self shares sum to 100.0%"), std::string::npos) << text;
  EXPECT_LT(text.find("gemm"), text.find("norm")) << text;
}

TEST(OpShares, NoStepsNoTable) {
  const qtrain::bench::OpShares s = qtrain::bench::summarize_op_shares({}, "x");
  EXPECT_EQ(s.steps, 0);
  EXPECT_TRUE(s.ops.empty());
}

}  // namespace
