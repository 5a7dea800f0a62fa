// The memory plan's formulas. Notation: L layers, h hidden, I intermediate, q = heads * head_dim,
// kv = kv_heads * head_dim, V vocab, T = micro_batch * sequence_len tokens, r the LoRA rank, m the
// number of LoRA target kinds. bf16 is 2 bytes, fp32 4.
#include "runtime/memory/plan.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <initializer_list>
#include <set>

#include "csrc/core/error.h"
#include "csrc/io/llama_layout.h"
#include "csrc/io/tiny_model.h"
#include "qk/rmsnorm.h"
#include "runtime/memory/arena.h"

namespace qtrain::rt {

AdapterKind parse_adapter(const std::string& name, const std::string& file) {
  if (name == "qlora") return AdapterKind::QLoRA;
  if (name == "lora") return AdapterKind::LoRA;
  if (name == "full" || name.empty()) return AdapterKind::Full;
  throw_bad_input(file, "unknown adapter '" + name + "' (expected qlora, lora or full)", "key 'adapter'");
}

const char* adapter_name(AdapterKind kind) {
  switch (kind) {
    case AdapterKind::QLoRA: return "qlora";
    case AdapterKind::LoRA: return "lora";
    case AdapterKind::Full: return "full";
  }
  return "?";
}

const std::vector<std::string>& all_linear_modules() {
  static const std::vector<std::string> k = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};
  return k;
}

std::vector<std::string> parse_target_modules(const std::vector<std::string>& names, const std::string& file) {
  if (names.size() == 1 && names[0] == "all-linear") return all_linear_modules();
  if (names.empty()) throw_bad_input(file, "lora_target_modules is empty", "key 'lora_target_modules'");
  const auto& all = all_linear_modules();
  std::set<std::string> seen;
  for (const auto& n : names) {
    if (std::find(all.begin(), all.end(), n) == all.end())
      throw_bad_input(file, "unknown LoRA target module '" + n + "' (expected q_proj, k_proj, v_proj, o_proj, "
                            "gate_proj, up_proj, down_proj or all-linear)", "key 'lora_target_modules'");
    if (!seen.insert(n).second) throw_bad_input(file, "LoRA target module '" + n + "' listed twice", "key 'lora_target_modules'");
  }
  return names;
}

size_t MemoryPlan::bytes_of(const std::string& name) const {
  for (const auto& i : items)
    if (i.name == name) return i.bytes;
  return 0;
}

namespace {

size_t z(int64_t v) { return static_cast<size_t>(v); }

std::string fmt(const char* f, double a) {
  char buf[160];
  std::snprintf(buf, sizeof buf, f, a);
  return buf;
}

// The module kind of a weight or bias name ("model.layers.3.mlp.up_proj.weight" -> "up_proj").
std::string module_of(const std::string& name) {
  const size_t end = name.rfind('.');
  const size_t begin = name.rfind('.', end - 1);
  return name.substr(begin + 1, end - begin - 1);
}

// Full fine-tuning keeps the masters and gradients of fused linears in one slot each (full_weights.h):
// k and v continue q's slot (weights and biases alike), up continues gate's.
bool continues_slot(const std::string& name) {
  const std::string m = module_of(name);
  return m == "k_proj" || m == "v_proj" || m == "up_proj";
}

constexpr int64_t kFullSlotAlign = 64;  // elements: full_weights.cpp's kSlotAlign

}  // namespace

