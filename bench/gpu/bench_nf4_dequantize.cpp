// NF4 dequantization (the per-linear-layer step of the training path): bytes/s (packed nibbles and
// absmax read, output written) against the measured copy bandwidth, for a Llama-2-7B MLP weight
// [11008, 4096] and a 4096 x 4096 attention weight, plain and double-quantized absmax.
#include <benchmark/benchmark.h>
#include <cuda_bf16.h>

#include <vector>

#include "ceiling.h"
#include "qk/nf4.h"
#include "qk/nf4_dequantize.h"
#include "qk/nf4_double_quant.h"
#include "qk/nf4_quantize.h"

namespace qtrain::bench {
namespace {

template <typename T>
void BM_nf4_dequantize(benchmark::State& state, bool nested) {
  const auto& c = ceiling();
  if (!c.have_device) return state.SkipWithError("no CUDA device");
  const size_t n = static_cast<size_t>(state.range(0)) * 4096;
  const size_t nb = qk::nf4::num_blocks(n, 64), nn = qk::nf4::num_blocks(nb, 256);
  __nv_bfloat16* w = nullptr;
  uint8_t *packed = nullptr, *q = nullptr;
  float *absmax = nullptr, *nested_absmax = nullptr, *offset = nullptr;
  T* y = nullptr;
  cudaMalloc(&w, n * 2);
  cudaMalloc(&packed, qk::nf4::packed_bytes(n));
  cudaMalloc(&absmax, nb * 4);
  cudaMalloc(&q, nb);
  cudaMalloc(&nested_absmax, nn * 4);
  cudaMalloc(&offset, 4);
  cudaMalloc(&y, n * sizeof(T));
  // Realistic data: a weight in bf16 quantized on the device (non-zero absmax in every block).
  std::vector<__nv_bfloat16> host(n);
  for (size_t i = 0; i < n; ++i) host[i] = __float2bfloat16(0.02f * static_cast<float>(int((i * 2654435761u) % 201) - 100) / 100.0f + 1e-3f);
  cudaMemcpy(w, host.data(), n * 2, cudaMemcpyHostToDevice);
  qk::nf4_quantize_bf16(w, n, 64, packed, absmax, nullptr);
  qk::nf4_double_quantize(absmax, nb, q, nested_absmax, offset, nullptr);
  float off = 0;
  cudaMemcpy(&off, offset, 4, cudaMemcpyDeviceToHost);
  const qk::Nf4Nested dq{q, nested_absmax, off};
  double sec = 0;
  for (auto _ : state) {
    sec = time_per_iter([&] {
      if constexpr (sizeof(T) == 4) {
        if (nested) qk::nf4_dequantize_f32(packed, dq, n, 64, y, nullptr);
        else qk::nf4_dequantize_f32(packed, absmax, n, 64, y, nullptr);
      } else {
        if (nested) qk::nf4_dequantize_bf16(packed, dq, n, 64, y, nullptr);
        else qk::nf4_dequantize_bf16(packed, absmax, n, 64, y, nullptr);
      }
    });
    state.SetIterationTime(sec);
  }
  const double bytes = static_cast<double>(qk::nf4::packed_bytes(n)) + (nested ? nb + nn * 4.0 : nb * 4.0) +
                       static_cast<double>(n) * sizeof(T);
  state.counters["GB/s"] = bytes / sec / 1e9;
  state.counters["of_copy"] = bytes / sec / c.copy_bytes_per_s;
  state.counters["elem/s"] = static_cast<double>(n) / sec;
  cudaFree(w);
  cudaFree(packed);
  cudaFree(absmax);
  cudaFree(q);
  cudaFree(nested_absmax);
  cudaFree(offset);
  cudaFree(y);
}

void BM_nf4_dequantize_bf16(benchmark::State& s) { BM_nf4_dequantize<__nv_bfloat16>(s, false); }
void BM_nf4_dequantize_bf16_dq(benchmark::State& s) { BM_nf4_dequantize<__nv_bfloat16>(s, true); }
void BM_nf4_dequantize_f32_dq(benchmark::State& s) { BM_nf4_dequantize<float>(s, true); }
BENCHMARK(BM_nf4_dequantize_bf16)->Arg(4096)->Arg(11008)->UseManualTime()->Iterations(3);
BENCHMARK(BM_nf4_dequantize_bf16_dq)->Arg(4096)->Arg(11008)->UseManualTime()->Iterations(3);
BENCHMARK(BM_nf4_dequantize_f32_dq)->Arg(11008)->UseManualTime()->Iterations(3);

}  // namespace
}  // namespace qtrain::bench
