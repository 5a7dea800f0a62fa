// The run file: a YAML document whose keys follow axolotl's names (base_model, adapter, lora_r,
// sequence_len, micro_batch_size, datasets, ...). Everything is parsed, type-checked and validated
// here, before any model is loaded, so a typo costs a second and not a model load. Any key can be
// overridden from the command line with "key=value" (the value is read as YAML, so lists work:
// lora_target_modules=[q_proj,v_proj]). The resolved config can be written back as YAML, and
// every key can be listed with its type, default and help.
#pragma once
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace qtrain::config {

// One entry of `datasets:`. Field names default to the formats' standard names (FORMATS.md).
struct DatasetSpec {
  std::string path;
  // alpaca (instruction/input/output), chat_template (messages), completion (plain text),
  // prompt_completion (prompt/completion).
  std::string type;
  std::string field_instruction = "instruction";
  std::string field_input = "input";
  std::string field_output = "output";
  std::string field_messages = "messages";
  std::string message_field_role = "role";
  std::string message_field_content = "content";
  std::vector<std::string> roles_to_train = {"assistant"};
  std::string field = "text";  // completion
  std::string field_prompt = "prompt";
  std::string field_completion = "completion";
  std::string where;  // "line N" (or the override) that declared it, for later messages
  bool operator==(const DatasetSpec&) const = default;
};

struct RunConfig {
  std::string source = "<defaults>";  // the run file's name, used in messages

  // Model and adapter.
  std::string base_model;
  std::string adapter = "qlora";  // qlora | lora | full
  bool load_in_4bit = false;      // accepted for axolotl files; qlora always loads the base in NF4
  bool load_in_8bit = false;      // rejected when true: no 8-bit base weights
  int64_t lora_r = 8;
  double lora_alpha = 16.0;
  double lora_dropout = 0.0;
  std::vector<std::string> lora_target_modules = {"all-linear"};
  bool lora_target_linear = false;  // axolotl's spelling of lora_target_modules: all-linear
  bool peft_use_rslora = false;
  std::string lora_model_dir;

  // Sequences and batches.
  int64_t sequence_len = 2048;
  bool sample_packing = false;
  bool pad_to_sequence_len = false;
  int64_t micro_batch_size = 1;
  int64_t gradient_accumulation_steps = 1;
  std::optional<double> num_epochs;
  std::optional<int64_t> max_steps;

  // Optimization.
  double learning_rate = 2e-4;
  std::string lr_scheduler = "cosine";  // constant | linear | cosine
  std::optional<int64_t> warmup_steps;
  std::optional<double> warmup_ratio;
  std::string optimizer = "paged_adamw_8bit";
  double weight_decay = 0.0;
  double max_grad_norm = 1.0;
  double adam_beta1 = 0.9;
  double adam_beta2 = 0.999;
  double adam_epsilon = 1e-8;
  bool gradient_checkpointing = false;

  // Data.
  std::vector<DatasetSpec> datasets;
  bool shuffle_merged_datasets = true;
  std::string chat_template = "tokenizer_default";  // chatml | llama2 | llama3 | alpaca | tokenizer_default
  bool train_on_inputs = false;
  double val_set_size = 0.0;  // < 1: a fraction of the examples; >= 1: a count
  std::map<std::string, std::string> special_tokens;  // bos_token, eos_token, pad_token, unk_token

  // Preference training (rl: dpo | ipo | orpo | simpo); empty for SFT.
  std::string rl;
  double rl_beta = 0.1;

  // Evaluation, checkpoints, logging.
  std::optional<int64_t> eval_steps;
  std::optional<int64_t> save_steps;
  std::optional<int64_t> save_total_limit;
  int64_t logging_steps = 1;
  std::string output_dir = "./outputs";
  std::string resume_from_checkpoint;
  int64_t seed = 42;

  // Hardware.
  std::string device = "auto";   // auto (the GPU when there is one) | cuda | cpu
  std::string gpu_memory_limit;  // as written: "20GiB", "512MiB", or a number of GiB
  uint64_t gpu_memory_limit_bytes = 0;  // 0: no cap
  std::string bf16 = "auto";  // true | false | auto
  bool fp16 = false;
  bool tf32 = false;
  bool flash_attention = false;  // accepted; attention is always the variable-length kernel

  // Key -> "line N" or "--set key=value": where each key got its value, for later messages.
  std::map<std::string, std::string> origins;

  bool operator==(const RunConfig& o) const;
};

// Parses `yaml_text` (named `source` in messages), applies `overrides` ("key=value", in order)
// and validates. Throws qtrain::Error (BadInput) as "source: what (key K, line N)".
RunConfig parse_run_config(const std::string& yaml_text, const std::string& source,
                           const std::vector<std::string>& overrides = {});
// Reads the file, then as parse_run_config.
RunConfig load_run_config(const std::string& path, const std::vector<std::string>& overrides = {});

// Checks that need the number of optimizer steps (known once the dataset is tokenized):
// the warmup must not exceed it. Throws BadInput naming the warmup key.
void check_total_steps(const RunConfig& cfg, int64_t total_steps);
// Optimizer steps of the run: max_steps when set, else ceil(num_epochs * micro_batches_per_epoch /
// gradient_accumulation_steps), at least 1.
int64_t total_optimizer_steps(const RunConfig& cfg, int64_t micro_batches_per_epoch);
// warmup_steps when set, else ceil(warmup_ratio * total_steps), else 0.
int64_t resolved_warmup_steps(const RunConfig& cfg, int64_t total_steps);
// lora_target_modules with "all-linear" expanded to the seven Llama projections.
std::vector<std::string> resolved_target_modules(const RunConfig& cfg);
// LoRA scale: lora_alpha / r, or lora_alpha / sqrt(r) with peft_use_rslora.
double lora_scale(const RunConfig& cfg);

// Every key, in the order of the help and of the written YAML.
const std::vector<std::string>& run_config_keys();
// One line per key: name, type, default, help. For `qtrain train --help` and `qtrain config --keys`.
std::string render_run_config_help();
// The resolved config as YAML, every key present (unset optional keys as null); reading it back
// gives the same config.
std::string to_yaml(const RunConfig& cfg);
// Writes to_yaml(cfg) to <dir>/run_config.yaml atomically (creates dir); returns the path.
std::string write_resolved_config(const RunConfig& cfg, const std::string& dir);

// "20GiB", "512MiB", "24GB", "24" (GiB) -> bytes. Throws BadInput (file, key gpu_memory_limit).
uint64_t parse_memory_size(const std::string& text, const std::string& file, const std::string& where);

}  // namespace qtrain::config
