// The fused NF4 GEMM (forward Y = X W^T and backward dX = dY W) and the per-shape choice between it and
// dequantize + cuBLAS (qk/nf4_gemm.h has the contract and the choice table).
//
// One kernel template serves both directions. Per k step of 32, cp.async brings an activation tile
// [BM x 32] and the matching packed-NF4 sub-tile of W (in W's own [out, in] layout: [BN rows x 32
// cols] forward, [32 rows x BN cols] backward) into a ring of 4 or 8 stages; each thread dequantizes 16
// elements of the W sub-tile (one 8-byte shared read, 16 table lookups and fp32 products, one bf16
// rounding each: the same bits as nf4_dequantize_bf16) into a double-buffered bf16 tile, and the warps
// feed mma.sync from it with ldmatrix (non-transposed forward, .trans backward, since backward needs W
// untransposed as the col-major B operand). Dequantizing step k+1 and the MMAs of step k share one
// barrier interval, so warps overlap the ALU work of one with the tensor work of the other; one
// __syncthreads per k step. The absmax of step k+1 is fetched from global memory before the MMAs of
// step k and consumed after them, so its latency hides behind them.
// Why dequantize into shared memory rather than straight into B fragments: with a 2 x 4 warp grid every
// W element would be dequantized twice (once per warp row); the shared tile does it once per CTA.
//
// ptxas (sm_80, CUDA 13.0, -Xptxas -v): registers and shared memory are listed in qk/nf4_gemm.h.
#include <cuda_bf16.h>

#include <cstdint>
#include <cstring>

#include "qk/cuda_check.h"
#include "qk/matmul.h"
#include "qk/nf4.h"
#include "qk/nf4_dequantize.h"
#include "qk/nf4_gemm.h"
#include "qk/nvtx.h"
#include "qk/simt.h"

