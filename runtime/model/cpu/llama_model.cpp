// The CPU Llama model (see llama_model.h).
#include "runtime/model/cpu/llama_model.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <set>
#include <utility>

#include "csrc/core/error.h"
#include "csrc/core/rng.h"
#include "csrc/io/llama_layout.h"
#include "qk/nvtx.h"
#include "runtime/model/cpu/lm_loss.h"
#include "runtime/model/cpu/rmsnorm.h"
#include "runtime/model/cpu/rope.h"

namespace qtrain::model {

namespace {

std::string key_a(int64_t layer, Proj p) { return peft_module_path(layer, p) + ".lora_A.weight"; }
std::string key_b(int64_t layer, Proj p) { return peft_module_path(layer, p) + ".lora_B.weight"; }

// Each (layer, module) gets its own mask stream.
uint64_t module_seed(uint64_t seed, int64_t layer, Proj p) {
  uint64_t s = seed ^ (0x9e3779b97f4a7c15ull * static_cast<uint64_t>(layer * kNumProj + static_cast<int>(p) + 1));
  return splitmix64(s);
}

}  // namespace

CpuLlamaModel::CpuLlamaModel(BaseWeights base) : base_(std::move(base)) {
  const io::ModelConfig& c = base_.config;
  if (c.hidden_act != "silu") throw_bad_input("config.json", "hidden_act '" + c.hidden_act + "' is not supported (silu)");
  if (c.attention_bias && c.architecture != io::Architecture::Qwen2)
    throw_bad_input("config.json", "attention_bias on Llama/Mistral (an o_proj bias) is not supported");
  if (c.mlp_bias) throw_bad_input("config.json", "mlp_bias is not supported");
  inv_freq_ = cpu::rope_inv_freqs(c, c.head_dim);
  adapters_.resize(static_cast<size_t>(c.num_hidden_layers));
}

CpuLlamaModel CpuLlamaModel::load(const std::string& dir, const LoadOptions& opt) {
  return CpuLlamaModel(load_base_weights(dir, opt));
}

void CpuLlamaModel::init_lora(const LoraConfig& lora, uint64_t seed) {
  if (lora.r <= 0) throw_bad_input("lora", "lora_r must be positive");
  if (full_) throw_bad_input("lora", "full fine-tuning is on: LoRA and full fine-tuning are exclusive");
  if (!(lora.dropout >= 0.0 && lora.dropout < 1.0)) throw_bad_input("lora", "lora_dropout must be in [0, 1)");
  lora_ = lora;
  for (int64_t l = 0; l < config().num_hidden_layers; ++l) {
    for (Proj p : kAllProjs) {
      cpu::LoraAdapter& a = adapters_[static_cast<size_t>(l)][static_cast<size_t>(p)];
      a = {};
      if (!lora.targets_proj(p)) continue;
      const LinearWeight& w = base_.layers[static_cast<size_t>(l)][p];
      a.r = lora.r;
      a.A.resize(static_cast<size_t>(lora.r * w.in));
      const double bound = 1.0 / std::sqrt(static_cast<double>(w.in));
      Rng rng = Rng::for_stream(seed, key_a(l, p));
      for (float& v : a.A) v = static_cast<float>((2.0 * rng.uniform() - 1.0) * bound);
      a.B.assign(static_cast<size_t>(w.out * lora.r), 0.0f);
      a.dA.assign(a.A.size(), 0.0f);
      a.dB.assign(a.B.size(), 0.0f);
    }
  }
  has_adapter_ = true;
  acts_.valid = false;
}

void CpuLlamaModel::load_adapter(const std::string& dir) {
  set_adapter(load_peft_adapter(dir), dir + "/adapter_model.safetensors");
}

void CpuLlamaModel::set_adapter(const PeftAdapter& ad, const std::string& where) {
  if (full_) throw_bad_input(where, "full fine-tuning is on: LoRA and full fine-tuning are exclusive");
  std::vector<std::array<cpu::LoraAdapter, kNumProj>> next(adapters_.size());
  std::set<std::string> used;
  auto take = [&](const std::string& key, const std::vector<int64_t>& shape) {
    auto it = ad.tensors.find(key);
    if (it == ad.tensors.end()) throw_bad_input(where, "missing LoRA tensor", key);
    if (it->second.shape != shape)
      throw_bad_input(where, "LoRA tensor has shape " + io::shape_string(it->second.shape) + ", expected " +
                                 io::shape_string(shape), key);
    used.insert(key);
    return it->second.values;
  };
  for (int64_t l = 0; l < config().num_hidden_layers; ++l) {
    for (Proj p : kAllProjs) {
      if (!ad.config.targets_proj(p)) continue;
      const LinearWeight& w = base_.layers[static_cast<size_t>(l)][p];
      cpu::LoraAdapter& a = next[static_cast<size_t>(l)][static_cast<size_t>(p)];
      a.r = ad.config.r;
      a.A = take(key_a(l, p), {a.r, w.in});
      a.B = take(key_b(l, p), {w.out, a.r});
      a.dA.assign(a.A.size(), 0.0f);
      a.dB.assign(a.B.size(), 0.0f);
    }
  }
  for (const auto& [key, t] : ad.tensors) {
    if (!used.count(key)) throw_bad_input(where, "unexpected tensor for this model and adapter config", key);
  }
  adapters_ = std::move(next);
  lora_ = ad.config;
  has_adapter_ = true;
  acts_.valid = false;
}

PeftAdapter CpuLlamaModel::adapter(const std::string& base_model_name) const {
  if (!has_adapter_) throw_internal("CpuLlamaModel::adapter: no adapter");
  PeftAdapter ad;
  ad.config = lora_;
  ad.base_model_name_or_path = base_model_name;
  for (int64_t l = 0; l < config().num_hidden_layers; ++l) {
    for (Proj p : kAllProjs) {
      const cpu::LoraAdapter& a = adapters_[static_cast<size_t>(l)][static_cast<size_t>(p)];
      if (a.r == 0) continue;
      const LinearWeight& w = base_.layers[static_cast<size_t>(l)][p];
      ad.tensors[key_a(l, p)] = {{a.r, w.in}, a.A};
      ad.tensors[key_b(l, p)] = {{w.out, a.r}, a.B};
    }
  }
  return ad;
}

void CpuLlamaModel::save_adapter(const std::string& dir, const std::string& base_model_name) const {
  save_peft_adapter(dir, adapter(base_model_name));
}

cpu::BlockLora CpuLlamaModel::block_lora(int64_t layer, bool dropout, uint64_t dropout_seed) const {
  cpu::BlockLora runs{};
  if (!has_adapter_ || !adapter_enabled_) return runs;
  for (Proj p : kAllProjs) {
    const cpu::LoraAdapter& a = adapters_[static_cast<size_t>(layer)][static_cast<size_t>(p)];
    if (a.r == 0) continue;
    cpu::LoraRun& r = runs[static_cast<size_t>(p)];
    r.lora = &a;
    r.scale = static_cast<float>(lora_.scale());
    r.dropout = dropout ? static_cast<float>(lora_.dropout) : 0.0f;
    r.dropout_seed = module_seed(dropout_seed, layer, p);
  }
  return runs;
}

ForwardResult CpuLlamaModel::run_forward(const Batch& batch, bool dropout, uint64_t dropout_seed,
                                         Activations* keep) const {
  QK_NVTX_RANGE("model_forward");
  const io::ModelConfig& c = config();
  validate_batch(batch, c.vocab_size);
  const int64_t n = batch.tokens(), h = c.hidden_size;
  std::vector<float> x(static_cast<size_t>(n * h)), y(x.size());
  for (int64_t t = 0; t < n; ++t) {
    const float* e = base_.embed.data() + static_cast<int64_t>(batch.input_ids[static_cast<size_t>(t)]) * h;
    std::memcpy(x.data() + t * h, e, static_cast<size_t>(h) * sizeof(float));
  }
  const cpu::BlockInputs in{batch.rows, batch.seq, batch.position_ids.data(), batch.segment_ids.data(),
                            inv_freq_.data()};
  Activations local;
  Activations& acts = keep ? *keep : local;
  acts.blocks.resize(keep ? static_cast<size_t>(c.num_hidden_layers) : 1);
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    cpu::BlockActivations& ba = acts.blocks[keep ? static_cast<size_t>(l) : 0];
    cpu::llama_block_forward(c, base_.layers[static_cast<size_t>(l)], block_lora(l, dropout, dropout_seed), in,
                             x.data(), y.data(), ba);
    std::swap(x, y);
  }
  acts.x_final = std::move(x);
  acts.rstd_final.assign(static_cast<size_t>(n), 0.0f);
  acts.h_final.assign(static_cast<size_t>(n * h), 0.0f);
  cpu::rmsnorm_forward(acts.x_final.data(), base_.final_norm.data(), n, h, c.rms_norm_eps, acts.h_final.data(),
                       acts.rstd_final.data());
  QK_NVTX_RANGE("lm_head_loss");
  ForwardResult r;
  r.token_logprobs.assign(static_cast<size_t>(n), 0.0f);
  acts.lse.assign(static_cast<size_t>(n), 0.0f);
  cpu::lm_logprobs_forward({n, h, c.vocab_size}, acts.h_final.data(), base_.head().data(), batch.labels.data(),
                           r.token_logprobs.data(), acts.lse.data());
  double total = 0.0;
  for (int64_t t = 0; t < n; ++t) {
    if (batch.labels[static_cast<size_t>(t)] == kIgnoreLabel) continue;
    total += r.token_logprobs[static_cast<size_t>(t)];
    ++r.label_tokens;
  }
  r.loss = r.label_tokens ? -total / static_cast<double>(r.label_tokens) : 0.0;
  for (const SequenceSpan& s : batch_sequences(batch)) {
    SequenceLogprob sl{s.row, s.segment, 0.0, 0};
    for (int64_t t = s.begin; t < s.end; ++t) {
      const size_t i = static_cast<size_t>(s.row * batch.seq + t);
      if (batch.labels[i] == kIgnoreLabel) continue;
      sl.logprob += r.token_logprobs[i];
      ++sl.tokens;
    }
    r.sequences.push_back(sl);
  }
  if (keep) {
    keep->batch = batch;
    keep->dropout = dropout;
    keep->dropout_seed = dropout_seed;
    keep->valid = true;
  }
  return r;
}

