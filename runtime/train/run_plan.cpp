// Run file -> memory plan; the out-of-memory report.
#include "runtime/train/run_plan.h"

#include <vector>

#include "runtime/memory/arena.h"

namespace qtrain::train {

rt::PlanInput plan_input_for_run(const config::RunConfig& cfg, const io::ModelConfig& model) {
  rt::PlanInput in;
  in.model = model;
  in.adapter = rt::parse_adapter(cfg.adapter, cfg.source);
  in.lora_r = cfg.lora_r;
  in.lora_target_modules = rt::parse_target_modules(config::resolved_target_modules(cfg), cfg.source);
  in.micro_batch_size = cfg.micro_batch_size;
  in.sequence_len = cfg.sequence_len;
  in.gradient_checkpointing = cfg.gradient_checkpointing;
  in.lora_dropout = cfg.lora_dropout;
  in.optimizer = rt::parse_optimizer_name(cfg.optimizer, cfg.source);
  return in;
}

std::string out_of_memory_report(const std::string& what, const config::RunConfig& cfg, const io::ModelConfig& model,
                                 size_t cap_bytes) {
  const rt::PlanInput in = plan_input_for_run(cfg, model);
  const rt::MemoryPlan plan = rt::make_memory_plan(in);
  std::string s = what + "\n\nmemory plan of " + cfg.source + " (micro_batch_size " +
                  std::to_string(cfg.micro_batch_size) + ", sequence_len " + std::to_string(cfg.sequence_len) +
                  ", gradient_checkpointing " + (cfg.gradient_checkpointing ? "true" : "false") + ", optimizer " +
                  cfg.optimizer + "):\n" + rt::format_plan(plan, cap_bytes) + "\n";
  std::vector<std::string> advice;
  const int64_t batch = rt::largest_micro_batch(in, cap_bytes);
  const int64_t seq = rt::largest_sequence_len(in, cap_bytes);
  if (batch >= 1 && batch < cfg.micro_batch_size)
    advice.push_back("micro_batch_size: " + std::to_string(batch) +
                     " (with gradient_accumulation_steps to keep the batch)");
  if (seq >= 1 && seq < cfg.sequence_len) advice.push_back("sequence_len: " + std::to_string(seq));
  if (!cfg.gradient_checkpointing) advice.push_back("gradient_checkpointing: true");
  if (in.optimizer != rt::OptimizerKind::PagedAdamW8bit) advice.push_back("optimizer: paged_adamw_8bit");
  if (in.adapter == rt::AdapterKind::LoRA) advice.push_back("adapter: qlora (an NF4 base)");
  if (in.adapter == rt::AdapterKind::Full)
    advice.push_back("adapter: qlora or lora (an adapter instead of fp32 masters and gradients of every weight)");
  if (in.adapter != rt::AdapterKind::Full && cfg.lora_r > 16) advice.push_back("lora_r: 16");
  s += "to fit in " + rt::format_bytes(cap_bytes) +
       (cfg.gpu_memory_limit_bytes ? " (gpu_memory_limit)" : " (the free device memory)") +
       ", lower what the plan's largest items come from:";
  if (advice.empty()) advice.push_back("a smaller model: even the smallest settings do not fit");
  for (const std::string& a : advice) s += "\n  " + a;
  return s;
}

}  // namespace qtrain::train
