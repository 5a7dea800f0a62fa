// The training-step benchmark behind `qtrain bench`: a preset's shape with seeded random weights (no
// download), a QLoRA adapter on all seven linear kinds, and timed steps (forward, backward, one
// optimizer update of the LoRA tensors) on a random batch. It measures throughput, model FLOPs
// utilization and peak device memory next to the memory plan for the same settings (in total and by
// category), then profiles a few more steps for each range's share of the step (op_shares.h), so a
// regression in speed or memory shows up as one number moving. The CPU model runs the tiny preset
// only, to prove the path on machines without a GPU.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

#include "csrc/io/hf_config.h"
#include "runtime/bench/op_shares.h"
#include "runtime/optim/optimizer.h"

namespace qtrain::bench {

struct BenchOptions {
  std::string preset = "tiny";
  int64_t seq = 2048;
  int64_t batch = 1;
  int64_t steps = 10;
  int64_t warmup = 2;
  int64_t lora_r = 16;
  bool checkpointing = true;
  bool cpu = false;                  // force the CPU model (the tiny preset only)
  rt::OptimizerKind optimizer = rt::OptimizerKind::PagedAdamW8bit;
  size_t arena_bytes = 0;            // 0: the device's free memory less a margin
  double peak_tflops = 0.0;          // 0: from the device table (bf16 dense), unknown -> no MFU
  uint64_t seed = 0;
  int64_t op_share_steps = 2;        // profiled steps after the timed ones (0: no per-op table)
};

// Model FLOPs of one trained token, counted by parameters and attention, not by what the kernels
// happen to execute (flash-attention's recomputation inside backward is not counted, as usual).
struct FlopCount {
  int64_t layer_params = 0;  // N_layers: the 7 linear weights of every block
  int64_t head_params = 0;   // N_head: lm_head (vocab x hidden); embedding lookups do no FLOPs
  int64_t lora_params = 0;   // N_lora: r * (in + out) per adapted linear
  int64_t layers = 0;        // L
  int64_t attn_width = 0;    // d: heads x head_dim
  int64_t seq = 0;           // T
  bool recompute = false;
  double per_token = 0.0;
  std::string formula;       // the count in symbols and numbers, for the report
};
FlopCount count_flops(const io::ModelConfig& c, int64_t lora_r, int64_t seq, bool recompute);

// Dense bf16 tensor-core peak (datasheet TFLOP/s) of a device by its name; 0 when not in the table.
double peak_bf16_tflops(const std::string& device_name);

struct PhaseMs {
  double forward = 0.0, backward = 0.0, optimizer = 0.0;
};

struct BenchResult {
  std::string backend;      // "cuda" or "cpu"
  std::string device;       // the GPU's name, or "host CPU"
  std::string note;         // why the CPU was used, when it was not asked for
  bool checkpointing = false;  // what actually ran (the CPU model keeps every activation)
  int64_t tokens_per_step = 0;
  int64_t timed_steps = 0;
  double step_ms_mean = 0.0, step_ms_min = 0.0, step_ms_max = 0.0;
  PhaseMs phases;           // means over the timed steps
  double tokens_per_s = 0.0;
  FlopCount flops;
  double achieved_tflops = 0.0;
  double peak_tflops = 0.0;  // 0: unknown, no MFU
  double mfu = 0.0;          // fraction
  size_t arena_peak = 0;     // 0 on the CPU
  size_t arena_capacity = 0;
  size_t arena_weights = 0;  // arena bytes after the base weights were uploaded
  size_t arena_adapter = 0;  // arena bytes the adapter added (masters, gradients, bf16 copies)
  size_t optimizer_bytes = 0;  // device optimizer states (outside the arena)
  size_t plan_peak = 0;        // the memory plan of a GPU run with the same settings
  size_t host_peak_rss = 0;
  double first_loss = 0.0, last_loss = 0.0;
  OpShares op_shares;          // steps 0 when not profiled
  size_t plan_weights = 0, plan_adapter = 0, plan_step = 0, plan_optimizer = 0;  // the plan by category
};

// Throws BadInput (exit 2) for sizes < 1, an unknown preset, or a large preset on the CPU.
BenchResult run_bench(const BenchOptions& opt);

// The report: one `key: value` line per measurement.
std::string format_bench(const BenchOptions& opt, const BenchResult& r);

}  // namespace qtrain::bench
