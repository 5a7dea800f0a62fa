// The run file: every key parses, defaults, overrides, YAML round trip, and each kind of bad config
// rejected with "file: what (key K, line N)".
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "csrc/config/run_config.h"
#include "csrc/config/suggest.h"
#include "csrc/core/error.h"

namespace qtrain::config {
namespace {

const char* kMinimal =
    "base_model: models/tiny\n"
    "num_epochs: 1\n"
    "datasets:\n"
    "  - path: data/train.jsonl\n"
    "    type: alpaca\n";

const char* kFull = R"(base_model: models/llama
adapter: lora
load_in_4bit: false
load_in_8bit: false
lora_r: 64
lora_alpha: 16
lora_dropout: 0.1
lora_target_modules: [q_proj, v_proj]
lora_target_linear: false
peft_use_rslora: true
lora_model_dir: adapters/start
sequence_len: 512
sample_packing: false
pad_to_sequence_len: true
micro_batch_size: 4
gradient_accumulation_steps: 8
num_epochs: 3
max_steps: 1000
learning_rate: 0.0002
lr_scheduler: constant
warmup_steps: null
warmup_ratio: 0.03
optimizer: paged_adamw_32bit
weight_decay: 0.01
max_grad_norm: 0.3
adam_beta1: 0.8
adam_beta2: 0.95
adam_epsilon: 1e-6
gradient_checkpointing: true
datasets:
  - path: a.jsonl
    type: chat_template
    field_messages: conversation
    message_field_role: from
    message_field_content: value
    roles_to_train: [assistant, user]
  - path: b.jsonl
    type: completion
    field: body
shuffle_merged_datasets: false
chat_template: chatml
train_on_inputs: true
val_set_size: 0.05
special_tokens:
  pad_token: "</s>"
rl: dpo
rl_beta: 0.2
eval_steps: 50
save_steps: 100
save_total_limit: 3
logging_steps: 5
output_dir: out/run1
resume_from_checkpoint: out/run1/checkpoint-100
seed: 7
device: cuda
gpu_memory_limit: 20GiB
bf16: true
fp16: false
tf32: true
flash_attention: true
)";

std::string error_of(const std::string& yaml, const std::vector<std::string>& overrides = {}) {
  try {
    parse_run_config(yaml, "run.yaml", overrides);
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::BadInput);
    return e.what();
  }
  ADD_FAILURE() << "accepted:\n" << yaml;
  return {};
}

TEST(RunConfig, Defaults) {
  const RunConfig c = parse_run_config(kMinimal, "run.yaml");
  EXPECT_EQ(c.base_model, "models/tiny");
  EXPECT_EQ(c.adapter, "qlora");
  EXPECT_EQ(c.lora_r, 8);
  EXPECT_EQ(c.lora_alpha, 16.0);
  EXPECT_EQ(c.lora_target_modules, std::vector<std::string>{"all-linear"});
  EXPECT_EQ(resolved_target_modules(c).size(), 7u);
  EXPECT_EQ(c.sequence_len, 2048);
  EXPECT_EQ(c.micro_batch_size, 1);
  EXPECT_EQ(c.num_epochs, 1.0);
  EXPECT_FALSE(c.max_steps);
  EXPECT_EQ(c.lr_scheduler, "cosine");
  EXPECT_EQ(c.optimizer, "paged_adamw_8bit");
  EXPECT_EQ(c.chat_template, "tokenizer_default");
  EXPECT_EQ(c.seed, 42);
  ASSERT_EQ(c.datasets.size(), 1u);
  EXPECT_EQ(c.datasets[0].field_instruction, "instruction");
  EXPECT_EQ(c.datasets[0].where, "datasets[0], line 4");
  EXPECT_EQ(c.gpu_memory_limit_bytes, 0u);
  EXPECT_DOUBLE_EQ(lora_scale(c), 2.0);
}

