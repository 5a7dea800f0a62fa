// Reads and writes Hugging Face config.json for the Llama family. Defaults follow the transformers
// config classes (LlamaConfig, MistralConfig, Qwen2Config) and the modeling code where it overrides
// a key (Qwen2's q/k/v bias, Mistral's missing biases), so a config means here what it means there.
#include "csrc/io/hf_config.h"

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>

#include <nlohmann/json.hpp>

#include "csrc/core/error.h"

namespace qtrain::io {
namespace {

using nlohmann::json;

std::string in_quotes(const std::string& s) { return "\"" + s + "\""; }

// nlohmann's messages start with "[json.exception.parse_error.101] "; users need only the rest.
std::string parse_error_text(const std::exception& e) {
  const std::string s = e.what();
  const size_t close = s.find("] ");
  return s.rfind("[json.exception.", 0) == 0 && close != std::string::npos ? s.substr(close + 2) : s;
}

const char* default_model_type(Architecture a) {
  switch (a) {
    case Architecture::Llama: return "llama";
    case Architecture::Mistral: return "mistral";
    case Architecture::Qwen2: return "qwen2";
  }
  return "llama";
}

// Typed access to the keys of one JSON object; `prefix` names the enclosing key in messages.
class Fields {
 public:
  Fields(const json& obj, const std::string& file, std::string prefix = {})
      : obj_(obj), file_(file), prefix_(std::move(prefix)) {}

  // Absent and null both count as "not given", as they do for transformers.
  bool has(const char* key) const { return obj_.contains(key) && !obj_.at(key).is_null(); }
  const json& at(const char* key) const { return obj_.at(key); }

  [[noreturn]] void fail(const char* key, const std::string& what) const {
    throw_bad_input(file_, what, "key " + in_quotes(prefix_ + key));
  }
  [[noreturn]] void wrong_type(const char* key, const char* expected) const {
    fail(key, std::string("wrong type: expected ") + expected + ", got " + obj_.at(key).type_name());
  }

  int64_t integer(const char* key) const {
    if (!obj_.contains(key)) fail(key, "missing required field");
    return to_int(key);
  }
  int64_t integer(const char* key, int64_t def) const { return has(key) ? to_int(key) : def; }
  std::optional<int64_t> opt_integer(const char* key) const {
    return has(key) ? std::optional<int64_t>(to_int(key)) : std::nullopt;
  }
  int64_t positive(const char* key) const { return check_positive(key, integer(key)); }
  int64_t positive(const char* key, int64_t def) const { return check_positive(key, integer(key, def)); }

  double number(const char* key) const {
    if (!obj_.contains(key)) fail(key, "missing required field");
    if (!obj_.at(key).is_number()) wrong_type(key, "a number");
    return obj_.at(key).get<double>();
  }
  double number(const char* key, double def) const { return has(key) ? number(key) : def; }
  double positive_number(const char* key, double def) const {
    const double v = number(key, def);
    if (!(v > 0)) fail(key, "must be positive, got " + std::to_string(v));
    return v;
  }

  bool boolean(const char* key, bool def) const {
    if (!has(key)) return def;
    if (!obj_.at(key).is_boolean()) wrong_type(key, "true or false");
    return obj_.at(key).get<bool>();
  }

  std::string string(const char* key, const std::string& def) const {
    if (!has(key)) return def;
    if (!obj_.at(key).is_string()) wrong_type(key, "a string");
    return obj_.at(key).get<std::string>();
  }

  const std::string& file() const { return file_; }

 private:
  int64_t to_int(const char* key) const {
    const json& v = obj_.at(key);
    if (v.is_number_unsigned()) {
      if (v.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) fail(key, "value too large");
      return static_cast<int64_t>(v.get<uint64_t>());
    }
    if (v.is_number_integer()) return v.get<int64_t>();
    wrong_type(key, "an integer");
  }
  int64_t check_positive(const char* key, int64_t v) const {
    if (v <= 0) fail(key, "must be positive, got " + std::to_string(v));
    return v;
  }

