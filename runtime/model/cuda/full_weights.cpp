// Full fine-tuning's masters and gradients (see full_weights.h).
#include "runtime/model/cuda/full_weights.h"

#if QTRAIN_HAS_CUDA
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <span>
#include <string>
#include <utility>

#include "csrc/core/error.h"
#include "csrc/io/hf_config.h"
#include "csrc/io/llama_layout.h"
#include "csrc/io/safetensors.h"
#include "qk/cast.h"
#include "runtime/model/cuda/cuda_util.h"

namespace qtrain::model::cuda {

namespace {

constexpr size_t kSlotAlign = 64;  // elements: 256 bytes of fp32

// The slots and entries in layout order, with the host values of each entry.
struct Layout {
  FullWeights& f;
  std::vector<const std::vector<float>*> sources;  // per entry

  struct Part {
    std::string name;
    std::vector<int64_t> shape;
    const std::vector<float>* values;
  };

  // Returns the slot's offset.
  size_t slot(__nv_bfloat16* w16, const std::vector<Part>& parts) {
    const size_t start = (f.total + kSlotAlign - 1) / kSlotAlign * kSlotAlign;
    size_t at = start;
    for (const Part& p : parts) {
      const size_t n = static_cast<size_t>(io::numel(p.shape));
      if (p.values->size() != n) throw_internal("full weights: " + p.name + " has the wrong element count");
      f.entries.push_back({p.name, p.shape, at, n});
      sources.push_back(p.values);
      at += n;
    }
    if (w16 == nullptr) throw_internal("full weights: no bf16 weight for " + parts.front().name);
    f.slots.push_back({start, at - start, w16});
    f.total = at;
    return start;
  }
};

std::string layer_prefix(size_t l) { return "model.layers." + std::to_string(l) + "."; }

std::string proj_key(size_t l, Proj p, const char* what) {
  return layer_prefix(l) + proj_parent(p) + "." + proj_name(p) + "." + what;
}

// Grad pointers are filled in once the buffer exists: offsets first.
struct LinearOffsets {
  size_t w = 0, b = 0;
  bool has_bias = false;
};
struct LayerOffsets {
  size_t input_norm = 0, post_norm = 0;
  LinearOffsets qkv, o, gate_up, down;
};

LinearOffsets linear_slot(Layout& lay, const LayerWeights& lw, size_t l, std::initializer_list<Proj> projs,
                          const DeviceLinear& d) {
  std::vector<Layout::Part> parts;
  for (Proj p : projs) parts.push_back({proj_key(l, p, "weight"), {lw[p].out, lw[p].in}, &lw[p].weight});
  LinearOffsets o;
  o.w = lay.slot(d.w, parts);
  return o;
}

}  // namespace

FullWeights create_full_weights(const BaseWeights& base, const DeviceWeights& weights, rt::DeviceArena& arena,
                                cudaStream_t stream) {
  if (weights.nf4)
    throw_bad_input("adapter: full", "full fine-tuning needs bf16 weights; it cannot train an NF4 (4-bit) base");
  const io::ModelConfig& c = base.config;
  FullWeights f;
  Layout lay{f, {}};
  const size_t embed_off =
      lay.slot(weights.embed, {{"model.embed_tokens.weight", {c.vocab_size, c.hidden_size}, &base.embed}});
  std::vector<LayerOffsets> offs;
  for (size_t l = 0; l < base.layers.size(); ++l) {
    const LayerWeights& lw = base.layers[l];
    const DeviceLayer& dl = weights.layers[l];
    LayerOffsets o;
    o.input_norm =
        lay.slot(dl.input_norm, {{layer_prefix(l) + "input_layernorm.weight", {c.hidden_size}, &lw.input_norm}});
    o.qkv = linear_slot(lay, lw, l, {Proj::Q, Proj::K, Proj::V}, dl.qkv);
    o.o = linear_slot(lay, lw, l, {Proj::O}, dl.o);
    if (dl.qkv.bias != nullptr) {
      std::vector<Layout::Part> parts;
      for (Proj p : {Proj::Q, Proj::K, Proj::V}) parts.push_back({proj_key(l, p, "bias"), {lw[p].out}, &lw[p].bias});
      o.qkv.b = lay.slot(dl.qkv.bias, parts);
      o.qkv.has_bias = true;
    }
    if (dl.o.bias != nullptr || dl.gate_up.bias != nullptr || dl.down.bias != nullptr)
      throw_bad_input("config.json", "full fine-tuning supports biases on q/k/v only");
    o.post_norm =
        lay.slot(dl.post_norm, {{layer_prefix(l) + "post_attention_layernorm.weight", {c.hidden_size}, &lw.post_norm}});
    o.gate_up = linear_slot(lay, lw, l, {Proj::Gate, Proj::Up}, dl.gate_up);
    o.down = linear_slot(lay, lw, l, {Proj::Down}, dl.down);
    offs.push_back(o);
  }
  const size_t final_off = lay.slot(weights.final_norm, {{"model.norm.weight", {c.hidden_size}, &base.final_norm}});
  size_t head_off = embed_off;
  if (!c.tie_word_embeddings)
    head_off = lay.slot(weights.head, {{"lm_head.weight", {c.vocab_size, c.hidden_size}, &base.lm_head}});

  // The names and shapes are HF's: the same list the loader checks a checkpoint against.
  const std::vector<io::ExpectedTensor> expected = io::llama_tensor_layout(c);
  if (expected.size() != f.entries.size()) throw_internal("full weights: tensor count differs from the HF layout");
  for (size_t i = 0; i < expected.size(); ++i)
    if (expected[i].name != f.entries[i].name || expected[i].shape != f.entries[i].shape)
      throw_internal("full weights: " + f.entries[i].name + " differs from the HF layout's " + expected[i].name);

  const size_t start = arena.used();
  f.masters = static_cast<float*>(arena.allocate(f.total * 4, "full fine-tuning fp32 masters"));
  f.grads = static_cast<float*>(arena.allocate(f.total * 4, "full fine-tuning fp32 gradients"));
  f.bytes = arena.used() - start;
  check_cuda(cudaMemsetAsync(f.masters, 0, f.total * 4, stream), "full weights upload");
  for (size_t i = 0; i < f.entries.size(); ++i)
    copy_to_device(f.masters + f.entries[i].offset, lay.sources[i]->data(), f.entries[i].numel * 4, stream);

  auto linear_grads = [&](const LinearOffsets& o) {
    return FullLinearGrads{f.grads + o.w, o.has_bias ? f.grads + o.b : nullptr};
  };
  for (const LayerOffsets& o : offs) {
    FullLayerGrads g;
    g.input_norm = f.grads + o.input_norm;
    g.post_norm = f.grads + o.post_norm;
    g.qkv = linear_grads(o.qkv);
    g.o = linear_grads(o.o);
    g.gate_up = linear_grads(o.gate_up);
    g.down = linear_grads(o.down);
    f.layers.push_back(g);
  }
  f.embed_grad = f.grads + embed_off;
  f.head_grad = f.grads + head_off;
  f.final_norm_grad = f.grads + final_off;

  f.zero_grad(stream);
  f.refresh_bf16(stream);
  check_cuda(cudaStreamSynchronize(stream), "full weights upload");
  return f;
}

std::vector<DeviceLoraTensor> FullWeights::tensors() const {
  std::vector<DeviceLoraTensor> out;
  out.reserve(entries.size());
  for (const Entry& e : entries) out.push_back({e.name, e.shape, masters + e.offset, grads + e.offset, e.numel});
  return out;
}

void FullWeights::refresh_bf16(cudaStream_t stream) const {
  for (const Slot& s : slots) qk::cast_f32_to_bf16(masters + s.offset, s.w16, s.numel, stream);
}

void FullWeights::zero_grad(cudaStream_t stream) const {
  if (total) check_cuda(cudaMemsetAsync(grads, 0, total * 4, stream), "zero_grad");
}

std::vector<HostTensor> FullWeights::download(cudaStream_t stream) const {
  std::vector<HostTensor> out;
  out.reserve(entries.size());
  for (const Entry& e : entries) {
    HostTensor t{e.name, e.shape, std::vector<float>(e.numel)};
    copy_to_host(t.values.data(), masters + e.offset, e.numel * 4, stream);
    out.push_back(std::move(t));
  }
  return out;
}

void save_hf_model(const std::string& dir, const io::ModelConfig& config, const std::vector<HostTensor>& tensors) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw_bad_input(dir, "cannot create the folder: " + ec.message());
  std::vector<io::TensorToWrite> out;
  for (const HostTensor& t : tensors)
    out.push_back({t.name, DType::F32, t.shape, std::as_bytes(std::span<const float>(t.values))});
  io::write_safetensors((fs::path(dir) / "model.safetensors").string(), out, {{"format", "pt"}});
  io::ModelConfig c = config;
  c.torch_dtype = "float32";
  const std::string text = io::model_config_to_json(c);
  const fs::path path = fs::path(dir) / "config.json", tmp = path.string() + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    if (!f) throw_bad_input(tmp.string(), "cannot create the file");
    f.write(text.data(), static_cast<std::streamsize>(text.size()));
    if (!f) throw_bad_input(tmp.string(), "write failed");
  }
  fs::rename(tmp, path, ec);
  if (ec) throw_bad_input(path.string(), "cannot rename into place: " + ec.message());
}

}  // namespace qtrain::model::cuda
#endif
