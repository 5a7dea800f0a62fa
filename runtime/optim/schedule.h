// Learning-rate schedules with linear warmup, as transformers' get_scheduler defines them (and so
// axolotl and TRL): the multiplier for optimizer step `step` (0-based, the number of updates done).
//   constant: warmup then 1
//   linear:   warmup then (total - step) / (total - warmup), floored at 0
//   cosine:   warmup then 0.5 (1 + cos(pi * progress)), progress = (step - warmup) / (total - warmup)
#pragma once
#include <cstdint>
#include <string>

namespace qtrain::rt {

enum class LrSchedule { Constant, Linear, Cosine };

// "constant", "linear", "cosine"; anything else is a BadInput error naming the key lr_scheduler.
LrSchedule parse_lr_schedule(const std::string& name);

double lr_multiplier(LrSchedule schedule, int64_t step, int64_t warmup_steps, int64_t total_steps);

}  // namespace qtrain::rt
