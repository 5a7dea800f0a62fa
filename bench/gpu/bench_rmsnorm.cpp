// RMSNorm forward (plain and residual-fused) and backward at Llama's hidden size 4096: bytes/s
// against the measured copy bandwidth. Bytes: each bf16 row read or written once (the second pass
// over a row hits L1), plus the dw partial rows and their reduction in the backward.
#include <benchmark/benchmark.h>
#include <cuda_bf16.h>

#include <cstdint>

#include "ceiling.h"
#include "qk/rmsnorm.h"

namespace qtrain::bench {
namespace {

constexpr int64_t kCols = 4096;

struct Buffers {
  __nv_bfloat16 *x = nullptr, *r = nullptr, *w = nullptr, *y = nullptr, *h = nullptr;
  float *rstd = nullptr, *dw = nullptr, *work = nullptr;
  explicit Buffers(int64_t rows) {
    const size_t n = static_cast<size_t>(rows * kCols);
    for (__nv_bfloat16** p : {&x, &r, &y, &h}) {
      cudaMalloc(p, n * 2);
      cudaMemset(*p, 0x3f, n * 2);
    }
    cudaMalloc(&w, kCols * 2);
    cudaMemset(w, 0x3f, kCols * 2);
    cudaMalloc(&rstd, rows * 4);
    cudaMemset(rstd, 0x3f, rows * 4);
    cudaMalloc(&dw, kCols * 4);
    cudaMemset(dw, 0, kCols * 4);
    cudaMalloc(&work, qk::rmsnorm_backward_workspace(rows, kCols) * 4);
  }
  ~Buffers() {
    for (void* p : {static_cast<void*>(x), static_cast<void*>(r), static_cast<void*>(w), static_cast<void*>(y),
                    static_cast<void*>(h), static_cast<void*>(rstd), static_cast<void*>(dw), static_cast<void*>(work)})
      cudaFree(p);
  }
};

void report(benchmark::State& state, double bytes, double sec) {
  state.counters["GB/s"] = bytes / sec / 1e9;
  state.counters["of_copy"] = bytes / sec / ceiling().copy_bytes_per_s;
}

void BM_rmsnorm_forward(benchmark::State& state) {
  if (!ceiling().have_device) return state.SkipWithError("no CUDA device");
  const int64_t rows = state.range(0);
  Buffers b(rows);
  double sec = 0;
  for (auto _ : state) {
    sec = time_per_iter([&] { qk::rmsnorm_forward(b.x, b.w, b.y, b.rstd, rows, kCols, 1e-5f, nullptr); });
    state.SetIterationTime(sec);
  }
  report(state, static_cast<double>(rows) * kCols * 4, sec);
}
BENCHMARK(BM_rmsnorm_forward)->Arg(8192)->Arg(32768)->UseManualTime()->Iterations(3);

void BM_residual_rmsnorm_forward(benchmark::State& state) {
  if (!ceiling().have_device) return state.SkipWithError("no CUDA device");
  const int64_t rows = state.range(0);
  Buffers b(rows);
  double sec = 0;
  for (auto _ : state) {
    sec = time_per_iter(
        [&] { qk::residual_rmsnorm_forward(b.x, b.r, b.w, b.h, b.y, b.rstd, rows, kCols, 1e-5f, nullptr); });
    state.SetIterationTime(sec);
  }
  report(state, static_cast<double>(rows) * kCols * 8, sec);
}
BENCHMARK(BM_residual_rmsnorm_forward)->Arg(8192)->Arg(32768)->UseManualTime()->Iterations(3);

// range(1): 1 with dw (full fine-tuning), 0 without (frozen weight, LoRA).
void BM_rmsnorm_backward(benchmark::State& state) {
  if (!ceiling().have_device) return state.SkipWithError("no CUDA device");
  const int64_t rows = state.range(0);
  const bool with_dw = state.range(1) != 0;
  Buffers b(rows);
  double sec = 0;
  for (auto _ : state) {
    sec = time_per_iter([&] {
      qk::rmsnorm_backward(b.y, b.x, b.w, b.rstd, nullptr, b.h, with_dw ? b.dw : nullptr, b.work, rows, kCols,
                           nullptr);
    });
    state.SetIterationTime(sec);
  }
  const double partial_bytes = with_dw ? 2.0 * qk::rmsnorm_backward_workspace(rows, kCols) * 4 : 0.0;
  report(state, static_cast<double>(rows) * kCols * 6 + partial_bytes, sec);
}
BENCHMARK(BM_rmsnorm_backward)->Args({8192, 1})->Args({32768, 1})->Args({8192, 0})->UseManualTime()->Iterations(3);

}  // namespace
}  // namespace qtrain::bench
