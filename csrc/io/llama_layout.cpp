// Names and shapes of the Llama-family tensors, and the comparison of a checkpoint against them.
#include "csrc/io/llama_layout.h"

#include <set>

#include "csrc/core/error.h"
#include "csrc/io/safetensors.h"

namespace qtrain::io {
namespace {

void require_positive(int64_t v, const char* key) {
  if (v <= 0) throw_bad_input("config.json", std::string("'") + key + "' must be positive", std::to_string(v));
}

bool is_floating(DType t) { return t == DType::F32 || t == DType::F16 || t == DType::BF16; }

// bitsandbytes stores a 4-bit weight as these tensors next to P.weight.
const char* const kQuantRequired[] = {".absmax", ".quant_map", ".quant_state.bitsandbytes__nf4"};
const char* const kQuantOptional[] = {".nested_absmax", ".nested_quant_map", ".quant_state.bitsandbytes__fp4"};

}  // namespace

int64_t numel(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string shape_string(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

std::vector<ExpectedTensor> llama_tensor_layout(const ModelConfig& c) {
  require_positive(c.vocab_size, "vocab_size");
  require_positive(c.hidden_size, "hidden_size");
  require_positive(c.intermediate_size, "intermediate_size");
  require_positive(c.num_hidden_layers, "num_hidden_layers");
  require_positive(c.num_attention_heads, "num_attention_heads");
  require_positive(c.num_key_value_heads, "num_key_value_heads");
  if (c.num_attention_heads % c.num_key_value_heads != 0)
    throw_bad_input("config.json", "num_attention_heads must be a multiple of num_key_value_heads",
                    std::to_string(c.num_attention_heads) + " vs " + std::to_string(c.num_key_value_heads));
  const int64_t hd = c.head_dim > 0 ? c.head_dim : c.hidden_size / c.num_attention_heads;
  if (c.head_dim <= 0 && c.hidden_size % c.num_attention_heads != 0)
    throw_bad_input("config.json", "hidden_size must be a multiple of num_attention_heads",
                    std::to_string(c.hidden_size) + " vs " + std::to_string(c.num_attention_heads));
  const int64_t h = c.hidden_size, q = c.num_attention_heads * hd, kv = c.num_key_value_heads * hd;
  const int64_t inter = c.intermediate_size;
  const bool qwen2 = c.architecture == Architecture::Qwen2;
  const bool qkv_bias = qwen2 || c.attention_bias;
  const bool o_bias = !qwen2 && c.attention_bias;

  std::vector<ExpectedTensor> out;
  out.push_back({"model.embed_tokens.weight", {c.vocab_size, h}, TensorRole::Embedding});
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    out.push_back({p + "input_layernorm.weight", {h}, TensorRole::Norm});
    out.push_back({p + "self_attn.q_proj.weight", {q, h}, TensorRole::Linear});
    out.push_back({p + "self_attn.k_proj.weight", {kv, h}, TensorRole::Linear});
    out.push_back({p + "self_attn.v_proj.weight", {kv, h}, TensorRole::Linear});
    out.push_back({p + "self_attn.o_proj.weight", {h, q}, TensorRole::Linear});
    if (qkv_bias) {
      out.push_back({p + "self_attn.q_proj.bias", {q}, TensorRole::Bias});
      out.push_back({p + "self_attn.k_proj.bias", {kv}, TensorRole::Bias});
      out.push_back({p + "self_attn.v_proj.bias", {kv}, TensorRole::Bias});
    }
    if (o_bias) out.push_back({p + "self_attn.o_proj.bias", {h}, TensorRole::Bias});
    out.push_back({p + "post_attention_layernorm.weight", {h}, TensorRole::Norm});
    out.push_back({p + "mlp.gate_proj.weight", {inter, h}, TensorRole::Linear});
    out.push_back({p + "mlp.up_proj.weight", {inter, h}, TensorRole::Linear});
    out.push_back({p + "mlp.down_proj.weight", {h, inter}, TensorRole::Linear});
    if (c.mlp_bias) {
      out.push_back({p + "mlp.gate_proj.bias", {inter}, TensorRole::Bias});
      out.push_back({p + "mlp.up_proj.bias", {inter}, TensorRole::Bias});
      out.push_back({p + "mlp.down_proj.bias", {h}, TensorRole::Bias});
    }
  }
  out.push_back({"model.norm.weight", {h}, TensorRole::Norm});
  if (!c.tie_word_embeddings) out.push_back({"lm_head.weight", {c.vocab_size, h}, TensorRole::LmHead});
  return out;
}

int64_t llama_parameter_count(const ModelConfig& c) {
  int64_t n = 0;
  for (const auto& t : llama_tensor_layout(c)) n += numel(t.shape);
  return n;
}

bool LayoutReport::valid() const {
  for (const auto& p : problems)
    if (p.kind != LayoutProblem::Kind::Unexpected) return false;
  return true;
}

LayoutReport check_llama_layout(const ModelConfig& c, const Checkpoint& ckpt) {
  const bool quantized = c.quantization && c.quantization->load_in_4bit;
  LayoutReport report;
  std::set<std::string> known;
  for (const auto& e : llama_tensor_layout(c)) {
    known.insert(e.name);
    if (!ckpt.contains(e.name)) {
      report.problems.push_back({LayoutProblem::Kind::Missing, e.name, "", "shape " + shape_string(e.shape)});
      continue;
    }
    const TensorInfo& info = ckpt.info(e.name);
    const std::string& file = ckpt.file_of(e.name);
    if (quantized && e.role == TensorRole::Linear && info.dtype == DType::U8) {
      const std::vector<int64_t> packed = {(numel(e.shape) + 1) / 2, 1};
      if (info.shape != packed)
        report.problems.push_back({LayoutProblem::Kind::WrongShape, e.name, file,
                                   "packed 4-bit shape " + shape_string(info.shape) + ", expected " +
                                       shape_string(packed) + " for " + shape_string(e.shape)});
      for (const char* suffix : kQuantRequired) {
        const std::string name = e.name + suffix;
        if (!ckpt.contains(name))
          report.problems.push_back({LayoutProblem::Kind::Missing, name, "", "4-bit quantization state"});
        known.insert(name);
      }
      for (const char* suffix : kQuantOptional) known.insert(e.name + suffix);
      continue;
    }
    if (!is_floating(info.dtype))
      report.problems.push_back({LayoutProblem::Kind::WrongDtype, e.name, file,
                                 std::string("dtype ") + dtype_name(info.dtype) + ", expected f32, f16 or bf16"});
    if (info.shape != e.shape)
      report.problems.push_back({LayoutProblem::Kind::WrongShape, e.name, file,
                                 "shape " + shape_string(info.shape) + ", expected " + shape_string(e.shape)});
  }
  for (const auto& name : ckpt.names())
    if (!known.count(name))
      report.problems.push_back(
          {LayoutProblem::Kind::Unexpected, name, ckpt.file_of(name), "not part of the architecture"});
  return report;
}

}  // namespace qtrain::io
