// Cast f32 <-> bf16: bytes/s (read + write) against the measured copy bandwidth.
#include <benchmark/benchmark.h>
#include <cuda_bf16.h>

#include "ceiling.h"
#include "qk/cast.h"

namespace qtrain::bench {
namespace {

void BM_cast_f32_to_bf16(benchmark::State& state) {
  const auto& c = ceiling();
  if (!c.have_device) return state.SkipWithError("no CUDA device");
  const size_t n = static_cast<size_t>(state.range(0));
  float* x = nullptr;
  __nv_bfloat16* y = nullptr;
  cudaMalloc(&x, n * 4);
  cudaMalloc(&y, n * 2);
  cudaMemset(x, 0x3f, n * 4);  // non-zero, finite
  double sec = 0;
  for (auto _ : state) {
    sec = time_per_iter([&] { qk::cast_f32_to_bf16(x, y, n, nullptr); });
    state.SetIterationTime(sec);
  }
  const double bw = static_cast<double>(n) * 6 / sec;
  state.counters["GB/s"] = bw / 1e9;
  state.counters["of_copy"] = bw / c.copy_bytes_per_s;
  cudaFree(x);
  cudaFree(y);
}
BENCHMARK(BM_cast_f32_to_bf16)->Arg(1 << 24)->Arg(1 << 28)->UseManualTime()->Iterations(3);

void BM_cast_bf16_to_f32(benchmark::State& state) {
  const auto& c = ceiling();
  if (!c.have_device) return state.SkipWithError("no CUDA device");
  const size_t n = static_cast<size_t>(state.range(0));
  __nv_bfloat16* x = nullptr;
  float* y = nullptr;
  cudaMalloc(&x, n * 2);
  cudaMalloc(&y, n * 4);
  cudaMemset(x, 0x3f, n * 2);
  double sec = 0;
  for (auto _ : state) {
    sec = time_per_iter([&] { qk::cast_bf16_to_f32(x, y, n, nullptr); });
    state.SetIterationTime(sec);
  }
  const double bw = static_cast<double>(n) * 6 / sec;
  state.counters["GB/s"] = bw / 1e9;
  state.counters["of_copy"] = bw / c.copy_bytes_per_s;
  cudaFree(x);
  cudaFree(y);
}
BENCHMARK(BM_cast_bf16_to_f32)->Arg(1 << 24)->Arg(1 << 28)->UseManualTime()->Iterations(3);

}  // namespace
}  // namespace qtrain::bench
