// A Llama decoder layer on the CPU (see llama_block.h).
#include "runtime/model/cpu/llama_block.h"

#include "qk/nvtx.h"
#include "runtime/model/attention_window.h"
#include "runtime/model/cpu/attention.h"
#include "runtime/model/cpu/rmsnorm.h"
#include "runtime/model/cpu/rope.h"
#include "runtime/model/cpu/swiglu.h"

namespace qtrain::model::cpu {

namespace {

std::vector<float>& sized(std::vector<float>& v, int64_t n) {
  v.assign(static_cast<size_t>(n), 0.0f);
  return v;
}

const LoraRun& run_of(const BlockLora& l, Proj p) { return l[static_cast<size_t>(p)]; }

float* xa_of(BlockActivations& a, const BlockLora& l, Proj p, int64_t n) {
  const LoraRun& r = run_of(l, p);
  std::vector<float>& v = a.xa[static_cast<size_t>(p)];
  if (!r.lora) {
    v.clear();
    return nullptr;
  }
  return sized(v, n * r.lora->r).data();
}

AttentionShape attention_shape(const io::ModelConfig& c, const BlockInputs& in) {
  return {in.rows, in.seq, c.num_attention_heads, c.num_key_value_heads, c.head_dim, attention_window(c)};
}

}  // namespace

void llama_block_forward(const io::ModelConfig& c, const LayerWeights& w, const BlockLora& lora,
                         const BlockInputs& in, const float* x, float* out, BlockActivations& a) {
  QK_NVTX_RANGE("block_forward");
  const int64_t n = in.rows * in.seq, h = c.hidden_size, hd = c.head_dim;
  const int64_t qd = c.num_attention_heads * hd, kd = c.num_key_value_heads * hd, m = c.intermediate_size;
  a.x.assign(x, x + n * h);
  rmsnorm_forward(x, w.input_norm.data(), n, h, c.rms_norm_eps, sized(a.h1, n * h).data(), sized(a.rstd1, n).data());
  lora_linear_forward(w[Proj::Q], run_of(lora, Proj::Q), a.h1.data(), n, sized(a.q, n * qd).data(), xa_of(a, lora, Proj::Q, n));
  lora_linear_forward(w[Proj::K], run_of(lora, Proj::K), a.h1.data(), n, sized(a.k, n * kd).data(), xa_of(a, lora, Proj::K, n));
  lora_linear_forward(w[Proj::V], run_of(lora, Proj::V), a.h1.data(), n, sized(a.v, n * kd).data(), xa_of(a, lora, Proj::V, n));
  rope_forward(a.q.data(), in.position_ids, n, c.num_attention_heads, hd, in.inv_freq);
  rope_forward(a.k.data(), in.position_ids, n, c.num_key_value_heads, hd, in.inv_freq);
  const AttentionShape as = attention_shape(c, in);
  attention_forward(as, a.q.data(), a.k.data(), a.v.data(), in.segment_ids, sized(a.attn, n * qd).data(),
                    sized(a.probs, in.rows * c.num_attention_heads * in.seq * in.seq).data());
  std::vector<float> o(static_cast<size_t>(n * h));
  lora_linear_forward(w[Proj::O], run_of(lora, Proj::O), a.attn.data(), n, o.data(), xa_of(a, lora, Proj::O, n));
  sized(a.x2, n * h);
  for (int64_t i = 0; i < n * h; ++i) a.x2[static_cast<size_t>(i)] = x[i] + o[static_cast<size_t>(i)];

  rmsnorm_forward(a.x2.data(), w.post_norm.data(), n, h, c.rms_norm_eps, sized(a.h2, n * h).data(),
                  sized(a.rstd2, n).data());
  lora_linear_forward(w[Proj::Gate], run_of(lora, Proj::Gate), a.h2.data(), n, sized(a.g, n * m).data(),
                      xa_of(a, lora, Proj::Gate, n));
  lora_linear_forward(w[Proj::Up], run_of(lora, Proj::Up), a.h2.data(), n, sized(a.u, n * m).data(),
                      xa_of(a, lora, Proj::Up, n));
  swiglu_forward(a.g.data(), a.u.data(), n * m, sized(a.act, n * m).data());
  lora_linear_forward(w[Proj::Down], run_of(lora, Proj::Down), a.act.data(), n, out, xa_of(a, lora, Proj::Down, n));
  for (int64_t i = 0; i < n * h; ++i) out[i] += a.x2[static_cast<size_t>(i)];
}

void llama_block_backward(const io::ModelConfig& c, const LayerWeights& w, const BlockLora& lora,
                          const BlockGrads& grads, const BlockInputs& in, const BlockActivations& a,
                          const float* dout, float* dx, LayerGrads* full) {
  QK_NVTX_RANGE("block_backward");
  const int64_t n = in.rows * in.seq, h = c.hidden_size, hd = c.head_dim;
  const int64_t qd = c.num_attention_heads * hd, kd = c.num_key_value_heads * hd, m = c.intermediate_size;
  auto back = [&](Proj p, const std::vector<float>& x, const float* dy, float* dxp) {
    QK_NVTX_RANGE("lora_linear_backward");
    const size_t i = static_cast<size_t>(p);
    lora_linear_backward(w[p], lora[i], grads[i], x.data(), a.xa[i].data(), dy, n, dxp);
    if (full) linear_weight_grad(w[p], x.data(), dy, n, (*full)[p]);
  };
  // MLP: out = x2 + down(swiglu(gate(h2), up(h2)))
  std::vector<float> dact(static_cast<size_t>(n * m)), dg(dact.size()), du(dact.size());
  back(Proj::Down, a.act, dout, dact.data());
  swiglu_backward(a.g.data(), a.u.data(), dact.data(), n * m, dg.data(), du.data());
  std::vector<float> dh2(static_cast<size_t>(n * h)), tmp(static_cast<size_t>(n * h));
  back(Proj::Gate, a.h2, dg.data(), dh2.data());
  back(Proj::Up, a.h2, du.data(), tmp.data());
  for (size_t i = 0; i < dh2.size(); ++i) dh2[i] += tmp[i];
  std::vector<float> dx2(static_cast<size_t>(n * h));
  rmsnorm_backward(a.x2.data(), w.post_norm.data(), a.rstd2.data(), dh2.data(), n, h, dx2.data());
  if (full) rmsnorm_weight_grad(a.x2.data(), a.rstd2.data(), dh2.data(), n, h, full->post_norm.data());
  for (int64_t i = 0; i < n * h; ++i) dx2[static_cast<size_t>(i)] += dout[i];

  // Attention: x2 = x + o(attn(rope(q(h1)), rope(k(h1)), v(h1)))
  std::vector<float> dattn(static_cast<size_t>(n * qd));
  back(Proj::O, a.attn, dx2.data(), dattn.data());
  std::vector<float> dq(static_cast<size_t>(n * qd)), dk(static_cast<size_t>(n * kd)), dv(static_cast<size_t>(n * kd));
  attention_backward(attention_shape(c, in), a.q.data(), a.k.data(), a.v.data(), in.segment_ids, a.probs.data(),
                     dattn.data(), dq.data(), dk.data(), dv.data());
  rope_backward(dq.data(), in.position_ids, n, c.num_attention_heads, hd, in.inv_freq);
  rope_backward(dk.data(), in.position_ids, n, c.num_key_value_heads, hd, in.inv_freq);
  std::vector<float> dh1(static_cast<size_t>(n * h));
  back(Proj::Q, a.h1, dq.data(), dh1.data());
  back(Proj::K, a.h1, dk.data(), tmp.data());
  for (size_t i = 0; i < dh1.size(); ++i) dh1[i] += tmp[i];
  back(Proj::V, a.h1, dv.data(), tmp.data());
  for (size_t i = 0; i < dh1.size(); ++i) dh1[i] += tmp[i];
  rmsnorm_backward(a.x.data(), w.input_norm.data(), a.rstd1.data(), dh1.data(), n, h, dx);
  if (full) rmsnorm_weight_grad(a.x.data(), a.rstd1.data(), dh1.data(), n, h, full->input_norm.data());
  for (int64_t i = 0; i < n * h; ++i) dx[i] += dx2[static_cast<size_t>(i)];
}

}  // namespace qtrain::model::cpu
