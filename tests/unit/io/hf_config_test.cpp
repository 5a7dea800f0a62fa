// config.json of real Llama, Mistral and Qwen2 checkpoints (as published on the Hub), the defaults
// transformers applies to absent keys, every rejected input, and the write/read round trip.
#include "csrc/io/hf_config.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "io_test_util.h"

namespace qtrain::io {
namespace {

using testing::expect_bad_input;
using testing::ScratchDir;
using testing::write_file;

const char* kFile = "/models/x/config.json";

const char* kLlama2_7B = R"({
  "_name_or_path": "meta-llama/Llama-2-7b-hf",
  "architectures": ["LlamaForCausalLM"],
  "bos_token_id": 1,
  "eos_token_id": 2,
  "hidden_act": "silu",
  "hidden_size": 4096,
  "initializer_range": 0.02,
  "intermediate_size": 11008,
  "max_position_embeddings": 4096,
  "model_type": "llama",
  "num_attention_heads": 32,
  "num_hidden_layers": 32,
  "num_key_value_heads": 32,
  "pretraining_tp": 1,
  "rms_norm_eps": 1e-05,
  "rope_scaling": null,
  "tie_word_embeddings": false,
  "torch_dtype": "float16",
  "transformers_version": "4.31.0.dev0",
  "use_cache": true,
  "vocab_size": 32000
})";

const char* kLlama31_8B = R"({
  "architectures": ["LlamaForCausalLM"],
  "attention_bias": false,
  "attention_dropout": 0.0,
  "bos_token_id": 128000,
  "eos_token_id": [128001, 128008, 128009],
  "hidden_act": "silu",
  "hidden_size": 4096,
  "initializer_range": 0.02,
  "intermediate_size": 14336,
  "max_position_embeddings": 131072,
  "mlp_bias": false,
  "model_type": "llama",
  "num_attention_heads": 32,
  "num_hidden_layers": 32,
  "num_key_value_heads": 8,
  "pretraining_tp": 1,
  "rms_norm_eps": 1e-05,
  "rope_scaling": {
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 8192,
    "rope_type": "llama3"
  },
  "rope_theta": 500000.0,
  "tie_word_embeddings": false,
  "torch_dtype": "bfloat16",
  "transformers_version": "4.43.0.dev0",
  "use_cache": true,
  "vocab_size": 128256
})";

const char* kMistral7B = R"({
  "architectures": ["MistralForCausalLM"],
  "bos_token_id": 1,
  "eos_token_id": 2,
  "hidden_act": "silu",
  "hidden_size": 4096,
  "initializer_range": 0.02,
  "intermediate_size": 14336,
  "max_position_embeddings": 32768,
  "model_type": "mistral",
  "num_attention_heads": 32,
  "num_hidden_layers": 32,
  "num_key_value_heads": 8,
  "rms_norm_eps": 1e-05,
  "rope_theta": 10000.0,
  "sliding_window": 4096,
  "tie_word_embeddings": false,
  "torch_dtype": "bfloat16",
  "transformers_version": "4.34.0.dev0",
  "use_cache": true,
  "vocab_size": 32000
})";

const char* kQwen2_05B = R"({
  "architectures": ["Qwen2ForCausalLM"],
  "attention_dropout": 0.0,
  "bos_token_id": 151643,
  "eos_token_id": 151643,
  "hidden_act": "silu",
  "hidden_size": 896,
  "initializer_range": 0.02,
  "intermediate_size": 4864,
  "max_position_embeddings": 131072,
  "max_window_layers": 24,
  "model_type": "qwen2",
  "num_attention_heads": 14,
  "num_hidden_layers": 24,
  "num_key_value_heads": 2,
  "rms_norm_eps": 1e-06,
  "rope_theta": 1000000.0,
  "sliding_window": 131072,
  "tie_word_embeddings": true,
  "torch_dtype": "bfloat16",
  "transformers_version": "4.40.1",
  "use_cache": true,
  "use_sliding_window": false,
  "vocab_size": 151936
})";

