// One Llama decoder layer on the device, forward and hand-written backward,
// with the kernels of qk/ (DESIGN.md "The model"):
//   h1 = rmsnorm(x) -> [q|k|v] = grouped LoRA linear -> split -> RoPE ->
//   attention (varlen) -> o_proj x2 = x + attn, h2 = rmsnorm(x2) (fused) ->
//   [gate|up] grouped LoRA linear -> SwiGLU -> down = m
// The layer output x2 + m is not formed here: the next layer's input norm (or
// the final norm) adds it in its fused residual form, which is why a layer
// returns x2 and m. Head sizes the attention kernel has no tile for (the tiny
// test models) run through zero-padded copies of q, k, v at the next supported
// size, with the softmax scale of the true head size.
// Full fine-tuning (BlockContext::full) runs the four linears as plain ones on
// the bf16 weights (full_linear.h) and adds every weight's gradient, the norms'
// included; the linears' inputs it needs (h1, o, h2, act) are BlockActs' own.
#pragma once
#if QTRAIN_HAS_CUDA
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <array>
#include <cstdint>

#include "csrc/io/hf_config.h"
#include "qk/attention.h"
#include "qk/lora_linear.h"
#include "qk/rope.h"
#include "runtime/memory/arena.h"
#include "runtime/model/cuda/device_lora.h"
#include "runtime/model/cuda/device_weights.h"
#include "runtime/model/cuda/full_weights.h"

namespace qtrain::model::cuda {

using bf16 = __nv_bfloat16;

// Sizes of a layer for one micro-batch.
struct BlockDims {
  int64_t tokens = 0, hidden = 0, inter = 0;
  int heads = 0, kv_heads = 0, head_dim = 0;
  int attn_dim = 0;  // head_dim, or the padded size the attention kernel runs at
  float eps = 0;
  int window = 0;  // sliding window of the attention (config.sliding_window), 0: none
  int64_t q_cols() const { return int64_t{heads} * head_dim; }
  int64_t kv_cols() const { return int64_t{kv_heads} * head_dim; }
  bool padded() const { return attn_dim != head_dim; }
};

BlockDims block_dims(const io::ModelConfig& c, int64_t tokens);

// What a step shares between layers: handles, the batch on the device,
// workspaces.
struct BlockContext {
  cudaStream_t stream = nullptr;
  cublasHandle_t blas = nullptr;
  qk::LoraLinearContext lora{};
  const bf16* one = nullptr;  // a device 1.0 for copy_rows
  const int32_t* positions = nullptr;
  const int32_t* cu_seqlens = nullptr;
  int num_seqs = 0, max_seqlen = 0;
  qk::RopeFreqs freqs{};
  const DeviceLora* lora_weights = nullptr;
  bool adapter_enabled = true;
  float dropout = 0.0f;
  uint64_t dropout_seed = 0;
  // Full fine-tuning (null in LoRA mode): plain linears on the bf16 weights, every weight's gradient
  // accumulated into `full`; `ones` is a bf16 [tokens] of 1.0 (the q/k/v bias terms), and
  // norm_workspace holds qk::rmsnorm_backward_workspace(tokens, hidden) floats (the norms' dw).
  const FullWeights* full = nullptr;
  const bf16* ones = nullptr;
  float* norm_workspace = nullptr;
};

// Forward scratch the backward never reads (the fused q|k|v output, q and k before padding when the
// head size is padded, the o_proj output, the MLP output): one set per step, shared by every layer's
// forward (and by the recomputation with checkpointing). The MLP output m is read once more right
// after the layer's forward, by the next layer's fused residual norm, before the next layer writes it.
struct BlockForwardScratch {
  bf16 *qkv = nullptr, *attn_out = nullptr, *m = nullptr;
  bf16 *q_rot = nullptr, *k_rot = nullptr;  // null unless padded (else q, k are BlockActs' own)
};

BlockForwardScratch allocate_block_forward_scratch(const BlockDims& d, rt::DeviceArena& arena);

// Everything the backward of one layer reads (the layer input x is held by the
// caller), and views of the shared forward scratch.
struct BlockActs {
  bf16 *h1 = nullptr, *xa_qkv = nullptr;
  float* rstd1 = nullptr;
  bf16 *q = nullptr, *k = nullptr, *v = nullptr,
       *o_attn = nullptr;  // the attention kernel's operands
  float* lse = nullptr;
  bf16 *o = nullptr,
       *xa_o = nullptr;  // o_proj's input (== o_attn unless padded)
  bf16 *x2 = nullptr, *h2 = nullptr;
  float* rstd2 = nullptr;
  bf16 *gu = nullptr, *xa_gu = nullptr, *act = nullptr, *xa_down = nullptr;
  // Views of BlockForwardScratch (not read by the backward); m is the MLP output.
  bf16 *m = nullptr, *qkv = nullptr, *q_rot = nullptr, *k_rot = nullptr, *attn_out = nullptr;
};

// r_total: the LoRA X A width of each fused linear (q/k/v, o, gate/up, down), 0 where the adapter
// has no group there (or in full fine-tuning): its xa stays null.
BlockActs allocate_block_acts(const BlockDims& d, const std::array<int, 4>& r_total,
                              const BlockForwardScratch& scratch, rt::DeviceArena& arena);

// Backward scratch, reused by every layer.
struct BlockGradScratch {
  bf16 *dact = nullptr, *dgu = nullptr, *dh2 = nullptr, *dx2 = nullptr, *d_o = nullptr, *d_o_attn = nullptr;
  bf16 *dq = nullptr, *dk = nullptr, *dv = nullptr, *dq_c = nullptr, *dk_c = nullptr, *dv_c = nullptr;
  bf16 *dqkv = nullptr, *dh1 = nullptr;
  float* delta = nullptr;
};

BlockGradScratch allocate_block_grads(const BlockDims& d, rt::DeviceArena& arena);

// x: the layer input [T, hidden]. With compute_h1 false, a.h1 and a.rstd1
// already hold rmsnorm(x) (written by the previous layer's fused residual
// norm).
void block_forward(const BlockContext& ctx, const BlockDims& d, const DeviceLayer& w, int64_t layer, const bf16* x,
                   bool compute_h1, BlockActs& a);

// dout: gradient of the layer output x2 + m; dx written (may alias dout). LoRA
// gradients accumulate.
void block_backward(const BlockContext& ctx, const BlockDims& d, const DeviceLayer& w, int64_t layer, const bf16* x,
                    const BlockActs& a, const BlockGradScratch& s, const bf16* dout, bf16* dx);

}  // namespace qtrain::model::cuda
#endif
