// Kernel 4 of NF4: the GEMMs of a frozen NF4 linear layer, as QLoRA training runs them.
//   forward:  Y[T, out] = X[T, in] * dequant(W)^T
//   backward: dX[T, in] = dY[T, out] * dequant(W)       (the same W, untransposed; dW is never formed)
// W is NF4 [out, in] as qk/nf4.h packs it (blocks along `in` of the row-major weight, first element in
// the high nibble), with fp32 absmax or double-quantized absmax (Nf4Nested). Activations bf16, fp32
// accumulation, Y in bf16 or f32.
//
// Two implementations behind one entry point per direction:
//  - fused: a tensor-core kernel (mma.sync m16n8k16, sm_80 and up) that streams the packed bytes into
//    shared memory with cp.async, dequantizes each W tile once per CTA into a bf16 shared tile and feeds
//    the MMAs with ldmatrix (.trans for the backward product), so the bf16 W never reaches global
//    memory. The dequantized values are bit-identical to qk::nf4_dequantize_bf16's.
//  - dequant_cublas: qk::nf4_dequantize_bf16 into a caller-provided bf16 workspace [out, in], then
//    qk::matmul_bf16(_f32). The baseline, and the fallback for what the fused kernel does not take.
//
// The fused kernel takes blocksize 64, `in` and `out` multiples of 64, any T >= 1, and 16-byte aligned
// x/dy, packed and y/dx (cudaMalloc'd buffers are). Tiles (CTA M x N x K, threads, warp tile, stages):
//   large: 128 x 128 x 32, 256 threads, 64 x 32 per warp, 4 cp.async stages   (T > small_tile_max_tokens)
//   small:  32 x  64 x 32, 128 threads, 32 x 16 per warp, 8 cp.async stages   (T <= small_tile_max_tokens)
// Dynamic shared memory (forward / backward): large 68 / 65 KiB (the launcher opts in past 48 KiB),
// small 38 / 37 KiB; static 64 B (NF4 code table), + 1 KiB with double quantization (8-bit code table).
// ptxas -v, CUDA 13.0, sm_80 (same on sm_86/89): large 124-126 registers (the launch bound allows 128:
// two CTAs per SM), small 72-80; no spills; the double-quantized variants keep a 56-byte stack frame
// (the 8-bit code table is built once per CTA from qk::dynamic_code_signed).
//
// Path choice (nf4_gemm_choose): PROVISIONAL until measured on a GPU (bench/gpu/bench_nf4_gemm.cpp,
// tools/gpu-check). Today: fused whenever it supports the shape and T <= fused_max_tokens (unbounded by
// default), else dequant_cublas. Change Nf4GemmTuning's defaults once the benchmark has numbers.
#pragma once
#include <cstddef>
#include <cstdint>

#include "qk/nf4.h"
#include "qk/nf4_dequantize.h"

namespace qk {

// A frozen NF4 weight [out, in]. Exactly one absmax form: `absmax` (fp32, one per block) or, when
// absmax is null, `nested` (double-quantized).
struct Nf4GemmWeight {
  const uint8_t* packed = nullptr;
  const float* absmax = nullptr;
  Nf4Nested nested{};
  int out = 0, in = 0;
  int blocksize = nf4::kDefaultBlocksize;
  bool is_nested() const { return absmax == nullptr; }
};

enum class Nf4GemmDirection { forward, backward };
enum class Nf4GemmPath { automatic, fused, dequant_cublas };

inline const char* nf4_gemm_path_name(Nf4GemmPath p) {
  return p == Nf4GemmPath::fused ? "fused" : (p == Nf4GemmPath::dequant_cublas ? "dequant_cublas" : "automatic");
}

// The choice table. Provisional numbers (no GPU measurement yet): adjust here once the benchmark runs.
struct Nf4GemmTuning {
  int fused_max_tokens_forward = 1 << 30;   // fused for every T it supports
  int fused_max_tokens_backward = 1 << 30;
  int small_tile_max_tokens = 32;           // the small fused tile up to this T, the large one above
};

// Whether the fused kernel takes this weight shape and blocksize (pointer alignment aside).
inline bool nf4_gemm_fused_supported(int out, int in, int blocksize) {
  return blocksize == 64 && out > 0 && in > 0 && out % 64 == 0 && in % 64 == 0;
}

// The path the automatic choice takes for aligned buffers; never `automatic`.
inline Nf4GemmPath nf4_gemm_choose(Nf4GemmDirection dir, int t, int out, int in, int blocksize,
                                   const Nf4GemmTuning& tuning = {}) {
  const int max_t = dir == Nf4GemmDirection::forward ? tuning.fused_max_tokens_forward
                                                     : tuning.fused_max_tokens_backward;
  return nf4_gemm_fused_supported(out, in, blocksize) && t <= max_t ? Nf4GemmPath::fused
                                                                    : Nf4GemmPath::dequant_cublas;
}

// Bytes of bf16 workspace the dequant_cublas path needs: the whole dequantized W.
inline size_t nf4_gemm_workspace_bytes(int out, int in) {
  return static_cast<size_t>(out) * static_cast<size_t>(in) * 2;
}

}  // namespace qk

namespace qk::cpu {
// Reference: the weight dequantized to bf16 (qk::cpu::nf4_dequantize_bf16), then qk::cpu::matmul_bf16
// or matmul_bf16_f32. Any blocksize nf4 accepts; bf16 as raw bits.
void nf4_gemm_forward_bf16(const Nf4GemmWeight& w, const uint16_t* x, int t, uint16_t* y);
void nf4_gemm_forward_f32(const Nf4GemmWeight& w, const uint16_t* x, int t, float* y);
void nf4_gemm_backward_bf16(const Nf4GemmWeight& w, const uint16_t* dy, int t, uint16_t* dx);
void nf4_gemm_backward_f32(const Nf4GemmWeight& w, const uint16_t* dy, int t, float* dx);
}  // namespace qk::cpu

#if __has_include(<cuda_runtime.h>)
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
namespace qk {

struct Nf4GemmContext {
  cublasHandle_t cublas = nullptr;  // the fallback's; may stay null where only the fused path runs
  void* workspace = nullptr;        // >= nf4_gemm_workspace_bytes(out, in) for the fallback, 16-byte aligned
  size_t workspace_bytes = 0;
  Nf4GemmPath path = Nf4GemmPath::automatic;  // force a path (tests, benchmarks); forcing `fused` on an
                                              // unsupported shape or misaligned buffer is an error
  Nf4GemmTuning tuning{};
};

// Each returns the path that ran. t >= 0 (t = 0 does nothing); out and in > 0.
Nf4GemmPath nf4_gemm_forward_bf16(const Nf4GemmContext& ctx, const Nf4GemmWeight& w, const __nv_bfloat16* x, int t,
                                  __nv_bfloat16* y, cudaStream_t stream);
Nf4GemmPath nf4_gemm_forward_f32(const Nf4GemmContext& ctx, const Nf4GemmWeight& w, const __nv_bfloat16* x, int t,
                                 float* y, cudaStream_t stream);
Nf4GemmPath nf4_gemm_backward_bf16(const Nf4GemmContext& ctx, const Nf4GemmWeight& w, const __nv_bfloat16* dy,
                                   int t, __nv_bfloat16* dx, cudaStream_t stream);
Nf4GemmPath nf4_gemm_backward_f32(const Nf4GemmContext& ctx, const Nf4GemmWeight& w, const __nv_bfloat16* dy, int t,
                                  float* dx, cudaStream_t stream);

}  // namespace qk
#endif