// transformers 5 style: rope settings, theta included, under "rope_parameters"; "dtype" key.
const char* kLlama32_1B_RopeParameters = R"({
  "architectures": ["LlamaForCausalLM"],
  "bos_token_id": 128000,
  "dtype": "bfloat16",
  "eos_token_id": 128001,
  "head_dim": 64,
  "hidden_act": "silu",
  "hidden_size": 2048,
  "intermediate_size": 8192,
  "max_position_embeddings": 131072,
  "model_type": "llama",
  "num_attention_heads": 32,
  "num_hidden_layers": 16,
  "num_key_value_heads": 8,
  "rms_norm_eps": 1e-05,
  "rope_parameters": {
    "factor": 32.0,
    "high_freq_factor": 4.0,
    "low_freq_factor": 1.0,
    "original_max_position_embeddings": 8192,
    "rope_theta": 500000.0,
    "rope_type": "llama3"
  },
  "tie_word_embeddings": true,
  "vocab_size": 128256
})";

// A bitsandbytes pre-quantized checkpoint (the Hub's "-bnb-4bit" uploads).
const char* kLlama3_Bnb4bit = R"({
  "architectures": ["LlamaForCausalLM"],
  "bos_token_id": 128000,
  "eos_token_id": 128001,
  "hidden_size": 4096,
  "intermediate_size": 14336,
  "max_position_embeddings": 8192,
  "model_type": "llama",
  "num_attention_heads": 32,
  "num_hidden_layers": 32,
  "num_key_value_heads": 8,
  "quantization_config": {
    "bnb_4bit_compute_dtype": "bfloat16",
    "bnb_4bit_quant_type": "nf4",
    "bnb_4bit_use_double_quant": true,
    "llm_int8_enable_fp32_cpu_offload": false,
    "llm_int8_has_fp16_weight": false,
    "llm_int8_skip_modules": null,
    "llm_int8_threshold": 6.0,
    "load_in_4bit": true,
    "load_in_8bit": false,
    "quant_method": "bitsandbytes"
  },
  "rms_norm_eps": 1e-05,
  "rope_theta": 500000.0,
  "torch_dtype": "bfloat16",
  "vocab_size": 128256
})";

// A config with the named top-level key changed (or removed when `value` is discarded).
std::string edited(const char* base, const std::string& key, const nlohmann::json& value) {
  nlohmann::json j = nlohmann::json::parse(base);
  if (value.is_discarded()) {
    j.erase(key);
  } else {
    j[key] = value;
  }
  return j.dump();
}
const nlohmann::json kRemove = nlohmann::json(nlohmann::json::value_t::discarded);

void expect_rejected(const std::string& text, const std::string& fragment) {
  expect_bad_input([&] { parse_model_config(text, kFile); }, kFile, fragment);
}

void expect_round_trip(const ModelConfig& c) {
  const std::string text = model_config_to_json(c);
  const ModelConfig back = parse_model_config(text, "written.json");
  EXPECT_TRUE(back == c) << text;
  EXPECT_EQ(model_config_to_json(back), text);
}

// ---- realistic configs ---------------------------------------------------------------------------

TEST(HfConfig, Llama2_7B) {
  const ModelConfig c = parse_model_config(kLlama2_7B, kFile);
  EXPECT_EQ(c.architecture, Architecture::Llama);
  EXPECT_EQ(c.model_type, "llama");
  EXPECT_EQ(c.vocab_size, 32000);
  EXPECT_EQ(c.hidden_size, 4096);
  EXPECT_EQ(c.intermediate_size, 11008);
  EXPECT_EQ(c.num_hidden_layers, 32);
  EXPECT_EQ(c.num_attention_heads, 32);
  EXPECT_EQ(c.num_key_value_heads, 32);
  EXPECT_EQ(c.head_dim, 128);
  EXPECT_EQ(c.hidden_act, "silu");
  EXPECT_EQ(c.max_position_embeddings, 4096);
  EXPECT_DOUBLE_EQ(c.rms_norm_eps, 1e-5);
  EXPECT_DOUBLE_EQ(c.rope_theta, 10000.0);
  EXPECT_EQ(c.rope_scaling.type, "default");
  EXPECT_FALSE(c.tie_word_embeddings);
  EXPECT_FALSE(c.attention_bias);
  EXPECT_FALSE(c.mlp_bias);
  EXPECT_EQ(c.bos_token_id, 1);
  EXPECT_EQ(c.eos_token_ids, (std::vector<int64_t>{2}));
  EXPECT_FALSE(c.pad_token_id.has_value());
  EXPECT_EQ(c.torch_dtype, "float16");
  EXPECT_FALSE(c.sliding_window.has_value());
  EXPECT_FALSE(c.quantization.has_value());
  expect_round_trip(c);
}

