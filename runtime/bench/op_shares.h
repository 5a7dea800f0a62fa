// Each op's share of a training step, from the range profiler (qk/range_profiler.h): `qtrain bench`
// runs a few extra steps with the profiler on, after the timed ones (so tokens/s is unaffected), and
// reports per range name its calls per step, its self time (the range less the ranges inside it) and
// its inclusive time, each in ms per step and as a share of the step. The step itself is the
// outermost range, so the self shares add up to 100%; what no inner range covers stays with it.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "qk/range_profiler.h"

namespace qtrain::bench {

struct OpShare {
  std::string name;
  double calls = 0.0;         // per step
  double self_ms = 0.0;       // per step
  double inclusive_ms = 0.0;  // per step
  double self_share = 0.0;    // fraction of the step
  double inclusive_share = 0.0;
};

struct OpShares {
  int64_t steps = 0;
  double step_ms = 0.0;  // mean of the profiled steps
  std::string clock;     // what timed them, for the report
  std::vector<OpShare> ops;  // by self share, largest first
};

// The profiles of `steps.size()` steps (one qk::prof::take() each) merged by range name.
OpShares summarize_op_shares(const std::vector<qk::prof::Profile>& steps, const std::string& clock);

// A header line, one line per range, and the sum of the self shares.
std::string format_op_shares(const OpShares& s);

}  // namespace qtrain::bench