namespace qk {
namespace {

constexpr int kBK = 32;
constexpr int kPad = 8;  // bf16 elements (16 bytes) of row padding: ldmatrix rows land in distinct banks
constexpr int kFusedBlocksize = 64;

template <int BM, int BN, int Warps_m, int Warps_n, int Stages, int Min_blocks>
struct Tile {
  static constexpr int kBM = BM, kBN = BN, kWarpsN = Warps_n, kStages = Stages, kMinBlocks = Min_blocks;
  static constexpr int kThreads = 32 * Warps_m * Warps_n;
  static constexpr int kWarpM = BM / Warps_m, kWarpN = BN / Warps_n;
  static constexpr int kMi = kWarpM / 16, kNi = kWarpN / 8;
  static_assert(kWarpM % 16 == 0 && kWarpN % 16 == 0, "ldmatrix_x4 loads B fragments in pairs of n8 tiles");
  static_assert(Stages >= 3, "the main loop waits for step k + 1 while step k + 2 may be in flight");
};
// At small T the kernel streams W and little else: the small tile keeps more k steps in flight (8
// stages of 1 KiB of packed W) so that more bytes are outstanding per SM.
using LargeTile = Tile<128, 128, 2, 4, 4, 2>;
using SmallTile = Tile<32, 64, 1, 4, 8, 4>;

// Shared-memory geometry of one tile and direction. The W sub-tile keeps W's own orientation:
// forward rows = n (out) and cols = k (in); backward rows = k (out) and cols = n (in).
template <typename TileT, bool Is_backward>
struct Layout {
  static constexpr int kWRows = Is_backward ? kBK : TileT::kBN;
  static constexpr int kWCols = Is_backward ? TileT::kBN : kBK;
  static constexpr int kWpRowBytes = kWCols / 2;
  static constexpr int kWbLd = kWCols + kPad;
  static constexpr int kXLd = kBK + kPad;
  static constexpr int kXStage = TileT::kBM * kXLd;     // bf16 elements
  static constexpr int kWpStage = kWRows * kWpRowBytes;  // bytes
  static constexpr int kWbStage = kWRows * kWbLd;        // bf16 elements
  static constexpr int kChunksPerRow = kWCols / 16;      // 16-element dequantization chunks
  static constexpr size_t kSmemBytes =
      size_t{TileT::kStages} * kXStage * 2 + size_t{2} * kWbStage * 2 + size_t{TileT::kStages} * kWpStage;
  static_assert(kWRows * kWCols == 16 * TileT::kThreads, "one 16-element chunk per thread per k step");
  static_assert(kWpRowBytes % 16 == 0, "whole 16-byte cp.async chunks per W row");
};

static_assert(Layout<LargeTile, false>::kSmemBytes == 68 * 1024 && Layout<LargeTile, true>::kSmemBytes == 65 * 1024 &&
                  Layout<SmallTile, false>::kSmemBytes == 38 * 1024 && Layout<SmallTile, true>::kSmemBytes == 37 * 1024,
              "qk/nf4_gemm.h quotes these sizes");

struct Params {
  const __nv_bfloat16* a;  // x [t, in] forward, dy [t, out] backward
  const uint8_t* packed;
  const float* absmax;
  Nf4Nested nested;
  void* y;  // [t, n]
  int t, n, k;  // the GEMM: [t, k] x [k, n]
  int out, in;  // W
};

// What one thread fetches from global memory for its chunk's absmax, before it can combine it.
struct AbsmaxRaw {
  float a = 0.0f;  // fp32 absmax, or the nested absmax of its 256-block group
  uint32_t q = 0;  // the 8-bit code (double-quantized only)
};

template <typename TileT, bool Is_backward>
__device__ __forceinline__ void chunk_of_thread(int tid, int& row, int& ch) {
  using L = Layout<TileT, Is_backward>;
  if constexpr (L::kChunksPerRow == 2) {
    // Eight consecutive threads take eight rows of one column half, so that their 16-byte stores into
    // the padded tile fall in distinct banks (the rows are 80 bytes apart).
    row = (tid / 16) * 8 + tid % 8;
    ch = (tid / 8) % 2;
  } else {
    row = tid / L::kChunksPerRow;
    ch = tid % L::kChunksPerRow;
  }
}

// W coordinates of the thread's chunk at k step kt.
template <typename TileT, bool Is_backward>
__device__ __forceinline__ void chunk_coords(int n0, int kt, int row, int ch, int& wrow, int& wcol) {
  if constexpr (Is_backward) {
    wrow = kt * kBK + row;
    wcol = n0 + ch * 16;
  } else {
    wrow = n0 + row;
    wcol = kt * kBK + ch * 16;
  }
}

template <bool Is_nested>
__device__ __forceinline__ AbsmaxRaw fetch_absmax(const Params& p, int wrow, int wcol) {
  AbsmaxRaw r;
  if (wrow >= p.out || wcol >= p.in) return r;  // a zero-filled chunk past the edge
  const size_t blk = static_cast<size_t>(wrow) * static_cast<size_t>(p.in / kFusedBlocksize) +
                     static_cast<size_t>(wcol / kFusedBlocksize);
  if constexpr (Is_nested) {
    r.q = __ldg(p.nested.q + blk);
    r.a = __ldg(p.nested.nested_absmax + blk / nf4::kNestedBlocksize);
  } else {
    r.a = __ldg(p.absmax + blk);
  }
  return r;
}

template <bool Is_nested>
__device__ __forceinline__ float combine_absmax(const AbsmaxRaw& r, const float* code8, float offset) {
  if constexpr (Is_nested) {
    // Past the edge this is `offset`: finite, and it only reaches outputs that are never stored.
    return nf4::double_dequantize_value(code8[r.q], r.a, offset);
  } else {
    return r.a;
  }
}

template <typename TileT, bool Is_backward>
__device__ __forceinline__ void load_stage(const Params& p, __nv_bfloat16* xs, uint8_t* wp, int m0, int n0, int kt,
                                           int tid) {
  using L = Layout<TileT, Is_backward>;
  const int k0 = kt * kBK;
  constexpr int kXChunks = TileT::kBM * (kBK / 8);
#pragma unroll
  for (int c = tid; c < kXChunks; c += TileT::kThreads) {
    const int r = c / (kBK / 8), kc = (c % (kBK / 8)) * 8;
    __nv_bfloat16* dst = xs + r * L::kXLd + kc;
    if (m0 + r < p.t)
      cp_async_16(dst, p.a + static_cast<size_t>(m0 + r) * p.k + k0 + kc);
    else
      cp_async_16_zfill(dst, p.a, false);
  }
  constexpr int kRowChunks = L::kWpRowBytes / 16;
  constexpr int kWChunks = L::kWRows * kRowChunks;
#pragma unroll
  for (int c = tid; c < kWChunks; c += TileT::kThreads) {
    const int r = c / kRowChunks, b = (c % kRowChunks) * 16;
    const int wrow = Is_backward ? k0 + r : n0 + r;
    const int wcol = (Is_backward ? n0 : k0) + 2 * b;
    uint8_t* dst = wp + r * L::kWpRowBytes + b;
    if (wrow < p.out && wcol < p.in)
      cp_async_16(dst, p.packed + (static_cast<size_t>(wrow) * p.in + wcol) / 2);
    else
      cp_async_16_zfill(dst, p.packed, false);
  }
}

// 16 packed nibbles of the thread's chunk -> 16 bf16 in the dequantized tile.
template <typename TileT, bool Is_backward>
__device__ __forceinline__ void dequantize_chunk(const uint8_t* wp, __nv_bfloat16* wb, const float* code4, int row,
                                                 int ch, float am) {
  using L = Layout<TileT, Is_backward>;
  const uint2 in = *reinterpret_cast<const uint2*>(wp + row * L::kWpRowBytes + ch * 8);
  const uint32_t w[2] = {in.x, in.y};
  uint32_t out[8];
#pragma unroll
  for (int j = 0; j < 8; ++j) {
    const uint8_t b = static_cast<uint8_t>(w[j / 4] >> (8 * (j % 4)));
    const __nv_bfloat162 h = __floats2bfloat162_rn(nf4::mul_rn(code4[nf4::high_nibble(b)], am),
                                                   nf4::mul_rn(code4[nf4::low_nibble(b)], am));
    memcpy(&out[j], &h, sizeof(uint32_t));
  }
  uint4* dst = reinterpret_cast<uint4*>(wb + row * L::kWbLd + ch * 16);
  dst[0] = make_uint4(out[0], out[1], out[2], out[3]);
  dst[1] = make_uint4(out[4], out[5], out[6], out[7]);
}

template <typename OutT>
__device__ __forceinline__ void store_pair(OutT* y, size_t idx, float v0, float v1) {
  if constexpr (sizeof(OutT) == 4) {
    *reinterpret_cast<float2*>(y + idx) = make_float2(v0, v1);
  } else {
    *reinterpret_cast<__nv_bfloat162*>(y + idx) = __floats2bfloat162_rn(v0, v1);
  }
}

// Registers and shared memory per tile: qk/nf4_gemm.h (ptxas -v, sm_80/86/89, no spills).
template <typename TileT, bool Is_backward, bool Is_nested, typename OutT>
__global__ void QK_LAUNCH_BOUNDS(TileT::kThreads, TileT::kMinBlocks) nf4_gemm_kernel(const Params p) {
  using L = Layout<TileT, Is_backward>;
  constexpr int kStages = TileT::kStages;
  __shared__ float code4[16];
  __shared__ float code8[Is_nested ? 256 : 1];
  QK_DYNAMIC_SHARED(__nv_bfloat16, smem);
  __nv_bfloat16* xs = smem;                                                       // [kStages][BM][kXLd]
  __nv_bfloat16* wb = xs + kStages * L::kXStage;                                  // [2][kWRows][kWbLd]
  uint8_t* wp = reinterpret_cast<uint8_t*>(wb + 2 * L::kWbStage);                 // [kStages][kWRows][bytes]

  const int tid = static_cast<int>(threadIdx.x);
  const int lane = tid % 32, warp = tid / 32;
  const int m0 = static_cast<int>(blockIdx.y) * TileT::kBM, n0 = static_cast<int>(blockIdx.x) * TileT::kBN;
  const int wm = (warp / TileT::kWarpsN) * TileT::kWarpM, wn = (warp % TileT::kWarpsN) * TileT::kWarpN;
  const int ktiles = p.k / kBK;

  if (tid == 0) {
    // Constant indices (unrolled): a dynamic index into code_value's table would put it on the stack.
#pragma unroll
    for (int i = 0; i < 16; ++i) code4[i] = nf4::code_value(static_cast<unsigned>(i));
  }
  if constexpr (Is_nested)
    for (int i = tid; i < 256; i += TileT::kThreads) code8[i] = dynamic_code_signed(i);

#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < ktiles) load_stage<TileT, Is_backward>(p, xs + s * L::kXStage, wp + s * L::kWpStage, m0, n0, s, tid);
    cp_async_commit();
  }

