// The run file's keys, each with its type, default, help, reader and writer in one table, so that
// parsing, overriding, the help text and the written-back YAML can never disagree about a key.
#include "csrc/config/run_config.h"

#include <yaml-cpp/yaml.h>

#include <charconv>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <set>
#include <sstream>
#include <type_traits>

#include "csrc/config/suggest.h"
#include "csrc/core/error.h"

namespace qtrain::config {
namespace {

// Where a value came from, for messages: the file and "key K, line N" (or the override).
struct Ctx {
  const std::string& file;
  std::string where;
};

[[noreturn]] void bad(const Ctx& c, const std::string& what) { throw_bad_input(c.file, what, c.where); }

std::string describe(const YAML::Node& n) {
  if (n.IsSequence()) return "a list";
  if (n.IsMap()) return "a map";
  if (n.IsNull()) return "nothing";
  return "'" + n.Scalar() + "'";
}

std::string read_scalar(const YAML::Node& n, const Ctx& c, const std::string& expected) {
  if (!n.IsScalar()) bad(c, "expected " + expected + ", got " + describe(n));
  return n.Scalar();
}

int64_t read_int(const YAML::Node& n, const Ctx& c) {
  const std::string s = read_scalar(n, c, "an integer");
  int64_t v = 0;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size()) bad(c, "expected an integer, got '" + s + "'");
  return v;
}

double read_float(const YAML::Node& n, const Ctx& c) {
  const std::string s = read_scalar(n, c, "a number");
  char* end = nullptr;
  const double v = s.empty() ? 0.0 : std::strtod(s.c_str(), &end);
  if (s.empty() || end != s.c_str() + s.size() || !std::isfinite(v)) bad(c, "expected a number, got '" + s + "'");
  return v;
}

bool read_bool(const YAML::Node& n, const Ctx& c) {
  const std::string s = read_scalar(n, c, "true or false");
  if (s == "true" || s == "True" || s == "TRUE") return true;
  if (s == "false" || s == "False" || s == "FALSE") return false;
  bad(c, "expected true or false, got '" + s + "'");
}

std::string read_string(const YAML::Node& n, const Ctx& c) {
  if (n.IsNull()) return {};
  return read_scalar(n, c, "a string");
}

std::vector<std::string> read_string_list(const YAML::Node& n, const Ctx& c) {
  if (n.IsNull()) return {};
  if (!n.IsSequence()) bad(c, "expected a list of strings, got " + describe(n));
  std::vector<std::string> out;
  for (const auto& item : n) out.push_back(read_scalar(item, c, "a list of strings"));
  return out;
}

std::string format_double(double v) {
  char buf[64];
  const auto r = std::to_chars(buf, buf + sizeof buf, v);
  std::string s(buf, r.ptr);
  // Keep it a float when read back by tools that care (1 -> 1.0).
  if (s.find_first_of(".eEn") == std::string::npos) s += ".0";
  return s;
}

YAML::Node string_list_node(const std::vector<std::string>& v) {
  YAML::Node n(YAML::NodeType::Sequence);
  for (const auto& s : v) n.push_back(s);
  return n;
}

std::string join(const std::vector<std::string>& v, const char* sep) {
  std::string out;
  for (size_t i = 0; i < v.size(); ++i) out += (i ? sep : "") + v[i];
  return out;
}

const std::vector<std::string> kLinearModules = {"q_proj", "k_proj", "v_proj", "o_proj",
                                                 "gate_proj", "up_proj", "down_proj"};

struct KeyDef {
  std::string name;
  std::string type;
  std::string help;
  std::function<void(RunConfig&, const YAML::Node&, const Ctx&)> set;
  std::function<YAML::Node(const RunConfig&)> get;
};

template <class T>
KeyDef plain_key(const char* name, T RunConfig::*m, const char* help) {
  KeyDef k{name, "", help, {}, {}};
  if constexpr (std::is_same_v<T, int64_t>) {
    k.type = "int";
    k.set = [m](RunConfig& r, const YAML::Node& n, const Ctx& c) { r.*m = read_int(n, c); };
    k.get = [m](const RunConfig& r) { return YAML::Node(r.*m); };
  } else if constexpr (std::is_same_v<T, double>) {
    k.type = "float";
    k.set = [m](RunConfig& r, const YAML::Node& n, const Ctx& c) { r.*m = read_float(n, c); };
    k.get = [m](const RunConfig& r) { return YAML::Node(format_double(r.*m)); };
  } else if constexpr (std::is_same_v<T, bool>) {
    k.type = "bool";
    k.set = [m](RunConfig& r, const YAML::Node& n, const Ctx& c) { r.*m = read_bool(n, c); };
    k.get = [m](const RunConfig& r) { return YAML::Node(r.*m); };
  } else if constexpr (std::is_same_v<T, std::string>) {
    k.type = "string";
    k.set = [m](RunConfig& r, const YAML::Node& n, const Ctx& c) { r.*m = read_string(n, c); };
    k.get = [m](const RunConfig& r) { return (r.*m).empty() ? YAML::Node() : YAML::Node(r.*m); };
  } else if constexpr (std::is_same_v<T, std::optional<int64_t>>) {
    k.type = "int, optional";
    k.set = [m](RunConfig& r, const YAML::Node& n, const Ctx& c) {
      r.*m = n.IsNull() ? std::nullopt : std::optional<int64_t>(read_int(n, c));
    };
    k.get = [m](const RunConfig& r) { return (r.*m) ? YAML::Node(*(r.*m)) : YAML::Node(); };
  } else if constexpr (std::is_same_v<T, std::optional<double>>) {
    k.type = "float, optional";
    k.set = [m](RunConfig& r, const YAML::Node& n, const Ctx& c) {
      r.*m = n.IsNull() ? std::nullopt : std::optional<double>(read_float(n, c));
    };
    k.get = [m](const RunConfig& r) { return (r.*m) ? YAML::Node(format_double(*(r.*m))) : YAML::Node(); };
  } else {
    static_assert(!sizeof(T), "no reader for this type");
  }
  return k;
}

// A string from a fixed set; `aliases` map other spellings (e.g. HF's) onto a member of the set.
KeyDef enum_key(const char* name, std::string RunConfig::*m, std::vector<std::string> choices, const char* help,
                std::map<std::string, std::string> aliases = {}) {
  KeyDef k{name, "one of " + join(choices, "|"), help, {}, {}};
  k.set = [m, choices, aliases, key = std::string(name)](RunConfig& r, const YAML::Node& n, const Ctx& c) {
    std::string v = read_scalar(n, c, "one of " + join(choices, ", "));
    if (auto a = aliases.find(v); a != aliases.end()) v = a->second;
    if (std::find(choices.begin(), choices.end(), v) == choices.end())
      bad(c, key + " must be one of " + join(choices, ", ") + ", got '" + v + "'" + did_you_mean(v, choices));
    r.*m = v;
  };
  k.get = [m](const RunConfig& r) { return YAML::Node(r.*m); };
  return k;
}

const std::vector<std::string> kDatasetTypes = {"alpaca", "chat_template", "completion", "prompt_completion"};

// The keys of one `datasets:` entry and the member each sets.
const std::vector<std::pair<std::string, std::string DatasetSpec::*>>& dataset_string_fields() {
  static const std::vector<std::pair<std::string, std::string DatasetSpec::*>> f = {
      {"path", &DatasetSpec::path},
      {"type", &DatasetSpec::type},
      {"field_instruction", &DatasetSpec::field_instruction},
      {"field_input", &DatasetSpec::field_input},
      {"field_output", &DatasetSpec::field_output},
      {"field_messages", &DatasetSpec::field_messages},
      {"message_field_role", &DatasetSpec::message_field_role},
      {"message_field_content", &DatasetSpec::message_field_content},
      {"field", &DatasetSpec::field},
      {"field_prompt", &DatasetSpec::field_prompt},
      {"field_completion", &DatasetSpec::field_completion},
  };
  return f;
}

std::vector<std::string> dataset_keys() {
  std::vector<std::string> keys;
  for (const auto& [k, m] : dataset_string_fields()) keys.push_back(k);
  keys.push_back("roles_to_train");
  return keys;
}

std::string line_of(const YAML::Node& n) { return "line " + std::to_string(n.Mark().line + 1); }

std::vector<DatasetSpec> read_datasets(const YAML::Node& n, const Ctx& c) {
  if (n.IsNull()) return {};
  if (!n.IsSequence()) bad(c, "expected a list of datasets ({path, type}), got " + describe(n));
  std::vector<DatasetSpec> out;
  const auto known = dataset_keys();
  for (size_t i = 0; i < n.size(); ++i) {
    const YAML::Node item = n[i];
    const bool from_file = item.Mark().line >= 0 && c.where.find("--set") == std::string::npos;
    const std::string at = "datasets[" + std::to_string(i) + "], " + (from_file ? line_of(item) : c.where);
    const Ctx ic{c.file, at};
    if (!item.IsMap()) bad(ic, "a dataset must be a map with path and type, got " + describe(item));
    DatasetSpec d;
    d.where = at;
    std::set<std::string> seen;
    for (const auto& kv : item) {
      const std::string key = kv.first.Scalar();
      const Ctx kc{c.file, "datasets[" + std::to_string(i) + "]." + key + ", " +
                               (from_file ? line_of(kv.first) : c.where)};
      if (!seen.insert(key).second) bad(kc, "key " + key + " given twice");
      if (key == "roles_to_train") {
        d.roles_to_train = read_string_list(kv.second, kc);
        continue;
      }
      const auto& fields = dataset_string_fields();
      auto f = std::find_if(fields.begin(), fields.end(), [&](const auto& p) { return p.first == key; });
      if (f == fields.end()) bad(kc, "unknown dataset key '" + key + "'" + did_you_mean(key, known));
      d.*(f->second) = read_scalar(kv.second, kc, "a string");
    }
    if (d.path.empty()) bad(ic, "a dataset needs a path");
    if (d.type.empty()) bad(ic, "a dataset needs a type (" + join(kDatasetTypes, ", ") + ")");
    if (std::find(kDatasetTypes.begin(), kDatasetTypes.end(), d.type) == kDatasetTypes.end())
      bad(ic, "unknown dataset type '" + d.type + "', expected one of " + join(kDatasetTypes, ", ") +
                  did_you_mean(d.type, kDatasetTypes));
    for (const auto& role : d.roles_to_train)
      if (role != "system" && role != "user" && role != "assistant")
        bad(ic, "roles_to_train: unknown role '" + role + "' (system, user, assistant)");
    out.push_back(std::move(d));
  }
  return out;
}

YAML::Node datasets_node(const std::vector<DatasetSpec>& ds) {
  YAML::Node n(YAML::NodeType::Sequence);
  for (const auto& d : ds) {
    YAML::Node m(YAML::NodeType::Map);
    for (const auto& [k, f] : dataset_string_fields()) m[k] = d.*f;
    m["roles_to_train"] = string_list_node(d.roles_to_train);
    n.push_back(m);
  }
  return n;
}

const std::vector<std::string> kRlSupported = {"dpo", "ipo", "orpo", "simpo"};
const std::vector<std::string> kRlLater = {"kto", "grpo", "cpo"};
const std::vector<std::string> kSpecialTokenKeys = {"bos_token", "eos_token", "pad_token", "unk_token"};

const std::vector<KeyDef>& key_table() {
  static const std::vector<KeyDef> keys = [] {
    std::vector<KeyDef> k;
    k.push_back(plain_key("base_model", &RunConfig::base_model,
                          "Hugging Face model folder (config.json, safetensors, tokenizer files); required"));
    k.push_back(enum_key("adapter", &RunConfig::adapter, {"qlora", "lora", "full"},
                         "qlora: NF4 base + LoRA; lora: bf16 base + LoRA; full: train every weight"));
    k.push_back(plain_key("load_in_4bit", &RunConfig::load_in_4bit,
                          "Accepted for axolotl files; adapter qlora always loads the base in NF4"));
    k.push_back(plain_key("load_in_8bit", &RunConfig::load_in_8bit, "Not supported (must stay false)"));
    k.push_back(plain_key("lora_r", &RunConfig::lora_r, "LoRA rank r"));
    k.push_back(plain_key("lora_alpha", &RunConfig::lora_alpha, "LoRA alpha; scale = alpha / r"));
    k.push_back(plain_key("lora_dropout", &RunConfig::lora_dropout, "Dropout on the LoRA input, in [0, 1)"));
    {
      KeyDef t{"lora_target_modules", "list of strings, or all-linear",
               "Projections that get LoRA: q_proj k_proj v_proj o_proj gate_proj up_proj down_proj", {}, {}};
      t.set = [](RunConfig& r, const YAML::Node& n, const Ctx& c) {
        std::vector<std::string> mods;
        if (n.IsScalar()) {
          mods = {n.Scalar()};
          if (mods[0] != "all-linear") bad(c, "expected a list of module names or all-linear, got '" + mods[0] + "'");
        } else {
          mods = read_string_list(n, c);
          for (const auto& m : mods)
            if (std::find(kLinearModules.begin(), kLinearModules.end(), m) == kLinearModules.end())
              bad(c, "unknown module '" + m + "', expected " + join(kLinearModules, ", ") +
                         did_you_mean(m, kLinearModules));
        }
        r.lora_target_modules = mods;
      };
      t.get = [](const RunConfig& r) {
        if (r.lora_target_modules.size() == 1 && r.lora_target_modules[0] == "all-linear") return YAML::Node("all-linear");
        return string_list_node(r.lora_target_modules);
      };
      k.push_back(t);
    }
    k.push_back(plain_key("lora_target_linear", &RunConfig::lora_target_linear,
                          "axolotl's switch for all linear projections (same as lora_target_modules: all-linear)"));
    k.push_back(plain_key("peft_use_rslora", &RunConfig::peft_use_rslora, "Rank-stabilized scale alpha / sqrt(r)"));
    k.push_back(plain_key("lora_model_dir", &RunConfig::lora_model_dir,
                          "PEFT adapter folder to start from instead of a fresh adapter"));
    k.push_back(plain_key("sequence_len", &RunConfig::sequence_len, "Longest row in tokens; longer examples are truncated"));
    k.push_back(plain_key("sample_packing", &RunConfig::sample_packing,
                          "Pack several examples per row (attention stays inside each example)"));
    k.push_back(plain_key("pad_to_sequence_len", &RunConfig::pad_to_sequence_len,
                          "Pad every row to sequence_len (fixed shapes) instead of the longest row of the batch"));
    k.push_back(plain_key("micro_batch_size", &RunConfig::micro_batch_size, "Rows per forward/backward pass"));
    k.push_back(plain_key("gradient_accumulation_steps", &RunConfig::gradient_accumulation_steps,
                          "Micro-batches per optimizer step"));
    k.push_back(plain_key("num_epochs", &RunConfig::num_epochs, "Passes over the training set (or set max_steps)"));
    k.push_back(plain_key("max_steps", &RunConfig::max_steps, "Optimizer steps; wins over num_epochs when both are set"));
    k.push_back(plain_key("learning_rate", &RunConfig::learning_rate, "Peak learning rate"));
    k.push_back(enum_key("lr_scheduler", &RunConfig::lr_scheduler, {"constant", "linear", "cosine"},
                         "Schedule after the linear warmup"));
    k.push_back(plain_key("warmup_steps", &RunConfig::warmup_steps, "Linear warmup steps (or warmup_ratio)"));
    k.push_back(plain_key("warmup_ratio", &RunConfig::warmup_ratio, "Warmup as a fraction of all steps, in [0, 1)"));
    k.push_back(enum_key("optimizer", &RunConfig::optimizer,
                         {"adamw", "adamw_8bit", "paged_adamw_32bit", "paged_adamw_8bit"},
                         "AdamW with 32-bit or 8-bit (blockwise) states, paged or not",
                         {{"adamw_torch", "adamw"}, {"adamw_torch_fused", "adamw"}, {"adamw_bnb_8bit", "adamw_8bit"}}));
    k.push_back(plain_key("weight_decay", &RunConfig::weight_decay, "Decoupled weight decay"));
    k.push_back(plain_key("max_grad_norm", &RunConfig::max_grad_norm, "Gradient clipping by global norm; 0 turns it off"));
    k.push_back(plain_key("adam_beta1", &RunConfig::adam_beta1, "AdamW beta1"));
    k.push_back(plain_key("adam_beta2", &RunConfig::adam_beta2, "AdamW beta2"));
    k.push_back(plain_key("adam_epsilon", &RunConfig::adam_epsilon, "AdamW epsilon"));
    k.push_back(plain_key("gradient_checkpointing", &RunConfig::gradient_checkpointing,
                          "Keep only each layer's input and recompute the layer in backward"));
    {
      KeyDef d{"datasets", "list of {path, type, ...}",
               "JSONL files; type alpaca | chat_template | completion | prompt_completion; optional field_* names",
               {}, {}};
      d.set = [](RunConfig& r, const YAML::Node& n, const Ctx& c) { r.datasets = read_datasets(n, c); };
      d.get = [](const RunConfig& r) { return datasets_node(r.datasets); };
      k.push_back(d);
    }
    k.push_back(plain_key("shuffle_merged_datasets", &RunConfig::shuffle_merged_datasets,
                          "Shuffle the concatenated datasets (seeded) before the validation split"));
    k.push_back(enum_key("chat_template", &RunConfig::chat_template,
                         {"chatml", "llama2", "llama3", "alpaca", "tokenizer_default"},
                         "Template for chat_template datasets; tokenizer_default recognises the model's own"));
    k.push_back(plain_key("train_on_inputs", &RunConfig::train_on_inputs,
                          "Also compute the loss on prompt / user tokens"));
    k.push_back(plain_key("val_set_size", &RunConfig::val_set_size,
                          "Held-out examples: a fraction when < 1, a count when >= 1"));
    {
      KeyDef s{"special_tokens", "map", "bos_token, eos_token, pad_token, unk_token: token strings of the vocabulary",
               {}, {}};
      s.set = [](RunConfig& r, const YAML::Node& n, const Ctx& c) {
        r.special_tokens.clear();
        if (n.IsNull()) return;
        if (!n.IsMap()) bad(c, "expected a map like {pad_token: \"</s>\"}, got " + describe(n));
        for (const auto& kv : n) {
          const std::string key = kv.first.Scalar();
          if (std::find(kSpecialTokenKeys.begin(), kSpecialTokenKeys.end(), key) == kSpecialTokenKeys.end())
            bad(c, "unknown special token '" + key + "', expected " + join(kSpecialTokenKeys, ", ") +
                       did_you_mean(key, kSpecialTokenKeys));
          r.special_tokens[key] = read_scalar(kv.second, c, "a token string");
        }
      };
      s.get = [](const RunConfig& r) {
        YAML::Node m(YAML::NodeType::Map);
        for (const auto& [key, v] : r.special_tokens) m[key] = v;
        return m;
      };
      k.push_back(s);
    }
    {
      KeyDef rl{"rl", "one of " + join(kRlSupported, "|") + ", optional",
                "Preference objective instead of SFT (datasets then hold prompt/chosen/rejected)", {}, {}};
      rl.set = [](RunConfig& r, const YAML::Node& n, const Ctx& c) {
        const std::string v = read_string(n, c);
        if (!v.empty() && std::find(kRlSupported.begin(), kRlSupported.end(), v) == kRlSupported.end()) {
          if (std::find(kRlLater.begin(), kRlLater.end(), v) != kRlLater.end())
            bad(c, "rl: " + v + " is not supported yet; supported: " + join(kRlSupported, ", "));
          bad(c, "rl must be one of " + join(kRlSupported, ", ") + ", got '" + v + "'" + did_you_mean(v, kRlSupported));
        }
        r.rl = v;
      };
      rl.get = [](const RunConfig& r) { return r.rl.empty() ? YAML::Node() : YAML::Node(r.rl); };
      k.push_back(rl);
    }
    k.push_back(plain_key("rl_beta", &RunConfig::rl_beta, "beta of DPO / IPO / ORPO / SimPO"));
    k.push_back(plain_key("eval_steps", &RunConfig::eval_steps, "Evaluate on the held-out set every N steps"));
    k.push_back(plain_key("save_steps", &RunConfig::save_steps, "Checkpoint every N steps"));
    k.push_back(plain_key("save_total_limit", &RunConfig::save_total_limit, "Keep at most N checkpoints"));
    k.push_back(plain_key("logging_steps", &RunConfig::logging_steps, "Log metrics every N steps"));
    k.push_back(plain_key("output_dir", &RunConfig::output_dir, "Where the adapter, checkpoints and metrics go"));
    k.push_back(plain_key("resume_from_checkpoint", &RunConfig::resume_from_checkpoint, "Checkpoint folder to resume"));
    k.push_back(plain_key("seed", &RunConfig::seed, "Seed of shuffling, splitting, dropout and LoRA init"));
    k.push_back(enum_key("device", &RunConfig::device, {"auto", "cuda", "cpu"},
                         "Where to train: auto (the GPU when there is one, else the CPU), cuda, or cpu", {{"gpu", "cuda"}}));
    {
      KeyDef g{"gpu_memory_limit", "size, optional", "Cap on device memory: 20GiB, 512MiB, or a number of GiB",
               {}, {}};
      g.set = [](RunConfig& r, const YAML::Node& n, const Ctx& c) {
        r.gpu_memory_limit = read_string(n, c);
        r.gpu_memory_limit_bytes = r.gpu_memory_limit.empty() ? 0 : parse_memory_size(r.gpu_memory_limit, c.file, c.where);
      };
      g.get = [](const RunConfig& r) { return r.gpu_memory_limit.empty() ? YAML::Node() : YAML::Node(r.gpu_memory_limit); };
      k.push_back(g);
    }
    k.push_back(enum_key("bf16", &RunConfig::bf16, {"true", "false", "auto"},
                         "Accepted; device compute is always bf16 with fp32 accumulation", {{"True", "true"}, {"False", "false"}}));
    k.push_back(plain_key("fp16", &RunConfig::fp16, "Accepted; must not be true together with bf16: true"));
    k.push_back(plain_key("tf32", &RunConfig::tf32, "Accepted; fp32 GEMMs may use TF32"));
    k.push_back(plain_key("flash_attention", &RunConfig::flash_attention,
                          "Accepted; attention is always the fused variable-length kernel"));
    return k;
  }();
  return keys;
}

const KeyDef* find_key(const std::string& name) {
  for (const auto& k : key_table())
    if (k.name == name) return &k;
  return nullptr;
}

std::string at(const RunConfig& c, const std::string& key) {
  auto o = c.origins.find(key);
  return o == c.origins.end() ? "key " + key + ", default" : "key " + key + ", " + o->second;
}

[[noreturn]] void invalid(const RunConfig& c, const std::string& key, const std::string& what) {
  throw_bad_input(c.source, what, at(c, key));
}

void validate(const RunConfig& c) {
  if (c.base_model.empty()) throw_bad_input(c.source, "base_model is required (a Hugging Face model folder)");
  if (c.load_in_8bit) invalid(c, "load_in_8bit", "8-bit base weights are not supported; use adapter: qlora (NF4) or lora");
  if (c.adapter != "full") {
    if (c.lora_r <= 0) invalid(c, "lora_r", "lora_r must be > 0, got " + std::to_string(c.lora_r));
    if (!(c.lora_alpha > 0)) invalid(c, "lora_alpha", "lora_alpha must be > 0");
    if (!(c.lora_dropout >= 0 && c.lora_dropout < 1)) invalid(c, "lora_dropout", "lora_dropout must be in [0, 1)");
    if (c.lora_target_modules.empty() && !c.lora_target_linear)
      invalid(c, "lora_target_modules", "lora_target_modules is empty: LoRA would train nothing");
  }
  if (c.sequence_len <= 0) invalid(c, "sequence_len", "sequence_len must be > 0, got " + std::to_string(c.sequence_len));
  if (c.micro_batch_size <= 0)
    invalid(c, "micro_batch_size", "micro_batch_size must be > 0, got " + std::to_string(c.micro_batch_size));
  if (c.gradient_accumulation_steps <= 0)
    invalid(c, "gradient_accumulation_steps", "gradient_accumulation_steps must be > 0");
  if (!c.num_epochs && !c.max_steps)
    throw_bad_input(c.source, "neither num_epochs nor max_steps is set: one of them says when training stops");
  if (c.num_epochs && !(*c.num_epochs > 0)) invalid(c, "num_epochs", "num_epochs must be > 0");
  if (c.max_steps && *c.max_steps <= 0) invalid(c, "max_steps", "max_steps must be > 0");
  if (!(c.learning_rate > 0)) invalid(c, "learning_rate", "learning_rate must be > 0");
  if (c.warmup_steps && c.warmup_ratio)
    invalid(c, "warmup_ratio", "set warmup_steps or warmup_ratio, not both");
  if (c.warmup_steps && *c.warmup_steps < 0) invalid(c, "warmup_steps", "warmup_steps must be >= 0");
  if (c.warmup_ratio && !(*c.warmup_ratio >= 0 && *c.warmup_ratio < 1))
    invalid(c, "warmup_ratio", "warmup_ratio must be in [0, 1)");
  if (c.max_steps) check_total_steps(c, *c.max_steps);
  if (!(c.weight_decay >= 0)) invalid(c, "weight_decay", "weight_decay must be >= 0");
  if (!(c.max_grad_norm >= 0)) invalid(c, "max_grad_norm", "max_grad_norm must be >= 0 (0 turns clipping off)");
  if (!(c.adam_beta1 >= 0 && c.adam_beta1 < 1)) invalid(c, "adam_beta1", "adam_beta1 must be in [0, 1)");
  if (!(c.adam_beta2 >= 0 && c.adam_beta2 < 1)) invalid(c, "adam_beta2", "adam_beta2 must be in [0, 1)");
  if (!(c.adam_epsilon > 0)) invalid(c, "adam_epsilon", "adam_epsilon must be > 0");
  if (c.datasets.empty()) invalid(c, "datasets", "datasets is empty: give at least one {path, type}");
  if (!(c.val_set_size >= 0)) invalid(c, "val_set_size", "val_set_size must be >= 0");
  if (c.val_set_size >= 1 && c.val_set_size != std::floor(c.val_set_size))
    invalid(c, "val_set_size", "val_set_size >= 1 is a count of examples and must be a whole number");
  if (c.eval_steps && *c.eval_steps <= 0) invalid(c, "eval_steps", "eval_steps must be > 0");
  if (c.save_steps && *c.save_steps <= 0) invalid(c, "save_steps", "save_steps must be > 0");
  if (c.save_total_limit && *c.save_total_limit <= 0) invalid(c, "save_total_limit", "save_total_limit must be > 0");
  if (c.logging_steps <= 0) invalid(c, "logging_steps", "logging_steps must be > 0");
  if (c.output_dir.empty()) invalid(c, "output_dir", "output_dir must not be empty");
  if (c.seed < 0) invalid(c, "seed", "seed must be >= 0");
  if (c.fp16 && c.bf16 == "true") invalid(c, "fp16", "fp16 and bf16 are both true; choose one");
  if (!c.rl.empty() && c.sample_packing)
    invalid(c, "sample_packing", "sample_packing is for SFT; preference training (rl) keeps pairs unpacked");
}

void apply(RunConfig& cfg, const KeyDef& key, const YAML::Node& value, const std::string& origin) {
  key.set(cfg, value, Ctx{cfg.source, "key " + key.name + ", " + origin});
  cfg.origins[key.name] = origin;
}

std::string node_flow(const YAML::Node& n) {
  if (n.IsNull()) return "(none)";
  YAML::Emitter e;
  e << YAML::Flow << n;
  return e.c_str();
}

}  // namespace

