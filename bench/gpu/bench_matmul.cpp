// cuBLAS bf16 GEMM at training shapes: FLOP/s against the card's dense bf16 ceiling.
#include <benchmark/benchmark.h>
#include <cuda_bf16.h>

#include "ceiling.h"
#include "qk/matmul.h"

namespace qtrain::bench {
namespace {

void BM_matmul_bf16(benchmark::State& state) {
  const auto& c = ceiling();
  if (!c.have_device) return state.SkipWithError("no CUDA device");
  const int m = static_cast<int>(state.range(0)), n = static_cast<int>(state.range(1)),
            k = static_cast<int>(state.range(2));
  __nv_bfloat16 *a = nullptr, *b = nullptr, *y = nullptr;
  cudaMalloc(&a, size_t{2} * m * k);
  cudaMalloc(&b, size_t{2} * n * k);
  cudaMalloc(&y, size_t{2} * m * n);
  cudaMemset(a, 0x3c, size_t{2} * m * k);  // non-zero inputs: zeros can run faster than real data
  cudaMemset(b, 0x3b, size_t{2} * n * k);
  cublasHandle_t h;
  cublasCreate(&h);
  const qk::GemmShape s{false, true, m, n, k};  // Y = X W^T, as a linear layer
  double sec = 0;
  for (auto _ : state) {
    sec = time_per_iter([&] { qk::matmul_bf16(h, s, 1.0f, a, b, 0.0f, y, nullptr); });
    state.SetIterationTime(sec);
  }
  const double flops = 2.0 * m * n * k / sec;
  state.counters["TFLOP/s"] = flops / 1e12;
  state.counters["of_peak"] = flops / c.bf16_flop_per_s;
  cublasDestroy(h);
  cudaFree(a);
  cudaFree(b);
  cudaFree(y);
}
BENCHMARK(BM_matmul_bf16)
    ->Args({4096, 4096, 4096})
    ->Args({4096, 14336, 4096})
    ->Args({4096, 4096, 14336})
    ->UseManualTime()
    ->Iterations(3);

}  // namespace
}  // namespace qtrain::bench