  int row, ch;
  chunk_of_thread<TileT, Is_backward>(tid, row, ch);
  int wrow, wcol;
  chunk_coords<TileT, Is_backward>(n0, 0, row, ch, wrow, wcol);
  AbsmaxRaw raw = fetch_absmax<Is_nested>(p, wrow, wcol);

  cp_async_wait<kStages - 2>();
  __syncthreads();  // step 0's bytes and the code tables are visible to every thread
  dequantize_chunk<TileT, Is_backward>(wp, wb, code4, row, ch, combine_absmax<Is_nested>(raw, code8, p.nested.offset));

  float acc[TileT::kMi][TileT::kNi][4] = {};
  for (int kt = 0; kt < ktiles; ++kt) {
    cp_async_wait<kStages - 3>();  // step kt + 1 has landed (this thread's copies)
    // Publishes step kt + 1's bytes and the tile dequantized last round; frees the ring slot of step
    // kt - 1 and the dequantized buffer the MMAs of step kt - 1 read.
    __syncthreads();
    if (kt + kStages - 1 < ktiles) {
      const int s = (kt + kStages - 1) % kStages;
      load_stage<TileT, Is_backward>(p, xs + s * L::kXStage, wp + s * L::kWpStage, m0, n0, kt + kStages - 1, tid);
    }
    cp_async_commit();
    const bool has_next = kt + 1 < ktiles;
    if (has_next) {
      chunk_coords<TileT, Is_backward>(n0, kt + 1, row, ch, wrow, wcol);
      raw = fetch_absmax<Is_nested>(p, wrow, wcol);
    }

    const __nv_bfloat16* xs_s = xs + (kt % kStages) * L::kXStage;
    const __nv_bfloat16* wb_s = wb + (kt & 1) * L::kWbStage;
#pragma unroll
    for (int ks = 0; ks < kBK; ks += 16) {
      uint32_t fa[TileT::kMi][4], fb[TileT::kNi][2];
#pragma unroll
      for (int mi = 0; mi < TileT::kMi; ++mi)
        ldmatrix_x4(fa[mi], xs_s + (wm + mi * 16 + lane % 16) * L::kXLd + ks + (lane / 16) * 8);
#pragma unroll
      for (int nj = 0; nj < TileT::kNi / 2; ++nj) {
        uint32_t r[4];
        if constexpr (Is_backward)
          ldmatrix_x4_trans(r, wb_s + (ks + ((lane / 8) % 2) * 8 + lane % 8) * L::kWbLd + wn + nj * 16 +
                                   (lane / 16) * 8);
        else
          ldmatrix_x4(r, wb_s + (wn + nj * 16 + (lane / 16) * 8 + lane % 8) * L::kWbLd + ks + ((lane / 8) % 2) * 8);
        fb[2 * nj][0] = r[0];
        fb[2 * nj][1] = r[1];
        fb[2 * nj + 1][0] = r[2];
        fb[2 * nj + 1][1] = r[3];
      }
#pragma unroll
      for (int mi = 0; mi < TileT::kMi; ++mi)
#pragma unroll
        for (int ni = 0; ni < TileT::kNi; ++ni) mma_m16n8k16_bf16(acc[mi][ni], fa[mi], fb[ni], acc[mi][ni]);
    }

    if (has_next)
      dequantize_chunk<TileT, Is_backward>(wp + ((kt + 1) % kStages) * L::kWpStage, wb + ((kt + 1) & 1) * L::kWbStage,
                                           code4, row, ch, combine_absmax<Is_nested>(raw, code8, p.nested.offset));
  }
  cp_async_wait_all();  // nothing is in flight (the tail groups are empty), but leave no group behind

