// Loading the base model into host fp32 (see base_weights.h).
#include "runtime/model/base_weights.h"

#include <cstring>
#include <map>

#include "csrc/core/error.h"
#include "csrc/core/half.h"
#include "csrc/io/llama_layout.h"
#include "csrc/io/safetensors.h"
#include "runtime/model/nf4_weights.h"

namespace qtrain::model {

namespace {

std::vector<float> to_f32(DType dtype, std::span<const std::byte> bytes, size_t n, const std::string& file,
                          const std::string& name) {
  std::vector<float> out(n);
  switch (dtype) {
    case DType::F32:
      std::memcpy(out.data(), bytes.data(), n * 4);
      break;
    case DType::BF16:
    case DType::F16:
      for (size_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, bytes.data() + 2 * i, 2);
        out[i] = dtype == DType::BF16 ? bf16_bits_to_f32(h) : f16_bits_to_f32(h);
      }
      break;
    default:
      throw_bad_input(file, "tensor has dtype " + std::string(dtype_name(dtype)) + ", expected f32, bf16 or f16",
                      name);
  }
  return out;
}

std::vector<float> read_f32(const io::Checkpoint& ckpt, const std::string& name, const std::vector<int64_t>& shape) {
  if (!ckpt.contains(name)) throw_bad_input(ckpt.dir(), "missing tensor", name);
  const io::TensorInfo& info = ckpt.info(name);
  if (info.shape != shape)
    throw_bad_input(ckpt.file_of(name),
                    "tensor has shape " + io::shape_string(info.shape) + ", expected " + io::shape_string(shape), name);
  return to_f32(info.dtype, ckpt.data(name), info.numel(), ckpt.file_of(name), name);
}

std::vector<float> dequantize(const Nf4Weight& w) {
  if (w.source_dtype != DType::BF16) return dequantize_nf4_f32(w);
  const std::vector<uint16_t> h = dequantize_nf4_bf16(w);
  std::vector<float> out(h.size());
  for (size_t i = 0; i < h.size(); ++i) out[i] = bf16_bits_to_f32(h[i]);
  return out;
}

std::string layer_prefix(int64_t i) { return "model.layers." + std::to_string(i) + "."; }

}  // namespace

BaseWeights load_base_weights(const std::string& dir, const LoadOptions& opt) {
  return load_base_weights(io::load_model_config(dir), dir, opt);
}

BaseWeights load_base_weights(const io::ModelConfig& config, const std::string& dir, const LoadOptions& opt) {
  if (opt.quantize_nf4 && (opt.nf4_blocksize < 32 || opt.nf4_blocksize > 4096 ||
                           (opt.nf4_blocksize & (opt.nf4_blocksize - 1)) != 0))
    throw_bad_input(dir, "NF4 blocksize must be a power of two in 32..4096");
  const io::Checkpoint ckpt = io::Checkpoint::open(dir);
  const bool prequantized = config.quantization && config.quantization->load_in_4bit;
  const io::LayoutReport report = io::check_llama_layout(config, ckpt);
  if (!report.valid()) {
    const io::LayoutProblem& p = report.problems.front();
    for (const io::LayoutProblem& q : report.problems) {
      if (q.kind != io::LayoutProblem::Kind::Unexpected) {
        throw_bad_input(q.file.empty() ? dir : q.file, "checkpoint does not match config.json: " + q.detail, q.tensor);
      }
    }
    throw_bad_input(p.file.empty() ? dir : p.file, "checkpoint does not match config.json: " + p.detail, p.tensor);
  }
  std::map<std::string, Nf4Weight> nf4;
  if (prequantized) nf4 = load_nf4_linear_weights(config, ckpt);

  BaseWeights w;
  w.config = config;
  const int64_t h = config.hidden_size;
  // Shapes come from the shared layout so loading agrees with the checker above.
  std::map<std::string, std::vector<int64_t>> shapes;
  for (const io::ExpectedTensor& t : io::llama_tensor_layout(config)) shapes[t.name] = t.shape;

  w.embed = read_f32(ckpt, "model.embed_tokens.weight", {config.vocab_size, h});
  w.final_norm = read_f32(ckpt, "model.norm.weight", {h});
  if (!config.tie_word_embeddings) w.lm_head = read_f32(ckpt, "lm_head.weight", {config.vocab_size, h});
  w.layers.resize(static_cast<size_t>(config.num_hidden_layers));
  for (int64_t i = 0; i < config.num_hidden_layers; ++i) {
    LayerWeights& lw = w.layers[static_cast<size_t>(i)];
    const std::string pre = layer_prefix(i);
    lw.input_norm = read_f32(ckpt, pre + "input_layernorm.weight", {h});
    lw.post_norm = read_f32(ckpt, pre + "post_attention_layernorm.weight", {h});
    for (Proj p : kAllProjs) {
      const std::string base = pre + proj_parent(p) + "." + proj_name(p);
      const std::vector<int64_t>& shape = shapes.at(base + ".weight");
      LinearWeight& lin = lw[p];
      lin.out = shape[0];
      lin.in = shape[1];
      if (prequantized) {
        lin.weight = dequantize(nf4.at(base + ".weight"));
        lin.from_nf4 = true;
      } else if (opt.quantize_nf4) {
        const io::TensorInfo& info = ckpt.info(base + ".weight");
        const Nf4Weight q = quantize_nf4(info.dtype, ckpt.data(base + ".weight"), shape, opt.nf4_blocksize,
                                         opt.nf4_double_quant);
        lin.weight = dequantize(q);
        lin.from_nf4 = true;
      } else {
        lin.weight = read_f32(ckpt, base + ".weight", shape);
      }
      if (shapes.count(base + ".bias")) lin.bias = read_f32(ckpt, base + ".bias", {lin.out});
    }
  }
  return w;
}

}  // namespace qtrain::model
