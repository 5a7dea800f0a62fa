// The memory plan of a run file (runtime/memory/plan.h) and the out-of-memory error that shows it:
// when the device arena runs out, the user sees the plan of this run, what the cap is, and what to
// lower (micro_batch_size or sequence_len to a size that fits, gradient_checkpointing, a paged
// 8-bit optimizer, LoRA rank) instead of a bare allocation failure.
#pragma once
#include <cstddef>
#include <string>

#include "csrc/config/run_config.h"
#include "csrc/io/hf_config.h"
#include "runtime/memory/plan.h"

namespace qtrain::train {

rt::PlanInput plan_input_for_run(const config::RunConfig& cfg, const io::ModelConfig& model);

// `what` (the arena's message), then the plan table against cap_bytes (what the whole run may use:
// gpu_memory_limit, or the free device memory) and the advice.
std::string out_of_memory_report(const std::string& what, const config::RunConfig& cfg, const io::ModelConfig& model,
                                 size_t cap_bytes);

}  // namespace qtrain::train