  const json& obj_;
  const std::string& file_;
  std::string prefix_;
};

Architecture parse_architecture(const Fields& f) {
  if (f.has("architectures")) {
    const json& list = f.at("architectures");
    if (!list.is_array()) f.wrong_type("architectures", "a list of strings");
    for (const json& a : list) {
      if (!a.is_string()) f.wrong_type("architectures", "a list of strings");
    }
    for (const json& a : list) {
      for (Architecture arch : {Architecture::Llama, Architecture::Mistral, Architecture::Qwen2}) {
        if (a.get<std::string>() == architecture_name(arch)) return arch;
      }
    }
    if (!list.empty()) {
      f.fail("architectures", "unknown architecture " + in_quotes(list.front().get<std::string>()) +
                                  " (supported: LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM)");
    }
  }
  if (!f.has("model_type")) f.fail("architectures", "missing required field (and no \"model_type\" either)");
  const std::string mt = f.string("model_type", "");
  for (Architecture arch : {Architecture::Llama, Architecture::Mistral, Architecture::Qwen2}) {
    if (mt == default_model_type(arch)) return arch;
  }
  f.fail("model_type", "unknown model_type " + in_quotes(mt) + " (supported: llama, mistral, qwen2)");
}

// rope_scaling, or the newer rope_parameters (which may also carry rope_theta).
void parse_rope(const json& obj, const std::string& key, const std::string& file, ModelConfig& c) {
  const Fields r(obj, file, key + ".");
  if (r.has("rope_theta")) c.rope_theta = r.positive_number("rope_theta", c.rope_theta);
  std::string type = r.has("rope_type") ? r.string("rope_type", "default") : r.string("type", "default");
  RopeScaling& s = c.rope_scaling;
  s = RopeScaling{};
  if (type == "default") return;
  s.type = type;
  if (type == "linear") {
    s.factor = r.number("factor");
    if (!(s.factor > 0)) r.fail("factor", "must be positive");
    return;
  }
  if (type == "llama3") {
    s.factor = r.number("factor");
    s.low_freq_factor = r.number("low_freq_factor");
    s.high_freq_factor = r.number("high_freq_factor");
    s.original_max_position_embeddings = r.positive("original_max_position_embeddings");
    if (!(s.factor > 0)) r.fail("factor", "must be positive");
    if (!(s.low_freq_factor > 0)) r.fail("low_freq_factor", "must be positive");
    if (!(s.high_freq_factor > s.low_freq_factor)) r.fail("high_freq_factor", "must be greater than low_freq_factor");
    return;
  }
  throw_bad_input(file, "unsupported rope type " + in_quotes(type) + " (supported: default, linear, llama3)",
                  "key " + in_quotes(key));
}

std::string strip_torch_prefix(std::string s) {
  if (s.rfind("torch.", 0) == 0) s.erase(0, 6);
  return s;
}

QuantizationConfig parse_quantization(const json& obj, const std::string& file) {
  const Fields q(obj, file, "quantization_config.");
  const std::string method = q.string("quant_method", "bitsandbytes");
  if (method != "bitsandbytes") q.fail("quant_method", "unsupported quantization method " + in_quotes(method));
  if (q.boolean("load_in_8bit", false)) q.fail("load_in_8bit", "8-bit bitsandbytes checkpoints are not supported");
  QuantizationConfig out;
  // BitsAndBytesConfig's own defaults, which apply when a key is left out.
  out.load_in_4bit = q.boolean("load_in_4bit", false);
  out.quant_type = q.string("bnb_4bit_quant_type", "fp4");
  out.use_double_quant = q.boolean("bnb_4bit_use_double_quant", false);
  out.compute_dtype = strip_torch_prefix(q.string("bnb_4bit_compute_dtype", "float32"));
  return out;
}

}  // namespace

const char* architecture_name(Architecture a) {
  switch (a) {
    case Architecture::Llama: return "LlamaForCausalLM";
    case Architecture::Mistral: return "MistralForCausalLM";
    case Architecture::Qwen2: return "Qwen2ForCausalLM";
  }
  return "LlamaForCausalLM";
}

ModelConfig parse_model_config(const std::string& json_text, const std::string& path) {
  json root;
  try {
    root = json::parse(json_text);
  } catch (const json::parse_error& e) {
    throw_bad_input(path, "invalid JSON", "byte " + std::to_string(e.byte) + ": " + parse_error_text(e));
  }
  if (!root.is_object()) throw_bad_input(path, "config is not a JSON object");
  const Fields f(root, path);

  ModelConfig c;
  c.architecture = parse_architecture(f);
  c.model_type = f.string("model_type", default_model_type(c.architecture));
  const bool llama = c.architecture == Architecture::Llama;
  const bool mistral = c.architecture == Architecture::Mistral;
  const bool qwen2 = c.architecture == Architecture::Qwen2;

  c.vocab_size = f.positive("vocab_size");
  c.hidden_size = f.positive("hidden_size");
  c.intermediate_size = f.positive("intermediate_size");
  c.num_hidden_layers = f.positive("num_hidden_layers");
  c.num_attention_heads = f.positive("num_attention_heads");
  c.num_key_value_heads = f.positive("num_key_value_heads", c.num_attention_heads);
  if (c.num_attention_heads % c.num_key_value_heads != 0) {
    f.fail("num_key_value_heads", "must divide num_attention_heads (" + std::to_string(c.num_key_value_heads) +
                                      " does not divide " + std::to_string(c.num_attention_heads) + ")");
  }
  if (f.has("head_dim")) {
    c.head_dim = f.positive("head_dim");
  } else {
    if (c.hidden_size % c.num_attention_heads != 0) {
      f.fail("num_attention_heads", "must divide hidden_size when head_dim is not given (" +
                                        std::to_string(c.num_attention_heads) + " does not divide " +
                                        std::to_string(c.hidden_size) + ")");
    }
    c.head_dim = c.hidden_size / c.num_attention_heads;
  }
  c.hidden_act = f.string("hidden_act", "silu");
  if (c.hidden_act != "silu") f.fail("hidden_act", "unsupported activation " + in_quotes(c.hidden_act) + " (only silu)");

  c.max_position_embeddings = f.positive("max_position_embeddings", llama ? 2048 : mistral ? 4096 * 32 : 32768);
  c.rms_norm_eps = f.positive_number("rms_norm_eps", 1e-6);
  c.rope_theta = f.positive_number("rope_theta", 10000.0);
  if (f.has("rope_parameters")) {
    if (!f.at("rope_parameters").is_object()) f.wrong_type("rope_parameters", "an object");
    parse_rope(f.at("rope_parameters"), "rope_parameters", path, c);
  } else if (f.has("rope_scaling")) {
    if (!f.at("rope_scaling").is_object()) f.wrong_type("rope_scaling", "an object");
    parse_rope(f.at("rope_scaling"), "rope_scaling", path, c);
  }

  c.tie_word_embeddings = f.boolean("tie_word_embeddings", false);
  // The modeling code, not the config, decides biases for Mistral and Qwen2.
  c.attention_bias = qwen2 ? true : llama ? f.boolean("attention_bias", false) : false;
  c.mlp_bias = llama ? f.boolean("mlp_bias", false) : false;

  // LlamaConfig and MistralConfig default to bos 1 / eos 2; an explicit null means "none".
  const bool classic_ids = llama || mistral;
  if (f.has("bos_token_id")) {
    c.bos_token_id = f.integer("bos_token_id");
  } else if (!root.contains("bos_token_id") && classic_ids) {
    c.bos_token_id = 1;
  }
  if (f.has("eos_token_id")) {
    const json& eos = f.at("eos_token_id");
    if (eos.is_array()) {
      for (const json& e : eos) {
        if (!e.is_number_integer()) f.wrong_type("eos_token_id", "an integer or a list of integers");
        c.eos_token_ids.push_back(e.get<int64_t>());
      }
    } else {
      c.eos_token_ids.push_back(f.integer("eos_token_id"));
    }
  } else if (!root.contains("eos_token_id") && classic_ids) {
    c.eos_token_ids = {2};
  }
  c.pad_token_id = f.opt_integer("pad_token_id");

  // transformers 4.56+ writes "dtype" in place of "torch_dtype".
  if (f.has("torch_dtype")) {
    c.torch_dtype = strip_torch_prefix(f.string("torch_dtype", c.torch_dtype));
  } else if (f.has("dtype")) {
    c.torch_dtype = strip_torch_prefix(f.string("dtype", c.torch_dtype));
  }

  if (mistral) {
    if (f.has("sliding_window")) {
      c.sliding_window = f.positive("sliding_window");
    } else if (!root.contains("sliding_window")) {
      c.sliding_window = 4096;
    }
  } else if (qwen2 && f.boolean("use_sliding_window", false)) {
    c.sliding_window = f.positive("sliding_window", 4096);
  }

  if (f.has("quantization_config")) {
    if (!f.at("quantization_config").is_object()) f.wrong_type("quantization_config", "an object");
    c.quantization = parse_quantization(f.at("quantization_config"), path);
  }
  return c;
}

ModelConfig load_model_config(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const std::string file = fs::is_directory(path, ec) ? (fs::path(path) / "config.json").string() : path;
  std::ifstream in(file, std::ios::binary);
  if (!in) throw_bad_input(file, std::string("cannot read: ") + std::strerror(errno));
  std::ostringstream ss;
  ss << in.rdbuf();
  return parse_model_config(ss.str(), file);
}

std::string model_config_to_json(const ModelConfig& c) {
  // nlohmann::json keeps keys sorted, as transformers' to_json_file does.
  json j;
  j["architectures"] = json::array({architecture_name(c.architecture)});
  j["model_type"] = c.model_type.empty() ? default_model_type(c.architecture) : c.model_type;
  j["vocab_size"] = c.vocab_size;
  j["hidden_size"] = c.hidden_size;
  j["intermediate_size"] = c.intermediate_size;
  j["num_hidden_layers"] = c.num_hidden_layers;
  j["num_attention_heads"] = c.num_attention_heads;
  j["num_key_value_heads"] = c.num_key_value_heads;
  j["head_dim"] = c.head_dim;
  j["hidden_act"] = c.hidden_act;
  j["max_position_embeddings"] = c.max_position_embeddings;
  j["rms_norm_eps"] = c.rms_norm_eps;
  j["rope_theta"] = c.rope_theta;
  const RopeScaling& s = c.rope_scaling;
  if (s.type == "default") {
    j["rope_scaling"] = nullptr;
  } else if (s.type == "llama3") {
    j["rope_scaling"] = {{"rope_type", s.type},
                         {"factor", s.factor},
                         {"low_freq_factor", s.low_freq_factor},
                         {"high_freq_factor", s.high_freq_factor},
                         {"original_max_position_embeddings", s.original_max_position_embeddings}};
  } else {
    j["rope_scaling"] = {{"rope_type", s.type}, {"factor", s.factor}};
  }
  j["tie_word_embeddings"] = c.tie_word_embeddings;
  if (c.architecture == Architecture::Llama) {
    j["attention_bias"] = c.attention_bias;
    j["mlp_bias"] = c.mlp_bias;
  }
  j["bos_token_id"] = c.bos_token_id ? json(*c.bos_token_id) : json(nullptr);
  if (c.eos_token_ids.empty()) {
    j["eos_token_id"] = nullptr;
  } else if (c.eos_token_ids.size() == 1) {
    j["eos_token_id"] = c.eos_token_ids.front();
  } else {
    j["eos_token_id"] = c.eos_token_ids;
  }
  j["pad_token_id"] = c.pad_token_id ? json(*c.pad_token_id) : json(nullptr);
  j["torch_dtype"] = c.torch_dtype;
  if (c.architecture == Architecture::Mistral) {
    j["sliding_window"] = c.sliding_window ? json(*c.sliding_window) : json(nullptr);
  } else if (c.architecture == Architecture::Qwen2) {
    j["use_sliding_window"] = c.sliding_window.has_value();
    j["sliding_window"] = c.sliding_window ? json(*c.sliding_window) : json(nullptr);
  }
  if (c.quantization) {
    const QuantizationConfig& q = *c.quantization;
    j["quantization_config"] = {{"quant_method", "bitsandbytes"},
                                {"load_in_4bit", q.load_in_4bit},
                                {"load_in_8bit", false},
                                {"bnb_4bit_quant_type", q.quant_type},
                                {"bnb_4bit_use_double_quant", q.use_double_quant},
                                {"bnb_4bit_compute_dtype", q.compute_dtype},
                                {"bnb_4bit_quant_storage", "uint8"}};
  }
  return j.dump(2) + "\n";
}

}  // namespace qtrain::io