bool RunConfig::operator==(const RunConfig& o) const { return to_yaml(*this) == to_yaml(o); }

RunConfig parse_run_config(const std::string& yaml_text, const std::string& source,
                           const std::vector<std::string>& overrides) {
  RunConfig cfg;
  cfg.source = source;
  YAML::Node root;
  try {
    root = YAML::Load(yaml_text);
  } catch (const YAML::Exception& e) {
    throw_bad_input(source, "not valid YAML: " + e.msg, "line " + std::to_string(e.mark.line + 1));
  }
  if (!root.IsNull() && !root.IsMap()) throw_bad_input(source, "a run file is a map of key: value lines");

  std::vector<std::string> names;
  for (const auto& k : key_table()) names.push_back(k.name);
  if (root.IsMap()) {
    std::set<std::string> seen;
    for (const auto& kv : root) {
      const std::string name = kv.first.Scalar();
      const std::string line = line_of(kv.first);
      if (!seen.insert(name).second) throw_bad_input(source, "key " + name + " given twice", line);
      const KeyDef* key = find_key(name);
      if (!key) throw_bad_input(source, "unknown key '" + name + "'" + did_you_mean(name, names), line);
      apply(cfg, *key, kv.second, line);
    }
  }
  for (const auto& ov : overrides) {
    const auto eq = ov.find('=');
    const std::string origin = "--set " + ov;
    if (eq == std::string::npos || eq == 0) throw_bad_input(source, "an override is key=value", origin);
    const std::string name = ov.substr(0, eq);
    const KeyDef* key = find_key(name);
    if (!key) throw_bad_input(source, "unknown key '" + name + "'" + did_you_mean(name, names), origin);
    YAML::Node value;
    try {
      value = YAML::Load(ov.substr(eq + 1));
    } catch (const YAML::Exception& e) {
      throw_bad_input(source, "override value is not valid YAML: " + e.msg, origin);
    }
    apply(cfg, *key, value, origin);
  }
  validate(cfg);
  return cfg;
}

