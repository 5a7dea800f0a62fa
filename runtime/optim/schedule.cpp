// Learning-rate multipliers.
#include "runtime/optim/schedule.h"

#include <algorithm>
#include <cmath>
#include <numbers>

#include "csrc/core/error.h"

namespace qtrain::rt {

LrSchedule parse_lr_schedule(const std::string& name) {
  if (name == "constant") return LrSchedule::Constant;
  if (name == "linear") return LrSchedule::Linear;
  if (name == "cosine") return LrSchedule::Cosine;
  throw_bad_input("", "unknown lr_scheduler \"" + name + "\" (expected constant, linear or cosine)",
                  "key lr_scheduler");
}

double lr_multiplier(LrSchedule schedule, int64_t step, int64_t warmup_steps, int64_t total_steps) {
  if (step < warmup_steps) return static_cast<double>(step) / static_cast<double>(std::max<int64_t>(1, warmup_steps));
  const double span = static_cast<double>(std::max<int64_t>(1, total_steps - warmup_steps));
  switch (schedule) {
    case LrSchedule::Constant: return 1.0;
    case LrSchedule::Linear: return std::max(0.0, static_cast<double>(total_steps - step) / span);
    case LrSchedule::Cosine: {
      const double progress = static_cast<double>(step - warmup_steps) / span;
      return std::max(0.0, 0.5 * (1.0 + std::cos(std::numbers::pi * progress)));
    }
  }
  return 1.0;
}

}  // namespace qtrain::rt