  OutT* y = static_cast<OutT*>(p.y);
  const int g = lane / 4, t4 = lane % 4;
#pragma unroll
  for (int mi = 0; mi < TileT::kMi; ++mi)
#pragma unroll
    for (int ni = 0; ni < TileT::kNi; ++ni) {
      const int col = n0 + wn + ni * 8 + 2 * t4;
      if (col >= p.n) continue;
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int r = m0 + wm + mi * 16 + g + 8 * h;
        if (r < p.t) store_pair(y, static_cast<size_t>(r) * p.n + col, acc[mi][ni][2 * h], acc[mi][ni][2 * h + 1]);
      }
    }
}

bool aligned16(const void* ptr) { return reinterpret_cast<uintptr_t>(ptr) % 16 == 0; }

template <typename TileT, bool Is_backward, bool Is_nested, typename OutT>
void launch_tile(const Params& p, cudaStream_t stream) {
  using L = Layout<TileT, Is_backward>;
  if constexpr (L::kSmemBytes > 48 * 1024) {
    // Per call rather than once: the attribute belongs to the current device, which may change.
    const auto kernel = nf4_gemm_kernel<TileT, Is_backward, Is_nested, OutT>;
    QK_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                       static_cast<int>(L::kSmemBytes)));
  }
  const dim3 grid(static_cast<unsigned>((p.n + TileT::kBN - 1) / TileT::kBN),
                  static_cast<unsigned>((p.t + TileT::kBM - 1) / TileT::kBM));
  QK_LAUNCH((nf4_gemm_kernel<TileT, Is_backward, Is_nested, OutT>), grid, dim3(TileT::kThreads), L::kSmemBytes,
            stream, p);
}