RunConfig load_run_config(const std::string& path, const std::vector<std::string>& overrides) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw_bad_input(path, "cannot open the run file");
  std::stringstream ss;
  ss << f.rdbuf();
  return parse_run_config(ss.str(), path, overrides);
}

void check_total_steps(const RunConfig& cfg, int64_t total_steps) {
  if (cfg.warmup_steps && *cfg.warmup_steps > total_steps)
    invalid(cfg, "warmup_steps", "warmup_steps (" + std::to_string(*cfg.warmup_steps) + ") exceeds the " +
                                     std::to_string(total_steps) + " optimizer steps of the run");
}

int64_t total_optimizer_steps(const RunConfig& cfg, int64_t micro_batches_per_epoch) {
  if (cfg.max_steps) return *cfg.max_steps;
  const double micro = std::ceil(cfg.num_epochs.value_or(1.0) * static_cast<double>(micro_batches_per_epoch));
  const auto steps = static_cast<int64_t>(std::ceil(micro / static_cast<double>(cfg.gradient_accumulation_steps)));
  return std::max<int64_t>(1, steps);
}

int64_t resolved_warmup_steps(const RunConfig& cfg, int64_t total_steps) {
  if (cfg.warmup_steps) return *cfg.warmup_steps;
  if (cfg.warmup_ratio) return static_cast<int64_t>(std::ceil(*cfg.warmup_ratio * static_cast<double>(total_steps)));
  return 0;
}

