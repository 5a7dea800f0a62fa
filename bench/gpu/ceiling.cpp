// Measures the copy-bandwidth ceiling and computes the bf16 tensor-core ceiling.
#include "ceiling.h"

namespace qtrain::bench {
namespace {

// Dense bf16 FLOP per clock per SM with fp32 accumulation (mma.sync / HMMA path).
double bf16_flop_per_clock_per_sm(int major, int minor) {
  if (major == 8 && minor == 0) return 2048;  // A100
  if (major == 8) return 512;                 // RTX 30 (8.6) and RTX 40 (8.9): half rate with fp32 accumulate
  if (major == 9) return 4096;                // H100 / H200 (reached only through wgmma)
  if (major >= 10) return 4096;
  return 1024;
}

Ceiling measure() {
  Ceiling c;
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) {
    (void)cudaGetLastError();
    return c;
  }
  cudaDeviceProp p{};
  cudaGetDeviceProperties(&p, 0);
  c.have_device = true;
  c.name = p.name;
  int clock_khz = 0;
  cudaDeviceGetAttribute(&clock_khz, cudaDevAttrClockRate, 0);
  c.bf16_flop_per_s = bf16_flop_per_clock_per_sm(p.major, p.minor) * p.multiProcessorCount * clock_khz * 1e3;

  const size_t bytes = size_t{1} << 30;
  void *src = nullptr, *dst = nullptr;
  if (cudaMalloc(&src, bytes) == cudaSuccess && cudaMalloc(&dst, bytes) == cudaSuccess) {
    cudaMemset(src, 1, bytes);
    const double s = time_per_iter([&] { cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice); }, 2, 10);
    c.copy_bytes_per_s = 2.0 * static_cast<double>(bytes) / s;
  }
  cudaFree(src);
  cudaFree(dst);
  (void)cudaGetLastError();
  return c;
}

}  // namespace

const Ceiling& ceiling() {
  static const Ceiling c = measure();
  return c;
}

}  // namespace qtrain::bench
