// CpuLlamaModel's full fine-tuning members (see llama_model.h): the mode switch, the trainable base
// tensors and writing the weights back out as an HF model folder.
#include <filesystem>
#include <fstream>
#include <map>
#include <span>

#include "csrc/core/error.h"
#include "csrc/io/hf_config.h"
#include "csrc/io/safetensors.h"
#include "runtime/model/cpu/llama_model.h"

namespace qtrain::model {

namespace {

namespace fs = std::filesystem;

bool any_nf4(const BaseWeights& w) {
  for (const LayerWeights& l : w.layers)
    for (Proj p : kAllProjs)
      if (l[p].from_nf4) return true;
  return false;
}

void write_text_atomic(const fs::path& path, const std::string& text) {
  const fs::path tmp = path.string() + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    if (!f) throw_bad_input(tmp.string(), "cannot create the file");
    f << text;
    f.flush();
    if (!f) throw_bad_input(tmp.string(), "write failed");
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) throw_bad_input(path.string(), "cannot rename the temporary file into place: " + ec.message());
}

}  // namespace

void CpuLlamaModel::set_full_finetune(bool on) {
  if (!on) {
    full_ = false;
    full_grads_ = {};
    return;
  }
  if (full_) return;
  if (has_adapter_)
    throw_bad_input("full fine-tuning", "the model has a LoRA adapter: LoRA and full fine-tuning are exclusive");
  if (any_nf4(base_) || config().quantization)
    throw_bad_input("full fine-tuning", "the base weights are NF4: full fine-tuning needs a float base (f32, bf16 "
                                        "or f16 safetensors loaded without quantize_nf4)");
  full_grads_ = cpu::make_full_grads(base_);
  full_ = true;
  acts_.valid = false;
}

std::vector<LoraTensorRef> CpuLlamaModel::trainable_tensors() {
  if (!full_) return lora_tensors();
  std::vector<LoraTensorRef> out;
  for (cpu::BaseTensorRef& t : cpu::base_tensor_refs(base_, full_grads_))
    out.push_back({std::move(t.name), std::move(t.shape), t.value, t.grad});
  return out;
}

void CpuLlamaModel::save_weights(const std::string& dir) const {
  if (any_nf4(base_) || config().quantization)
    throw_bad_input(dir, "save_weights: the base weights came from NF4; only a float base is saved");
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw_bad_input(dir, "cannot create the folder: " + ec.message());
  std::vector<io::TensorToWrite> tensors;
  for (const cpu::BaseTensorView& t : cpu::base_tensor_views(base_))
    tensors.push_back({t.name, DType::F32, t.shape, std::as_bytes(t.value)});
  io::write_safetensors((fs::path(dir) / "model.safetensors").string(), tensors, {{"format", "pt"}});
  io::ModelConfig c = config();
  c.torch_dtype = "float32";
  write_text_atomic(fs::path(dir) / "config.json", io::model_config_to_json(c));
}

}  // namespace qtrain::model