std::vector<std::string> resolved_target_modules(const RunConfig& cfg) {
  const bool all = cfg.lora_target_linear ||
                   std::find(cfg.lora_target_modules.begin(), cfg.lora_target_modules.end(), "all-linear") !=
                       cfg.lora_target_modules.end();
  return all ? kLinearModules : cfg.lora_target_modules;
}

double lora_scale(const RunConfig& cfg) {
  const double r = static_cast<double>(cfg.lora_r);
  return cfg.peft_use_rslora ? cfg.lora_alpha / std::sqrt(r) : cfg.lora_alpha / r;
}

const std::vector<std::string>& run_config_keys() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> v;
    for (const auto& k : key_table()) v.push_back(k.name);
    return v;
  }();
  return names;
}

std::string render_run_config_help() {
  const RunConfig defaults;
  std::string out = "Run file keys (YAML; override any with --set key=value):\n";
  for (const auto& k : key_table()) {
    std::string line = "  " + k.name;
    line.resize(std::max<size_t>(line.size() + 1, 32), ' ');
    line += k.type + ", default " + node_flow(k.get(defaults));
    out += line + "\n      " + k.help + "\n";
  }
  return out;
}

std::string to_yaml(const RunConfig& cfg) {
  YAML::Emitter e;
  e << YAML::BeginMap;
  for (const auto& k : key_table()) {
    e << YAML::Key << k.name << YAML::Value;
    const YAML::Node v = k.get(cfg);
    if (v.IsNull()) e << YAML::Null;  // a null Node on its own emits nothing, not even the value
    else e << v;
  }
  e << YAML::EndMap;
  return std::string(e.c_str()) + "\n";
}

