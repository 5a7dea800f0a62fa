// The tensors a Llama-family checkpoint holds, derived from its ModelConfig (HF names and shapes,
// FORMATS.md), and the check of a checkpoint against that list. Weight loading, the tiny-model
// writer and `qtrain inspect` share it, so they agree on what a complete model is.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "csrc/io/hf_config.h"

namespace qtrain::io {

class Checkpoint;

enum class TensorRole { Embedding, Norm, Linear, Bias, LmHead };

struct ExpectedTensor {
  std::string name;
  std::vector<int64_t> shape;
  TensorRole role;
};

// Every tensor of the architecture in a stable order: embeddings, then layer by layer (norms,
// attention, MLP), then the final norm and lm_head (only when embeddings are not tied). Qwen2 has
// q/k/v biases; Llama/Mistral with attention_bias have q/k/v/o biases; mlp_bias adds MLP biases.
// Throws BadInput when the config's sizes are inconsistent (e.g. heads not dividing hidden).
std::vector<ExpectedTensor> llama_tensor_layout(const ModelConfig& c);

// Parameter count of the unquantized model (sum of the layout's numels).
int64_t llama_parameter_count(const ModelConfig& c);

int64_t numel(const std::vector<int64_t>& shape);
std::string shape_string(const std::vector<int64_t>& shape);  // "[64, 512]"

struct LayoutProblem {
  enum class Kind { Missing, WrongShape, WrongDtype, Unexpected };
  Kind kind;
  std::string tensor;
  std::string file;    // the file holding the tensor, empty when missing
  std::string detail;  // e.g. "shape [64, 100], expected [64, 176]"
};

struct LayoutReport {
  std::vector<LayoutProblem> problems;
  // Missing, wrong shape or wrong dtype; unexpected tensors alone leave a checkpoint usable.
  bool valid() const;
};

// Compares a checkpoint with the layout. Weights must be floating (f32, f16, bf16). When the config
// has a 4-bit quantization_config, the linear weights may instead be bitsandbytes' packed uint8
// form, with their quant-state tensors beside them (FORMATS.md).
LayoutReport check_llama_layout(const ModelConfig& c, const Checkpoint& ckpt);

}  // namespace qtrain::io
