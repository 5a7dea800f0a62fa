// Writes a small random-initialized Llama-family model folder in Hugging Face format (config.json,
// model.safetensors or shards with an index, tokenizer.model, tokenizer_config.json). Tests, the
// emulated-device runs and the demo train such models; every byte depends only on the options.
#pragma once
#include <cstdint>
#include <string>

#include "csrc/io/hf_config.h"

namespace qtrain::io {

struct TinyModelOptions {
  uint64_t seed = 0;  // weights only: the tokenizer is the same for every seed
  int64_t hidden = 64;
  int64_t layers = 2;
  int64_t heads = 4;
  int64_t kv_heads = 2;
  int64_t intermediate = 176;
  int64_t vocab = 512;
  int64_t max_position_embeddings = 512;
  Architecture arch = Architecture::Llama;  // Llama or Qwen2 (q/k/v bias)
  bool tie_embeddings = false;
  int shards = 1;  // > 1: model-0000i-of-0000n.safetensors plus model.safetensors.index.json
};

// The config that write_tiny_model puts in config.json. Throws BadInput on inconsistent sizes.
ModelConfig tiny_model_config(const TinyModelOptions& opt);

// Creates `dir` when needed and writes every file atomically (temporary name, then rename).
void write_tiny_model(const std::string& dir, const TinyModelOptions& opt);

// Initial values: normal(0, 0.02) for embeddings, linear weights and biases; 1.0 for norm weights.
inline constexpr double kTinyInitStd = 0.02;
// The corpus that trains the tiny tokenizer (tiny_corpus(kTinyTokenizerCorpusSeed, ...)).
inline constexpr uint64_t kTinyTokenizerCorpusSeed = 20240601;
inline constexpr size_t kTinyTokenizerCorpusLines = 4000;
// Smallest --vocab. The corpus fills about 1,400 pieces; a larger vocab_size gives a tokenizer with
// fewer pieces than the model's embedding rows (the extra rows are never produced by the tokenizer).
inline constexpr int64_t kTinyMinVocab = 384;

}  // namespace qtrain::io
