// The baseline the flash-attention benchmark is read against: attention as cuBLAS GEMMs plus a
// softmax kernel, one head at a time (S = Q K^T / sqrt(d) in bf16, causal softmax in place, O = P V),
// on one sequence of length T with Llama-3-8B heads (32 query, 8 KV, d = 128). It writes the
// [T x T] scores to memory, which is what flash attention avoids. TFLOP/s use the same causal count
// as bench_attention.cpp (4 T^2 d heads / 2), so the two rates compare times for the same result.
#include <benchmark/benchmark.h>
#include <cublas_v2.h>
#include <cuda_bf16.h>

#include <cmath>

#include "ceiling.h"
#include "qk/cross_entropy.h"
#include "qk/cuda_check.h"
#include "qk/matmul.h"
#include "qk/simt.h"

namespace qtrain::bench {
namespace {

constexpr int kHeads = 32, kKvHeads = 8, kHeadDim = 128, kThreads = 256;

// Row r of S keeps columns 0..r: p = exp(s - max) / sum over them; the masked columns become 0.
__global__ void causal_softmax_kernel(__nv_bfloat16* s, int t) {
  __shared__ qk::SoftmaxStat stats[kThreads];
  __shared__ float lse;
  const int r = blockIdx.x;
  __nv_bfloat16* row = s + static_cast<size_t>(r) * t;
  qk::SoftmaxStat st{-INFINITY, 0.0f};
  for (int j = threadIdx.x; j <= r; j += kThreads) st = qk::softmax_stat_add(st, __bfloat162float(row[j]));
  stats[threadIdx.x] = st;
  __syncthreads();
  if (threadIdx.x == 0) {
    qk::SoftmaxStat all = stats[0];
    for (int i = 1; i < kThreads; ++i) all = qk::softmax_stat_merge(all, stats[i]);
    lse = all.max + logf(all.sum);
  }
  __syncthreads();
  for (int j = threadIdx.x; j < t; j += kThreads)
    row[j] = __float2bfloat16_rn(j <= r ? expf(__bfloat162float(row[j]) - lse) : 0.0f);
}

void BM_attention_baseline_forward(benchmark::State& state) {
  const auto& c = ceiling();
  if (!c.have_device) return state.SkipWithError("no CUDA device");
  const int t = static_cast<int>(state.range(0));
  const size_t nq = static_cast<size_t>(kHeads) * t * kHeadDim, nk = static_cast<size_t>(kKvHeads) * t * kHeadDim;
  __nv_bfloat16 *q = nullptr, *k = nullptr, *v = nullptr, *o = nullptr, *s = nullptr;
  cudaMalloc(&q, nq * 2);
  cudaMalloc(&o, nq * 2);
  cudaMalloc(&k, nk * 2);
  cudaMalloc(&v, nk * 2);
  if (cudaMalloc(&s, static_cast<size_t>(t) * t * 2) != cudaSuccess) {
    (void)cudaGetLastError();
    return state.SkipWithError("scores do not fit");
  }
  for (auto* p : {q, k, v}) cudaMemset(p, 0x3c, (p == q ? nq : nk) * 2);  // non-zero, finite
  cublasHandle_t h;
  cublasCreate(&h);
  const float scale = 1.0f / std::sqrt(static_cast<float>(kHeadDim));
  auto run = [&] {
    for (int head = 0; head < kHeads; ++head) {
      const int kv = head / (kHeads / kKvHeads);
      const size_t qo = static_cast<size_t>(head) * t * kHeadDim, ko = static_cast<size_t>(kv) * t * kHeadDim;
      qk::matmul_bf16(h, qk::GemmShape{false, true, t, t, kHeadDim}, scale, q + qo, k + ko, 0.0f, s, nullptr);
      QK_LAUNCH(causal_softmax_kernel, dim3(t), dim3(kThreads), 0, nullptr, s, t);
      qk::matmul_bf16(h, qk::GemmShape{false, false, t, kHeadDim, t}, 1.0f, s, v + ko, 0.0f, o + qo, nullptr);
    }
  };
  double sec = 0;
  for (auto _ : state) {
    sec = time_per_iter(run, 1, 3);
    state.SetIterationTime(sec);
  }
  const double flops = 4.0 * t * static_cast<double>(t) * kHeadDim * kHeads / 2;
  state.counters["TFLOP/s"] = flops / sec / 1e12;
  state.counters["of_peak"] = flops / sec / c.bf16_flop_per_s;
  cublasDestroy(h);
  for (void* p : {static_cast<void*>(q), static_cast<void*>(k), static_cast<void*>(v), static_cast<void*>(o),
                  static_cast<void*>(s)})
    cudaFree(p);
}
BENCHMARK(BM_attention_baseline_forward)
    ->Arg(512)
    ->Arg(2048)
    ->Arg(8192)
    ->Arg(16384)
    ->UseManualTime()
    ->Iterations(2);

}  // namespace
}  // namespace qtrain::bench
