// Finite-difference check of the CPU model's LoRA gradients: central differences of the fp32 loss
// on a few A and B entries of every adapted layer, for a small random Qwen2-style model (GQA, q/k/v
// bias, tied embeddings) with LoRA dropout on, on a batch with padding and a packed row. Also the
// adapter switch, the backward of a weighted log-probability objective, and batch checks.
#include <gtest/gtest.h>

#include <cmath>

#include "csrc/core/error.h"
#include "csrc/core/rng.h"
#include "runtime/model/cpu/llama_model.h"

namespace qtrain::model {
namespace {

io::ModelConfig small_config() {
  io::ModelConfig c;
  c.architecture = io::Architecture::Qwen2;
  c.model_type = "qwen2";
  c.vocab_size = 37;
  c.hidden_size = 24;
  c.intermediate_size = 40;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 6;
  c.rms_norm_eps = 1e-6;
  c.rope_theta = 10000.0;
  c.tie_word_embeddings = true;
  c.attention_bias = true;
  return c;
}

std::vector<float> random_vec(Rng& rng, int64_t n, double mean, double std) {
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = static_cast<float>(rng.normal(mean, std));
  return v;
}

BaseWeights random_base(const io::ModelConfig& c, uint64_t seed) {
  Rng rng(seed);
  BaseWeights w;
  w.config = c;
  const int64_t h = c.hidden_size, hd = c.head_dim;
  w.embed = random_vec(rng, c.vocab_size * h, 0.0, 0.3);
  w.final_norm = random_vec(rng, h, 1.0, 0.2);
  w.layers.resize(static_cast<size_t>(c.num_hidden_layers));
  const int64_t outs[kNumProj] = {c.num_attention_heads * hd, c.num_key_value_heads * hd, c.num_key_value_heads * hd,
                                  h, c.intermediate_size, c.intermediate_size, h};
  const int64_t ins[kNumProj] = {h, h, h, c.num_attention_heads * hd, h, h, c.intermediate_size};
  for (LayerWeights& l : w.layers) {
    l.input_norm = random_vec(rng, h, 1.0, 0.2);
    l.post_norm = random_vec(rng, h, 1.0, 0.2);
    for (Proj p : kAllProjs) {
      LinearWeight& lin = l[p];
      lin.out = outs[static_cast<int>(p)];
      lin.in = ins[static_cast<int>(p)];
      lin.weight = random_vec(rng, lin.out * lin.in, 0.0, 0.25);
      if (static_cast<int>(p) <= static_cast<int>(Proj::V)) lin.bias = random_vec(rng, lin.out, 0.0, 0.1);
    }
  }
  return w;
}

// Row 0: 9 tokens then padding; row 1: examples of 5 and 6 tokens.
Batch small_batch(int64_t vocab) {
  Rng rng(99);
  Batch b;
  b.seq = 11;
  std::vector<int32_t> ids(9), labels(9, kIgnoreLabel);
  for (int32_t& t : ids) t = static_cast<int32_t>(rng.below(static_cast<uint64_t>(vocab)));
  for (size_t t = 2; t + 1 < ids.size(); ++t) labels[t] = ids[t + 1];
  append_row(b, ids, labels, 0);
  int pos = 0, seg = 1;
  for (int t = 0; t < 11; ++t) {
    if (t == 5) pos = 0, seg = 2;
    b.input_ids.push_back(static_cast<int32_t>(rng.below(static_cast<uint64_t>(vocab))));
    b.position_ids.push_back(pos++);
    b.segment_ids.push_back(seg);
  }
  for (int t = 0; t < 11; ++t) {
    const bool last = t == 4 || t == 10;
    b.labels.push_back(last ? kIgnoreLabel : b.input_ids[static_cast<size_t>(b.seq + t + 1)]);
  }
  ++b.rows;
  return b;
}

CpuLlamaModel make_model(double dropout) {
  CpuLlamaModel m(random_base(small_config(), 5));
  LoraConfig lc;
  lc.r = 3;
  lc.alpha = 6;
  lc.dropout = dropout;
  m.init_lora(lc, 17);
  Rng rng(23);
  for (LoraTensorRef& t : m.lora_tensors()) {
    if (t.name.find("lora_B") != std::string::npos)
      for (float& v : t.value) v = static_cast<float>(rng.normal(0.0, 0.3));
  }
  return m;
}

TEST(ModelFiniteDifference, LoraGradientsMatchCentralDifferences) {
  CpuLlamaModel m = make_model(0.2);
  m.set_dropout_seed(1234);
  const Batch b = small_batch(m.config().vocab_size);
  m.zero_grad();
  m.forward(b);
  m.backward();
  std::vector<LoraTensorRef> ts = m.lora_tensors();
  ASSERT_EQ(ts.size(), 28u);
  Rng pick(7);
  int checked = 0;
  for (LoraTensorRef& t : ts) {
    // the entry with the largest gradient, and one at random
    size_t big = 0;
    for (size_t i = 1; i < t.grad.size(); ++i)
      if (std::abs(t.grad[i]) > std::abs(t.grad[big])) big = i;
    for (size_t i : {big, static_cast<size_t>(pick.below(t.grad.size()))}) {
      const float saved = t.value[i];
      const float eps = 2e-3f;
      t.value[i] = saved + eps;
      const double lp = m.forward(b).loss;
      t.value[i] = saved - eps;
      const double lm = m.forward(b).loss;
      t.value[i] = saved;
      const double fd = (lp - lm) / (2.0 * static_cast<double>(eps));
      const double g = t.grad[i];
      EXPECT_NEAR(g, fd, 2e-2 * std::abs(fd) + 2e-5) << t.name << "[" << i << "]";
      ++checked;
    }
  }
  EXPECT_EQ(checked, 56);
}

TEST(ModelFiniteDifference, WeightedLogprobBackward) {
  // backward(dlogp) with weights -1/N on the labels equals backward() of the mean loss.
  CpuLlamaModel m = make_model(0.0);
  const Batch b = small_batch(m.config().vocab_size);
  m.zero_grad();
  const ForwardResult r = m.forward(b);
  m.backward();
  std::vector<std::vector<float>> g1;
  for (LoraTensorRef& t : m.lora_tensors()) g1.emplace_back(t.grad.begin(), t.grad.end());
  m.zero_grad();
  m.forward(b);
  std::vector<float> w(b.labels.size(), -1.0f / static_cast<float>(r.label_tokens));
  m.backward(w);  // masked entries are ignored even with a non-zero weight
  std::vector<LoraTensorRef> ts = m.lora_tensors();
  for (size_t k = 0; k < ts.size(); ++k)
    for (size_t i = 0; i < g1[k].size(); ++i) ASSERT_NEAR(ts[k].grad[i], g1[k][i], 1e-7f + 1e-5f * std::abs(g1[k][i]));
  // Gradients accumulate until zero_grad.
  m.forward(b);
  m.backward(w);
  ts = m.lora_tensors();
  for (size_t k = 0; k < ts.size(); ++k)
    for (size_t i = 0; i < g1[k].size(); ++i) ASSERT_NEAR(ts[k].grad[i], 2 * g1[k][i], 1e-6f + 1e-5f * std::abs(g1[k][i]));
}

TEST(ModelFiniteDifference, AdapterSwitchAndSequences) {
  CpuLlamaModel m = make_model(0.0);
  const Batch b = small_batch(m.config().vocab_size);
  const ForwardResult with = m.evaluate(b);
  m.set_adapter_enabled(false);
  const ForwardResult without = m.evaluate(b);
  EXPECT_NE(with.loss, without.loss);
  // With B = 0 the adapter contributes nothing: the same as switched off.
  CpuLlamaModel z(random_base(small_config(), 5));
  LoraConfig lc;
  lc.r = 3;
  z.init_lora(lc, 17);
  EXPECT_NEAR(z.evaluate(b).loss, without.loss, 1e-6 * without.loss);
  // Switched off, the model refuses a backward (there is nothing to train).
  m.forward(b);
  EXPECT_THROW(m.backward(), Error);
  // Packing isolates examples: row 1's second example alone in a row gives the same log-probs.
  m.set_adapter_enabled(true);
  const std::vector<SequenceSpan> spans = batch_sequences(b);
  ASSERT_EQ(spans.size(), 3u);
  Batch alone;
  alone.seq = 6;
  std::vector<int32_t> ids, labels;
  for (int64_t t = 5; t < 11; ++t) {
    ids.push_back(b.input_ids[static_cast<size_t>(11 + t)]);
    labels.push_back(b.labels[static_cast<size_t>(11 + t)]);
  }
  append_row(alone, ids, labels, 0);
  const ForwardResult ra = m.evaluate(alone);
  ASSERT_EQ(ra.sequences.size(), 1u);
  EXPECT_NEAR(ra.sequences[0].logprob, with.sequences[2].logprob, 1e-4 * std::abs(ra.sequences[0].logprob));
  EXPECT_EQ(ra.sequences[0].tokens, with.sequences[2].tokens);
  for (int64_t t = 0; t < 6; ++t)
    EXPECT_NEAR(ra.token_logprobs[static_cast<size_t>(t)], with.token_logprobs[static_cast<size_t>(16 + t)], 2e-5);
}

TEST(ModelBatch, RejectsBadBatches) {
  const Batch good = small_batch(37);
  EXPECT_NO_THROW(validate_batch(good, 37));
  Batch b = good;
  b.input_ids[3] = 37;
  EXPECT_THROW(validate_batch(b, 37), Error);
  b = good;
  b.labels[10] = 5;  // a padding token with a label
  EXPECT_THROW(validate_batch(b, 37), Error);
  b = good;
  b.segment_ids[13] = 2;  // segment 2 then 1 then 2 again
  b.segment_ids[14] = 1;
  EXPECT_THROW(validate_batch(b, 37), Error);
  b = good;
  b.labels.pop_back();
  EXPECT_THROW(validate_batch(b, 37), Error);
}

}  // namespace
}  // namespace qtrain::model
