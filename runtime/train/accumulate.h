// One optimizer step's forward and backward passes over its micro-batches (gradient accumulation).
// The loss is the mean of -log p over all target tokens of the group: each micro-batch's backward
// gets dlogp = -1/N on its targets, N the group's target count, so the summed gradient is the
// gradient of that mean whatever the split into micro-batches (and padding) is.
#pragma once
#include <cstdint>
#include <vector>

#include "runtime/model/cpu/llama_model.h"

namespace qtrain::train {

// LoRA dropout seed of micro-batch number `micro_step` of a run seeded with `seed`.
uint64_t micro_dropout_seed(uint64_t seed, int64_t micro_step);

struct GroupResult {
  double loss = 0.0;    // mean over the group's target tokens (0 with none)
  int64_t targets = 0;
};

// Adds the group's gradient into the model's LoRA gradients (call zero_grad() before); advances
// micro_step by the group's size.
GroupResult forward_backward_group(model::CpuLlamaModel& m, const std::vector<model::Batch>& group, uint64_t seed,
                                   int64_t& micro_step);

}  // namespace qtrain::train