TEST(RunConfig, EveryKeyParses) {
  const RunConfig c = parse_run_config(kFull, "run.yaml");
  EXPECT_EQ(c.adapter, "lora");
  EXPECT_EQ(c.lora_r, 64);
  EXPECT_DOUBLE_EQ(c.lora_dropout, 0.1);
  EXPECT_EQ(c.lora_target_modules, (std::vector<std::string>{"q_proj", "v_proj"}));
  EXPECT_TRUE(c.peft_use_rslora);
  EXPECT_DOUBLE_EQ(lora_scale(c), 2.0);  // 16 / sqrt(64)
  EXPECT_EQ(c.lora_model_dir, "adapters/start");
  EXPECT_EQ(c.sequence_len, 512);
  EXPECT_FALSE(c.sample_packing);
  EXPECT_TRUE(c.pad_to_sequence_len);
  EXPECT_FALSE(c.warmup_steps);
  EXPECT_EQ(c.micro_batch_size, 4);
  EXPECT_EQ(c.gradient_accumulation_steps, 8);
  EXPECT_EQ(*c.num_epochs, 3.0);
  EXPECT_EQ(*c.max_steps, 1000);
  EXPECT_DOUBLE_EQ(c.learning_rate, 2e-4);
  EXPECT_EQ(c.lr_scheduler, "constant");
  EXPECT_DOUBLE_EQ(*c.warmup_ratio, 0.03);
  EXPECT_EQ(resolved_warmup_steps(c, 1000), 30);
  EXPECT_EQ(c.optimizer, "paged_adamw_32bit");
  EXPECT_DOUBLE_EQ(c.weight_decay, 0.01);
  EXPECT_DOUBLE_EQ(c.max_grad_norm, 0.3);
  EXPECT_DOUBLE_EQ(c.adam_beta1, 0.8);
  EXPECT_DOUBLE_EQ(c.adam_beta2, 0.95);
  EXPECT_DOUBLE_EQ(c.adam_epsilon, 1e-6);
  EXPECT_TRUE(c.gradient_checkpointing);
  ASSERT_EQ(c.datasets.size(), 2u);
  EXPECT_EQ(c.datasets[0].type, "chat_template");
  EXPECT_EQ(c.datasets[0].field_messages, "conversation");
  EXPECT_EQ(c.datasets[0].message_field_role, "from");
  EXPECT_EQ(c.datasets[0].message_field_content, "value");
  EXPECT_EQ(c.datasets[0].roles_to_train, (std::vector<std::string>{"assistant", "user"}));
  EXPECT_EQ(c.datasets[1].field, "body");
  EXPECT_FALSE(c.shuffle_merged_datasets);
  EXPECT_EQ(c.chat_template, "chatml");
  EXPECT_TRUE(c.train_on_inputs);
  EXPECT_DOUBLE_EQ(c.val_set_size, 0.05);
  EXPECT_EQ(c.special_tokens.at("pad_token"), "</s>");
  EXPECT_EQ(c.rl, "dpo");
  EXPECT_DOUBLE_EQ(c.rl_beta, 0.2);
  EXPECT_EQ(*c.eval_steps, 50);
  EXPECT_EQ(*c.save_steps, 100);
  EXPECT_EQ(*c.save_total_limit, 3);
  EXPECT_EQ(c.logging_steps, 5);
  EXPECT_EQ(c.output_dir, "out/run1");
  EXPECT_EQ(c.resume_from_checkpoint, "out/run1/checkpoint-100");
  EXPECT_EQ(c.seed, 7);
  EXPECT_EQ(c.device, "cuda");
  EXPECT_EQ(c.gpu_memory_limit_bytes, 20ull << 30);
  EXPECT_EQ(c.bf16, "true");
  EXPECT_TRUE(c.tf32);
  EXPECT_TRUE(c.flash_attention);
  EXPECT_EQ(c.origins.at("lora_r"), "line 5");
}