MemoryPlan make_memory_plan(const PlanInput& in) {
  if (in.micro_batch_size < 1) throw_bad_input("config", "micro_batch_size must be at least 1", "key 'micro_batch_size'");
  if (in.sequence_len < 1) throw_bad_input("config", "sequence_len must be at least 1", "key 'sequence_len'");
  if (in.adapter != AdapterKind::Full && in.lora_r < 1)
    throw_bad_input("config", "lora_r must be at least 1", "key 'lora_r'");
  if (in.ce_chunk_tokens < 1) throw_internal("ce_chunk_tokens must be positive");
  if (!(in.lora_dropout >= 0.0 && in.lora_dropout < 1.0))
    throw_bad_input("config", "lora_dropout must be in [0, 1)", "key 'lora_dropout'");
  const auto targets = parse_target_modules(in.lora_target_modules);
  const auto layout = io::llama_tensor_layout(in.model);  // validates the config
  const io::ModelConfig& c = in.model;
  const int64_t hd = c.head_dim > 0 ? c.head_dim : c.hidden_size / c.num_attention_heads;
  const int64_t h = c.hidden_size, I = c.intermediate_size, L = c.num_hidden_layers, V = c.vocab_size;
  const int64_t heads = c.num_attention_heads, q = heads * hd, kv = c.num_key_value_heads * hd;
  const int64_t T = in.micro_batch_size * in.sequence_len;
  const bool lora = in.adapter != AdapterKind::Full;
  const int64_t r = lora ? in.lora_r : 0;

  MemoryPlan plan;
  size_t base = 0, nf4 = 0, constants = 0, bf16_parts = 0;
  int64_t full_elems = 0;  // full fine-tuning: elements of the masters (and of the gradients), slots aligned
  std::vector<int64_t> trainable;
  for (const auto& t : layout) {
    const int64_t n = io::numel(t.shape);
    plan.base_params += n;
    if (in.adapter == AdapterKind::Full) {
      // Full fine-tuning: the bf16 weights the kernels read, as in LoRA mode; every weight trainable,
      // its fp32 master and gradient in a slot that starts on a 64-element boundary.
      (t.role == io::TensorRole::Linear ? base : bf16_parts) += 2 * z(n);
      trainable.push_back(n);
      if (!continues_slot(t.name)) full_elems = (full_elems + kFullSlotAlign - 1) / kFullSlotAlign * kFullSlotAlign;
      full_elems += n;
      continue;
    }
    if (t.role != io::TensorRole::Linear) {
      bf16_parts += 2 * z(n);  // embeddings, norms, biases, lm_head stay bf16
      continue;
    }
    if (in.adapter == AdapterKind::QLoRA) {
      // NF4, blocksize 64: half a byte per weight; double-quantized absmax: one byte per 64-block,
      // one fp32 per 256 of those, and the fp32 offset.
      const size_t blocks = (z(n) + 63) / 64;
      nf4 += (z(n) + 1) / 2;
      constants += blocks + 4 * ((blocks + 255) / 256) + 4;
    } else {
      base += 2 * z(n);  // LoRA on a bf16 base
    }
    if (std::find(targets.begin(), targets.end(), module_of(t.name)) != targets.end()) {
      trainable.push_back(r * t.shape[1]);  // lora_A [r, in]
      trainable.push_back(t.shape[0] * r);  // lora_B [out, r]
    }
  }
  if (in.adapter == AdapterKind::QLoRA) {
    constants += 4 * (16 + 256);  // the NF4 and 8-bit code tables, once
    base = nf4 + constants;
  }
  for (int64_t n : trainable) plan.trainable_params += n;
  const size_t P = z(plan.trainable_params);

  auto add = [&](const char* name, size_t bytes, std::string detail) { plan.items.push_back({name, bytes, std::move(detail)}); };
  const double G = 1e9;
  if (in.adapter == AdapterKind::QLoRA)
    add(kPlanBaseWeights, base,
        fmt("NF4 %.2f G weights x 0.5 B", static_cast<double>(nf4) * 2 / G) + " + double-quant constants " +
            format_bytes(constants));
  else
    add(kPlanBaseWeights, base,
        fmt("bf16 linears, %.2f G weights x 2 B", static_cast<double>(base) / 2 / G) +
            (lora ? "" : " (the copy the kernels read)"));
  add(kPlanBf16Parts, bf16_parts, "embeddings, norms, biases, lm_head in bf16");
  if (lora) {
    add(kPlanLora, 6 * P,
        fmt("%.1f M params x (4 B fp32 master + 2 B bf16 copy)", static_cast<double>(P) / 1e6) + ", r " +
            std::to_string(r) + ", " + std::to_string(targets.size()) + " kinds");
    add(kPlanGrads, 4 * P, fmt("fp32, %.1f M trainable params", static_cast<double>(P) / 1e6));
  } else {
    add(kPlanMasters, 4 * z(full_elems),
        fmt("fp32 copy of every weight, %.2f G x 4 B (the optimizer updates it; bf16 weights are cast from it)",
            static_cast<double>(P) / G));
    add(kPlanGrads, 4 * z(full_elems), fmt("fp32, every weight, %.2f G x 4 B", static_cast<double>(P) / G));
  }
  const size_t states = optimizer_state_bytes(in.optimizer, trainable);
  add(kPlanOptimizer, states,
      std::string(optimizer_name(in.optimizer)) +
          (optimizer_is_8bit(in.optimizer) ? ": 2 B/param + fp32 absmax per 256 (8 B/param under 4096)" : ": 8 B/param") +
          (optimizer_is_paged(in.optimizer) ? ", paged (counted as resident)" : ""));

  // The step's tensors, as the CUDA model allocates them from its arena (runtime/model/cuda/), bf16
  // unless noted. One layer's activation set, what its backward reads (llama_block.h BlockActs): h1,
  // x2, h2 (3h); q and k after RoPE, v and the attention output (2q + 2kv); gate|up and the SwiGLU
  // product (3I); each targeted LoRA kind's X A (m r; a fused linear none of whose projections is
  // targeted has none); the two RMSNorm rstd and the attention log-sum-exp per head (fp32). Head sizes
  // the attention kernel has no tile for run on copies padded to the next of 64, 80, 96, 128 (pd): then
  // the set holds the padded q, k, v and attention output and the unpadded attention output (o_proj's
  // input). Beside the sets, one forward scratch that every layer's forward (and the recomputation)
  // shares (llama_block.h BlockForwardScratch), the buffers no backward reads: the fused q|k|v output
  // (q + 2kv), the o_proj and MLP outputs (2h), and when padded q and k before padding (q + kv).
  int64_t pd = hd;
  for (int64_t tile : {64, 80, 96, 128}) {
    if (hd <= tile) {
      pd = tile;
      break;
    }
  }
  const bool padded = pd != hd;
  const int64_t attn_elems = padded ? 2 * heads * pd + 2 * c.num_key_value_heads * pd + q : 2 * q + 2 * kv;
  // LoRA ranks of the four fused linears (q/k/v, o, gate/up, down): r per targeted projection.
  auto targeted = [&](std::initializer_list<const char*> projs) {
    int64_t n = 0;
    for (const char* p : projs) n += std::find(targets.begin(), targets.end(), p) != targets.end() ? 1 : 0;
    return r * n;
  };
  const int64_t lora_r_total[4] = {targeted({"q_proj", "k_proj", "v_proj"}), targeted({"o_proj"}),
                                   targeted({"gate_proj", "up_proj"}), targeted({"down_proj"})};
  const int64_t r_kinds = lora_r_total[0] + lora_r_total[1] + lora_r_total[2] + lora_r_total[3];
  const size_t set_per_token = 2 * z(3 * h + attn_elems + 3 * I + r_kinds) + 4 * 2 + 4 * z(heads);
  const size_t layer_set = z(T) * set_per_token;
  const size_t scratch_per_token = 2 * z(q + 2 * kv + 2 * h + (padded ? q + kv : 0));
  const size_t forward_scratch = z(T) * scratch_per_token;
  const size_t layer_input = z(T) * 2 * z(h);
  // Beside the layers: the batch (ids, positions, labels: int32), the final residual, its norm and
  // the norm's rstd for the LM head's backward; full fine-tuning adds the bias GEMMs' column of ones.
  const size_t step_fixed = z(T) * (3 * 4 + 2 * 2 * z(h) + 4 + (lora ? 0 : 2));
  size_t kept;
  std::string kept_detail;
  if (!in.gradient_checkpointing) {
    kept = z(L) * (layer_input + layer_set) + forward_scratch + step_fixed;
    kept_detail = std::to_string(L) + " layers x " + std::to_string(set_per_token + 2 * z(h)) +
                  " B/token (input and what backward reads) + one shared forward scratch of " +
                  std::to_string(scratch_per_token) + " B/token";
  } else if (!in.offload) {
    kept = z(L) * layer_input + step_fixed;
    kept_detail = std::to_string(L) + " layer inputs [T, h] bf16";
  } else {
    kept = 2 * layer_input + step_fixed;
    kept_detail = "2 layer inputs in flight; the rest in pinned host memory";
  }
  add(kPlanActivations, kept,
      kept_detail + ", final norm and batch" + (lora ? "" : " (with a bf16 column of ones)") + ", T = " +
          std::to_string(T));
  // Live through forward and backward: the gradient of the final norm's output and the LoRA linears'
  // workspace, sized for the largest of the four fused linears: d XA (r per token and group) and, with
  // dropout, the dropped-out input (in per token). Backward only: the residual gradient and the
  // layer's gradient scratch (llama_block.h BlockGradScratch): d SwiGLU and d gate|up (3I), d h2, d x2,
  // d h1 (3h), d attention output, dq (2q), dk, dv (2kv), d q|k|v (q + 2kv), padded copies when padded.
  // Full fine-tuning's backward also takes the RMSNorm dw partials (fp32, min(T, 512) rows of h, the
  // kernel's count) and the embedding gradient's plan (int32: T + 2 groups + 1, a group per distinct
  // token id, at most min(T, V)). Its LM head dW recomputes the logits in a workspace the size of the
  // cross-entropy one, before the scratch is taken: no new peak.
  size_t lora_workspace = 0;
  if (lora) {
    auto round_up = [](size_t n) { return (n + 255) / 256 * 256; };
    const int64_t linears[4][2] = {{h, lora_r_total[0]}, {q, lora_r_total[1]}, {h, lora_r_total[2]},
                                   {I, lora_r_total[3]}};  // in, r_total
    for (const auto& l : linears) {
      if (l[1] == 0) continue;  // the base alone: no workspace
      lora_workspace = std::max(lora_workspace, (in.lora_dropout > 0 ? round_up(2 * z(T) * z(l[0])) : 0) +
                                                    round_up(2 * z(T) * z(l[1])));
    }
  }
  const size_t grads_live = z(T) * 2 * z(h) + lora_workspace;
  const int64_t pad_grads = padded ? 2 * heads * pd + 2 * c.num_key_value_heads * pd : 0;
  const size_t full_backward =
      lora ? 0 : 4 * z(qk::rmsnorm_backward_workspace(T, h)) + 4 * z(T + 2 * std::min(T, V) + 1);
  const size_t grads_backward = z(T) * 2 * z(h + 3 * I + 3 * h + 3 * q + 4 * kv + pad_grads) + full_backward;
  add(kPlanActGrads, grads_live + grads_backward,
      lora ? std::string("bf16 d residual + one layer's gradient scratch + LoRA d XA") +
                 (in.lora_dropout > 0 ? " and dropout copy" : "")
           : "bf16 d residual + one layer's gradient scratch + fp32 RMSNorm dw partials + embedding grad plan");
  add(kPlanRecompute, in.gradient_checkpointing ? layer_set + forward_scratch : 0,
      in.gradient_checkpointing ? "one layer's activation set and the forward scratch, recomputed in backward"
                                : "none (no checkpointing)");
  // Flash-style attention backward: delta = rowsum(dO * O), fp32 per head and token.
  const size_t attention = z(T) * 4 * z(heads);
  add(kPlanAttention, attention, "fp32 delta per head (backward)");
  const int64_t chunk = std::min(T, in.ce_chunk_tokens);
  const size_t cross_entropy = z(chunk) * z(V) * 2 + z(T) * 4;
  add(kPlanCrossEntropy, cross_entropy,
      std::to_string(chunk) + " tokens x vocab bf16 logits + fp32 log-prob per token (forward)");
  add(kPlanCublas, size_t{32} << 20, "32 MiB, cuBLAS's own");
  // The fused NF4 GEMM dequantizes inside its tile loader; only a linear whose sizes are not multiples
  // of 64 runs the dequantize + cuBLAS fallback, through one bf16 buffer the size of the largest such
  // fused weight (q|k|v, o, gate|up, down).
  size_t dequant = 0;
  if (in.adapter == AdapterKind::QLoRA) {
    const int64_t fused[4][2] = {{q + 2 * kv, h}, {h, q}, {2 * I, h}, {h, I}};
    for (const auto& f : fused)
      if (f[0] % 64 != 0 || f[1] % 64 != 0) dequant = std::max(dequant, 2 * z(f[0]) * z(f[1]));
  }
  add(kPlanDequant, dequant,
      in.adapter != AdapterKind::QLoRA ? "none (no NF4 base)"
      : dequant > 0                    ? "largest fused linear in bf16 (sizes not multiples of 64)"
                                       : "none (every linear takes the fused NF4 GEMM)");
  // The cross-entropy workspace lives in the forward pass only (released before backward), the
  // backward scratch and the attention delta in the backward pass only: the peak counts the larger.
  plan.phase_overlap = std::min(cross_entropy, grads_backward + attention);
  for (const auto& i : plan.items) plan.peak += i.bytes;
  plan.peak -= plan.phase_overlap;
  return plan;
}

