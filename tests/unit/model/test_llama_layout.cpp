// Tensor names and shapes of the Llama family, checked on real model sizes.
#include <gtest/gtest.h>

#include <map>

#include "csrc/core/error.h"
#include "csrc/io/llama_layout.h"

namespace qtrain::io {
namespace {

ModelConfig llama2_7b() {
  ModelConfig c;
  c.architecture = Architecture::Llama;
  c.vocab_size = 32000;
  c.hidden_size = 4096;
  c.intermediate_size = 11008;
  c.num_hidden_layers = 32;
  c.num_attention_heads = 32;
  c.num_key_value_heads = 32;
  c.head_dim = 128;
  return c;
}

ModelConfig llama31_8b() {
  ModelConfig c = llama2_7b();
  c.vocab_size = 128256;
  c.intermediate_size = 14336;
  c.num_key_value_heads = 8;
  return c;
}

std::map<std::string, std::vector<int64_t>> by_name(const ModelConfig& c) {
  std::map<std::string, std::vector<int64_t>> m;
  for (const auto& t : llama_tensor_layout(c)) EXPECT_TRUE(m.emplace(t.name, t.shape).second) << t.name;
  return m;
}

TEST(LlamaLayout, ParameterCounts) {
  EXPECT_EQ(llama_parameter_count(llama2_7b()), 6'738'415'616);
  EXPECT_EQ(llama_parameter_count(llama31_8b()), 8'030'261'248);
}

TEST(LlamaLayout, NamesAndShapesWithGqa) {
  const auto c = llama31_8b();
  const auto m = by_name(c);
  EXPECT_EQ(m.size(), 2u + 9u * 32u + 1u);
  EXPECT_EQ(m.at("model.embed_tokens.weight"), (std::vector<int64_t>{128256, 4096}));
  EXPECT_EQ(m.at("lm_head.weight"), (std::vector<int64_t>{128256, 4096}));
  EXPECT_EQ(m.at("model.norm.weight"), (std::vector<int64_t>{4096}));
  EXPECT_EQ(m.at("model.layers.31.input_layernorm.weight"), (std::vector<int64_t>{4096}));
  EXPECT_EQ(m.at("model.layers.0.post_attention_layernorm.weight"), (std::vector<int64_t>{4096}));
  EXPECT_EQ(m.at("model.layers.0.self_attn.q_proj.weight"), (std::vector<int64_t>{4096, 4096}));
  EXPECT_EQ(m.at("model.layers.0.self_attn.k_proj.weight"), (std::vector<int64_t>{1024, 4096}));
  EXPECT_EQ(m.at("model.layers.0.self_attn.v_proj.weight"), (std::vector<int64_t>{1024, 4096}));
  EXPECT_EQ(m.at("model.layers.0.self_attn.o_proj.weight"), (std::vector<int64_t>{4096, 4096}));
  EXPECT_EQ(m.at("model.layers.5.mlp.gate_proj.weight"), (std::vector<int64_t>{14336, 4096}));
  EXPECT_EQ(m.at("model.layers.5.mlp.up_proj.weight"), (std::vector<int64_t>{14336, 4096}));
  EXPECT_EQ(m.at("model.layers.5.mlp.down_proj.weight"), (std::vector<int64_t>{4096, 14336}));
  EXPECT_EQ(m.count("model.layers.32.input_layernorm.weight"), 0u);
  EXPECT_EQ(m.count("model.layers.0.self_attn.q_proj.bias"), 0u);
}

TEST(LlamaLayout, OrderStartsWithEmbeddingsEndsWithHead) {
  const auto l = llama_tensor_layout(llama2_7b());
  EXPECT_EQ(l.front().name, "model.embed_tokens.weight");
  EXPECT_EQ(l.back().name, "lm_head.weight");
  EXPECT_EQ(l[l.size() - 2].name, "model.norm.weight");
}

TEST(LlamaLayout, TiedEmbeddingsHaveNoHead) {
  auto c = llama2_7b();
  c.tie_word_embeddings = true;
  EXPECT_EQ(by_name(c).count("lm_head.weight"), 0u);
  EXPECT_EQ(llama_parameter_count(c), 6'738'415'616 - 32000ll * 4096);
}

TEST(LlamaLayout, Qwen2HasQkvBias) {
  // Qwen2-0.5B: hidden 896, 14 heads, 2 KV heads, head dim 64, 24 layers, tied, 494,032,768 parameters.
  ModelConfig c;
  c.architecture = Architecture::Qwen2;
  c.vocab_size = 151936;
  c.hidden_size = 896;
  c.intermediate_size = 4864;
  c.num_hidden_layers = 24;
  c.num_attention_heads = 14;
  c.num_key_value_heads = 2;
  c.tie_word_embeddings = true;
  const auto m = by_name(c);
  EXPECT_EQ(m.at("model.layers.0.self_attn.q_proj.bias"), (std::vector<int64_t>{896}));
  EXPECT_EQ(m.at("model.layers.0.self_attn.k_proj.bias"), (std::vector<int64_t>{128}));
  EXPECT_EQ(m.at("model.layers.0.self_attn.v_proj.bias"), (std::vector<int64_t>{128}));
  EXPECT_EQ(m.count("model.layers.0.self_attn.o_proj.bias"), 0u);
  EXPECT_EQ(llama_parameter_count(c), 494'032'768);
}

TEST(LlamaLayout, AttentionAndMlpBiasOnLlama) {
  auto c = llama2_7b();
  c.num_hidden_layers = 1;
  c.attention_bias = true;
  c.mlp_bias = true;
  const auto m = by_name(c);
  EXPECT_EQ(m.at("model.layers.0.self_attn.o_proj.bias"), (std::vector<int64_t>{4096}));
  EXPECT_EQ(m.at("model.layers.0.mlp.gate_proj.bias"), (std::vector<int64_t>{11008}));
  EXPECT_EQ(m.at("model.layers.0.mlp.down_proj.bias"), (std::vector<int64_t>{4096}));
}

TEST(LlamaLayout, HeadDimDefaultsAndOverrides) {
  auto c = llama2_7b();
  c.head_dim = 0;  // unset: hidden / heads
  EXPECT_EQ(by_name(c).at("model.layers.0.self_attn.q_proj.weight"), (std::vector<int64_t>{4096, 4096}));
  c.head_dim = 64;  // explicit head_dim (e.g. Mistral-Nemo style): q is heads x head_dim
  EXPECT_EQ(by_name(c).at("model.layers.0.self_attn.q_proj.weight"), (std::vector<int64_t>{2048, 4096}));
  EXPECT_EQ(by_name(c).at("model.layers.0.self_attn.o_proj.weight"), (std::vector<int64_t>{4096, 2048}));
}

TEST(LlamaLayout, RejectsInconsistentSizes) {
  auto c = llama2_7b();
  c.num_key_value_heads = 5;
  EXPECT_THROW(llama_tensor_layout(c), Error);
  c = llama2_7b();
  c.num_hidden_layers = 0;
  EXPECT_THROW(llama_tensor_layout(c), Error);
  c = llama2_7b();
  c.head_dim = 0;
  c.num_attention_heads = 30;
  c.num_key_value_heads = 30;
  EXPECT_THROW(llama_tensor_layout(c), Error);
}

TEST(LlamaLayout, ShapeString) {
  EXPECT_EQ(shape_string({64, 512}), "[64, 512]");
  EXPECT_EQ(shape_string({}), "[]");
  EXPECT_EQ(numel({3, 5, 7}), 105);
}

}  // namespace
}  // namespace qtrain::io