TEST(HfConfig, Llama31_8B) {
  const ModelConfig c = parse_model_config(kLlama31_8B, kFile);
  EXPECT_EQ(c.architecture, Architecture::Llama);
  EXPECT_EQ(c.vocab_size, 128256);
  EXPECT_EQ(c.intermediate_size, 14336);
  EXPECT_EQ(c.num_key_value_heads, 8);
  EXPECT_EQ(c.head_dim, 128);
  EXPECT_EQ(c.max_position_embeddings, 131072);
  EXPECT_DOUBLE_EQ(c.rms_norm_eps, 1e-5);
  EXPECT_DOUBLE_EQ(c.rope_theta, 500000.0);
  EXPECT_EQ(c.rope_scaling.type, "llama3");
  EXPECT_DOUBLE_EQ(c.rope_scaling.factor, 8.0);
  EXPECT_DOUBLE_EQ(c.rope_scaling.low_freq_factor, 1.0);
  EXPECT_DOUBLE_EQ(c.rope_scaling.high_freq_factor, 4.0);
  EXPECT_EQ(c.rope_scaling.original_max_position_embeddings, 8192);
  EXPECT_EQ(c.bos_token_id, 128000);
  EXPECT_EQ(c.eos_token_ids, (std::vector<int64_t>{128001, 128008, 128009}));
  EXPECT_EQ(c.torch_dtype, "bfloat16");
  expect_round_trip(c);
}

TEST(HfConfig, Mistral7B) {
  const ModelConfig c = parse_model_config(kMistral7B, kFile);
  EXPECT_EQ(c.architecture, Architecture::Mistral);
  EXPECT_EQ(c.model_type, "mistral");
  EXPECT_EQ(c.num_key_value_heads, 8);
  EXPECT_EQ(c.head_dim, 128);
  EXPECT_EQ(c.max_position_embeddings, 32768);
  EXPECT_EQ(c.sliding_window, 4096);
  EXPECT_FALSE(c.attention_bias);
  EXPECT_FALSE(c.tie_word_embeddings);
  expect_round_trip(c);

  // v0.2 and later disable the window with an explicit null.
  const ModelConfig v2 = parse_model_config(edited(kMistral7B, "sliding_window", nullptr), kFile);
  EXPECT_FALSE(v2.sliding_window.has_value());
  expect_round_trip(v2);
  // MistralConfig's own default applies when the key is absent.
  EXPECT_EQ(parse_model_config(edited(kMistral7B, "sliding_window", kRemove), kFile).sliding_window, 4096);
  // Mistral has no biases whatever the config says.
  EXPECT_FALSE(parse_model_config(edited(kMistral7B, "attention_bias", true), kFile).attention_bias);
}

TEST(HfConfig, Qwen2_05B) {
  const ModelConfig c = parse_model_config(kQwen2_05B, kFile);
  EXPECT_EQ(c.architecture, Architecture::Qwen2);
  EXPECT_EQ(c.model_type, "qwen2");
  EXPECT_EQ(c.vocab_size, 151936);
  EXPECT_EQ(c.hidden_size, 896);
  EXPECT_EQ(c.intermediate_size, 4864);
  EXPECT_EQ(c.num_hidden_layers, 24);
  EXPECT_EQ(c.num_attention_heads, 14);
  EXPECT_EQ(c.num_key_value_heads, 2);
  EXPECT_EQ(c.head_dim, 64);
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_TRUE(c.attention_bias);  // q/k/v bias, implied by the architecture
  EXPECT_FALSE(c.mlp_bias);
  EXPECT_DOUBLE_EQ(c.rope_theta, 1000000.0);
  EXPECT_DOUBLE_EQ(c.rms_norm_eps, 1e-6);
  EXPECT_EQ(c.bos_token_id, 151643);
  EXPECT_EQ(c.eos_token_ids, (std::vector<int64_t>{151643}));
  EXPECT_FALSE(c.sliding_window.has_value());  // use_sliding_window is false
  expect_round_trip(c);

  const ModelConfig windowed = parse_model_config(edited(kQwen2_05B, "use_sliding_window", true), kFile);
  EXPECT_EQ(windowed.sliding_window, 131072);
  expect_round_trip(windowed);
}