size_t plan_step_bytes(const MemoryPlan& plan) {
  size_t bytes = 0;
  for (const char* name : {kPlanActivations, kPlanActGrads, kPlanRecompute, kPlanAttention, kPlanCrossEntropy, kPlanDequant})
    bytes += plan.bytes_of(name);
  return bytes - plan.phase_overlap;
}

std::string format_plan(const MemoryPlan& plan, size_t limit_bytes) {
  std::string out;
  char line[512];
  std::snprintf(line, sizeof line, "%-24s %12s  %s\n", "category", "bytes", "how");
  out += line;
  for (const auto& i : plan.items) {
    std::snprintf(line, sizeof line, "%-24s %12s  %s\n", i.name.c_str(), format_bytes(i.bytes).c_str(), i.detail.c_str());
    out += line;
  }
  std::snprintf(line, sizeof line, "%-24s %12s  %s\n", "peak", format_bytes(plan.peak).c_str(),
                ("sum of the above less " + format_bytes(plan.phase_overlap) +
                 " (forward-only and backward-only workspaces never coexist); " + std::to_string(plan.trainable_params) + " trainable of " +
                 std::to_string(plan.base_params) + " parameters")
                    .c_str());
  out += line;
  if (limit_bytes > 0) {
    const double used = 100.0 * static_cast<double>(plan.peak) / static_cast<double>(limit_bytes);
    std::snprintf(line, sizeof line, "%-24s %12s  %s\n", "gpu_memory_limit", format_bytes(limit_bytes).c_str(),
                  plan.peak <= limit_bytes ? fmt("fits (%.0f%% used)", used).c_str()
                                           : ("OVER by " + format_bytes(plan.peak - limit_bytes)).c_str());
    out += line;
  }
  return out;
}

