// The LoRA linear's forward + backward at T = 4096 against the base GEMMs alone (Y = X W^T and
// dX = dY W, the work a frozen layer needs anyway): Llama-3-8B q/o 4096x4096, gate/up 14336x4096 and
// down 4096x14336 ([out, in]), r = 16 and 64, bf16 and NF4 (double-quantized) base, dropout 0 and 0.05.
// Counters: both times and `overhead` = lora / base - 1. Target: overhead <= 0.15.
// Benchmark args: nf4 (0/1), out, in, r, dropout in percent.
#include <benchmark/benchmark.h>
#include <cublas_v2.h>
#include <cuda_bf16.h>

#include <cstdint>
#include <utility>
#include <vector>

#include "ceiling.h"
#include "qk/lora_linear.h"
#include "qk/matmul.h"
#include "qk/nf4.h"
#include "qk/nf4_double_quant.h"
#include "qk/nf4_gemm.h"
#include "qk/nf4_quantize.h"

namespace qtrain::bench {
namespace {

constexpr int kTokens = 4096;

// Device memory freed at scope exit; filled with a non-zero bf16 pattern (zeros can run faster).
class Buffer {
 public:
  explicit Buffer(size_t bytes, int fill = 0x3c) {
    cudaMalloc(&p_, bytes);
    cudaMemset(p_, fill, bytes);
  }
  ~Buffer() { cudaFree(p_); }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  template <typename T>
  T* as() const {
    return static_cast<T*>(p_);
  }

 private:
  void* p_ = nullptr;
};

void BM_lora_linear(benchmark::State& state) {
  const auto& c = ceiling();
  if (!c.have_device) return state.SkipWithError("no CUDA device");
  const bool nf4 = state.range(0) != 0;
  const int out = static_cast<int>(state.range(1)), in = static_cast<int>(state.range(2)),
            r = static_cast<int>(state.range(3)), t = kTokens;
  const float dropout = static_cast<float>(state.range(4)) / 100.0f;
  const size_t wn = static_cast<size_t>(out) * in, nb = qk::nf4::num_blocks(wn, 64), nn = qk::nf4::num_blocks(nb, 256);

  Buffer x(size_t{2} * t * in), dy(size_t{2} * t * out), y(size_t{2} * t * out), dx(size_t{2} * t * in),
      xa(size_t{2} * t * r), a(size_t{2} * r * in, 0x3a), b(size_t{2} * out * r, 0x3a), da(size_t{4} * r * in, 0),
      db(size_t{4} * out * r, 0), ws(qk::lora_linear_workspace_bytes(t, in, r, dropout));
  // The base: realistic bf16 values, quantized on the device for the NF4 case.
  Buffer w(wn * 2), packed(qk::nf4::packed_bytes(wn)), absmax(nb * 4), q(nb), nested(nn * 4), offset(4);
  {
    std::vector<__nv_bfloat16> host(wn);
    for (size_t i = 0; i < wn; ++i)
      host[i] = __float2bfloat16(0.02f * static_cast<float>(static_cast<int>((i * 2654435761u) % 201) - 100) / 100.0f +
                                 1e-3f);
    cudaMemcpy(w.as<void>(), host.data(), wn * 2, cudaMemcpyHostToDevice);
  }
  qk::Nf4GemmWeight nw;
  if (nf4) {
    qk::nf4_quantize_bf16(w.as<__nv_bfloat16>(), wn, 64, packed.as<uint8_t>(), absmax.as<float>(), nullptr);
    qk::nf4_double_quantize(absmax.as<float>(), nb, q.as<uint8_t>(), nested.as<float>(), offset.as<float>(), nullptr);
    float off = 0;
    cudaMemcpy(&off, offset.as<float>(), 4, cudaMemcpyDeviceToHost);
    nw.packed = packed.as<uint8_t>();
    nw.nested = {q.as<uint8_t>(), nested.as<float>(), off};
    nw.out = out;
    nw.in = in;
  }

  cublasHandle_t h;
  cublasCreate(&h);
  qk::LoraLinearContext ctx;
  ctx.cublas = h;
  ctx.workspace = ws.as<void>();
  ctx.workspace_bytes = qk::lora_linear_workspace_bytes(t, in, r, dropout);
  qk::LoraLinear l;
  l.in = in;
  if (nf4) l.nf4 = nw;
  else l.w = w.as<__nv_bfloat16>();
  l.a = a.as<__nv_bfloat16>();
  l.groups[0] = {b.as<__nv_bfloat16>(), out, r, qk::lora_scale(16.0f, r, false)};
  l.dropout = dropout;
  l.seed = 1;
  qk::LoraGrads grads;
  grads.da = da.as<float>();
  grads.db[0] = db.as<float>();

  const auto* xp = x.as<__nv_bfloat16>();
  const auto* dyp = dy.as<__nv_bfloat16>();
  auto* yp = y.as<__nv_bfloat16>();
  auto* dxp = dx.as<__nv_bfloat16>();
  auto base = [&] {
    if (nf4) {
      qk::nf4_gemm_forward_bf16(ctx.nf4, nw, xp, t, yp, nullptr);
      qk::nf4_gemm_backward_bf16(ctx.nf4, nw, dyp, t, dxp, nullptr);
    } else {
      qk::matmul_bf16(h, {false, true, t, out, in}, 1.0f, xp, l.w, 0.0f, yp, nullptr);
      qk::matmul_bf16(h, {false, false, t, in, out}, 1.0f, dyp, l.w, 0.0f, dxp, nullptr);
    }
  };
  auto lora = [&] {
    qk::lora_linear_forward(ctx, l, xp, t, yp, xa.as<__nv_bfloat16>(), nullptr);
    qk::lora_linear_backward(ctx, l, xp, xa.as<__nv_bfloat16>(), dyp, t, dxp, grads, nullptr);
  };
  double base_s = 0, lora_s = 0;
  for (auto _ : state) {
    base_s = time_per_iter(base, 2, 10);
    lora_s = time_per_iter(lora, 2, 10);
    state.SetIterationTime(lora_s);
  }
  state.counters["base_ms"] = base_s * 1e3;
  state.counters["lora_ms"] = lora_s * 1e3;
  state.counters["overhead"] = lora_s / base_s - 1.0;
  // The base's two GEMMs plus the LoRA products (XA, XA B^T, dXA, dB, dA, dXA A: 6 of 2 T r (in or out)).
  const double flops = 4.0 * t * static_cast<double>(out) * in + 6.0 * t * r * (static_cast<double>(in) + out);
  state.counters["TFLOP/s"] = flops / lora_s / 1e12;
  state.counters["of_peak"] = flops / lora_s / c.bf16_flop_per_s;
  cublasDestroy(h);
}

void shapes(benchmark::internal::Benchmark* b) {
  for (int nf4 : {0, 1})
    for (auto [out, in] : {std::pair{4096, 4096}, std::pair{14336, 4096}, std::pair{4096, 14336}})
      for (int r : {16, 64})
        for (int dropout : {0, 5}) b->Args({nf4, out, in, r, dropout});
}

BENCHMARK(BM_lora_linear)->Apply(shapes)->UseManualTime()->Iterations(1);

}  // namespace
}  // namespace qtrain::bench
