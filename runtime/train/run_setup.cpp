// Run file -> model, LoRA shape and batch options; held-out evaluation.
#include "runtime/train/run_setup.h"

#include <cmath>
#include <filesystem>

#include "csrc/core/error.h"
#include "runtime/optim/schedule.h"
#include "runtime/train/batch_convert.h"

namespace qtrain::train {

void check_sft_supported(const config::RunConfig& cfg) {
  if (!cfg.rl.empty())
    throw_bad_input(cfg.source, "rl: " + cfg.rl + " is preference training; `qtrain train` runs SFT only for now",
                    "key rl");
  if (cfg.base_model.empty()) throw_bad_input(cfg.source, "base_model is not set", "key base_model");
}

model::LoraConfig lora_config_for_run(const config::RunConfig& cfg) {
  model::LoraConfig l;
  l.r = cfg.lora_r;
  l.alpha = cfg.lora_alpha;
  l.use_rslora = cfg.peft_use_rslora;
  l.dropout = cfg.lora_dropout;
  l.targets = model::parse_target_modules(config::resolved_target_modules(cfg), cfg.source + " (key lora_target_modules)");
  return l;
}

model::CpuLlamaModel load_model_for_run(const config::RunConfig& cfg, const std::string& model_dir) {
  check_sft_supported(cfg);
  model::LoadOptions opt;
  opt.quantize_nf4 = cfg.adapter == "qlora";
  return model::CpuLlamaModel::load(model_dir.empty() ? cfg.base_model : model_dir, opt);
}

void copy_tokenizer_files(const std::string& base_model, const std::string& dir) {
  namespace fs = std::filesystem;
  for (const char* name : {"tokenizer.model", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.json",
                           "generation_config.json"}) {
    const fs::path from = fs::path(base_model) / name;
    if (!fs::exists(from)) continue;
    std::error_code ec;
    fs::copy_file(from, fs::path(dir) / name, fs::copy_options::overwrite_existing, ec);
    if (ec) throw_bad_input((fs::path(dir) / name).string(), "cannot copy the tokenizer file: " + ec.message());
  }
}

data::BatchOptions batch_options_for_run(const config::RunConfig& cfg, int32_t pad_id, bool shuffle) {
  data::BatchOptions o;
  o.sequence_len = cfg.sequence_len;
  o.micro_batch_size = cfg.micro_batch_size;
  o.packing = cfg.sample_packing;
  o.pad_to_sequence_len = cfg.pad_to_sequence_len;
  o.pad_id = pad_id;
  o.seed = static_cast<uint64_t>(cfg.seed);
  o.shuffle = shuffle;
  return o;
}

double step_learning_rate(const config::RunConfig& cfg, int64_t steps_done, int64_t total_steps) {
  const rt::LrSchedule schedule = rt::parse_lr_schedule(cfg.lr_scheduler);
  return cfg.learning_rate *
         rt::lr_multiplier(schedule, steps_done, config::resolved_warmup_steps(cfg, total_steps), total_steps);
}

EvalRecord evaluate_examples(const model::CpuLlamaModel& m, const std::vector<data::Example>& examples,
                             const data::BatchOptions& opt, int64_t step) {
  return evaluate_examples([&m](const model::Batch& b) { return m.evaluate(b); }, examples, opt, step);
}

EvalRecord evaluate_examples(const std::function<model::ForwardResult(const model::Batch&)>& forward,
                             const std::vector<data::Example>& examples, const data::BatchOptions& opt, int64_t step) {
  EvalRecord r;
  r.step = step;
  if (examples.empty()) return r;
  data::BatchOptions o = opt;
  o.shuffle = false;
  data::BatchIterator it(examples, o);
  double sum = 0.0;
  for (int64_t i = 0; i < it.batches_per_epoch(); ++i) {
    const model::ForwardResult f = forward(to_model_batch(it.next()));
    sum += f.loss * static_cast<double>(f.label_tokens);
    r.tokens += f.label_tokens;
  }
  r.loss = r.tokens ? sum / static_cast<double>(r.tokens) : 0.0;
  r.perplexity = std::exp(r.loss);
  return r;
}

}  // namespace qtrain::train