TEST(HfConfig, RopeParameters) {
  const ModelConfig c = parse_model_config(kLlama32_1B_RopeParameters, kFile);
  EXPECT_EQ(c.head_dim, 64);
  EXPECT_EQ(c.num_key_value_heads, 8);
  EXPECT_DOUBLE_EQ(c.rope_theta, 500000.0);  // taken from rope_parameters
  EXPECT_EQ(c.rope_scaling.type, "llama3");
  EXPECT_DOUBLE_EQ(c.rope_scaling.factor, 32.0);
  EXPECT_EQ(c.rope_scaling.original_max_position_embeddings, 8192);
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_EQ(c.torch_dtype, "bfloat16");
  expect_round_trip(c);

  const ModelConfig plain = parse_model_config(
      edited(kLlama2_7B, "rope_parameters", {{"rope_type", "default"}, {"rope_theta", 25000.0}}), kFile);
  EXPECT_EQ(plain.rope_scaling.type, "default");
  EXPECT_DOUBLE_EQ(plain.rope_theta, 25000.0);
}

TEST(HfConfig, BitsandbytesQuantizationConfig) {
  const ModelConfig c = parse_model_config(kLlama3_Bnb4bit, kFile);
  ASSERT_TRUE(c.quantization.has_value());
  EXPECT_TRUE(c.quantization->load_in_4bit);
  EXPECT_EQ(c.quantization->quant_type, "nf4");
  EXPECT_TRUE(c.quantization->use_double_quant);
  EXPECT_EQ(c.quantization->compute_dtype, "bfloat16");
  EXPECT_EQ(c.hidden_act, "silu");  // absent: LlamaConfig's default
  expect_round_trip(c);

  // BitsAndBytesConfig's defaults for keys left out.
  const ModelConfig sparse =
      parse_model_config(edited(kLlama3_Bnb4bit, "quantization_config", {{"load_in_4bit", true}}), kFile);
  EXPECT_EQ(sparse.quantization->quant_type, "fp4");
  EXPECT_FALSE(sparse.quantization->use_double_quant);
  EXPECT_EQ(sparse.quantization->compute_dtype, "float32");
}

// ---- defaults ----------------------------------------------------------------------------------

TEST(HfConfig, MinimalConfigGetsTransformersDefaults) {
  const ModelConfig c = parse_model_config(R"({"model_type": "llama", "vocab_size": 100, "hidden_size": 64,
      "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4})", kFile);
  EXPECT_EQ(c.architecture, Architecture::Llama);  // from model_type
  EXPECT_EQ(c.num_key_value_heads, 4);
  EXPECT_EQ(c.head_dim, 16);
  EXPECT_EQ(c.hidden_act, "silu");
  EXPECT_EQ(c.max_position_embeddings, 2048);
  EXPECT_DOUBLE_EQ(c.rms_norm_eps, 1e-6);
  EXPECT_DOUBLE_EQ(c.rope_theta, 10000.0);
  EXPECT_EQ(c.rope_scaling, RopeScaling{});
  EXPECT_FALSE(c.tie_word_embeddings);
  EXPECT_EQ(c.bos_token_id, 1);
  EXPECT_EQ(c.eos_token_ids, (std::vector<int64_t>{2}));
  EXPECT_FALSE(c.pad_token_id.has_value());
  expect_round_trip(c);

  const ModelConfig q = parse_model_config(R"({"model_type": "qwen2", "vocab_size": 100, "hidden_size": 64,
      "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4})", kFile);
  EXPECT_EQ(q.architecture, Architecture::Qwen2);
  EXPECT_TRUE(q.attention_bias);
  EXPECT_FALSE(q.bos_token_id.has_value());
  EXPECT_TRUE(q.eos_token_ids.empty());
  EXPECT_EQ(q.max_position_embeddings, 32768);
  expect_round_trip(q);

  // Explicit nulls mean "none", not "default"; an explicit head_dim need not divide hidden_size.
  const ModelConfig n = parse_model_config(R"({"architectures": ["MistralForCausalLM"], "vocab_size": 100,
      "hidden_size": 60, "head_dim": 16, "intermediate_size": 128, "num_hidden_layers": 2,
      "num_attention_heads": 4, "num_key_value_heads": null, "bos_token_id": null, "eos_token_id": null,
      "pad_token_id": 0, "rope_scaling": {"type": "linear", "factor": 2.0}})", kFile);
  EXPECT_EQ(n.model_type, "mistral");
  EXPECT_EQ(n.head_dim, 16);
  EXPECT_EQ(n.num_key_value_heads, 4);
  EXPECT_FALSE(n.bos_token_id.has_value());
  EXPECT_TRUE(n.eos_token_ids.empty());
  EXPECT_EQ(n.pad_token_id, 0);
  EXPECT_EQ(n.rope_scaling.type, "linear");
  EXPECT_DOUBLE_EQ(n.rope_scaling.factor, 2.0);
  EXPECT_EQ(n.max_position_embeddings, 131072);
  expect_round_trip(n);
}

