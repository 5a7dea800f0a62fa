// Causal flash attention, head_dim 128, Llama-3-8B heads (32 query, 8 KV): forward and backward
// TFLOP/s against the card's dense bf16 ceiling. 16384 tokens per call, packed as 16384 / T
// examples of length T. FLOPs are the conventional ones: forward 4 T^2 d heads per example, halved
// for causal; backward 2.5 times the forward (our deterministic backward recomputes two more
// products than that count, which it pays for in the reported rate). The sliding-window runs
// (Mistral) count only the scores inside the window: T W - W (W - 1) / 2 per example and head.
#include <benchmark/benchmark.h>
#include <cuda_bf16.h>

#include <cstdint>
#include <vector>

#include "ceiling.h"
#include "qk/attention.h"

namespace qtrain::bench {
namespace {

constexpr int kHeads = 32, kKvHeads = 8, kHeadDim = 128;
constexpr int64_t kTokens = 16384;

struct Buffers {
  __nv_bfloat16 *q = nullptr, *k = nullptr, *v = nullptr, *o = nullptr, *dout = nullptr, *dq = nullptr,
                *dk = nullptr, *dv = nullptr;
  float *lse = nullptr, *delta = nullptr;
  int32_t* cu = nullptr;
  qk::AttentionShape shape;

  explicit Buffers(int seqlen, int window = 0) {
    shape.window = window;
    shape.total_tokens = kTokens;
    shape.num_seqs = static_cast<int>(kTokens / seqlen);
    shape.max_seqlen = seqlen;
    shape.heads = kHeads;
    shape.kv_heads = kKvHeads;
    shape.head_dim = kHeadDim;
    const size_t nq = static_cast<size_t>(kTokens) * kHeads * kHeadDim, nk = static_cast<size_t>(kTokens) * kKvHeads * kHeadDim;
    for (auto* p : {&q, &o, &dout, &dq}) cudaMalloc(p, nq * 2);
    for (auto* p : {&k, &v, &dk, &dv}) cudaMalloc(p, nk * 2);
    cudaMalloc(&lse, static_cast<size_t>(kTokens) * kHeads * 4);
    cudaMalloc(&delta, static_cast<size_t>(kTokens) * kHeads * 4);
    for (auto* p : {q, k, v, dout}) cudaMemset(p, 0x3c, (p == k || p == v ? nk : nq) * 2);  // ~0.01: finite
    std::vector<int32_t> host(shape.num_seqs + 1);
    for (int b = 0; b <= shape.num_seqs; ++b) host[b] = b * seqlen;
    cudaMalloc(&cu, host.size() * 4);
    cudaMemcpy(cu, host.data(), host.size() * 4, cudaMemcpyHostToDevice);
  }
  ~Buffers() {
    for (void* p : {static_cast<void*>(q), static_cast<void*>(k), static_cast<void*>(v), static_cast<void*>(o),
                    static_cast<void*>(dout), static_cast<void*>(dq), static_cast<void*>(dk), static_cast<void*>(dv),
                    static_cast<void*>(lse), static_cast<void*>(delta), static_cast<void*>(cu)})
      cudaFree(p);
  }
  Buffers(const Buffers&) = delete;
  Buffers& operator=(const Buffers&) = delete;

  double forward_flops() const {
    const double t = shape.max_seqlen, w = shape.window;
    if (shape.window > 0 && shape.window < shape.max_seqlen)
      return 4.0 * (t * w - w * (w - 1) / 2) * kHeadDim * kHeads * shape.num_seqs;
    return 4.0 * t * t * kHeadDim * kHeads / 2 * shape.num_seqs;
  }
  void forward() { qk::attention_forward(q, k, v, o, lse, cu, shape, nullptr); }
  void backward() { qk::attention_backward(q, k, v, o, dout, lse, dq, dk, dv, delta, cu, shape, nullptr); }
};

void report(benchmark::State& state, double flops, double sec) {
  state.counters["TFLOP/s"] = flops / sec / 1e12;
  state.counters["of_peak"] = flops / sec / ceiling().bf16_flop_per_s;
}

void BM_attention_forward(benchmark::State& state) {
  if (!ceiling().have_device) return state.SkipWithError("no CUDA device");
  Buffers b(static_cast<int>(state.range(0)));
  double sec = 0;
  for (auto _ : state) {
    sec = time_per_iter([&] { b.forward(); });
    state.SetIterationTime(sec);
  }
  report(state, b.forward_flops(), sec);
}
BENCHMARK(BM_attention_forward)->RangeMultiplier(2)->Range(512, 16384)->UseManualTime()->Iterations(3);

void BM_attention_backward(benchmark::State& state) {
  if (!ceiling().have_device) return state.SkipWithError("no CUDA device");
  Buffers b(static_cast<int>(state.range(0)));
  b.forward();
  double sec = 0;
  for (auto _ : state) {
    sec = time_per_iter([&] { b.backward(); });
    state.SetIterationTime(sec);
  }
  report(state, 2.5 * b.forward_flops(), sec);
}
BENCHMARK(BM_attention_backward)->RangeMultiplier(2)->Range(512, 16384)->UseManualTime()->Iterations(3);

// Sliding window: args {T, W}; the time should follow T W, not T^2.
void BM_attention_window(benchmark::State& state) {
  if (!ceiling().have_device) return state.SkipWithError("no CUDA device");
  Buffers b(static_cast<int>(state.range(0)), static_cast<int>(state.range(1)));
  b.forward();
  double fwd = 0, bwd = 0;
  for (auto _ : state) {
    fwd = time_per_iter([&] { b.forward(); });
    bwd = time_per_iter([&] { b.backward(); });
    state.SetIterationTime(fwd + bwd);
  }
  state.counters["fwd_TFLOP/s"] = b.forward_flops() / fwd / 1e12;
  state.counters["bwd_TFLOP/s"] = 2.5 * b.forward_flops() / bwd / 1e12;
  report(state, 3.5 * b.forward_flops(), fwd + bwd);
}
BENCHMARK(BM_attention_window)
    ->Args({4096, 512})
    ->Args({16384, 4096})
    ->Args({16384, 1000})
    ->UseManualTime()
    ->Iterations(3);

}  // namespace
}  // namespace qtrain::bench