ForwardResult CpuLlamaModel::forward(const Batch& batch) {
  acts_.valid = false;
  const bool dropout = training_ && has_adapter_ && adapter_enabled_ && lora_.dropout > 0.0;
  return run_forward(batch, dropout, dropout_seed_, &acts_);
}

ForwardResult CpuLlamaModel::evaluate(const Batch& batch) const { return run_forward(batch, false, 0, nullptr); }

std::vector<float> CpuLlamaModel::final_hidden(const Batch& batch) const {
  Activations a;
  run_forward(batch, false, 0, &a);
  return std::move(a.h_final);
}

void CpuLlamaModel::backward() {
  if (!acts_.valid) throw_internal("CpuLlamaModel::backward without a forward");
  const Batch& b = acts_.batch;
  int64_t count = 0;
  for (int32_t l : b.labels) count += l != kIgnoreLabel;
  std::vector<float> dlogp(b.labels.size(), 0.0f);
  if (count > 0) {
    const float w = -1.0f / static_cast<float>(count);
    for (size_t i = 0; i < dlogp.size(); ++i) dlogp[i] = b.labels[i] == kIgnoreLabel ? 0.0f : w;
  }
  backward(dlogp);
}

void CpuLlamaModel::backward(std::span<const float> dlogp) {
  QK_NVTX_RANGE("model_backward");
  if (!acts_.valid) throw_internal("CpuLlamaModel::backward without a forward");
  if (!full_ && (!has_adapter_ || !adapter_enabled_))
    throw_internal("CpuLlamaModel::backward needs the adapter enabled or full fine-tuning");
  const io::ModelConfig& c = config();
  const Batch& b = acts_.batch;
  if (dlogp.size() != b.labels.size()) throw_internal("CpuLlamaModel::backward: dlogp must hold B x T values");
  const int64_t n = b.tokens(), h = c.hidden_size;
  std::vector<float> dh(static_cast<size_t>(n * h)), dx(dh.size()), dy(dh.size());
  cpu::lm_logprobs_backward({n, h, c.vocab_size}, acts_.h_final.data(), base_.head().data(), b.labels.data(),
                            acts_.lse.data(), dlogp.data(), dh.data(),
                            full_ ? full_grads_.head(c.tie_word_embeddings) : nullptr);
  cpu::rmsnorm_backward(acts_.x_final.data(), base_.final_norm.data(), acts_.rstd_final.data(), dh.data(), n, h,
                        dy.data());
  if (full_)
    cpu::rmsnorm_weight_grad(acts_.x_final.data(), acts_.rstd_final.data(), dh.data(), n, h,
                             full_grads_.final_norm.data());
  const cpu::BlockInputs in{b.rows, b.seq, b.position_ids.data(), b.segment_ids.data(), inv_freq_.data()};
  for (int64_t l = c.num_hidden_layers - 1; l >= 0; --l) {
    cpu::BlockGrads grads{};
    for (Proj p : kAllProjs) {
      cpu::LoraAdapter& a = adapters_[static_cast<size_t>(l)][static_cast<size_t>(p)];
      grads[static_cast<size_t>(p)] = a.r ? &a : nullptr;
    }
    cpu::llama_block_backward(c, base_.layers[static_cast<size_t>(l)], block_lora(l, acts_.dropout, acts_.dropout_seed),
                              grads, in, acts_.blocks[static_cast<size_t>(l)], dy.data(), dx.data(),
                              full_ ? &full_grads_.layers[static_cast<size_t>(l)] : nullptr);
    std::swap(dx, dy);
  }
  if (full_) cpu::embedding_grad(b.input_ids.data(), dy.data(), n, h, full_grads_.embed.data());
}

void CpuLlamaModel::zero_grad() {
  for (auto& layer : adapters_) {
    for (cpu::LoraAdapter& a : layer) {
      std::fill(a.dA.begin(), a.dA.end(), 0.0f);
      std::fill(a.dB.begin(), a.dB.end(), 0.0f);
    }
  }
  if (full_) cpu::zero_full_grads(full_grads_);
}

std::vector<LoraTensorRef> CpuLlamaModel::lora_tensors() {
  std::vector<LoraTensorRef> out;
  for (int64_t l = 0; l < config().num_hidden_layers; ++l) {
    for (Proj p : kAllProjs) {
      cpu::LoraAdapter& a = adapters_[static_cast<size_t>(l)][static_cast<size_t>(p)];
      if (a.r == 0) continue;
      const LinearWeight& w = base_.layers[static_cast<size_t>(l)][p];
      out.push_back({key_a(l, p), {a.r, w.in}, a.A, a.dA});
      out.push_back({key_b(l, p), {w.out, a.r}, a.B, a.dB});
    }
  }
  return out;
}

}  // namespace qtrain::model
