// CPU figures for the NF4 twins (the reference path, also what `qtrain quantize` runs): quantize,
// double quantization and dequantize throughput on a 4096 x 4096 bf16 weight, in parameters/s and
// GB/s of bytes read + written; plus bits per parameter of a Llama-2-7B-shaped model's linear weights.
#include <benchmark/benchmark.h>

#include <cstdint>
#include <vector>

#include "qk/bf16_bits.h"
#include "qk/nf4.h"
#include "qk/nf4_dequantize.h"
#include "qk/nf4_double_quant.h"
#include "qk/nf4_quantize.h"

namespace {

constexpr size_t kRows = 4096, kCols = 4096, kN = kRows * kCols;
constexpr int kBlock = 64;

std::vector<uint16_t> weight() {
  std::vector<uint16_t> w(kN);
  uint64_t s = 1;
  for (auto& x : w) {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    x = qk::f32_to_bf16_rn((static_cast<float>(s >> 40) / 16777216.0f - 0.5f) * 0.04f + 1e-4f);
  }
  return w;
}

void BM_nf4_quantize_bf16_cpu(benchmark::State& state) {
  const auto w = weight();
  std::vector<uint8_t> packed(kN / 2);
  std::vector<float> absmax(kN / kBlock);
  for (auto _ : state) qk::cpu::nf4_quantize_bf16(w.data(), kN, kBlock, packed.data(), absmax.data());
  state.counters["Mparam/s"] = benchmark::Counter(kN / 1e6, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["GB/s"] =
      benchmark::Counter((kN * 2.0 + kN / 2.0 + kN / kBlock * 4.0) / 1e9, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_nf4_quantize_bf16_cpu)->Unit(benchmark::kMillisecond);

void BM_nf4_double_quantize_cpu(benchmark::State& state) {
  std::vector<float> absmax(kN / kBlock);
  for (size_t i = 0; i < absmax.size(); ++i) absmax[i] = 0.01f + 0.001f * static_cast<float>(i % 97);
  std::vector<uint8_t> q(absmax.size());
  std::vector<float> nested((absmax.size() + 255) / 256);
  for (auto _ : state) benchmark::DoNotOptimize(qk::cpu::nf4_double_quantize(absmax.data(), absmax.size(), q.data(), nested.data()));
  state.counters["Mblocks/s"] =
      benchmark::Counter(absmax.size() / 1e6, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_nf4_double_quantize_cpu)->Unit(benchmark::kMillisecond);

void BM_nf4_dequantize_bf16_cpu(benchmark::State& state) {
  const auto w = weight();
  std::vector<uint8_t> packed(kN / 2);
  std::vector<float> absmax(kN / kBlock);
  qk::cpu::nf4_quantize_bf16(w.data(), kN, kBlock, packed.data(), absmax.data());
  std::vector<uint16_t> y(kN);
  for (auto _ : state) qk::cpu::nf4_dequantize_bf16(packed.data(), absmax.data(), kN, kBlock, y.data());
  state.counters["Mparam/s"] = benchmark::Counter(kN / 1e6, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["GB/s"] =
      benchmark::Counter((kN / 2.0 + kN / kBlock * 4.0 + kN * 2.0) / 1e9, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_nf4_dequantize_bf16_cpu)->Unit(benchmark::kMillisecond);

// Not a timing: the storage cost the QLoRA paper quotes (4 bits + 0.127 for double-quantized constants).
void BM_nf4_bits_per_param_llama2_7b(benchmark::State& state) {
  const double in[] = {4096, 4096, 4096, 4096, 4096, 4096, 11008};
  const double out[] = {4096, 4096, 4096, 4096, 11008, 11008, 4096};
  double params = 0;
  for (int i = 0; i < 7; ++i) params += 32 * in[i] * out[i];
  const double blocks = params / 64, nested = blocks / 256;
  const double bits = (params * 4 + blocks * 8 + nested * 32) / params;
  for (auto _ : state) benchmark::DoNotOptimize(bits);
  state.counters["bits/param"] = bits;
}
BENCHMARK(BM_nf4_bits_per_param_llama2_7b)->Iterations(1);

}  // namespace
