// The frozen base model in host fp32, loaded from a Hugging Face folder (safetensors in f32, bf16 or
// f16, one file or shards) or from a bitsandbytes 4-bit folder. NF4 bases (pre-quantized, or
// quantized while loading with `quantize_nf4`) are dequantized ONCE at load into fp32 and kept that
// way: the CPU model is for tiny models, and one dequantization gives the same values as
// dequantizing per use. The dequantized values equal bitsandbytes' dequantize_4bit output in the
// weight's source dtype (bf16 sources are rounded to bf16, as bitsandbytes returns them).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "csrc/io/hf_config.h"
#include "runtime/model/lora_config.h"

namespace qtrain::model {

struct LinearWeight {
  int64_t out = 0;
  int64_t in = 0;
  std::vector<float> weight;  // [out, in]
  std::vector<float> bias;    // [out] or empty
  bool from_nf4 = false;      // dequantized from NF4
};

struct LayerWeights {
  std::vector<float> input_norm;  // [hidden]
  std::vector<float> post_norm;   // [hidden]
  LinearWeight proj[kNumProj];    // indexed by Proj
  LinearWeight& operator[](Proj p) { return proj[static_cast<int>(p)]; }
  const LinearWeight& operator[](Proj p) const { return proj[static_cast<int>(p)]; }
};

struct BaseWeights {
  io::ModelConfig config;
  std::vector<float> embed;       // [vocab, hidden]
  std::vector<LayerWeights> layers;
  std::vector<float> final_norm;  // [hidden]
  std::vector<float> lm_head;     // [vocab, hidden]; empty when tied to embed
  const std::vector<float>& head() const { return config.tie_word_embeddings ? embed : lm_head; }
};

struct LoadOptions {
  bool quantize_nf4 = false;  // quantize the seven linear weights of every block while loading
  int nf4_blocksize = 64;
  bool nf4_double_quant = true;
};

// `dir` holds config.json and the safetensors. A folder whose config has a 4-bit
// quantization_config is read as bitsandbytes NF4 (quantize_nf4 is then moot). Layout problems
// are BadInput naming the tensor and file.
BaseWeights load_base_weights(const std::string& dir, const LoadOptions& opt = {});
BaseWeights load_base_weights(const io::ModelConfig& config, const std::string& dir, const LoadOptions& opt = {});

}  // namespace qtrain::model
