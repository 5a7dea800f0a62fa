// Base-weight gradients for full fine-tuning (see full_grads.h).
#include "runtime/model/cpu/full_grads.h"

#include <algorithm>
#include <map>

#include "csrc/core/error.h"
#include "csrc/io/llama_layout.h"
#include "qk/matmul.h"

namespace qtrain::model::cpu {

namespace {

std::vector<float> zeros_like(const std::vector<float>& v) { return std::vector<float>(v.size(), 0.0f); }

}  // namespace

FullGrads make_full_grads(const BaseWeights& w) {
  FullGrads g;
  g.embed = zeros_like(w.embed);
  g.final_norm = zeros_like(w.final_norm);
  g.lm_head = zeros_like(w.lm_head);
  g.layers.resize(w.layers.size());
  for (size_t l = 0; l < w.layers.size(); ++l) {
    const LayerWeights& lw = w.layers[l];
    LayerGrads& lg = g.layers[l];
    lg.input_norm = zeros_like(lw.input_norm);
    lg.post_norm = zeros_like(lw.post_norm);
    for (Proj p : kAllProjs) {
      lg[p].weight = zeros_like(lw[p].weight);
      lg[p].bias = zeros_like(lw[p].bias);
    }
  }
  return g;
}

void zero_full_grads(FullGrads& g) {
  auto z = [](std::vector<float>& v) { std::fill(v.begin(), v.end(), 0.0f); };
  z(g.embed);
  z(g.final_norm);
  z(g.lm_head);
  for (LayerGrads& lg : g.layers) {
    z(lg.input_norm);
    z(lg.post_norm);
    for (LinearGrads& p : lg.proj) {
      z(p.weight);
      z(p.bias);
    }
  }
}

void linear_weight_grad(const LinearWeight& w, const float* x, const float* dy, int64_t n, LinearGrads& g) {
  qk::cpu::matmul_f32({true, false, static_cast<int>(w.out), static_cast<int>(w.in), static_cast<int>(n)}, 1.0f, dy,
                      x, 1.0f, g.weight.data());
  if (g.bias.empty()) return;
  for (int64_t o = 0; o < w.out; ++o) {
    double s = 0.0;
    for (int64_t t = 0; t < n; ++t) s += dy[t * w.out + o];
    g.bias[static_cast<size_t>(o)] += static_cast<float>(s);
  }
}

void rmsnorm_weight_grad(const float* x, const float* rstd, const float* dy, int64_t n, int64_t hidden, float* dw) {
  for (int64_t j = 0; j < hidden; ++j) {
    double s = 0.0;
    // x * rstd rounded to fp32 first, as the forward multiplies w by that fp32 value
    for (int64_t i = 0; i < n; ++i) s += static_cast<double>(dy[i * hidden + j]) * (x[i * hidden + j] * rstd[i]);
    dw[j] += static_cast<float>(s);
  }
}

void embedding_grad(const int32_t* ids, const float* dx, int64_t n, int64_t hidden, float* dembed) {
  for (int64_t t = 0; t < n; ++t) {
    float* row = dembed + static_cast<int64_t>(ids[t]) * hidden;
    for (int64_t j = 0; j < hidden; ++j) row[j] += dx[t * hidden + j];
  }
}

namespace {

// Every buffer of a BaseWeights or a FullGrads (the same field names) by HF name.
template <typename Model, typename Vec>
std::map<std::string, Vec*> named_buffers(Model& m, bool tied) {
  std::map<std::string, Vec*> by_name;
  by_name["model.embed_tokens.weight"] = &m.embed;
  by_name["model.norm.weight"] = &m.final_norm;
  if (!tied) by_name["lm_head.weight"] = &m.lm_head;
  for (size_t l = 0; l < m.layers.size(); ++l) {
    const std::string pre = "model.layers." + std::to_string(l) + ".";
    auto& layer = m.layers[l];
    by_name[pre + "input_layernorm.weight"] = &layer.input_norm;
    by_name[pre + "post_attention_layernorm.weight"] = &layer.post_norm;
    for (Proj p : kAllProjs) {
      const std::string base = pre + proj_parent(p) + "." + proj_name(p);
      auto& lin = layer.proj[static_cast<int>(p)];
      by_name[base + ".weight"] = &lin.weight;
      if (!lin.bias.empty()) by_name[base + ".bias"] = &lin.bias;
    }
  }
  return by_name;
}

// The model's buffers in the checkpoint layout's order, each checked against its layout shape.
template <typename Vec, typename Fn>
void walk_layout(const io::ModelConfig& c, std::map<std::string, Vec*> by_name, Fn&& fn) {
  for (const io::ExpectedTensor& t : io::llama_tensor_layout(c)) {
    auto it = by_name.find(t.name);
    if (it == by_name.end()) throw_internal("base tensors: the model holds no tensor " + t.name);
    if (static_cast<int64_t>(it->second->size()) != io::numel(t.shape))
      throw_internal("base tensors: " + t.name + " does not match its layout shape");
    fn(t, *it->second);
    by_name.erase(it);
  }
  if (!by_name.empty()) throw_internal("base tensors: a tensor outside the layout: " + by_name.begin()->first);
}

}  // namespace

std::vector<BaseTensorRef> base_tensor_refs(BaseWeights& w, FullGrads& g) {
  const bool tied = w.config.tie_word_embeddings;
  std::map<std::string, std::vector<float>*> grads = named_buffers<FullGrads, std::vector<float>>(g, tied);
  std::vector<BaseTensorRef> out;
  walk_layout(w.config, named_buffers<BaseWeights, std::vector<float>>(w, tied),
              [&](const io::ExpectedTensor& t, std::vector<float>& v) {
                auto it = grads.find(t.name);
                if (it == grads.end() || it->second->size() != v.size())
                  throw_internal("base_tensor_refs: no gradient shaped like " + t.name);
                out.push_back({t.name, t.shape, v, *it->second});
              });
  return out;
}

std::vector<BaseTensorView> base_tensor_views(const BaseWeights& w) {
  std::vector<BaseTensorView> out;
  walk_layout(w.config, named_buffers<const BaseWeights, const std::vector<float>>(w, w.config.tie_word_embeddings),
              [&](const io::ExpectedTensor& t, const std::vector<float>& v) { out.push_back({t.name, t.shape, v}); });
  return out;
}

}  // namespace qtrain::model::cpu
