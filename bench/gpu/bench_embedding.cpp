// Embedding lookup and its gradient (Llama-3 vocabulary and hidden size): bytes/s against the
// measured copy bandwidth. Forward moves 2 x T x hidden bf16; backward reads dout and updates one
// fp32 row per distinct id (read + write).
#include <benchmark/benchmark.h>
#include <cuda_bf16.h>

#include <cstdint>
#include <vector>

#include "ceiling.h"
#include "qk/embedding.h"

namespace qtrain::bench {
namespace {

constexpr int64_t kVocab = 128256, kHidden = 4096;

std::vector<int32_t> ids_for(int64_t tokens) {
  std::vector<int32_t> ids(static_cast<size_t>(tokens));
  uint64_t s = 12345;
  for (auto& id : ids) {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    id = static_cast<int32_t>((s >> 33) % kVocab);
  }
  return ids;
}

void BM_embedding_forward(benchmark::State& state) {
  const auto& c = ceiling();
  if (!c.have_device) return state.SkipWithError("no CUDA device");
  const int64_t tokens = state.range(0);
  const auto ids = ids_for(tokens);
  __nv_bfloat16 *table = nullptr, *out = nullptr;
  int32_t* dids = nullptr;
  cudaMalloc(&table, kVocab * kHidden * 2);
  cudaMalloc(&out, tokens * kHidden * 2);
  cudaMalloc(&dids, tokens * 4);
  cudaMemset(table, 0x3f, kVocab * kHidden * 2);
  cudaMemcpy(dids, ids.data(), tokens * 4, cudaMemcpyHostToDevice);
  double sec = 0;
  for (auto _ : state) {
    sec = time_per_iter([&] { qk::embedding_forward(table, dids, out, tokens, kVocab, kHidden, nullptr); });
    state.SetIterationTime(sec);
  }
  const double bw = static_cast<double>(tokens) * kHidden * 4 / sec;
  state.counters["GB/s"] = bw / 1e9;
  state.counters["of_copy"] = bw / c.copy_bytes_per_s;
  cudaFree(table);
  cudaFree(out);
  cudaFree(dids);
}
BENCHMARK(BM_embedding_forward)->Arg(8192)->Arg(32768)->UseManualTime()->Iterations(3);

void BM_embedding_backward(benchmark::State& state) {
  const auto& c = ceiling();
  if (!c.have_device) return state.SkipWithError("no CUDA device");
  const int64_t tokens = state.range(0);
  const auto ids = ids_for(tokens);
  const auto plan = qk::embedding_grad_plan(ids.data(), tokens, kVocab);
  __nv_bfloat16* dout = nullptr;
  float* dtable = nullptr;
  int32_t* dplan = nullptr;
  cudaMalloc(&dout, tokens * kHidden * 2);
  cudaMalloc(&dtable, kVocab * kHidden * 4);
  cudaMalloc(&dplan, plan.data.size() * 4);
  cudaMemset(dout, 0x3f, tokens * kHidden * 2);
  cudaMemset(dtable, 0, kVocab * kHidden * 4);
  cudaMemcpy(dplan, plan.data.data(), plan.data.size() * 4, cudaMemcpyHostToDevice);
  double sec = 0;
  for (auto _ : state) {
    sec = time_per_iter([&] {
      qk::embedding_backward(dout, dplan, tokens, plan.groups, dtable, kVocab, kHidden, nullptr);
    });
    state.SetIterationTime(sec);
  }
  const double bytes = static_cast<double>(tokens) * kHidden * 2 + static_cast<double>(plan.groups) * kHidden * 8;
  state.counters["GB/s"] = bytes / sec / 1e9;
  state.counters["of_copy"] = bytes / sec / c.copy_bytes_per_s;
  cudaFree(dout);
  cudaFree(dtable);
  cudaFree(dplan);
}
BENCHMARK(BM_embedding_backward)->Arg(8192)->Arg(32768)->UseManualTime()->Iterations(3);

}  // namespace
}  // namespace qtrain::bench
