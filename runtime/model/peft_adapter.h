// PEFT LoRA adapter folders (FORMATS.md): adapter_config.json + adapter_model.safetensors with
// PEFT's key names ("base_model.model.model.layers.{i}.self_attn.q_proj.lora_A.weight"). Reading
// accepts f32, bf16 and f16 tensors and widens them to fp32; writing emits every key of FORMATS.md
// (sorted), f32 tensors sorted by name with metadata {"format": "pt"}, each file atomically.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "runtime/model/lora_config.h"

namespace qtrain::model {

struct AdapterTensor {
  std::vector<int64_t> shape;
  std::vector<float> values;
};

struct PeftAdapter {
  LoraConfig config;
  std::string base_model_name_or_path;  // empty: null
  std::map<std::string, AdapterTensor> tensors;  // by PEFT key
};

// Unsupported features (DoRA, per-module rank or alpha patterns, a LoRA bias) are BadInput naming
// adapter_config.json; target_modules may be PEFT's list of names or "all-linear". The tensors are
// read as they are; matching them to a model is the model's job.
PeftAdapter load_peft_adapter(const std::string& dir);

// Creates `dir` when needed.
void save_peft_adapter(const std::string& dir, const PeftAdapter& adapter);

// The adapter_config.json text save_peft_adapter writes.
std::string peft_adapter_config_json(const PeftAdapter& adapter);

}  // namespace qtrain::model