TEST(RunConfig, EveryKeyIsInTheFullExample) {
  const std::string full = std::string("\n") + kFull;
  for (const auto& k : run_config_keys()) EXPECT_NE(full.find("\n" + k + ":"), std::string::npos) << k;
}

TEST(RunConfig, YamlRoundTrip) {
  for (const char* text : {kMinimal, kFull}) {
    const RunConfig c = parse_run_config(text, "run.yaml");
    const RunConfig back = parse_run_config(to_yaml(c), "resolved.yaml");
    EXPECT_EQ(to_yaml(back), to_yaml(c));
    EXPECT_TRUE(back == c);
  }
}

TEST(RunConfig, WritesResolvedConfigToOutputDir) {
  const auto dir = std::filesystem::temp_directory_path() / "qtrain_run_config_write";
  std::filesystem::remove_all(dir);
  const RunConfig c = parse_run_config(kFull, "run.yaml", {"output_dir=" + dir.string()});
  const std::string path = write_resolved_config(c, c.output_dir);
  EXPECT_EQ(path, (dir / "run_config.yaml").string());
  EXPECT_TRUE(load_run_config(path) == c);
  std::filesystem::remove_all(dir);
}

TEST(RunConfig, Overrides) {
  const RunConfig c = parse_run_config(kMinimal, "run.yaml",
                                       {"lora_r=32", "learning_rate=1e-5", "sample_packing=true",
                                        "lora_target_modules=[q_proj,k_proj]", "max_steps=10", "num_epochs=",
                                        "datasets=[{path: x.jsonl, type: completion}]"});
  EXPECT_EQ(c.lora_r, 32);
  EXPECT_DOUBLE_EQ(c.learning_rate, 1e-5);
  EXPECT_TRUE(c.sample_packing);
  EXPECT_EQ(c.lora_target_modules, (std::vector<std::string>{"q_proj", "k_proj"}));
  EXPECT_EQ(*c.max_steps, 10);
  EXPECT_FALSE(c.num_epochs);
  ASSERT_EQ(c.datasets.size(), 1u);
  EXPECT_EQ(c.datasets[0].path, "x.jsonl");
  EXPECT_EQ(c.origins.at("lora_r"), "--set lora_r=32");
  // The last override wins.
  EXPECT_EQ(parse_run_config(kMinimal, "r", {"lora_r=2", "lora_r=3"}).lora_r, 3);
  // Aliases become the canonical names.
  EXPECT_EQ(parse_run_config(kMinimal, "r", {"optimizer=adamw_torch"}).optimizer, "adamw");
}

TEST(RunConfig, UnknownKeySuggests) {
  const std::string e = error_of(std::string(kMinimal) + "lora_rank: 8\n");
  EXPECT_EQ(e, "run.yaml: unknown key 'lora_rank'; did you mean 'lora_r'? (line 6)");
  EXPECT_EQ(error_of(kMinimal, {"learnig_rate=1"}),
            "run.yaml: unknown key 'learnig_rate'; did you mean 'learning_rate'? (--set learnig_rate=1)");
  EXPECT_EQ(error_of(std::string(kMinimal) + "zzzzzz: 1\n"), "run.yaml: unknown key 'zzzzzz' (line 6)");
  EXPECT_EQ(error_of("base_model: m\nnum_epochs: 1\ndatasets:\n  - path: a\n    type: alpaca\n    feild: x\n"),
            "run.yaml: unknown dataset key 'feild'; did you mean 'field'? (datasets[0].feild, line 6)");
}

