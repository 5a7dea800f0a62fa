// Seeded random base weights (see random_weights.h). Each value is a hash of (tensor, index) rather
// than a draw from a sequential generator, so large tensors fill on all cores and the result does
// not depend on how the work was split: 8 billion values of llama3-8b take seconds, not minutes.
#include "runtime/model/random_weights.h"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <span>
#include <thread>
#include <vector>

#include "csrc/core/dtype.h"
#include "csrc/core/error.h"
#include "runtime/model/nf4_weights.h"

namespace qtrain::model {
namespace {

// Same init scale as make-tiny; a uniform of half-width std * sqrt(3) has that standard deviation.
constexpr float kInitStd = 0.02f;

uint64_t mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

void fill_uniform(std::vector<float>& v, size_t n, uint64_t stream) {
  v.resize(n);
  const float half_width = kInitStd * std::sqrt(3.0f);
  const uint64_t key = mix(stream);
  auto fill = [&](size_t begin, size_t end) {
    for (size_t i = begin; i < end; ++i) {
      const float u = static_cast<float>(mix(key ^ i) >> 40) * (1.0f / 16777216.0f);  // [0, 1)
      v[i] = (2.0f * u - 1.0f) * half_width;
    }
  };
  // Threads only pay off for the large matrices; small vectors fill inline.
  const size_t threads = std::clamp<size_t>(std::thread::hardware_concurrency(), 1, 64);
  if (n < (size_t{1} << 20) || threads == 1) {
    fill(0, n);
    return;
  }
  std::vector<std::thread> pool;
  const size_t chunk = (n + threads - 1) / threads;
  for (size_t t = 0; t < threads; ++t) {
    const size_t begin = t * chunk, end = std::min(n, begin + chunk);
    if (begin < end) pool.emplace_back(fill, begin, end);
  }
  for (std::thread& th : pool) th.join();
}

void check_positive(int64_t value, const char* key) {
  if (value < 1) throw_bad_input("model config", std::string(key) + " must be at least 1");
}

}  // namespace

BaseWeights random_base_weights(const io::ModelConfig& config, uint64_t seed, bool nf4_round_trip) {
  const io::ModelConfig& c = config;
  check_positive(c.vocab_size, "vocab_size");
  check_positive(c.hidden_size, "hidden_size");
  check_positive(c.intermediate_size, "intermediate_size");
  check_positive(c.num_hidden_layers, "num_hidden_layers");
  check_positive(c.num_attention_heads, "num_attention_heads");
  const int64_t kv_heads = c.num_key_value_heads > 0 ? c.num_key_value_heads : c.num_attention_heads;
  if (c.head_dim == 0 && c.hidden_size % c.num_attention_heads != 0)
    throw_bad_input("model config", "hidden_size is not a multiple of num_attention_heads");
  const int64_t head_dim = c.head_dim > 0 ? c.head_dim : c.hidden_size / c.num_attention_heads;
  const int64_t hidden = c.hidden_size, inter = c.intermediate_size;
  const int64_t q_out = c.num_attention_heads * head_dim, kv_out = kv_heads * head_dim;

  BaseWeights w;
  w.config = c;
  // Stream ids: 0 embed, 1 lm_head, then 16 per layer, so adding a tensor kind never shifts others.
  fill_uniform(w.embed, static_cast<size_t>(c.vocab_size * hidden), seed * 1000003ull + 0);
  if (!c.tie_word_embeddings) fill_uniform(w.lm_head, static_cast<size_t>(c.vocab_size * hidden), seed * 1000003ull + 1);
  w.final_norm.assign(static_cast<size_t>(hidden), 1.0f);
  w.layers.resize(static_cast<size_t>(c.num_hidden_layers));
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    LayerWeights& layer = w.layers[static_cast<size_t>(l)];
    layer.input_norm.assign(static_cast<size_t>(hidden), 1.0f);
    layer.post_norm.assign(static_cast<size_t>(hidden), 1.0f);
    for (Proj p : kAllProjs) {
      LinearWeight& lin = layer[p];
      switch (p) {
        case Proj::Q: lin.out = q_out, lin.in = hidden; break;
        case Proj::K:
        case Proj::V: lin.out = kv_out, lin.in = hidden; break;
        case Proj::O: lin.out = hidden, lin.in = q_out; break;
        case Proj::Gate:
        case Proj::Up: lin.out = inter, lin.in = hidden; break;
        case Proj::Down: lin.out = hidden, lin.in = inter; break;
      }
      const uint64_t stream = seed * 1000003ull + 2 + static_cast<uint64_t>(l) * 16 + static_cast<uint64_t>(p);
      fill_uniform(lin.weight, static_cast<size_t>(lin.out * lin.in), stream);
      // Qwen2 carries q/k/v biases; give them zeros so the layout matches a loaded checkpoint.
      const bool qkv = p == Proj::Q || p == Proj::K || p == Proj::V;
      if ((c.architecture == io::Architecture::Qwen2 && qkv) ||
          (c.architecture != io::Architecture::Qwen2 && c.attention_bias && (qkv || p == Proj::O)))
        lin.bias.assign(static_cast<size_t>(lin.out), 0.0f);
      if (nf4_round_trip) {
        const auto bytes = std::as_bytes(std::span<const float>(lin.weight));
        const Nf4Weight q = quantize_nf4(DType::F32, bytes, {lin.out, lin.in}, 64, true);
        lin.weight = dequantize_nf4_f32(q);
        lin.from_nf4 = true;
      }
    }
  }
  return w;
}

}  // namespace qtrain::model