template <bool Is_backward, typename OutT>
void launch_fused(const Params& p, bool nested, bool small, cudaStream_t stream) {
  if (small) {
    if (nested) launch_tile<SmallTile, Is_backward, true, OutT>(p, stream);
    else launch_tile<SmallTile, Is_backward, false, OutT>(p, stream);
  } else {
    if (nested) launch_tile<LargeTile, Is_backward, true, OutT>(p, stream);
    else launch_tile<LargeTile, Is_backward, false, OutT>(p, stream);
  }
}

template <bool Is_backward, typename OutT>
Nf4GemmPath run(const Nf4GemmContext& ctx, const Nf4GemmWeight& w, const __nv_bfloat16* a, int t, OutT* y,
                cudaStream_t stream) {
  QK_REQUIRE(t >= 0 && w.out > 0 && w.in > 0, "NF4 GEMM needs t >= 0 and a non-empty weight");
  QK_REQUIRE(nf4::valid_blocksize(w.blocksize), "NF4 blocksize must be a power of two in 32..4096");
  QK_REQUIRE(w.packed != nullptr, "null pointer");
  QK_REQUIRE(w.absmax != nullptr || (w.nested.q != nullptr && w.nested.nested_absmax != nullptr),
             "NF4 weight without absmax");
  const Nf4GemmDirection dir = Is_backward ? Nf4GemmDirection::backward : Nf4GemmDirection::forward;
  const bool aligned = aligned16(a) && aligned16(w.packed) && aligned16(y);
  Nf4GemmPath path = ctx.path;
  if (path == Nf4GemmPath::automatic) {
    path = nf4_gemm_choose(dir, t, w.out, w.in, w.blocksize, ctx.tuning);
    if (path == Nf4GemmPath::fused && !aligned) path = Nf4GemmPath::dequant_cublas;
  }
  if (t == 0) return path;
  QK_REQUIRE(a != nullptr && y != nullptr, "null pointer");
  const int n = Is_backward ? w.in : w.out, k = Is_backward ? w.out : w.in;

  if (path == Nf4GemmPath::fused) {
    QK_REQUIRE(nf4_gemm_fused_supported(w.out, w.in, w.blocksize),
               "fused NF4 GEMM needs blocksize 64 and out, in multiples of 64");
    QK_REQUIRE(aligned, "fused NF4 GEMM needs 16-byte aligned activations, packed weight and output");
    const Params p{a, w.packed, w.absmax, w.nested, y, t, n, k, w.out, w.in};
    launch_fused<Is_backward, OutT>(p, w.is_nested(), t <= ctx.tuning.small_tile_max_tokens, stream);
    QK_CHECK_LAUNCH();
    return path;
  }

  QK_REQUIRE(ctx.cublas != nullptr, "the dequantize + cuBLAS NF4 GEMM needs a cuBLAS handle");
  QK_REQUIRE(ctx.workspace != nullptr && ctx.workspace_bytes >= nf4_gemm_workspace_bytes(w.out, w.in),
             "the dequantize + cuBLAS NF4 GEMM needs a bf16 workspace of out * in elements");
  auto* wd = static_cast<__nv_bfloat16*>(ctx.workspace);
  const size_t numel = static_cast<size_t>(w.out) * static_cast<size_t>(w.in);
  if (w.is_nested()) nf4_dequantize_bf16(w.packed, w.nested, numel, w.blocksize, wd, stream);
  else nf4_dequantize_bf16(w.packed, w.absmax, numel, w.blocksize, wd, stream);
  // Forward: Y = X Wd^T (Wd stored [out, in] = [n, k]); backward: dX = dY Wd (Wd stored [k, n]).
  const GemmShape s{false, !Is_backward, t, n, k};
  if constexpr (sizeof(OutT) == 4) matmul_bf16_f32(ctx.cublas, s, 1.0f, a, wd, 0.0f, y, stream);
  else matmul_bf16(ctx.cublas, s, 1.0f, a, wd, 0.0f, y, stream);
  QK_CHECK_LAUNCH();
  return path;
}

}  // namespace