TEST(RunConfig, WrongTypes) {
  EXPECT_EQ(error_of(std::string(kMinimal) + "lora_r: eight\n"),
            "run.yaml: expected an integer, got 'eight' (key lora_r, line 6)");
  EXPECT_EQ(error_of(std::string(kMinimal) + "lora_r: 8.5\n"),
            "run.yaml: expected an integer, got '8.5' (key lora_r, line 6)");
  EXPECT_EQ(error_of(std::string(kMinimal) + "sample_packing: maybe\n"),
            "run.yaml: expected true or false, got 'maybe' (key sample_packing, line 6)");
  EXPECT_EQ(error_of(std::string(kMinimal) + "learning_rate: [1]\n"),
            "run.yaml: expected a number, got a list (key learning_rate, line 6)");
  EXPECT_EQ(error_of(std::string(kMinimal) + "lr_scheduler: cosin\n"),
            "run.yaml: lr_scheduler must be one of constant, linear, cosine, got 'cosin'; did you mean 'cosine'? "
            "(key lr_scheduler, line 6)");
  EXPECT_EQ(error_of(std::string(kMinimal) + "lora_target_modules: [q_prj]\n"),
            "run.yaml: unknown module 'q_prj', expected q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, "
            "down_proj; did you mean 'q_proj'? (key lora_target_modules, line 6)");
  EXPECT_EQ(error_of("base_model: m\nnum_epochs: 1\ndatasets:\n  - path: a\n    type: sharegpt\n"),
            "run.yaml: unknown dataset type 'sharegpt', expected one of alpaca, chat_template, completion, "
            "prompt_completion (datasets[0], line 4)");
  EXPECT_EQ(error_of("lora_r: [\n"), "run.yaml: not valid YAML: end of sequence flow not found (line 2)");
  EXPECT_EQ(error_of(std::string(kMinimal) + "lora_r: 8\nlora_r: 9\n"), "run.yaml: key lora_r given twice (line 7)");
}

TEST(RunConfig, ImpossibleValues) {
  const std::string m = kMinimal;
  EXPECT_EQ(error_of(m + "lora_r: 0\n"), "run.yaml: lora_r must be > 0, got 0 (key lora_r, line 6)");
  EXPECT_EQ(error_of(m, {"micro_batch_size=0"}),
            "run.yaml: micro_batch_size must be > 0, got 0 (key micro_batch_size, --set micro_batch_size=0)");
  EXPECT_EQ(error_of(m + "sequence_len: -5\n"), "run.yaml: sequence_len must be > 0, got -5 (key sequence_len, line 6)");
  EXPECT_EQ(error_of(m + "learning_rate: 0\n"), "run.yaml: learning_rate must be > 0 (key learning_rate, line 6)");
  EXPECT_EQ(error_of("base_model: m\ndatasets: [{path: a, type: alpaca}]\n"),
            "run.yaml: neither num_epochs nor max_steps is set: one of them says when training stops");
  EXPECT_EQ(error_of(m + "max_steps: 10\nwarmup_steps: 20\n"),
            "run.yaml: warmup_steps (20) exceeds the 10 optimizer steps of the run (key warmup_steps, line 7)");
  EXPECT_EQ(error_of(m + "warmup_steps: 2\nwarmup_ratio: 0.1\n"),
            "run.yaml: set warmup_steps or warmup_ratio, not both (key warmup_ratio, line 7)");
  EXPECT_EQ(error_of(m + "lora_dropout: 1.5\n"), "run.yaml: lora_dropout must be in [0, 1) (key lora_dropout, line 6)");
  EXPECT_EQ(error_of(m + "val_set_size: 2.5\n"),
            "run.yaml: val_set_size >= 1 is a count of examples and must be a whole number (key val_set_size, line 6)");
  EXPECT_EQ(error_of("num_epochs: 1\ndatasets: [{path: a, type: alpaca}]\n"),
            "run.yaml: base_model is required (a Hugging Face model folder)");
  EXPECT_EQ(error_of("base_model: m\nnum_epochs: 1\n"),
            "run.yaml: datasets is empty: give at least one {path, type} (key datasets, default)");
  EXPECT_EQ(error_of(m + "gpu_memory_limit: 20 parsecs\n"),
            "run.yaml: gpu_memory_limit: unknown unit 'parsecs' (GiB, MiB, GB, MB) (key gpu_memory_limit, line 6)");
  EXPECT_EQ(error_of(m + "load_in_8bit: true\n"),
            "run.yaml: 8-bit base weights are not supported; use adapter: qlora (NF4) or lora (key load_in_8bit, line 6)");
  EXPECT_EQ(error_of(m + "special_tokens: {sep_token: x}\n"),
            "run.yaml: unknown special token 'sep_token', expected bos_token, eos_token, pad_token, unk_token; did you "
            "mean 'bos_token'? (key special_tokens, line 6)");
}