namespace {

// Largest x in [1, cap] with fits(x), for a monotone fits; 0 when fits(1) fails.
template <typename F>
int64_t largest(int64_t cap, F fits) {
  if (!fits(1)) return 0;
  int64_t lo = 1, hi = 2;
  while (hi <= cap && fits(hi)) lo = hi, hi *= 2;
  hi = std::min(hi, cap + 1);  // fits(lo), and hi does not fit or is past the cap
  while (hi - lo > 1) {
    const int64_t mid = lo + (hi - lo) / 2;
    if (fits(mid)) lo = mid;
    else hi = mid;
  }
  return lo;
}

}  // namespace

int64_t largest_micro_batch(PlanInput in, size_t limit_bytes) {
  return largest(int64_t{1} << 20, [&](int64_t b) {
    in.micro_batch_size = b;
    return make_memory_plan(in).peak <= limit_bytes;
  });
}

int64_t largest_sequence_len(PlanInput in, size_t limit_bytes) {
  return largest(int64_t{1} << 24, [&](int64_t s) {
    in.sequence_len = s;
    return make_memory_plan(in).peak <= limit_bytes;
  });
}

io::ModelConfig model_preset(const std::string& name) {
  io::ModelConfig c;
  c.architecture = io::Architecture::Llama;
  c.model_type = "llama";
  c.rms_norm_eps = 1e-5;
  if (name == "llama2-7b") {
    c.vocab_size = 32000, c.hidden_size = 4096, c.intermediate_size = 11008, c.num_hidden_layers = 32;
    c.num_attention_heads = 32, c.num_key_value_heads = 32, c.head_dim = 128, c.max_position_embeddings = 4096;
    c.rope_theta = 10000.0;
    return c;
  }
  if (name == "llama3-8b") {
    c.vocab_size = 128256, c.hidden_size = 4096, c.intermediate_size = 14336, c.num_hidden_layers = 32;
    c.num_attention_heads = 32, c.num_key_value_heads = 8, c.head_dim = 128, c.max_position_embeddings = 131072;
    c.rope_theta = 500000.0;
    c.rope_scaling = {"llama3", 8.0, 1.0, 4.0, 8192};
    return c;
  }
  if (name == "tiny") return io::tiny_model_config(io::TinyModelOptions{});
  throw_bad_input("--preset", "unknown model preset '" + name + "' (expected llama2-7b, llama3-8b or tiny)");
}

