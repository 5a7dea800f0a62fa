// Supervised fine-tuning: the loop of `qtrain train`, the same on both backends (train_backend.h:
// the CPU's fp32 model, or a GPU's bf16 model with the device optimizer; the run's `device` key).
//
// One optimizer step takes gradient_accumulation_steps micro-batches from the shuffled, resumable
// data iterator. The loss of the step is the mean of -log p over ALL target tokens of those
// micro-batches (not the mean of the micro-batches' means): each micro-batch's backward is seeded
// with dlogp = -1/N on its target tokens, N counting the whole group, so the accumulated gradient is
// exactly the gradient of that mean, and 2 micro-batches of 1 row equal 1 micro-batch of 2 rows.
// Then the gradient's global L2 norm is taken and, above max_grad_norm, folded into the update as
// a scale (PyTorch's clip_grad_norm_: max / (norm + 1e-6)); the learning rate follows the schedule
// with warmup; AdamW (32- or 8-bit states, paged on a GPU when the name says so) updates the LoRA
// tensors.
//
// Determinism: the data order depends on (seed, epoch), LoRA dropout masks on (seed, micro-batch
// number), the initial adapter on the seed; nothing else is random. A checkpoint holds the adapter
// (fp32, exact), the optimizer state, the step and micro-batch counters and the data position, so
// a resumed run reproduces the losses of an uninterrupted one bit for bit (on the CPU backend; on a
// GPU up to the order of floating-point sums in cuBLAS).
//
// A step whose loss or gradient norm is not finite is skipped (no update, a warning); 5 in a row
// stop the run with a BadInput error.
#pragma once
#include <cstdint>
#include <cstdio>
#include <optional>
#include <string>

#include "csrc/config/run_config.h"
#include "runtime/train/metrics.h"

namespace qtrain::train {

inline constexpr int64_t kMaxNonFiniteSteps = 5;

struct TrainOptions {
  bool resume = false;       // continue from the newest checkpoint of output_dir (if any)
  int64_t stop_at_step = 0;  // > 0: after this step, checkpoint and stop as if interrupted
  std::FILE* log = stdout;   // progress lines and the summary
};

struct TrainResult {
  int64_t steps_done = 0;
  int64_t total_steps = 0;
  int64_t resumed_from = -1;  // the checkpoint's step, -1 for a fresh start
  int stop_signal = 0;        // SIGINT / SIGTERM that stopped the run, 0 otherwise
  bool stopped_early = false; // by a signal or stop_at_step
  std::string last_checkpoint;
  double first_loss = 0.0, last_loss = 0.0;  // of this invocation's first and last finite steps
  std::optional<EvalRecord> first_eval, last_eval;
  double seconds = 0.0;
  int64_t tokens = 0;
};

TrainResult run_sft(const config::RunConfig& cfg, const TrainOptions& opt = {});

}  // namespace qtrain::train