std::string write_resolved_config(const RunConfig& cfg, const std::string& dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw_bad_input(dir, "cannot create the output folder: " + ec.message());
  const fs::path path = fs::path(dir) / "run_config.yaml";
  const fs::path tmp = path.string() + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    if (!f) throw_bad_input(tmp.string(), "cannot create file");
    f << "# The resolved run config of this run (qtrain); `qtrain config` reads it back.\n" << to_yaml(cfg);
    if (!f.flush()) throw_bad_input(tmp.string(), "write failed");
  }
  fs::rename(tmp, path, ec);
  if (ec) throw_bad_input(path.string(), "cannot rename temporary file: " + ec.message());
  return path.string();
}

uint64_t parse_memory_size(const std::string& text, const std::string& file, const std::string& where) {
  double v = 0;
  const char* begin = text.c_str();
  char* end = nullptr;
  v = std::strtod(begin, &end);
  if (end == begin || !(v > 0) || !std::isfinite(v))
    throw_bad_input(file, "gpu_memory_limit must be a positive size like 20GiB, got '" + text + "'", where);
  std::string unit(end);
  while (!unit.empty() && unit.front() == ' ') unit.erase(unit.begin());
  static const std::map<std::string, double> units = {
      {"", 1024.0 * 1024 * 1024}, {"GiB", 1024.0 * 1024 * 1024}, {"GB", 1e9}, {"MiB", 1024.0 * 1024},
      {"MB", 1e6}, {"TiB", 1024.0 * 1024 * 1024 * 1024}, {"KiB", 1024.0}};
  auto u = units.find(unit);
  if (u == units.end())
    throw_bad_input(file, "gpu_memory_limit: unknown unit '" + unit + "' (GiB, MiB, GB, MB)", where);
  return static_cast<uint64_t>(v * u->second);
}

}  // namespace qtrain::config
