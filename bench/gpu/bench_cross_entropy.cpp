// Fused cross-entropy (GB/s against the copy bandwidth: the row is read twice and dlogits written
// once) and the chunked LM head + loss at Llama-3-8B's vocabulary (TFLOP/s of its three GEMMs
// against the bf16 ceiling, and its workspace against full fp32 logits).
#include <benchmark/benchmark.h>
#include <cublas_v2.h>
#include <cuda_bf16.h>

#include <vector>

#include "ceiling.h"
#include "qk/cross_entropy.h"
#include "qk/lm_head_loss.h"

namespace qtrain::bench {
namespace {

constexpr int64_t kVocab = 128256, kHidden = 4096;

std::vector<int32_t> labels(int64_t rows) {
  std::vector<int32_t> y(static_cast<size_t>(rows));
  for (int64_t i = 0; i < rows; ++i) y[static_cast<size_t>(i)] = static_cast<int32_t>((i * 7919) % kVocab);
  return y;
}

void BM_cross_entropy(benchmark::State& state) {
  const auto& c = ceiling();
  if (!c.have_device) return state.SkipWithError("no CUDA device");
  const int64_t rows = state.range(0);
  __nv_bfloat16* x = nullptr;
  int32_t* y = nullptr;
  float *loss = nullptr, *lp = nullptr;
  cudaMalloc(&x, static_cast<size_t>(rows * kVocab) * 2);
  cudaMalloc(&y, static_cast<size_t>(rows) * 4);
  cudaMalloc(&loss, static_cast<size_t>(rows) * 4);
  cudaMalloc(&lp, static_cast<size_t>(rows) * 4);
  cudaMemset(x, 0x3c, static_cast<size_t>(rows * kVocab) * 2);
  const auto hy = labels(rows);
  cudaMemcpy(y, hy.data(), hy.size() * 4, cudaMemcpyHostToDevice);
  double sec = 0;
  for (auto _ : state) {
    // In place: each call rewrites the logits with dlogits, which are finite and as costly to read.
    sec = time_per_iter([&] { qk::cross_entropy(x, y, rows, kVocab, 1e-3f, loss, lp, x, nullptr); });
    state.SetIterationTime(sec);
  }
  const double bytes = 3.0 * static_cast<double>(rows * kVocab) * 2;
  state.counters["GB/s"] = bytes / sec / 1e9;
  state.counters["of_copy"] = bytes / sec / c.copy_bytes_per_s;
  for (void* p : {static_cast<void*>(x), static_cast<void*>(y), static_cast<void*>(loss), static_cast<void*>(lp)})
    cudaFree(p);
}
BENCHMARK(BM_cross_entropy)->Arg(1024)->Arg(4096)->UseManualTime()->Iterations(3);

void BM_lm_head_loss(benchmark::State& state) {
  const auto& c = ceiling();
  if (!c.have_device) return state.SkipWithError("no CUDA device");
  const qk::LmHeadShape s{state.range(0), kHidden, kVocab, 1024};
  __nv_bfloat16 *h = nullptr, *w = nullptr, *dh = nullptr;
  int32_t* y = nullptr;
  float *loss = nullptr, *lp = nullptr;
  void* ws = nullptr;
  cudaMalloc(&h, static_cast<size_t>(s.tokens * kHidden) * 2);
  cudaMalloc(&dh, static_cast<size_t>(s.tokens * kHidden) * 2);
  cudaMalloc(&w, static_cast<size_t>(kVocab * kHidden) * 2);
  cudaMalloc(&y, static_cast<size_t>(s.tokens) * 4);
  cudaMalloc(&loss, static_cast<size_t>(s.tokens) * 4);
  cudaMalloc(&lp, static_cast<size_t>(s.tokens) * 4);
  cudaMalloc(&ws, qk::lm_head_loss_workspace_bytes(s));
  cudaMemset(h, 0x3c, static_cast<size_t>(s.tokens * kHidden) * 2);
  cudaMemset(w, 0x3b, static_cast<size_t>(kVocab * kHidden) * 2);
  const auto hy = labels(s.tokens);
  cudaMemcpy(y, hy.data(), hy.size() * 4, cudaMemcpyHostToDevice);
  cublasHandle_t handle;
  cublasCreate(&handle);
  double sec = 0;
  for (auto _ : state) {
    sec = time_per_iter(
        [&] { qk::lm_head_loss(handle, s, h, w, y, 1e-3f, loss, lp, dh, nullptr, ws, nullptr); }, 1, 5);
    state.SetIterationTime(sec);
  }
  const double flops = 2.0 * 2.0 * static_cast<double>(s.tokens) * kVocab * kHidden;  // logits + dhidden
  state.counters["TFLOP/s"] = flops / sec / 1e12;
  state.counters["of_peak"] = flops / sec / c.bf16_flop_per_s;
  state.counters["ws_vs_fp32_logits"] =
      static_cast<double>(qk::lm_head_loss_workspace_bytes(s)) / (static_cast<double>(s.tokens) * kVocab * 4);
  cublasDestroy(handle);
  for (void* p : {static_cast<void*>(h), static_cast<void*>(dh), static_cast<void*>(w), static_cast<void*>(y),
                  static_cast<void*>(loss), static_cast<void*>(lp), ws})
    cudaFree(p);
}
BENCHMARK(BM_lm_head_loss)->Arg(2048)->Arg(8192)->UseManualTime()->Iterations(2);

}  // namespace
}  // namespace qtrain::bench
