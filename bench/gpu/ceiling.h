// The card's ceilings for the GPU benchmarks: copy bandwidth measured once with a large
// device-to-device copy (bytes read + written), and the dense bf16 tensor-core rate with fp32
// accumulation from the SM count, the clock and the per-SM rate of the architecture.
#pragma once
#include <cuda_runtime.h>

#include <string>

namespace qtrain::bench {

struct Ceiling {
  bool have_device = false;
  std::string name;
  double copy_bytes_per_s = 0;     // measured
  double bf16_flop_per_s = 0;      // from the datasheet rate per SM per clock
};

// Measured once per process; have_device is false without a GPU.
const Ceiling& ceiling();

// Events around `iters` repetitions of fn, after `warmup` untimed ones; seconds per repetition.
template <typename Fn>
double time_per_iter(Fn&& fn, int warmup = 3, int iters = 20) {
  for (int i = 0; i < warmup; ++i) fn();
  cudaEvent_t a, b;
  cudaEventCreate(&a);
  cudaEventCreate(&b);
  cudaEventRecord(a);
  for (int i = 0; i < iters; ++i) fn();
  cudaEventRecord(b);
  cudaEventSynchronize(b);
  float ms = 0;
  cudaEventElapsedTime(&ms, a, b);
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  return ms / 1e3 / iters;
}

}  // namespace qtrain::bench