TEST(HfConfig, ArchitectureNames) {
  EXPECT_STREQ(architecture_name(Architecture::Llama), "LlamaForCausalLM");
  EXPECT_STREQ(architecture_name(Architecture::Mistral), "MistralForCausalLM");
  EXPECT_STREQ(architecture_name(Architecture::Qwen2), "Qwen2ForCausalLM");
}

TEST(HfConfig, WrittenJsonLooksLikeTransformers) {
  const nlohmann::json j = nlohmann::json::parse(model_config_to_json(parse_model_config(kLlama31_8B, kFile)));
  EXPECT_EQ(j.at("architectures"), nlohmann::json::array({"LlamaForCausalLM"}));
  EXPECT_EQ(j.at("model_type"), "llama");
  EXPECT_EQ(j.at("rope_scaling").at("rope_type"), "llama3");
  EXPECT_EQ(j.at("eos_token_id"), nlohmann::json::array({128001, 128008, 128009}));
  EXPECT_EQ(j.at("torch_dtype"), "bfloat16");
  EXPECT_FALSE(j.contains("quantization_config"));
  const nlohmann::json d = nlohmann::json::parse(model_config_to_json(parse_model_config(kLlama2_7B, kFile)));
  EXPECT_TRUE(d.at("rope_scaling").is_null());
  const nlohmann::json q = nlohmann::json::parse(model_config_to_json(parse_model_config(kLlama3_Bnb4bit, kFile)));
  EXPECT_EQ(q.at("quantization_config").at("quant_method"), "bitsandbytes");
  EXPECT_EQ(q.at("quantization_config").at("bnb_4bit_quant_type"), "nf4");
}

// ---- errors ------------------------------------------------------------------------------------

TEST(HfConfig, RejectsInvalidJson) {
  expect_rejected("{\"vocab_size\": ", "invalid JSON");
  expect_rejected("[1]", "not a JSON object");
}

TEST(HfConfig, RejectsUnknownArchitecture) {
  expect_rejected(edited(kLlama2_7B, "architectures", {"GPT2LMHeadModel"}),
                  "unknown architecture \"GPT2LMHeadModel\"");
  std::string t = edited(kLlama2_7B, "architectures", kRemove);
  expect_rejected(edited(t.c_str(), "model_type", "gpt2"), "unknown model_type \"gpt2\" (supported: llama, mistral, qwen2) (key \"model_type\")");
  expect_rejected(edited(t.c_str(), "model_type", kRemove), "key \"architectures\"");
  expect_rejected(edited(kLlama2_7B, "architectures", "LlamaForCausalLM"), "wrong type");
}

TEST(HfConfig, RejectsMissingRequiredFields) {
  for (const char* key : {"vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads"}) {
    expect_rejected(edited(kLlama2_7B, key, kRemove), std::string("missing required field (key \"") + key + "\")");
  }
}

