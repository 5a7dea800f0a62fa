// RoPE in place on Llama-3.1-8B's q (32 heads) and k (8 heads) of head_dim 128, llama3 scaling:
// bytes/s (q and k each read and written once) against the measured copy bandwidth.
#include <benchmark/benchmark.h>
#include <cuda_bf16.h>

#include <cstdint>
#include <vector>

#include "ceiling.h"
#include "qk/rope.h"

namespace qtrain::bench {
namespace {

constexpr int kHeads = 32, kKvHeads = 8, kHeadDim = 128;

void BM_rope(benchmark::State& state) {
  const auto& c = ceiling();
  if (!c.have_device) return state.SkipWithError("no CUDA device");
  const int64_t tokens = state.range(0);
  const bool backward = state.range(1) != 0;
  qk::RopeConfig cfg;
  cfg.theta = 500000.0;
  cfg.llama3 = true;
  const auto freqs = qk::rope_freqs(cfg, kHeadDim);
  std::vector<int32_t> pos(static_cast<size_t>(tokens));
  for (int64_t t = 0; t < tokens; ++t) pos[static_cast<size_t>(t)] = static_cast<int32_t>(t % 2048);  // packed rows
  __nv_bfloat16 *q = nullptr, *k = nullptr;
  int32_t* dpos = nullptr;
  const size_t nq = static_cast<size_t>(tokens) * kHeads * kHeadDim;
  const size_t nk = static_cast<size_t>(tokens) * kKvHeads * kHeadDim;
  cudaMalloc(&q, nq * 2);
  cudaMalloc(&k, nk * 2);
  cudaMalloc(&dpos, tokens * 4);
  cudaMemset(q, 0x3f, nq * 2);
  cudaMemset(k, 0x3f, nk * 2);
  cudaMemcpy(dpos, pos.data(), tokens * 4, cudaMemcpyHostToDevice);
  double sec = 0;
  for (auto _ : state) {
    sec = time_per_iter([&] {
      if (backward) qk::rope_backward(q, k, dpos, tokens, kHeads, kKvHeads, freqs, nullptr);
      else qk::rope_forward(q, k, dpos, tokens, kHeads, kKvHeads, freqs, nullptr);
    });
    state.SetIterationTime(sec);
  }
  const double bw = static_cast<double>(nq + nk) * 4 / sec;
  state.counters["GB/s"] = bw / 1e9;
  state.counters["of_copy"] = bw / c.copy_bytes_per_s;
  cudaFree(q);
  cudaFree(k);
  cudaFree(dpos);
}
BENCHMARK(BM_rope)->Args({8192, 0})->Args({8192, 1})->Args({32768, 0})->UseManualTime()->Iterations(3);

}  // namespace
}  // namespace qtrain::bench