Nf4GemmPath nf4_gemm_forward_bf16(const Nf4GemmContext& ctx, const Nf4GemmWeight& w, const __nv_bfloat16* x, int t,
                                  __nv_bfloat16* y, cudaStream_t stream) {
  QK_NVTX_FUNC();
  return run<false>(ctx, w, x, t, y, stream);
}
Nf4GemmPath nf4_gemm_forward_f32(const Nf4GemmContext& ctx, const Nf4GemmWeight& w, const __nv_bfloat16* x, int t,
                                 float* y, cudaStream_t stream) {
  QK_NVTX_FUNC();
  return run<false>(ctx, w, x, t, y, stream);
}
Nf4GemmPath nf4_gemm_backward_bf16(const Nf4GemmContext& ctx, const Nf4GemmWeight& w, const __nv_bfloat16* dy,
                                   int t, __nv_bfloat16* dx, cudaStream_t stream) {
  QK_NVTX_FUNC();
  return run<true>(ctx, w, dy, t, dx, stream);
}
Nf4GemmPath nf4_gemm_backward_f32(const Nf4GemmContext& ctx, const Nf4GemmWeight& w, const __nv_bfloat16* dy, int t,
                                  float* dx, cudaStream_t stream) {
  QK_NVTX_FUNC();
  return run<true>(ctx, w, dy, t, dx, stream);
}

}  // namespace qk