TEST(HfConfig, RejectsWrongTypes) {
  expect_rejected(edited(kLlama2_7B, "hidden_size", "4096"), "wrong type: expected an integer, got string (key \"hidden_size\")");
  expect_rejected(edited(kLlama2_7B, "vocab_size", 32000.5), "key \"vocab_size\"");
  expect_rejected(edited(kLlama2_7B, "hidden_size", nullptr), "key \"hidden_size\"");
  expect_rejected(edited(kLlama2_7B, "rms_norm_eps", "1e-5"), "key \"rms_norm_eps\"");
  expect_rejected(edited(kLlama2_7B, "tie_word_embeddings", 0), "key \"tie_word_embeddings\"");
  expect_rejected(edited(kLlama2_7B, "eos_token_id", {1, "2"}), "key \"eos_token_id\"");
  expect_rejected(edited(kLlama2_7B, "eos_token_id", "2"), "key \"eos_token_id\"");
  expect_rejected(edited(kLlama2_7B, "rope_scaling", "llama3"), "key \"rope_scaling\"");
  expect_rejected(edited(kLlama2_7B, "quantization_config", true), "key \"quantization_config\"");
  expect_rejected(edited(kLlama2_7B, "torch_dtype", 16), "key \"torch_dtype\"");
  expect_rejected(edited(kLlama31_8B, "rope_scaling", {{"rope_type", "llama3"}, {"factor", "8"}}),
                  "key \"rope_scaling.factor\"");
}

TEST(HfConfig, RejectsImpossibleValues) {
  const std::string no_kv = edited(kLlama2_7B, "num_key_value_heads", kRemove);
  expect_rejected(edited(no_kv.c_str(), "num_attention_heads", 30),
                  "must divide hidden_size when head_dim is not given (30 does not divide 4096) (key \"num_attention_heads\")");
  expect_rejected(edited(kLlama31_8B, "num_key_value_heads", 5), "must divide num_attention_heads");
  expect_rejected(edited(kLlama2_7B, "hidden_size", 0), "must be positive, got 0 (key \"hidden_size\")");
  expect_rejected(edited(kLlama2_7B, "num_hidden_layers", -1), "must be positive");
  expect_rejected(edited(kLlama2_7B, "vocab_size", -5), "must be positive");
  expect_rejected(edited(kLlama2_7B, "head_dim", 0), "key \"head_dim\"");
  expect_rejected(edited(kLlama2_7B, "num_key_value_heads", 0), "key \"num_key_value_heads\"");
  expect_rejected(edited(kLlama2_7B, "rms_norm_eps", 0), "key \"rms_norm_eps\"");
  expect_rejected(edited(kLlama2_7B, "rope_theta", -1.0), "key \"rope_theta\"");
  expect_rejected(edited(kLlama2_7B, "max_position_embeddings", 0), "key \"max_position_embeddings\"");
}

TEST(HfConfig, RejectsActivationOtherThanSilu) {
  expect_rejected(edited(kLlama2_7B, "hidden_act", "gelu"), "unsupported activation \"gelu\" (only silu) (key \"hidden_act\")");
}

TEST(HfConfig, RejectsUnsupportedRopeAndQuantization) {
  expect_rejected(edited(kLlama2_7B, "rope_scaling", {{"rope_type", "yarn"}, {"factor", 4.0}}),
                  "unsupported rope type \"yarn\"");
  expect_rejected(edited(kLlama31_8B, "rope_scaling", {{"rope_type", "llama3"}, {"factor", 8.0}}),
                  "missing required field (key \"rope_scaling.low_freq_factor\")");
  expect_rejected(edited(kLlama31_8B, "rope_scaling",
                         {{"rope_type", "llama3"}, {"factor", 8.0}, {"low_freq_factor", 4.0}, {"high_freq_factor", 1.0},
                          {"original_max_position_embeddings", 8192}}),
                  "key \"rope_scaling.high_freq_factor\"");
  expect_rejected(edited(kLlama2_7B, "quantization_config", {{"quant_method", "gptq"}}),
                  "unsupported quantization method \"gptq\"");
  expect_rejected(edited(kLlama2_7B, "quantization_config", {{"load_in_8bit", true}}), "8-bit");
}

TEST(HfConfig, LoadsFromFileOrFolder) {
  ScratchDir dir;
  const std::string path = dir.file("config.json");
  write_file(path, kQwen2_05B);
  EXPECT_EQ(load_model_config(path).hidden_size, 896);
  EXPECT_EQ(load_model_config(dir.str()).hidden_size, 896);
  write_file(path, edited(kQwen2_05B, "hidden_act", "relu"));
  expect_bad_input([&] { load_model_config(dir.str()); }, path, "key \"hidden_act\"");
  const std::string absent = dir.file("absent.json");
  expect_bad_input([&] { load_model_config(absent); }, absent, "cannot read");
}

}  // namespace
}  // namespace qtrain::io
