// The NF4 GEMM of a frozen QLoRA linear layer at Llama-2-7B / Llama-3-8B layer shapes, forward
// (Y = X W^T) and backward (dX = dY W), in three forms: the fused kernel, dequantize + cuBLAS (the
// fallback), and cuBLAS on a bf16 W (the ceiling the fused kernel is held to). TFLOP/s and the fraction
// of the card's dense bf16 rate. Targets (qk/nf4_gemm.h's choice table is tuned from these): at
// T >= 512 the fused kernel within 10% of cublas_bf16 and faster than dequant_cublas.
// Benchmark args: backward (0/1), out, in, T.
#include <benchmark/benchmark.h>
#include <cublas_v2.h>
#include <cuda_bf16.h>

#include <map>
#include <memory>
#include <utility>
#include <vector>

#include "ceiling.h"
#include "qk/matmul.h"
#include "qk/nf4.h"
#include "qk/nf4_double_quant.h"
#include "qk/nf4_gemm.h"
#include "qk/nf4_quantize.h"

namespace qtrain::bench {
namespace {

// A weight quantized on the device from realistic bf16 values, double-quantized as QLoRA stores it;
// the bf16 copy stays for the cuBLAS ceiling. One per shape for the whole run.
struct DeviceWeight {
  __nv_bfloat16* bf16 = nullptr;
  uint8_t *packed = nullptr, *q = nullptr;
  float *absmax = nullptr, *nested_absmax = nullptr, *offset = nullptr;
  qk::Nf4GemmWeight w;

  DeviceWeight(int out, int in) {
    const size_t n = static_cast<size_t>(out) * in, nb = qk::nf4::num_blocks(n, 64),
                 nn = qk::nf4::num_blocks(nb, 256);
    cudaMalloc(&bf16, n * 2);
    cudaMalloc(&packed, qk::nf4::packed_bytes(n));
    cudaMalloc(&absmax, nb * 4);
    cudaMalloc(&q, nb);
    cudaMalloc(&nested_absmax, nn * 4);
    cudaMalloc(&offset, 4);
    std::vector<__nv_bfloat16> host(n);
    for (size_t i = 0; i < n; ++i)
      host[i] = __float2bfloat16(0.02f * static_cast<float>(static_cast<int>((i * 2654435761u) % 201) - 100) / 100.0f +
                                 1e-3f);
    cudaMemcpy(bf16, host.data(), n * 2, cudaMemcpyHostToDevice);
    qk::nf4_quantize_bf16(bf16, n, 64, packed, absmax, nullptr);
    qk::nf4_double_quantize(absmax, nb, q, nested_absmax, offset, nullptr);
    float off = 0;
    cudaMemcpy(&off, offset, 4, cudaMemcpyDeviceToHost);
    w.packed = packed;
    w.nested = {q, nested_absmax, off};
    w.out = out;
    w.in = in;
  }
  ~DeviceWeight() {
    cudaFree(bf16);
    cudaFree(packed);
    cudaFree(absmax);
    cudaFree(q);
    cudaFree(nested_absmax);
    cudaFree(offset);
  }
  DeviceWeight(const DeviceWeight&) = delete;
  DeviceWeight& operator=(const DeviceWeight&) = delete;
};

const DeviceWeight& weight(int out, int in) {
  static std::map<std::pair<int, int>, std::unique_ptr<DeviceWeight>> cache;
  auto& slot = cache[{out, in}];
  if (!slot) slot = std::make_unique<DeviceWeight>(out, in);
  return *slot;
}

enum class Impl { fused, dequant_cublas, cublas_bf16 };

void BM_nf4_gemm(benchmark::State& state, Impl impl) {
  const auto& c = ceiling();
  if (!c.have_device) return state.SkipWithError("no CUDA device");
  const bool backward = state.range(0) != 0;
  const int out = static_cast<int>(state.range(1)), in = static_cast<int>(state.range(2)),
            t = static_cast<int>(state.range(3));
  const DeviceWeight& dw = weight(out, in);
  const int k = backward ? out : in, n = backward ? in : out;
  __nv_bfloat16 *a = nullptr, *y = nullptr;
  void* ws = nullptr;
  cudaMalloc(&a, size_t{2} * t * k);
  cudaMalloc(&y, size_t{2} * t * n);
  cudaMemset(a, 0x3c, size_t{2} * t * k);  // non-zero activations: zeros can run faster than real data
  cublasHandle_t h;
  cublasCreate(&h);
  qk::Nf4GemmContext ctx;
  ctx.cublas = h;
  if (impl == Impl::dequant_cublas) {
    ctx.workspace_bytes = qk::nf4_gemm_workspace_bytes(out, in);
    cudaMalloc(&ws, ctx.workspace_bytes);
    ctx.workspace = ws;
  }
  ctx.path = impl == Impl::fused ? qk::Nf4GemmPath::fused : qk::Nf4GemmPath::dequant_cublas;
  const qk::GemmShape s{false, !backward, t, n, k};
  auto step = [&] {
    if (impl == Impl::cublas_bf16) qk::matmul_bf16(h, s, 1.0f, a, dw.bf16, 0.0f, y, nullptr);
    else if (backward) qk::nf4_gemm_backward_bf16(ctx, dw.w, a, t, y, nullptr);
    else qk::nf4_gemm_forward_bf16(ctx, dw.w, a, t, y, nullptr);
  };
  double sec = 0;
  for (auto _ : state) {
    sec = time_per_iter(step, 2, 10);
    state.SetIterationTime(sec);
  }
  const double flops = 2.0 * t * static_cast<double>(n) * k / sec;
  state.counters["TFLOP/s"] = flops / 1e12;
  state.counters["of_peak"] = flops / c.bf16_flop_per_s;
  // At small T the op is bound by reading W: NF4 bytes (or bf16 for the ceiling) per second.
  const double w_bytes = impl == Impl::cublas_bf16 ? 2.0 * out * in : 0.5 * out * in;
  state.counters["W_GB/s"] = w_bytes / sec / 1e9;
  cublasDestroy(h);
  cudaFree(a);
  cudaFree(y);
  cudaFree(ws);
}

void shapes(benchmark::internal::Benchmark* b) {
  // [out, in]: q/o 4096x4096, gate/up 11008x4096 (7B) and 14336x4096 (8B), down 4096x11008 and 4096x14336.
  const std::vector<std::pair<int, int>> layers = {{4096, 4096}, {11008, 4096}, {4096, 11008}, {14336, 4096},
                                                   {4096, 14336}};
  for (int backward : {0, 1})
    for (const auto& [out, in] : layers)
      for (int t : {1, 16, 512, 2048, 8192}) b->Args({backward, out, in, t});
}

void BM_nf4_gemm_fused(benchmark::State& s) { BM_nf4_gemm(s, Impl::fused); }
void BM_nf4_gemm_dequant_cublas(benchmark::State& s) { BM_nf4_gemm(s, Impl::dequant_cublas); }
void BM_nf4_gemm_cublas_bf16(benchmark::State& s) { BM_nf4_gemm(s, Impl::cublas_bf16); }
// One timed repetition each: time_per_iter already averages 10 launches, and 150 cases must fit
// tools/gpu-check's budget.
BENCHMARK(BM_nf4_gemm_fused)->Apply(shapes)->UseManualTime()->Iterations(1);
BENCHMARK(BM_nf4_gemm_dequant_cublas)->Apply(shapes)->UseManualTime()->Iterations(1);
BENCHMARK(BM_nf4_gemm_cublas_bf16)->Apply(shapes)->UseManualTime()->Iterations(1);

}  // namespace
}  // namespace qtrain::bench
