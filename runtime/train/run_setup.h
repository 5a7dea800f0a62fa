// What a run file says about the model and the batches, turned into the runtime's settings: the
// base model loaded as the adapter type asks (qlora: NF4-quantized while loading; lora: as stored),
// the LoRA shape, the batch options. Shared by `qtrain train` and `qtrain eval`.
#pragma once
#include <functional>

#include "csrc/config/run_config.h"
#include "csrc/data/batch.h"
#include "csrc/data/example.h"
#include "runtime/model/cpu/llama_model.h"
#include "runtime/train/metrics.h"

namespace qtrain::train {

// BadInput naming the run file for rl (not SFT) or for an empty base_model.
void check_sft_supported(const config::RunConfig& cfg);
model::LoraConfig lora_config_for_run(const config::RunConfig& cfg);
// model_dir (default: cfg.base_model) in NF4 for adapter: qlora, as stored otherwise.
model::CpuLlamaModel load_model_for_run(const config::RunConfig& cfg, const std::string& model_dir = {});
// The tokenizer files of the base model folder (tokenizer.model, tokenizer_config.json,
// special_tokens_map.json, tokenizer.json, generation_config.json, those present) copied into dir,
// so that a fully fine-tuned model folder is complete.
void copy_tokenizer_files(const std::string& base_model, const std::string& dir);
data::BatchOptions batch_options_for_run(const config::RunConfig& cfg, int32_t pad_id, bool shuffle);

// The learning rate of the optimizer step that follows `steps_done` updates: learning_rate times
// the schedule's multiplier with the run's warmup (warmup_steps, or warmup_ratio of total_steps).
double step_learning_rate(const config::RunConfig& cfg, int64_t steps_done, int64_t total_steps);

// Mean loss over every target token of `examples` (micro_batch_size rows at a time, in order, no
// dropout), and its perplexity. `step` is only recorded.
EvalRecord evaluate_examples(const std::function<model::ForwardResult(const model::Batch&)>& forward,
                             const std::vector<data::Example>& examples, const data::BatchOptions& opt, int64_t step);
EvalRecord evaluate_examples(const model::CpuLlamaModel& m, const std::vector<data::Example>& examples,
                             const data::BatchOptions& opt, int64_t step);

}  // namespace qtrain::train
