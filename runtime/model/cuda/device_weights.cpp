// Uploading the base model (see device_weights.h).
#include "runtime/model/cuda/device_weights.h"

#if QTRAIN_HAS_CUDA
#include <initializer_list>

#include "csrc/core/error.h"
#include "qk/cast.h"
#include "qk/nf4_double_quant.h"
#include "qk/nf4_quantize.h"
#include "qk/nvtx.h"
#include "runtime/model/cuda/cuda_util.h"

namespace qtrain::model::cuda {

namespace {

// fp32 host values -> bf16 device tensor, through an fp32 staging buffer freed
// again at once.
__nv_bfloat16* upload_bf16(const std::vector<const std::vector<float>*>& parts, rt::DeviceArena& arena,
                           cudaStream_t stream, const char* what) {
  size_t n = 0;
  for (const auto* p : parts) n += p->size();
  auto* out = static_cast<__nv_bfloat16*>(arena.allocate(n * 2, what));
  const size_t mark = arena.mark();
  auto* staging = static_cast<float*>(arena.allocate(n * 4, "weight upload staging"));
  size_t at = 0;
  for (const auto* p : parts) {
    copy_to_device(staging + at, p->data(), p->size() * 4, stream);
    at += p->size();
  }
  qk::cast_f32_to_bf16(staging, out, n, stream);
  check_cuda(cudaStreamSynchronize(stream), "weight upload");
  arena.release(mark);
  return out;
}

// NF4 with double-quantized absmax, quantized on the device from the fp32
// weight (bitsandbytes' bytes).
qk::Nf4GemmWeight upload_nf4(const std::vector<const std::vector<float>*>& parts, int out, int in,
                             rt::DeviceArena& arena, cudaStream_t stream) {
  const size_t n = static_cast<size_t>(out) * static_cast<size_t>(in);
  const int bs = qk::nf4::kDefaultBlocksize;
  const size_t nblocks = qk::nf4::num_blocks(n, bs);
  qk::Nf4GemmWeight w;
  w.out = out;
  w.in = in;
  w.blocksize = bs;
  auto* packed = static_cast<uint8_t*>(arena.allocate(qk::nf4::packed_bytes(n), "nf4 weight"));
  auto* q = static_cast<uint8_t*>(arena.allocate(nblocks, "nf4 absmax codes"));
  auto* nested = static_cast<float*>(
      arena.allocate(qk::nf4::num_blocks(nblocks, qk::nf4::kNestedBlocksize) * 4, "nf4 nested absmax"));
  const size_t mark = arena.mark();
  auto* staging = static_cast<float*>(arena.allocate(n * 4, "weight upload staging"));
  auto* absmax = static_cast<float*>(arena.allocate(nblocks * 4, "nf4 absmax staging"));
  auto* offset = static_cast<float*>(arena.allocate(4, "nf4 offset"));
  size_t at = 0;
  for (const auto* p : parts) {
    copy_to_device(staging + at, p->data(), p->size() * 4, stream);
    at += p->size();
  }
  qk::nf4_quantize_f32(staging, n, bs, packed, absmax, stream);
  qk::nf4_double_quantize(absmax, nblocks, q, nested, offset, stream);
  float host_offset = 0.0f;
  copy_to_host(&host_offset, offset, 4, stream);
  arena.release(mark);
  w.packed = packed;
  w.absmax = nullptr;
  w.nested = {q, nested, host_offset};
  return w;
}

DeviceLinear upload_linear(const LayerWeights& lw, std::initializer_list<Proj> projs, bool nf4, rt::DeviceArena& arena,
                           cudaStream_t stream) {
  DeviceLinear d;
  std::vector<const std::vector<float>*> weights, biases;
  for (Proj p : projs) {
    const LinearWeight& w = lw[p];
    if (d.in != 0 && w.in != d.in) throw_internal("upload_linear: fused weights differ in width");
    d.in = static_cast<int>(w.in);
    d.out += static_cast<int>(w.out);
    weights.push_back(&w.weight);
    if (!w.bias.empty()) biases.push_back(&w.bias);
  }
  if (!biases.empty() && biases.size() != weights.size())
    throw_internal("upload_linear: some fused weights lack a bias");
  if (nf4)
    d.nf4 = upload_nf4(weights, d.out, d.in, arena, stream);
  else
    d.w = upload_bf16(weights, arena, stream, "bf16 weight");
  if (!biases.empty()) d.bias = upload_bf16(biases, arena, stream, "bias");
  return d;
}

}  // namespace

DeviceWeights upload_weights(const BaseWeights& base, bool nf4, rt::DeviceArena& arena, cudaStream_t stream) {
  QK_NVTX_RANGE("upload_weights");
  const size_t start = arena.used();
  DeviceWeights d;
  d.nf4 = nf4;
  d.embed = upload_bf16({&base.embed}, arena, stream, "embeddings");
  d.head = base.config.tie_word_embeddings ? d.embed : upload_bf16({&base.lm_head}, arena, stream, "lm_head");
  d.final_norm = upload_bf16({&base.final_norm}, arena, stream, "final norm");
  for (const LayerWeights& lw : base.layers) {
    DeviceLayer l;
    l.input_norm = upload_bf16({&lw.input_norm}, arena, stream, "input norm");
    l.post_norm = upload_bf16({&lw.post_norm}, arena, stream, "post-attention norm");
    l.qkv = upload_linear(lw, {Proj::Q, Proj::K, Proj::V}, nf4, arena, stream);
    l.o = upload_linear(lw, {Proj::O}, nf4, arena, stream);
    l.gate_up = upload_linear(lw, {Proj::Gate, Proj::Up}, nf4, arena, stream);
    l.down = upload_linear(lw, {Proj::Down}, nf4, arena, stream);
    d.layers.push_back(l);
  }
  d.bytes = arena.used() - start;
  return d;
}

}  // namespace qtrain::model::cuda
#endif
