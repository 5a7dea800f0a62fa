// The memory plan: the device bytes a training run needs, by category, computed from the model
// config and the run settings before anything is allocated. `qtrain plan` prints it, the trainer
// checks it against gpu_memory_limit before the first step, and the measured arena peak should land
// within 10% of it. Every formula is stated next to its category in plan.cpp and follows the CUDA
// model's allocations (runtime/model/cuda/). The categories are resident at the peak (the backward
// pass) except the cross-entropy workspace, which lives in the forward pass only: the peak is the sum
// less the smaller of that and the backward-only workspaces. The CUDA context (0.3-0.5 GiB, outside
// the arena) is not part of the plan.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "csrc/io/hf_config.h"
#include "runtime/optim/optimizer.h"

namespace qtrain::rt {

enum class AdapterKind { QLoRA, LoRA, Full };
// "qlora", "lora", or "full" (axolotl leaves `adapter` empty for full fine-tuning: "" is full too);
// anything else is BadInput naming the key `adapter`.
AdapterKind parse_adapter(const std::string& name, const std::string& file = "config");
const char* adapter_name(AdapterKind kind);

// The 7 linear kinds of a Llama block, in PEFT's names.
const std::vector<std::string>& all_linear_modules();
// Checks a lora_target_modules list ("all-linear" alone means all 7); BadInput naming the key.
std::vector<std::string> parse_target_modules(const std::vector<std::string>& names, const std::string& file = "config");

struct PlanInput {
  io::ModelConfig model;
  AdapterKind adapter = AdapterKind::QLoRA;
  int64_t lora_r = 8;
  std::vector<std::string> lora_target_modules = all_linear_modules();
  int64_t micro_batch_size = 1;
  int64_t sequence_len = 2048;
  bool gradient_checkpointing = true;
  bool offload = false;  // checkpointed layer inputs go to pinned host memory
  OptimizerKind optimizer = OptimizerKind::PagedAdamW8bit;
  int64_t ce_chunk_tokens = 1024;  // tokens per chunk of the chunked cross-entropy
  double lora_dropout = 0.0;       // > 0: the LoRA linears keep a dropped-out copy of their input
};

struct PlanItem {
  std::string name;
  size_t bytes;
  std::string detail;  // how it is counted, for the table
};

struct MemoryPlan {
  std::vector<PlanItem> items;  // in the order of plan.cpp's categories
  size_t peak = 0;              // sum of the items less phase_overlap
  size_t phase_overlap = 0;     // the smaller of the forward-only and backward-only workspaces
  int64_t trainable_params = 0;
  int64_t base_params = 0;      // parameters of the model itself
  size_t bytes_of(const std::string& name) const;  // 0 when absent
};

// Category names (the keys of bytes_of).
inline constexpr const char* kPlanBaseWeights = "base weights";
inline constexpr const char* kPlanBf16Parts = "bf16 parts";
inline constexpr const char* kPlanLora = "LoRA weights";      // LoRA and QLoRA only
inline constexpr const char* kPlanMasters = "master weights";  // full fine-tuning only, in LoRA weights' place
inline constexpr const char* kPlanGrads = "gradients";
inline constexpr const char* kPlanOptimizer = "optimizer states";
inline constexpr const char* kPlanActivations = "activations kept";
inline constexpr const char* kPlanActGrads = "activation gradients";
inline constexpr const char* kPlanRecompute = "recompute workspace";
inline constexpr const char* kPlanAttention = "attention workspace";
inline constexpr const char* kPlanCrossEntropy = "cross-entropy workspace";
inline constexpr const char* kPlanCublas = "cuBLAS workspace";
inline constexpr const char* kPlanDequant = "dequantization buffer";

// Throws BadInput on inconsistent input (sizes < 1, a model config that does not lay out).
MemoryPlan make_memory_plan(const PlanInput& in);

// The part of the plan a training step adds to the device arena above the weights and the adapter:
// activations, their gradients, and the recompute, attention, cross-entropy and dequantization
// workspaces (the cuBLAS workspace is cuBLAS's own, and the optimizer states live outside the arena).
size_t plan_step_bytes(const MemoryPlan& plan);

// The plan as a table (one line per category, then the peak and, when limit > 0, the limit).
std::string format_plan(const MemoryPlan& plan, size_t limit_bytes);

// The largest micro batch (at in.sequence_len) and the largest sequence length (at
// in.micro_batch_size) whose plan fits in limit_bytes; 0 when even 1 does not fit. The searches stop
// at 1 << 20 (batch) and 1 << 24 (tokens).
int64_t largest_micro_batch(PlanInput in, size_t limit_bytes);
int64_t largest_sequence_len(PlanInput in, size_t limit_bytes);

// Model shapes for planning without a model folder: "llama2-7b" (Llama-2-7B), "llama3-8b"
// (Llama-3.1-8B, FORMATS.md) and "tiny" (qtrain make-tiny's defaults); BadInput naming `--preset` else.
io::ModelConfig model_preset(const std::string& name);

// "24GiB", "24 GB", "500MiB", "1.5TiB", "123456" (bytes); BadInput naming `key` otherwise.
size_t parse_byte_size(const std::string& text, const std::string& key = "gpu_memory_limit");

}  // namespace qtrain::rt
