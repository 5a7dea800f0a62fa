// One Llama decoder layer on the device (see llama_block.h).
#include "runtime/model/cuda/llama_block.h"

#if QTRAIN_HAS_CUDA
#include <algorithm>
#include <string>

#include "csrc/core/error.h"
#include "qk/nvtx.h"
#include "qk/rmsnorm.h"
#include "qk/rope.h"
#include "qk/swiglu.h"
#include "runtime/model/attention_window.h"
#include "runtime/model/cuda/cuda_util.h"
#include "runtime/model/cuda/full_linear.h"

namespace qtrain::model::cuda {

namespace {

enum Linear { kQkv = 0, kO = 1, kGateUp = 2, kDown = 3 };

template <typename T>
T* alloc(rt::DeviceArena& arena, int64_t n, const char* what) {
  return static_cast<T*>(arena.allocate(static_cast<size_t>(n) * sizeof(T), what));
}

const DeviceLinear& base_linear(const DeviceLayer& w, int which) {
  switch (which) {
    case kQkv:
      return w.qkv;
    case kO:
      return w.o;
    case kGateUp:
      return w.gate_up;
    default:
      return w.down;
  }
}

qk::LoraLinear linear_view(const BlockContext& ctx, const DeviceLayer& w, int64_t layer, int which) {
  qk::LoraLinear v = ctx.lora_weights->view(layer, which, ctx.adapter_enabled);
  const DeviceLinear& b = base_linear(w, which);
  v.w = b.w;
  v.nf4 = b.nf4;
  v.bias = b.bias;
  v.dropout = ctx.dropout;
  // One mask stream per (step, layer, linear); backward and recomputation
  // rebuild the same one.
  v.seed = qk::lora_mix64(ctx.dropout_seed ^ (0x9E3779B97F4A7C15ull * static_cast<uint64_t>(layer * 4 + which + 1)));
  return v;
}

const FullLinearGrads& full_linear_grads(const FullLayerGrads& g, int which) {
  switch (which) {
    case kQkv:
      return g.qkv;
    case kO:
      return g.o;
    case kGateUp:
      return g.gate_up;
    default:
      return g.down;
  }
}

// Linear `which` of the block: the grouped LoRA linear, or in full mode the plain one (no xa).
void linear_forward(const BlockContext& ctx, const DeviceLayer& w, int64_t layer, int which, const bf16* x,
                    int64_t t, bf16* y, bf16* xa) {
  if (ctx.full != nullptr) {
    full_linear_forward(ctx.blas, base_linear(w, which), x, t, ctx.ones, y, ctx.stream);
    return;
  }
  qk::lora_linear_forward(ctx.lora, linear_view(ctx, w, layer, which), x, static_cast<int>(t), y, xa, ctx.stream);
}

void linear_backward(const BlockContext& ctx, const DeviceLayer& w, int64_t layer, int which, const bf16* x,
                     const bf16* xa, const bf16* dy, int64_t t, bf16* dx) {
  if (ctx.full != nullptr) {
    const FullLayerGrads& g = ctx.full->layers[static_cast<size_t>(layer)];
    full_linear_backward(ctx.blas, base_linear(w, which), x, dy, t, ctx.ones, dx, full_linear_grads(g, which),
                         ctx.stream);
    return;
  }
  qk::lora_linear_backward(ctx.lora, linear_view(ctx, w, layer, which), x, xa, dy, static_cast<int>(t), dx,
                           ctx.lora_weights->grads(layer, which), ctx.stream);
}

// The gradient of a layer's input norm (or post-attention norm): null unless full mode trains it.
float* norm_dw(const BlockContext& ctx, int64_t layer, bool post) {
  if (ctx.full == nullptr) return nullptr;
  const FullLayerGrads& g = ctx.full->layers[static_cast<size_t>(layer)];
  return post ? g.post_norm : g.input_norm;
}

// [T, heads, head_dim] <-> [T, heads, attn_dim] with zeros in the padding.
void pad_heads(const BlockContext& ctx, const BlockDims& d, const bf16* src, bf16* dst, int heads) {
  const int64_t rows = d.tokens * heads;
  check_cuda(cudaMemsetAsync(dst, 0, static_cast<size_t>(rows * d.attn_dim) * 2, ctx.stream), "pad_heads");
  copy_rows(ctx.blas, ctx.one, src, d.head_dim, dst, d.attn_dim, d.head_dim, rows, ctx.stream);
}
void unpad_heads(const BlockContext& ctx, const BlockDims& d, const bf16* src, bf16* dst, int heads) {
  copy_rows(ctx.blas, ctx.one, src, d.attn_dim, dst, d.head_dim, d.head_dim, d.tokens * heads, ctx.stream);
}

qk::AttentionShape attention_shape(const BlockContext& ctx, const BlockDims& d) {
  qk::AttentionShape s;
  s.total_tokens = d.tokens;
  s.num_seqs = ctx.num_seqs;
  s.max_seqlen = ctx.max_seqlen;
  s.heads = d.heads;
  s.kv_heads = d.kv_heads;
  s.head_dim = d.attn_dim;
  s.scale = qk::attention_scale(0.0f, d.head_dim);
  s.window = d.window;
  return s;
}

}  // namespace

BlockDims block_dims(const io::ModelConfig& c, int64_t tokens) {
  BlockDims d;
  d.tokens = tokens;
  d.hidden = c.hidden_size;
  d.inter = c.intermediate_size;
  d.heads = static_cast<int>(c.num_attention_heads);
  d.kv_heads = static_cast<int>(c.num_key_value_heads);
  d.head_dim = static_cast<int>(c.head_dim);
  d.eps = static_cast<float>(c.rms_norm_eps);
  // Any window of 2^30 or more masks nothing a micro-batch can hold.
  d.window = static_cast<int>(std::min<int64_t>(attention_window(c), int64_t{1} << 30));
  d.attn_dim = 0;
  for (int s : {64, 80, 96, 128}) {
    if (d.head_dim <= s) {
      d.attn_dim = s;
      break;
    }
  }
  if (d.attn_dim == 0)
    throw_bad_input("config.json", "head_dim " + std::to_string(d.head_dim) + " is not supported (at most 128)");
  return d;
}

BlockForwardScratch allocate_block_forward_scratch(const BlockDims& d, rt::DeviceArena& arena) {
  const int64_t t = d.tokens, qkv_cols = d.q_cols() + 2 * d.kv_cols();
  BlockForwardScratch s;
  s.qkv = alloc<bf16>(arena, t * qkv_cols, "qkv");
  if (d.padded()) {
    s.q_rot = alloc<bf16>(arena, t * d.q_cols(), "q");
    s.k_rot = alloc<bf16>(arena, t * d.kv_cols(), "k");
  }
  s.attn_out = alloc<bf16>(arena, t * d.hidden, "o_proj out");
  s.m = alloc<bf16>(arena, t * d.hidden, "mlp out");
  return s;
}

BlockActs allocate_block_acts(const BlockDims& d, const std::array<int, 4>& r_total,
                              const BlockForwardScratch& scratch, rt::DeviceArena& arena) {
  const int64_t t = d.tokens;
  auto xa = [&](int which, const char* what) -> bf16* {
    const int r = r_total[static_cast<size_t>(which)];
    return r > 0 ? alloc<bf16>(arena, t * r, what) : nullptr;
  };
  BlockActs a;
  a.qkv = scratch.qkv;
  a.attn_out = scratch.attn_out;
  a.m = scratch.m;
  a.h1 = alloc<bf16>(arena, t * d.hidden, "h1");
  a.rstd1 = alloc<float>(arena, t, "rstd1");
  a.xa_qkv = xa(kQkv, "xa qkv");
  if (d.padded()) {
    a.q_rot = scratch.q_rot;
    a.k_rot = scratch.k_rot;
    a.q = alloc<bf16>(arena, t * d.heads * d.attn_dim, "q padded");
    a.k = alloc<bf16>(arena, t * d.kv_heads * d.attn_dim, "k padded");
    a.v = alloc<bf16>(arena, t * d.kv_heads * d.attn_dim, "v padded");
    a.o_attn = alloc<bf16>(arena, t * d.heads * d.attn_dim, "attention out padded");
    a.o = alloc<bf16>(arena, t * d.q_cols(), "attention out");
  } else {
    // RoPE rotates q and k in place: the attention's (and its backward's) operands.
    a.q = a.q_rot = alloc<bf16>(arena, t * d.q_cols(), "q");
    a.k = a.k_rot = alloc<bf16>(arena, t * d.kv_cols(), "k");
    a.v = alloc<bf16>(arena, t * d.kv_cols(), "v");
    a.o_attn = a.o = alloc<bf16>(arena, t * d.q_cols(), "attention out");
  }
  a.lse = alloc<float>(arena, t * d.heads, "lse");
  a.xa_o = xa(kO, "xa o");
  a.x2 = alloc<bf16>(arena, t * d.hidden, "x2");
  a.h2 = alloc<bf16>(arena, t * d.hidden, "h2");
  a.rstd2 = alloc<float>(arena, t, "rstd2");
  a.gu = alloc<bf16>(arena, t * 2 * d.inter, "gate/up");
  a.xa_gu = xa(kGateUp, "xa gate/up");
  a.act = alloc<bf16>(arena, t * d.inter, "swiglu");
  a.xa_down = xa(kDown, "xa down");
  return a;
}

BlockGradScratch allocate_block_grads(const BlockDims& d, rt::DeviceArena& arena) {
  const int64_t t = d.tokens, qkv_cols = d.q_cols() + 2 * d.kv_cols();
  BlockGradScratch s;
  s.dact = alloc<bf16>(arena, t * d.inter, "d swiglu");
  s.dgu = alloc<bf16>(arena, t * 2 * d.inter, "d gate/up");
  s.dh2 = alloc<bf16>(arena, t * d.hidden, "d h2");
  s.dx2 = alloc<bf16>(arena, t * d.hidden, "d x2");
  s.d_o = alloc<bf16>(arena, t * d.q_cols(), "d attention out");
  s.dq_c = alloc<bf16>(arena, t * d.q_cols(), "dq");
  s.dk_c = alloc<bf16>(arena, t * d.kv_cols(), "dk");
  s.dv_c = alloc<bf16>(arena, t * d.kv_cols(), "dv");
  if (d.padded()) {
    s.d_o_attn = alloc<bf16>(arena, t * d.heads * d.attn_dim, "d attention out padded");
    s.dq = alloc<bf16>(arena, t * d.heads * d.attn_dim, "dq padded");
    s.dk = alloc<bf16>(arena, t * d.kv_heads * d.attn_dim, "dk padded");
    s.dv = alloc<bf16>(arena, t * d.kv_heads * d.attn_dim, "dv padded");
  } else {
    s.d_o_attn = s.d_o;
    s.dq = s.dq_c;
    s.dk = s.dk_c;
    s.dv = s.dv_c;
  }
  s.delta = alloc<float>(arena, t * d.heads, "attention delta");
  s.dqkv = alloc<bf16>(arena, t * qkv_cols, "d qkv");
  s.dh1 = alloc<bf16>(arena, t * d.hidden, "d h1");
  return s;
}

void block_forward(const BlockContext& ctx, const BlockDims& d, const DeviceLayer& w, int64_t layer, const bf16* x,
                   bool compute_h1, BlockActs& a) {
  QK_NVTX_RANGE("block_forward");
  const int64_t t = d.tokens, qkv_cols = d.q_cols() + 2 * d.kv_cols();
  if (compute_h1) {
    QK_NVTX_RANGE("input_norm");
    qk::rmsnorm_forward(x, w.input_norm, a.h1, a.rstd1, t, d.hidden, d.eps, ctx.stream);
  }
  {
    QK_NVTX_RANGE("qkv_proj");
    linear_forward(ctx, w, layer, kQkv, a.h1, t, a.qkv, a.xa_qkv);
  }
  {
    QK_NVTX_RANGE("split_rope");
    copy_rows(ctx.blas, ctx.one, a.qkv, qkv_cols, a.q_rot, d.q_cols(), d.q_cols(), t, ctx.stream);
    copy_rows(ctx.blas, ctx.one, a.qkv + d.q_cols(), qkv_cols, a.k_rot, d.kv_cols(), d.kv_cols(), t, ctx.stream);
    bf16* v = d.padded() ? a.o : a.v;  // o is free until attention: v's unpadded
                                       // staging when padding
    copy_rows(ctx.blas, ctx.one, a.qkv + d.q_cols() + d.kv_cols(), qkv_cols, v, d.kv_cols(), d.kv_cols(), t,
              ctx.stream);
    qk::rope_forward(a.q_rot, a.k_rot, ctx.positions, t, d.heads, d.kv_heads, ctx.freqs, ctx.stream);
    if (d.padded()) {
      pad_heads(ctx, d, a.q_rot, a.q, d.heads);
      pad_heads(ctx, d, a.k_rot, a.k, d.kv_heads);
      pad_heads(ctx, d, v, a.v, d.kv_heads);
    }
  }
  {
    QK_NVTX_RANGE("attention");
    qk::attention_forward(a.q, a.k, a.v, a.o_attn, a.lse, ctx.cu_seqlens, attention_shape(ctx, d), ctx.stream);
    if (d.padded()) unpad_heads(ctx, d, a.o_attn, a.o, d.heads);
  }
  {
    QK_NVTX_RANGE("o_proj");
    linear_forward(ctx, w, layer, kO, a.o, t, a.attn_out, a.xa_o);
  }
  {
    QK_NVTX_RANGE("post_attention_norm");
    qk::residual_rmsnorm_forward(x, a.attn_out, w.post_norm, a.x2, a.h2, a.rstd2, t, d.hidden, d.eps, ctx.stream);
  }
  {
    QK_NVTX_RANGE("gate_up_proj");
    linear_forward(ctx, w, layer, kGateUp, a.h2, t, a.gu, a.xa_gu);
  }
  {
    QK_NVTX_RANGE("swiglu");
    qk::swiglu_forward(a.gu, a.gu + d.inter, a.act, t, d.inter, 2 * d.inter, d.inter, ctx.stream);
  }
  {
    QK_NVTX_RANGE("down_proj");
    linear_forward(ctx, w, layer, kDown, a.act, t, a.m, a.xa_down);
  }
}

void block_backward(const BlockContext& ctx, const BlockDims& d, const DeviceLayer& w, int64_t layer, const bf16* x,
                    const BlockActs& a, const BlockGradScratch& s, const bf16* dout, bf16* dx) {
  QK_NVTX_RANGE("block_backward");
  const int64_t t = d.tokens, qkv_cols = d.q_cols() + 2 * d.kv_cols();
  {
    QK_NVTX_RANGE("down_proj_backward");
    linear_backward(ctx, w, layer, kDown, a.act, a.xa_down, dout, t, s.dact);
  }
  {
    QK_NVTX_RANGE("swiglu_backward");
    qk::swiglu_backward(s.dact, a.gu, a.gu + d.inter, s.dgu, s.dgu + d.inter, t, d.inter, 2 * d.inter, d.inter,
                        2 * d.inter, ctx.stream);
  }
  {
    QK_NVTX_RANGE("gate_up_proj_backward");
    linear_backward(ctx, w, layer, kGateUp, a.h2, a.xa_gu, s.dgu, t, s.dh2);
  }
  {
    QK_NVTX_RANGE("post_attention_norm_backward");
    // x2 feeds both the norm and the residual: dout arrives through the latter.
    qk::rmsnorm_backward(s.dh2, a.x2, w.post_norm, a.rstd2, dout, s.dx2, norm_dw(ctx, layer, true),
                         ctx.norm_workspace, t, d.hidden, ctx.stream);
  }
  {
    QK_NVTX_RANGE("o_proj_backward");
    linear_backward(ctx, w, layer, kO, a.o, a.xa_o, s.dx2, t, s.d_o);
  }
  {
    QK_NVTX_RANGE("attention_backward");
    if (d.padded()) pad_heads(ctx, d, s.d_o, s.d_o_attn, d.heads);
    qk::attention_backward(a.q, a.k, a.v, a.o_attn, s.d_o_attn, a.lse, s.dq, s.dk, s.dv, s.delta, ctx.cu_seqlens,
                           attention_shape(ctx, d), ctx.stream);
    if (d.padded()) {
      unpad_heads(ctx, d, s.dq, s.dq_c, d.heads);
      unpad_heads(ctx, d, s.dk, s.dk_c, d.kv_heads);
      unpad_heads(ctx, d, s.dv, s.dv_c, d.kv_heads);
    }
  }
  {
    QK_NVTX_RANGE("rope_merge_backward");
    qk::rope_backward(s.dq_c, s.dk_c, ctx.positions, t, d.heads, d.kv_heads, ctx.freqs, ctx.stream);
    copy_rows(ctx.blas, ctx.one, s.dq_c, d.q_cols(), s.dqkv, qkv_cols, d.q_cols(), t, ctx.stream);
    copy_rows(ctx.blas, ctx.one, s.dk_c, d.kv_cols(), s.dqkv + d.q_cols(), qkv_cols, d.kv_cols(), t, ctx.stream);
    copy_rows(ctx.blas, ctx.one, s.dv_c, d.kv_cols(), s.dqkv + d.q_cols() + d.kv_cols(), qkv_cols, d.kv_cols(), t,
              ctx.stream);
  }
  {
    QK_NVTX_RANGE("qkv_proj_backward");
    linear_backward(ctx, w, layer, kQkv, a.h1, a.xa_qkv, s.dqkv, t, s.dh1);
  }
  {
    QK_NVTX_RANGE("input_norm_backward");
    qk::rmsnorm_backward(s.dh1, x, w.input_norm, a.rstd1, s.dx2, dx, norm_dw(ctx, layer, false), ctx.norm_workspace,
                         t, d.hidden, ctx.stream);
  }
}

}  // namespace qtrain::model::cuda
#endif
