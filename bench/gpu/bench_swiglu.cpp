// SwiGLU on the halves of Llama-3.1-8B's fused gate/up output (intermediate 14336): bytes/s against
// the measured copy bandwidth. Forward: read gate and up, write out; backward: read gate, up and
// dout, write dgate and dup (in place over the fused buffer, as training does it).
#include <benchmark/benchmark.h>
#include <cuda_bf16.h>

#include <cstdint>

#include "ceiling.h"
#include "qk/swiglu.h"

namespace qtrain::bench {
namespace {

constexpr int64_t kInter = 14336;

void BM_swiglu(benchmark::State& state) {
  const auto& c = ceiling();
  if (!c.have_device) return state.SkipWithError("no CUDA device");
  const int64_t rows = state.range(0);
  const bool backward = state.range(1) != 0;
  const size_t n = static_cast<size_t>(rows * kInter);
  __nv_bfloat16 *gu = nullptr, *out = nullptr;
  cudaMalloc(&gu, 2 * n * 2);
  cudaMalloc(&out, n * 2);
  cudaMemset(gu, 0x3e, 2 * n * 2);
  cudaMemset(out, 0x3e, n * 2);
  double sec = 0;
  for (auto _ : state) {
    sec = time_per_iter([&] {
      if (backward)
        qk::swiglu_backward(out, gu, gu + kInter, gu, gu + kInter, rows, kInter, 2 * kInter, kInter, 2 * kInter,
                            nullptr);
      else qk::swiglu_forward(gu, gu + kInter, out, rows, kInter, 2 * kInter, kInter, nullptr);
    });
    state.SetIterationTime(sec);
  }
  const double bw = static_cast<double>(n) * (backward ? 10 : 6) / sec;
  state.counters["GB/s"] = bw / 1e9;
  state.counters["of_copy"] = bw / c.copy_bytes_per_s;
  cudaFree(gu);
  cudaFree(out);
}
BENCHMARK(BM_swiglu)->Args({8192, 0})->Args({8192, 1})->UseManualTime()->Iterations(3);

}  // namespace
}  // namespace qtrain::bench