TEST(RunConfig, RlNames) {
  const std::string m = kMinimal;
  for (const char* ok : {"dpo", "ipo", "orpo", "simpo"}) EXPECT_EQ(parse_run_config(m + "rl: " + ok + "\n", "r").rl, ok);
  EXPECT_EQ(error_of(m + "rl: kto\n"), "run.yaml: rl: kto is not supported yet; supported: dpo, ipo, orpo, simpo (key rl, line 6)");
  EXPECT_EQ(error_of(m + "rl: dpp\n"),
            "run.yaml: rl must be one of dpo, ipo, orpo, simpo, got 'dpp'; did you mean 'dpo'? (key rl, line 6)");
  EXPECT_EQ(error_of(m + "rl: dpo\nsample_packing: true\n"),
            "run.yaml: sample_packing is for SFT; preference training (rl) keeps pairs unpacked (key sample_packing, line 7)");
}

TEST(RunConfig, TotalStepsCheck) {
  const RunConfig c = parse_run_config(std::string(kMinimal) + "warmup_steps: 50\n", "run.yaml");
  EXPECT_NO_THROW(check_total_steps(c, 50));
  try {
    check_total_steps(c, 49);
    FAIL();
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "run.yaml: warmup_steps (50) exceeds the 49 optimizer steps of the run (key warmup_steps, line 6)");
  }
}

TEST(RunConfig, TotalOptimizerSteps) {
  RunConfig c = parse_run_config(std::string(kMinimal) + "gradient_accumulation_steps: 4\nwarmup_ratio: 0.1\n",
                                 "run.yaml", {"num_epochs=2.5"});
  EXPECT_EQ(total_optimizer_steps(c, 10), 7);  // ceil(ceil(25) / 4)
  EXPECT_EQ(resolved_warmup_steps(c, 7), 1);
  c.max_steps = 100;
  EXPECT_EQ(total_optimizer_steps(c, 10), 100);
}

TEST(RunConfig, MemorySizes) {
  EXPECT_EQ(parse_memory_size("24", "f", ""), 24ull << 30);
  EXPECT_EQ(parse_memory_size("512MiB", "f", ""), 512ull << 20);
  EXPECT_EQ(parse_memory_size("24GB", "f", ""), 24000000000ull);
  EXPECT_THROW(parse_memory_size("-1GiB", "f", ""), Error);
}

TEST(RunConfig, HelpListsEveryKey) {
  const std::string help = render_run_config_help();
  for (const auto& k : run_config_keys()) EXPECT_NE(help.find("  " + k + " "), std::string::npos) << k;
  auto line_of = [&](const std::string& key) {
    const size_t at = help.find("\n  " + key + " ");
    return at == std::string::npos ? std::string() : help.substr(at + 1, help.find('\n', at + 1) - at - 1);
  };
  EXPECT_EQ(line_of("lora_r"), "  lora_r                        int, default 8");
  EXPECT_EQ(line_of("max_steps"), "  max_steps                     int, optional, default (none)");
}

TEST(Suggest, EditDistance) {
  EXPECT_EQ(edit_distance("kitten", "sitting"), 3u);
  EXPECT_EQ(edit_distance("", "abc"), 3u);
  EXPECT_EQ(closest_name("lora_alfa", {"lora_r", "lora_alpha"}), "lora_alpha");
  EXPECT_EQ(closest_name("xyz", {"lora_r", "lora_alpha"}), "");
}

}  // namespace
}  // namespace qtrain::config