size_t parse_byte_size(const std::string& text, const std::string& key) {
  auto bad = [&]() -> size_t {
    throw_bad_input("config", "cannot read '" + text + "' as a size (like 24GiB, 24GB, 500MiB or bytes)",
                    "key '" + key + "'");
  };
  size_t pos = 0;
  double value = 0;
  try {
    value = std::stod(text, &pos);
  } catch (const std::exception&) {
    return bad();
  }
  std::string unit = text.substr(pos);
  unit.erase(std::remove(unit.begin(), unit.end(), ' '), unit.end());
  std::string u;
  for (char ch : unit) u += static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  double mult = 0;
  if (u.empty() || u == "b") mult = 1;
  else if (u == "kb") mult = 1e3;
  else if (u == "mb") mult = 1e6;
  else if (u == "gb") mult = 1e9;
  else if (u == "tb") mult = 1e12;
  else if (u == "k" || u == "kib") mult = 1024.0;
  else if (u == "m" || u == "mib") mult = 1024.0 * 1024;
  else if (u == "g" || u == "gib") mult = 1024.0 * 1024 * 1024;
  else if (u == "t" || u == "tib") mult = 1024.0 * 1024 * 1024 * 1024;
  else return bad();
  const double bytes = value * mult;
  if (!(bytes > 0) || !std::isfinite(bytes) || bytes > 1.8e19) return bad();
  return static_cast<size_t>(std::llround(bytes));
}

}  // namespace qtrain::rt
