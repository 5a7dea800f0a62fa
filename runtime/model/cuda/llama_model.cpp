// The CUDA Llama model (see llama_model.h).
#include "runtime/model/cuda/llama_model.h"

#if QTRAIN_HAS_CUDA
#include <algorithm>
#include <array>
#include <utility>

#include "csrc/core/error.h"
#include "qk/cast.h"
#include "qk/embedding.h"
#include "qk/lm_head_loss.h"
#include "qk/nvtx.h"
#include "qk/rmsnorm.h"
#include "runtime/model/cpu/rope.h"
#include "runtime/model/cuda/cuda_util.h"
#include "runtime/model/cuda/llama_block.h"

namespace qtrain::model {

using cuda::bf16;
using cuda::check_cuda;

namespace {

template <typename T>
T* alloc(rt::DeviceArena& arena, int64_t n, const char* what) {
  return static_cast<T*>(arena.allocate(static_cast<size_t>(n) * sizeof(T), what));
}

// Varlen boundaries from the segment ids: each run of one segment id in a row
// is a sequence, padding runs included (they attend among themselves and are
// never read by real tokens).
std::vector<int32_t> cu_seqlens_of(const Batch& b, int* max_len) {
  std::vector<int32_t> cu{0};
  *max_len = 0;
  for (int64_t r = 0; r < b.rows; ++r) {
    int64_t start = 0;
    for (int64_t t = 1; t <= b.seq; ++t) {
      const size_t i = static_cast<size_t>(r * b.seq + t);
      if (t == b.seq || b.segment_ids[i] != b.segment_ids[i - 1]) {
        cu.push_back(static_cast<int32_t>(r * b.seq + t));
        *max_len = std::max(*max_len, static_cast<int>(t - start));
        start = t;
      }
    }
  }
  return cu;
}

qk::RopeFreqs rope_table(const io::ModelConfig& c) {
  const std::vector<float> inv = cpu::rope_inv_freqs(c, c.head_dim);
  qk::RopeFreqs f;
  if (c.head_dim > qk::kRopeMaxHeadDim) throw_bad_input("config.json", "head_dim beyond 256");
  f.head_dim = static_cast<int>(c.head_dim);
  std::copy(inv.begin(), inv.end(), f.inv_freq);
  return f;
}

}  // namespace

// What one forward leaves for its backward, all above the arena's step mark.
struct CudaLlamaModel::Step {
  Batch batch;
  cuda::BlockDims dims;
  cuda::BlockContext ctx;
  int32_t* labels = nullptr;
  std::vector<bf16*> inputs;          // per layer (device), or two staging buffers with offload
  std::vector<cuda::BlockActs> acts;  // per layer, or one scratch with checkpointing
  bf16 *x_final = nullptr, *h_final = nullptr, *dh_final = nullptr;
  float* rstd_final = nullptr;
  bool checkpointing = false, offload = false;
  bool has_grad = false;
  float dscale = 0.0f;  // d(-log p) of each target token
};

CudaLlamaModel::CudaLlamaModel(BaseWeights base, const CudaModelOptions& opt) : base_(std::move(base)), opt_(opt) {
  const io::ModelConfig& c = base_.config;
  if (c.hidden_act != "silu")
    throw_bad_input("config.json", "hidden_act '" + c.hidden_act + "' is not supported (silu)");
  if (c.attention_bias && c.architecture != io::Architecture::Qwen2)
    throw_bad_input("config.json", "attention_bias on Llama/Mistral (an o_proj bias) is not supported");
  if (c.mlp_bias) throw_bad_input("config.json", "mlp_bias is not supported");
  (void)cuda::block_dims(c, 0);  // checks head_dim
  arena_ = std::make_unique<rt::DeviceArena>(opt_.arena_bytes, opt_.device);
  // A bitsandbytes base arrives dequantized: quantize it again (NF4 of NF4
  // values gives the same codes).
  for (const LayerWeights& l : base_.layers) opt_.nf4 = opt_.nf4 || l[Proj::Q].from_nf4;
  weights_ = cuda::upload_weights(base_, opt_.nf4, *arena_, stream_.get());
  one_ = arena_->allocate(2, "bf16 one");
  const float one = 1.0f;
  float* staging = nullptr;
  const size_t mark = arena_->mark();
  staging = static_cast<float*>(arena_->allocate(4, "one staging"));
  cuda::copy_to_device(staging, &one, 4, stream_.get());
  qk::cast_f32_to_bf16(staging, static_cast<bf16*>(one_), 1, stream_.get());
  check_cuda(cudaStreamSynchronize(stream_.get()), "model init");
  arena_->release(mark);
  weights_mark_ = step_mark_ = arena_->mark();
  for (cudaEvent_t& e : events_) check_cuda(cudaEventCreateWithFlags(&e, cudaEventDisableTiming), "event");
}

CudaLlamaModel::~CudaLlamaModel() {
  for (cudaEvent_t e : events_)
    if (e) (void)cudaEventDestroy(e);
  if (pinned_) (void)cudaFreeHost(pinned_);
}

std::unique_ptr<CudaLlamaModel> CudaLlamaModel::load(const std::string& dir, const LoadOptions& load,
                                                     CudaModelOptions opt) {
  LoadOptions host = load;
  // The device quantizes from the floating weights itself (same bytes as the
  // host would write).
  opt.nf4 = opt.nf4 || load.quantize_nf4;
  host.quantize_nf4 = false;
  return std::make_unique<CudaLlamaModel>(load_base_weights(dir, host), opt);
}

void CudaLlamaModel::release_step() {
  step_.reset();
  arena_->release(step_mark_);
}

void CudaLlamaModel::init_lora(const LoraConfig& lora, uint64_t seed) {
  set_adapter(cuda::init_peft_adapter(base_, lora, seed), "lora");
}

void CudaLlamaModel::load_adapter(const std::string& dir) {
  set_adapter(load_peft_adapter(dir), dir + "/adapter_model.safetensors");
}

void CudaLlamaModel::set_adapter(const PeftAdapter& adapter, const std::string& where) {
  if (full_) throw_bad_input(where, "a LoRA adapter on a model in full fine-tuning mode (the two are exclusive)");
  step_.reset();
  lora_.reset();
  arena_->release(weights_mark_);
  lora_ = std::make_unique<cuda::DeviceLora>(cuda::upload_lora(base_, adapter, where, *arena_, stream_.get()));
  step_mark_ = arena_->mark();
}

void CudaLlamaModel::set_full_finetune(bool on) {
  if (on == (full_ != nullptr)) return;
  if (on && lora_)
    throw_bad_input("adapter: full", "full fine-tuning on a model with a LoRA adapter (the two are exclusive)");
  if (on && weights_.nf4)
    throw_bad_input("adapter: full", "full fine-tuning needs a bf16 base; it cannot train an NF4 (4-bit) model");
  step_.reset();
  full_.reset();
  arena_->release(weights_mark_);
  if (on)
    full_ = std::make_unique<cuda::FullWeights>(cuda::create_full_weights(base_, weights_, *arena_, stream_.get()));
  step_mark_ = arena_->mark();
}

PeftAdapter CudaLlamaModel::adapter() const {
  if (!lora_) throw_internal("CudaLlamaModel::adapter: no adapter");
  return cuda::download_lora(*lora_, stream_.get());
}

void CudaLlamaModel::set_checkpointing(bool on, bool offload) {
  step_.reset();
  opt_.checkpointing = on;
  opt_.offload = on && offload;
}

ForwardResult CudaLlamaModel::forward(const Batch& batch) {
  QK_NVTX_RANGE("model_forward");
  if (!lora_ && !full_)
    throw_internal("CudaLlamaModel::forward needs an adapter (init_lora or load_adapter) or full fine-tuning");
  const io::ModelConfig& c = config();
  validate_batch(batch, c.vocab_size);
  release_step();
  const cudaStream_t st = stream_.get();
  rt::DeviceArena& ar = *arena_;
  auto s = std::make_unique<Step>();
  s->batch = batch;
  s->checkpointing = opt_.checkpointing;
  s->offload = opt_.checkpointing && opt_.offload;
  const int64_t t = batch.tokens(), h = c.hidden_size, layers = c.num_hidden_layers;
  s->dims = cuda::block_dims(c, t);
  const cuda::BlockDims& d = s->dims;

  // The batch on the device.
  int max_len = 0;
  const std::vector<int32_t> cu = cu_seqlens_of(batch, &max_len);
  auto* ids = alloc<int32_t>(ar, t, "input ids");
  auto* pos = alloc<int32_t>(ar, t, "positions");
  s->labels = alloc<int32_t>(ar, t, "labels");
  auto* cu_dev = alloc<int32_t>(ar, static_cast<int64_t>(cu.size()), "cu_seqlens");
  cuda::copy_to_device(ids, batch.input_ids.data(), static_cast<size_t>(t) * 4, st);
  cuda::copy_to_device(pos, batch.position_ids.data(), static_cast<size_t>(t) * 4, st);
  cuda::copy_to_device(s->labels, batch.labels.data(), static_cast<size_t>(t) * 4, st);
  cuda::copy_to_device(cu_dev, cu.data(), cu.size() * 4, st);

  // Workspaces: the LoRA linears' (the largest of the four), the NF4 fallback's
  // dequantized weight.
  const float dropout = lora_ && training_ && adapter_enabled_ ? static_cast<float>(lora_->config.dropout) : 0.0f;
  // X A widths of the four fused linears: 0 where the adapter targets none of a linear's projections
  // (that linear runs its base alone, with no X A and no workspace), and for all four in full mode.
  std::array<int, 4> r_total{};
  if (lora_)
    for (int which = 0; which < 4; ++which) r_total[static_cast<size_t>(which)] = lora_->r_total(which);
  size_t lora_ws = 0, nf4_ws = 0;
  const cuda::DeviceLayer& w0 = weights_.layers[0];
  const cuda::DeviceLinear* linears[4] = {&w0.qkv, &w0.o, &w0.gate_up, &w0.down};
  for (int which = 0; which < 4; ++which) {
    const cuda::DeviceLinear* l = linears[which];
    const int rt = r_total[static_cast<size_t>(which)];
    if (rt > 0)
      lora_ws = std::max(lora_ws, qk::lora_linear_workspace_bytes(static_cast<int>(t), l->in, rt, dropout));
    if (weights_.nf4 && !qk::nf4_gemm_fused_supported(l->out, l->in, l->nf4.blocksize))
      nf4_ws = std::max(nf4_ws, qk::nf4_gemm_workspace_bytes(l->out, l->in));
  }
  cuda::BlockContext& ctx = s->ctx;
  ctx.stream = st;
  ctx.blas = blas_.get();
  ctx.lora.cublas = blas_.get();
  ctx.lora.nf4.cublas = blas_.get();
  if (lora_ws) {
    ctx.lora.workspace = ar.allocate(lora_ws, "lora workspace");
    ctx.lora.workspace_bytes = lora_ws;
  }
  if (nf4_ws) {
    ctx.lora.nf4.workspace = ar.allocate(nf4_ws, "nf4 dequant workspace");
    ctx.lora.nf4.workspace_bytes = nf4_ws;
  }
  ctx.one = static_cast<const bf16*>(one_);
  ctx.positions = pos;
  ctx.cu_seqlens = cu_dev;
  ctx.num_seqs = static_cast<int>(cu.size()) - 1;
  ctx.max_seqlen = max_len;
  ctx.freqs = rope_table(c);
  ctx.lora_weights = lora_.get();
  ctx.adapter_enabled = adapter_enabled_;
  ctx.dropout = dropout;
  ctx.dropout_seed = dropout_seed_;
  std::vector<uint16_t> host_ones;  // alive until the forward's last synchronization
  if (full_) {
    ctx.full = full_.get();
    // The q/k/v bias terms' column of ones (bf16 1.0 is 0x3F80).
    auto* ones = alloc<bf16>(ar, t, "ones");
    host_ones.assign(static_cast<size_t>(t), uint16_t{0x3F80});
    cuda::copy_to_device(ones, host_ones.data(), static_cast<size_t>(t) * 2, st);
    ctx.ones = ones;
  }

  // Activations: every layer's set of what its backward reads, or (checkpointing) the inputs and one
  // set; beside them one forward scratch (the buffers no backward reads) that every layer shares.
  const int64_t kept = s->offload ? 2 : layers;
  for (int64_t l = 0; l < kept; ++l) s->inputs.push_back(alloc<bf16>(ar, t * h, "layer input"));
  const cuda::BlockForwardScratch fwd_scratch = cuda::allocate_block_forward_scratch(d, ar);
  const int64_t sets = s->checkpointing ? 1 : layers;
  for (int64_t l = 0; l < sets; ++l) s->acts.push_back(cuda::allocate_block_acts(d, r_total, fwd_scratch, ar));
  s->x_final = alloc<bf16>(ar, t * h, "final residual");
  s->h_final = alloc<bf16>(ar, t * h, "final norm");
  s->rstd_final = alloc<float>(ar, t, "final rstd");
  // dropout follows training_; dh is ready for any backward. Full mode always trains.
  const bool grad = full_ || adapter_enabled_;
  if (grad) s->dh_final = alloc<bf16>(ar, t * h, "d final norm");
  if (s->offload) {
    const size_t need = static_cast<size_t>(layers * t * h) * 2;
    if (pinned_bytes_ < need) {
      if (pinned_) check_cuda(cudaFreeHost(pinned_), "free pinned");
      pinned_ = nullptr;
      pinned_bytes_ = 0;
      check_cuda(cudaMallocHost(&pinned_, need), "pinned host memory for offloaded layer inputs");
      pinned_bytes_ = need;
    }
  }
  const cudaStream_t side = copy_stream_.get();
  cudaEvent_t ready = events_[0], copied[2] = {events_[1], events_[2]};
  // Offload: layer l's input goes to host on the side stream once written; its
  // staging buffer is reused two layers later, after the copy.
  auto offload_input = [&](int64_t l) {
    if (!s->offload) return;
    check_cuda(cudaEventRecord(ready, st), "offload");
    check_cuda(cudaStreamWaitEvent(side, ready, 0), "offload");
    check_cuda(cudaMemcpyAsync(static_cast<bf16*>(pinned_) + l * t * h, s->inputs[static_cast<size_t>(l % 2)],
                               static_cast<size_t>(t * h) * 2, cudaMemcpyDeviceToHost, side),
               "offload");
    check_cuda(cudaEventRecord(copied[l % 2], side), "offload");
  };
  auto input = [&](int64_t l) { return s->inputs[static_cast<size_t>(s->offload ? l % 2 : l)]; };
  auto acts = [&](int64_t l) -> cuda::BlockActs& { return s->acts[static_cast<size_t>(s->checkpointing ? 0 : l)]; };

  {
    QK_NVTX_RANGE("embedding");
    qk::embedding_forward(weights_.embed, ids, input(0), t, c.vocab_size, h, st);
  }
  offload_input(0);
  for (int64_t l = 0; l < layers; ++l) {
    QK_NVTX_RANGE("layer_forward");
    cuda::BlockActs& a = acts(l);
    block_forward(ctx, d, weights_.layers[static_cast<size_t>(l)], l, input(l), l == 0, a);
    const bool last = l + 1 == layers;
    if (!last && s->offload && l >= 1) check_cuda(cudaStreamWaitEvent(st, copied[(l + 1) % 2], 0), "offload");
    bf16* next = last ? s->x_final : input(l + 1);
    bf16* next_h = last ? s->h_final : acts(l + 1).h1;
    float* next_rstd = last ? s->rstd_final : acts(l + 1).rstd1;
    const bf16* norm_w = last ? weights_.final_norm : weights_.layers[static_cast<size_t>(l + 1)].input_norm;
    {
      QK_NVTX_RANGE(last ? "final_norm" : "next_input_norm");
      qk::residual_rmsnorm_forward(a.x2, a.m, norm_w, next, next_h, next_rstd, t, h, d.eps, st);
    }
    if (!last) offload_input(l + 1);
  }

  ForwardResult res;
  int64_t count = 0;
  for (int32_t lab : batch.labels) count += lab != kIgnoreLabel;
  {
    QK_NVTX_RANGE("lm_head_loss");
    const size_t mark = ar.mark();
    qk::LmHeadShape shape{t, h, c.vocab_size, opt_.lm_head_chunk_tokens};
    void* ws = ar.allocate(qk::lm_head_loss_workspace_bytes(shape), "lm_head workspace");
    auto* logprob = alloc<float>(ar, t, "logprobs");
    const int64_t denom = grad_denominator_ > 0 ? grad_denominator_ : count;
    const float dscale = denom ? 1.0f / static_cast<float>(denom) : 0.0f;
    s->dscale = dscale;
    qk::lm_head_loss(blas_.get(), shape, s->h_final, weights_.head, s->labels, dscale, nullptr, logprob,
                     grad ? s->dh_final : nullptr, nullptr, ws, st);
    res.token_logprobs.resize(static_cast<size_t>(t));
    cuda::copy_to_host(res.token_logprobs.data(), logprob, static_cast<size_t>(t) * 4, st);
    ar.release(mark);
  }
  check_cuda(cudaStreamSynchronize(side), "offload");
  double total = 0.0;
  for (size_t i = 0; i < res.token_logprobs.size(); ++i) {
    if (batch.labels[i] == kIgnoreLabel) continue;
    total += res.token_logprobs[i];
  }
  res.label_tokens = count;
  res.loss = count ? -total / static_cast<double>(count) : 0.0;
  for (const SequenceSpan& sp : batch_sequences(batch)) {
    SequenceLogprob sl{sp.row, sp.segment, 0.0, 0};
    for (int64_t i = sp.begin; i < sp.end; ++i) {
      const size_t k = static_cast<size_t>(sp.row * batch.seq + i);
      if (batch.labels[k] == kIgnoreLabel) continue;
      sl.logprob += res.token_logprobs[k];
      ++sl.tokens;
    }
    res.sequences.push_back(sl);
  }
  s->has_grad = grad;
  step_ = std::move(s);
  return res;
}

void CudaLlamaModel::backward() {
  QK_NVTX_RANGE("model_backward");
  if (!step_) throw_internal("CudaLlamaModel::backward without a forward");
  if (!step_->has_grad) throw_internal("CudaLlamaModel::backward needs the adapter enabled");
  Step& s = *step_;
  const io::ModelConfig& c = config();
  const cudaStream_t st = stream_.get(), side = copy_stream_.get();
  rt::DeviceArena& ar = *arena_;
  const int64_t t = s.dims.tokens, h = c.hidden_size, layers = c.num_hidden_layers;
  const size_t mark = ar.mark();
  if (full_) {
    QK_NVTX_RANGE("lm_head_weight_backward");
    // The LM head's dW, here rather than in forward() so that a forward alone leaves the gradients
    // as they are: the logits again (the same GEMM, so the same dlogits), then dW += dlogits^T h.
    // First, so that its workspace is free again before the layers' scratch is taken.
    const qk::LmHeadShape shape{t, h, c.vocab_size, opt_.lm_head_chunk_tokens};
    void* ws = ar.allocate(qk::lm_head_loss_workspace_bytes(shape), "lm_head workspace");
    qk::lm_head_loss(blas_.get(), shape, s.h_final, weights_.head, s.labels, s.dscale, nullptr, nullptr, nullptr,
                     full_->head_grad, ws, st);
    ar.release(mark);
  }
  const cuda::BlockGradScratch scratch = cuda::allocate_block_grads(s.dims, ar);
  bf16* dy = alloc<bf16>(ar, t * h, "d residual");
  if (full_) s.ctx.norm_workspace = alloc<float>(ar, qk::rmsnorm_backward_workspace(t, h), "rmsnorm dw workspace");
  {
    QK_NVTX_RANGE("final_norm_backward");
    qk::rmsnorm_backward(s.dh_final, s.x_final, weights_.final_norm, s.rstd_final, nullptr, dy,
                         full_ ? full_->final_norm_grad : nullptr, s.ctx.norm_workspace, t, h, st);
  }
  cudaEvent_t done = events_[0], fetched[2] = {events_[1], events_[2]};
  // Offload: layer l's input comes back into staging buffer l % 2 while layer l
  // + 1 runs.
  auto fetch = [&](int64_t l) {
    check_cuda(cudaEventRecord(done, st), "fetch");
    check_cuda(cudaStreamWaitEvent(side, done, 0), "fetch");
    check_cuda(cudaMemcpyAsync(s.inputs[static_cast<size_t>(l % 2)], static_cast<bf16*>(pinned_) + l * t * h,
                               static_cast<size_t>(t * h) * 2, cudaMemcpyHostToDevice, side),
               "fetch");
    check_cuda(cudaEventRecord(fetched[l % 2], side), "fetch");
  };
  if (s.offload) fetch(layers - 1);
  for (int64_t l = layers - 1; l >= 0; --l) {
    QK_NVTX_RANGE("layer_backward");
    const cuda::DeviceLayer& w = weights_.layers[static_cast<size_t>(l)];
    const bf16* x = s.inputs[static_cast<size_t>(s.offload ? l % 2 : l)];
    if (s.offload) {
      check_cuda(cudaStreamWaitEvent(st, fetched[l % 2], 0), "fetch");
      if (l > 0) fetch(l - 1);
    }
    cuda::BlockActs& a = s.acts[static_cast<size_t>(s.checkpointing ? 0 : l)];
    if (s.checkpointing) {
      QK_NVTX_RANGE("recompute");
      cuda::block_forward(s.ctx, s.dims, w, l, x, true, a);
    }
    cuda::block_backward(s.ctx, s.dims, w, l, x, a, scratch, dy, dy);
  }
  qk::EmbeddingGradPlan plan;  // alive until the synchronization below
  if (full_) {
    QK_NVTX_RANGE("embedding_backward");
    // dy is now the gradient of the embedding output. Tokens grouped by id on the host, so the
    // table's gradient is summed in a fixed order.
    plan = qk::embedding_grad_plan(s.batch.input_ids.data(), t, c.vocab_size);
    auto* plan_dev = alloc<int32_t>(ar, static_cast<int64_t>(plan.data.size()), "embedding grad plan");
    cuda::copy_to_device(plan_dev, plan.data.data(), plan.data.size() * 4, st);
    qk::embedding_backward(dy, plan_dev, t, plan.groups, full_->embed_grad, c.vocab_size, h, st);
  }
  check_cuda(cudaStreamSynchronize(st), "backward");
  check_cuda(cudaStreamSynchronize(side), "backward");
  ar.release(mark);
  s.has_grad = false;  // one backward per forward
  s.ctx.norm_workspace = nullptr;  // released with the backward's scratch
}

void CudaLlamaModel::zero_grad() {
  if (lora_) lora_->zero_grad(stream_.get());
  if (full_) full_->zero_grad(stream_.get());
}

std::vector<cuda::DeviceLoraTensor> CudaLlamaModel::lora_tensors() const {
  if (!lora_) return {};
  return lora_->tensors();
}

void CudaLlamaModel::refresh_lora_bf16() {
  if (lora_) lora_->refresh_bf16(stream_.get());
}

std::vector<std::pair<std::string, std::vector<float>>> CudaLlamaModel::lora_grads_host() const {
  std::vector<std::pair<std::string, std::vector<float>>> out;
  for (const cuda::DeviceLoraTensor& tn : lora_tensors()) {
    std::vector<float> g(tn.numel);
    cuda::copy_to_host(g.data(), tn.grad, tn.numel * 4, stream_.get());
    out.emplace_back(tn.name, std::move(g));
  }
  return out;
}

std::vector<cuda::DeviceLoraTensor> CudaLlamaModel::full_tensors() const {
  if (!full_) return {};
  return full_->tensors();
}

void CudaLlamaModel::refresh_full_bf16() {
  if (full_) full_->refresh_bf16(stream_.get());
}

std::vector<cuda::HostTensor> CudaLlamaModel::full_weights_host() const {
  if (!full_) throw_internal("CudaLlamaModel::full_weights_host: not in full fine-tuning mode");
  return full_->download(stream_.get());
}

void CudaLlamaModel::save_weights(const std::string& dir) const {
  cuda::save_hf_model(dir, config(), full_weights_host());
}

std::vector<cuda::DeviceLoraTensor> CudaLlamaModel::trainable_tensors() const {
  return full_ ? full_tensors() : lora_tensors();
}

void CudaLlamaModel::refresh_bf16() {
  refresh_lora_bf16();
  refresh_full_bf16();
}

std::vector<std::pair<std::string, std::vector<float>>> CudaLlamaModel::grads_host() const {
  std::vector<std::pair<std::string, std::vector<float>>> out;
  for (const cuda::DeviceLoraTensor& tn : trainable_tensors()) {
    std::vector<float> g(tn.numel);
    cuda::copy_to_host(g.data(), tn.grad, tn.numel * 4, stream_.get());
    out.emplace_back(tn.name, std::move(g));
  }
  return out;
}

}  // namespace qtrain::model
#endif
