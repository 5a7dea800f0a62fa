// Hugging Face config.json of LlamaForCausalLM, MistralForCausalLM and Qwen2ForCausalLM, read into
// one ModelConfig with every field qtrain needs (see FORMATS.md). Unknown architectures and
// missing required fields are BadInput errors naming the file and the key.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace qtrain::io {

enum class Architecture { Llama, Mistral, Qwen2 };
const char* architecture_name(Architecture a);  // "LlamaForCausalLM", ...

struct RopeScaling {
  std::string type = "default";  // "default" (none), "llama3", "linear", ...
  double factor = 1.0;
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  int64_t original_max_position_embeddings = 0;
  bool operator==(const RopeScaling&) const = default;
};

struct QuantizationConfig {  // bitsandbytes' quantization_config, when present
  bool load_in_4bit = false;
  std::string quant_type = "nf4";        // bnb_4bit_quant_type
  bool use_double_quant = false;         // bnb_4bit_use_double_quant
  std::string compute_dtype = "bfloat16";  // bnb_4bit_compute_dtype
  bool operator==(const QuantizationConfig&) const = default;
};

struct ModelConfig {
  Architecture architecture = Architecture::Llama;
  std::string model_type;  // "llama", "mistral", "qwen2"
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_hidden_layers = 0;
  int64_t num_attention_heads = 0;
  int64_t num_key_value_heads = 0;  // defaults to num_attention_heads
  int64_t head_dim = 0;             // defaults to hidden_size / num_attention_heads
  std::string hidden_act = "silu";
  int64_t max_position_embeddings = 2048;
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;
  bool tie_word_embeddings = false;
  // Llama's attention_bias puts a bias on q, k, v and o; Qwen2 always has q/k/v bias and no o bias
  // (its config.json has no such key), so for Qwen2 this is true and o_proj still has none.
  bool attention_bias = false;
  bool mlp_bias = false;
  std::optional<int64_t> bos_token_id;
  std::vector<int64_t> eos_token_ids;  // eos_token_id may be a number or a list
  std::optional<int64_t> pad_token_id;
  std::string torch_dtype = "bfloat16";
  std::optional<int64_t> sliding_window;  // Mistral; Qwen2 only when use_sliding_window is true
  std::optional<QuantizationConfig> quantization;
  bool operator==(const ModelConfig&) const = default;
};

// `path_for_messages` names the file in errors.
ModelConfig parse_model_config(const std::string& json_text, const std::string& path_for_messages);
// `path` is config.json itself or the model folder holding it.
ModelConfig load_model_config(const std::string& path);
// The JSON that HF writes for this config (used by the tiny-model writer and `qtrain quantize`).
std::string model_config_to_json(const ModelConfig& c);

}  // namespace qtrain::io
