// Causal flash attention on tensor cores (mma.sync m16n8k16 bf16, ldmatrix, cp.async; sm_80+):
// forward, decode and a deterministic FlashAttention-2 backward. Layouts and semantics are in
// qk/attention.h.
//
// Every kernel uses blocks of four warps over 64-row tiles; each warp owns 16 rows of its tile and
// keeps its accumulators in mma fragments, so the warps share only the shared-memory tiles:
//   forward            block = (64 queries, head, example); warps own queries; K/V tiles stream
//                      (V[j] loads while S = Q K[j]^T runs, K[j+1] while O += P V[j] runs).
//   decode             the forward kernel with block = (64 (token, head) pairs, KV head, example).
//   backward dQ        block = (64 queries, head, example); loops over key tiles.
//   backward dK, dV    block = (64 keys, KV head, example); warps own keys and compute S^T = K Q^T
//                      directly, so P^T and dS^T are already A fragments for dV += P^T dO and
//                      dK += dS^T Q; loops over the group's query heads and the query tiles.
// Shared-memory tiles are [64][head_dim + 8] bf16: the 16-byte pad puts the 8 rows an ldmatrix
// reads in 8 different bank groups for every supported head_dim.
// A sliding window is a template flag (Has_window), so the plain causal kernels stay as they were;
// the windowed ones start their tile loops at the first tile any row of the block sees and mask
// the tiles that some row sees only in part.
#include <cuda_bf16.h>

#include <cstdint>
#include <cstring>

#include "qk/attention.h"
#include "qk/cuda_check.h"
#include "qk/nvtx.h"
#include "qk/simt.h"

namespace qk {
namespace {

constexpr int kBlockM = 64;  // query rows per tile
constexpr int kBlockN = 64;  // key rows per tile
constexpr int kWarps = 4;
constexpr int kThreads = 32 * kWarps;
constexpr float kLog2e = static_cast<float>(kAttentionLog2e);

using bf16 = __nv_bfloat16;

// One example's rows: queries [q_start, q_start + q_len) of q/o, keys [k_start, k_start + k_len)
// of k/v; offset = k_len - q_len aligns the queries to the end of the keys.
struct Segment {
  int64_t q_start, k_start;
  int q_len, k_len;
};

struct Params {
  const bf16* q;
  const bf16* k;
  const bf16* v;
  bf16* o;
  float* lse;             // forward: written when not null
  const float* lse_saved;  // backward: the forward's lse
  const bf16* dout;
  const float* delta;  // backward: rowsum(dO * O), [heads, total_q]
  bf16* dq;
  bf16* dk;
  bf16* dv;
  const int32_t* cu_q;
  const int32_t* seqlens_k;  // decode: cache lengths; null: keys are the queries' own rows
  int64_t k_capacity;        // decode: cache rows per example
  int64_t total_q;
  int heads, kv_heads, group;
  float scale, scale_log2;
  int window;  // > 0 only for the Has_window kernels
};

__device__ __forceinline__ Segment segment_of(const Params& p, int b) {
  Segment s;
  s.q_start = p.cu_q[b];
  s.q_len = p.cu_q[b + 1] - p.cu_q[b];
  if (p.seqlens_k != nullptr) {
    s.k_start = static_cast<int64_t>(b) * p.k_capacity;
    s.k_len = p.seqlens_k[b];
  } else {
    s.k_start = s.q_start;
    s.k_len = s.q_len;
  }
  return s;
}

// Rows [row0, row0 + 64) of a [rows, stride] matrix (src at the head's first column) into a shared
// tile; rows past `rows` are zero-filled, so they contribute exact zeros to every product.
template <int D>
__device__ __forceinline__ void load_tile(bf16* dst, const bf16* src, int64_t stride, int row0, int rows) {
  constexpr int kLd = D + 8, kChunks = D / 8;
  for (int c = threadIdx.x; c < 64 * kChunks; c += kThreads) {
    const int r = c / kChunks, col = (c % kChunks) * 8;
    const bool ok = row0 + r < rows;
    cp_async_16_zfill(dst + r * kLd + col, ok ? src + static_cast<int64_t>(row0 + r) * stride + col : src, ok);
  }
}

__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  uint32_t u;
  memcpy(&u, &v, sizeof u);
  return u;
}

// acc[16 x N] += A[16 x K] B[N x K]^T, A and B row-major in shared memory with row pitch ld: the
// warp's 16 rows of a tile against all N rows of another (S = Q K^T and its relatives).
template <int N, int K>
__device__ __forceinline__ void mma_rows_abt(float (&acc)[N / 8][4], const bf16* a, const bf16* b, int ld, int lane) {
#pragma unroll
  for (int ks = 0; ks < K; ks += 16) {
    uint32_t fa[4];
    ldmatrix_x4(fa, a + (lane % 16) * ld + ks + (lane / 16) * 8);
#pragma unroll
    for (int nj = 0; nj < N / 16; ++nj) {
      uint32_t r[4];
      ldmatrix_x4(r, b + (nj * 16 + (lane / 16) * 8 + lane % 8) * ld + ks + ((lane / 8) % 2) * 8);
      const uint32_t b0[2] = {r[0], r[1]}, b1[2] = {r[2], r[3]};
      mma_m16n8k16_bf16(acc[2 * nj], fa, b0, acc[2 * nj]);
      mma_m16n8k16_bf16(acc[2 * nj + 1], fa, b1, acc[2 * nj + 1]);
    }
  }
}

// As mma_rows_abt with A already in registers as ldmatrix fragments (Q held across the key tiles).
template <int N, int K>
__device__ __forceinline__ void mma_frags_abt(float (&acc)[N / 8][4], const uint32_t (&fa)[K / 16][4], const bf16* b,
                                              int ld, int lane) {
#pragma unroll
  for (int kk = 0; kk < K / 16; ++kk)
#pragma unroll
    for (int nj = 0; nj < N / 16; ++nj) {
      uint32_t r[4];
      ldmatrix_x4(r, b + (nj * 16 + (lane / 16) * 8 + lane % 8) * ld + kk * 16 + ((lane / 8) % 2) * 8);
      const uint32_t b0[2] = {r[0], r[1]}, b1[2] = {r[2], r[3]};
      mma_m16n8k16_bf16(acc[2 * nj], fa[kk], b0, acc[2 * nj]);
      mma_m16n8k16_bf16(acc[2 * nj + 1], fa[kk], b1, acc[2 * nj + 1]);
    }
}

// acc[16 x N] += P[16 x K] B[K x N]: P in registers as the accumulator fragments of a previous
// product (rounded to bf16 here: the C layout of two 16x8 tiles is the A layout of one 16x16),
// B row-major [K][N] in shared memory, read transposed by ldmatrix.
template <int N, int K>
__device__ __forceinline__ void mma_regs_ab(float (&acc)[N / 8][4], const float (&pc)[K / 8][4], const bf16* b, int ld,
                                            int lane) {
#pragma unroll
  for (int kk = 0; kk < K / 16; ++kk) {
    const uint32_t fa[4] = {pack_bf16(pc[2 * kk][0], pc[2 * kk][1]), pack_bf16(pc[2 * kk][2], pc[2 * kk][3]),
                            pack_bf16(pc[2 * kk + 1][0], pc[2 * kk + 1][1]),
                            pack_bf16(pc[2 * kk + 1][2], pc[2 * kk + 1][3])};
#pragma unroll
    for (int nj = 0; nj < N / 16; ++nj) {
      uint32_t r[4];
      ldmatrix_x4_trans(r, b + (kk * 16 + ((lane / 8) % 2) * 8 + lane % 8) * ld + nj * 16 + (lane / 16) * 8);
      const uint32_t b0[2] = {r[0], r[1]}, b1[2] = {r[2], r[3]};
      mma_m16n8k16_bf16(acc[2 * nj], fa, b0, acc[2 * nj]);
      mma_m16n8k16_bf16(acc[2 * nj + 1], fa, b1, acc[2 * nj + 1]);
    }
  }
}

// The causal rule, or with Has_window the sliding-window one (qk/attention.h).
template <bool Has_window>
__device__ __forceinline__ bool visible(int q_index, int k_index, int offset, int window) {
  if constexpr (Has_window) {
    return attention_visible(q_index, k_index, offset, window);
  } else {
    return attention_visible(q_index, k_index, offset);
  }
}

// The four lanes t = 0..3 of a fragment row hold its columns: a row reduction is two xor shuffles.
__device__ __forceinline__ float row_max4(float x) {
  x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 1));
  return fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 2));
}
__device__ __forceinline__ float row_sum4(float x) {
  x += __shfl_xor_sync(0xffffffffu, x, 1);
  return x + __shfl_xor_sync(0xffffffffu, x, 2);
}

// Writes a warp's 16 x D fp32 fragments times `mul` as bf16 rows row0 + g, row0 + g + 8 (those below
// `rows`) of a [*, stride] matrix at dst (the head's first column).
template <int D>
__device__ __forceinline__ void store_rows(bf16* dst, int64_t stride, const float (&acc)[D / 8][4], int row0, int rows,
                                           float mul0, float mul1, int lane) {
  const int g = lane / 4, t = lane % 4;
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int row = row0 + g + 8 * half;
    if (row >= rows) continue;
    const float mul = half == 0 ? mul0 : mul1;
    bf16* out = dst + static_cast<int64_t>(row) * stride + 2 * t;
#pragma unroll
    for (int ni = 0; ni < D / 8; ++ni)
      *reinterpret_cast<__nv_bfloat162*>(out + ni * 8) =
          __floats2bfloat162_rn(acc[ni][2 * half] * mul, acc[ni][2 * half + 1] * mul);
  }
}

template <int D>
constexpr int tile_elems() {
  return 64 * (D + 8);
}

// ---- Forward (and decode): O = softmax(scale Q K^T) V, lse per row. Q is read into registers
// once and its shared tile then holds K, so a block needs two tiles (34 KiB at head_dim 128):
// two blocks fit an SM of an RTX 3090/4090.
// Is_packed (decode): a block serves one KV head and its tile rows are (token, query head) pairs,
// row r = token r / group, head r % group of the group, so a few new tokens still fill the tile
// and each K/V tile is read once for the whole group. Otherwise rows are tokens of head blockIdx.y.
template <int D, bool Is_packed, bool Has_window>
__global__ void QK_LAUNCH_BOUNDS(kThreads) attention_fwd_kernel(Params p) {
  constexpr int kLd = D + 8, kChunks = D / 8;
  QK_DYNAMIC_SHARED(bf16, smem);
  bf16* sk = smem;  // Q first
  bf16* sv = sk + tile_elems<D>();

  const Segment s = segment_of(p, blockIdx.z);
  const int pack = Is_packed ? p.group : 1;                        // query heads per tile row block
  const int h0 = Is_packed ? blockIdx.y * p.group : blockIdx.y;    // first query head of the block
  const int kvh = Is_packed ? blockIdx.y : blockIdx.y / p.group;
  const int q_rows = s.q_len * pack, m0 = blockIdx.x * kBlockM;
  if (m0 >= q_rows) return;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, g = lane / 4, t = lane % 4;
  const int offset = s.k_len - s.q_len;
  const int64_t q_stride = static_cast<int64_t>(p.heads) * D, kv_stride = static_cast<int64_t>(p.kv_heads) * D;
  const bf16* k = p.k + s.k_start * kv_stride + kvh * D;
  const bf16* v = p.v + s.k_start * kv_stride + kvh * D;
  // Keys past the last row's horizon are masked for the whole tile, keys past the first row's
  // horizon for some of its rows.
  const int first_token = m0 / pack, last_token = (min(q_rows, m0 + kBlockM) - 1) / pack;
  const int n_end = min(s.k_len, last_token + 1 + offset);
  const int n_tiles = (n_end + kBlockN - 1) / kBlockN;
  // Window: keys before the first row's window are masked for the whole tile.
  const int nt_begin = Has_window ? max(0, first_token + offset - p.window + 1) / kBlockN : 0;
  const int row_a = m0 + warp * 16 + g, row_b = row_a + 8;  // this thread's two tile rows
  const int tok[2] = {row_a / pack, row_b / pack};

  // Q rows, zero-filled past the end (their scores are finite and never stored).
  for (int c = threadIdx.x; c < 64 * kChunks; c += kThreads) {
    const int r = c / kChunks, col = (c % kChunks) * 8, row = m0 + r;
    const bool ok = row < q_rows;
    const bf16* src = p.q + (s.q_start + row / pack) * q_stride + (h0 + row % pack) * D + col;
    cp_async_16_zfill(sk + r * kLd + col, ok ? src : p.q, ok);
  }
  cp_async_commit();
  cp_async_wait<0>();
  __syncthreads();  // Q landed
  uint32_t qf[D / 16][4];
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk) ldmatrix_x4(qf[kk], sk + (warp * 16 + lane % 16) * kLd + kk * 16 + (lane / 16) * 8);
  __syncthreads();  // every warp holds its Q fragments: the tile may take K
  // One commit group per tile, K before V, so that waiting for all but the newest group waits for K.
  load_tile<D>(sk, k, kv_stride, nt_begin * kBlockN, s.k_len);
  cp_async_commit();
  load_tile<D>(sv, v, kv_stride, nt_begin * kBlockN, s.k_len);
  cp_async_commit();

  float acc[D / 8][4] = {};
  float m_run[2] = {-INFINITY, -INFINITY}, l_run[2] = {0.0f, 0.0f};
  for (int nt = nt_begin; nt < n_tiles; ++nt) {
    const int n0 = nt * kBlockN;
    cp_async_wait<1>();
    __syncthreads();  // K[nt] landed; V[nt] may still be in flight

    float sc[kBlockN / 8][4] = {};
    mma_frags_abt<kBlockN, D>(sc, qf, sk, kLd, lane);
    const bool need_mask = n0 + kBlockN > s.k_len || n0 + kBlockN - 1 > first_token + offset ||
                           (Has_window && n0 <= last_token + offset - p.window);
    float tile_max[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int ni = 0; ni < kBlockN / 8; ++ni)
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        float x = sc[ni][i] * p.scale_log2;
        if (need_mask) {
          const int col = n0 + ni * 8 + 2 * t + (i & 1);
          if (col >= s.k_len || !visible<Has_window>(tok[i / 2], col, offset, p.window)) x = -INFINITY;
        }
        sc[ni][i] = x;
        tile_max[i / 2] = fmaxf(tile_max[i / 2], x);
      }
    float shift[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const float factor = online_softmax_update(&m_run[r], row_max4(tile_max[r]));
      l_run[r] *= factor;
#pragma unroll
      for (int ni = 0; ni < D / 8; ++ni) {
        acc[ni][2 * r] *= factor;
        acc[ni][2 * r + 1] *= factor;
      }
      shift[r] = online_softmax_shift(m_run[r]);
    }
#pragma unroll
    for (int ni = 0; ni < kBlockN / 8; ++ni)
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const float e = exp2f(sc[ni][i] - shift[i / 2]);
        sc[ni][i] = e;
        l_run[i / 2] += e;
      }

    cp_async_wait<0>();
    __syncthreads();  // V[nt] landed; every warp is done with K[nt]
    if (nt + 1 < n_tiles) {
      load_tile<D>(sk, k, kv_stride, n0 + kBlockN, s.k_len);  // travels during O += P V[nt]
      cp_async_commit();
    }
    mma_regs_ab<D, kBlockN>(acc, sc, sv, kLd, lane);
    __syncthreads();  // every warp is done with V[nt]
    if (nt + 1 < n_tiles) {
      load_tile<D>(sv, v, kv_stride, n0 + kBlockN, s.k_len);  // travels during the next S = Q K^T
      cp_async_commit();
    }
  }

  const float l[2] = {row_sum4(l_run[0]), row_sum4(l_run[1])};
  const int rows[2] = {row_a, row_b};
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    if (rows[r] >= q_rows) continue;
    const int head = h0 + rows[r] % pack;
    const int64_t token = s.q_start + tok[r];
    const float inv = 1.0f / l[r];
    bf16* out = p.o + token * q_stride + head * D + 2 * t;
#pragma unroll
    for (int ni = 0; ni < D / 8; ++ni)
      *reinterpret_cast<__nv_bfloat162*>(out + ni * 8) =
          __floats2bfloat162_rn(acc[ni][2 * r] * inv, acc[ni][2 * r + 1] * inv);
    if (p.lse != nullptr && t == 0) p.lse[head * p.total_q + token] = attention_lse(m_run[r], l[r]);
  }
}

// ---- Backward, step 1: delta = rowsum(dO * O) per (token, head), one warp each.
__global__ void QK_LAUNCH_BOUNDS(kThreads)
    attention_bwd_delta_kernel(const bf16* o, const bf16* dout, float* delta, int64_t total, int heads, int d) {
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kWarps + threadIdx.x / 32;  // token * heads + head
  const int lane = threadIdx.x % 32;
  if (row >= total * heads) return;
  const __nv_bfloat162* o2 = reinterpret_cast<const __nv_bfloat162*>(o + row * d);
  const __nv_bfloat162* do2 = reinterpret_cast<const __nv_bfloat162*>(dout + row * d);
  float sum = 0.0f;
  for (int c = lane; c < d / 2; c += 32) {
    const float2 a = __bfloat1622float2(o2[c]), b = __bfloat1622float2(do2[c]);
    sum += a.x * b.x + a.y * b.y;
  }
#pragma unroll
  for (int w = 16; w > 0; w /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, w);
  if (lane == 0) delta[(row % heads) * total + row / heads] = sum;
}

// ---- Backward, step 2: dQ = scale * dS K per query tile, over the key tiles in a fixed order.
template <int D, bool Has_window>
__global__ void QK_LAUNCH_BOUNDS(kThreads) attention_bwd_dq_kernel(Params p) {
  constexpr int kLd = D + 8;
  QK_DYNAMIC_SHARED(bf16, smem);
  bf16* sq = smem;
  bf16* sdo = sq + tile_elems<D>();
  bf16* sk = sdo + tile_elems<D>();
  bf16* sv = sk + tile_elems<D>();

  const Segment s = segment_of(p, blockIdx.z);
  const int h = blockIdx.y, m0 = blockIdx.x * kBlockM;
  if (m0 >= s.q_len) return;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, g = lane / 4, t = lane % 4;
  const int offset = s.k_len - s.q_len;
  const int64_t q_stride = static_cast<int64_t>(p.heads) * D, kv_stride = static_cast<int64_t>(p.kv_heads) * D;
  const int64_t q_off = s.q_start * q_stride + h * D;
  const bf16* k = p.k + s.k_start * kv_stride + (h / p.group) * D;
  const bf16* v = p.v + s.k_start * kv_stride + (h / p.group) * D;
  const int n_end = min(s.k_len, m0 + kBlockM + offset);
  const int n_tiles = (n_end + kBlockN - 1) / kBlockN;
  const int nt_begin = Has_window ? max(0, m0 + offset - p.window + 1) / kBlockN : 0;  // first row's window
  const int rows[2] = {m0 + warp * 16 + g, m0 + warp * 16 + g + 8};

  load_tile<D>(sq, p.q + q_off, q_stride, m0, s.q_len);
  load_tile<D>(sdo, p.dout + q_off, q_stride, m0, s.q_len);
  load_tile<D>(sk, k, kv_stride, nt_begin * kBlockN, s.k_len);
  load_tile<D>(sv, v, kv_stride, nt_begin * kBlockN, s.k_len);
  cp_async_commit();
  float lse2[2], delta[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const bool ok = rows[r] < s.q_len;  // rows past the end have zero Q and dO: any finite value does
    const int64_t at = h * p.total_q + s.q_start + rows[r];
    lse2[r] = ok ? p.lse_saved[at] * kLog2e : 0.0f;
    delta[r] = ok ? p.delta[at] : 0.0f;
  }

  float dq[D / 8][4] = {};
  for (int nt = nt_begin; nt < n_tiles; ++nt) {
    const int n0 = nt * kBlockN;
    cp_async_wait<0>();
    __syncthreads();  // K[nt] and V[nt] landed
    float sc[kBlockN / 8][4] = {}, dp[kBlockN / 8][4] = {};
    mma_rows_abt<kBlockN, D>(sc, sq + warp * 16 * kLd, sk, kLd, lane);
    mma_rows_abt<kBlockN, D>(dp, sdo + warp * 16 * kLd, sv, kLd, lane);
    __syncthreads();  // every warp is done with V[nt]
    if (nt + 1 < n_tiles) {
      load_tile<D>(sv, v, kv_stride, n0 + kBlockN, s.k_len);
      cp_async_commit();
    }
    const bool need_mask = n0 + kBlockN > s.k_len || n0 + kBlockN - 1 > m0 + offset ||
                           (Has_window && n0 <= m0 + kBlockM - 1 + offset - p.window);
#pragma unroll
    for (int ni = 0; ni < kBlockN / 8; ++ni)
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int r = i / 2, col = n0 + ni * 8 + 2 * t + (i & 1);
        float pr = exp2f(sc[ni][i] * p.scale_log2 - lse2[r]);
        if (need_mask && (col >= s.k_len || !visible<Has_window>(rows[r], col, offset, p.window))) pr = 0.0f;
        sc[ni][i] = pr * (dp[ni][i] - delta[r]);  // dS
      }
    mma_regs_ab<D, kBlockN>(dq, sc, sk, kLd, lane);
    __syncthreads();  // every warp is done with K[nt]
    if (nt + 1 < n_tiles) {
      load_tile<D>(sk, k, kv_stride, n0 + kBlockN, s.k_len);
      cp_async_commit();
    }
  }
  store_rows<D>(p.dq + q_off, q_stride, dq, m0 + warp * 16, s.q_len, p.scale, p.scale, lane);
}

// ---- Backward, step 3: dK = scale * dS^T Q and dV = P^T dO per key tile, summed in registers over
// the query heads of the KV head's group and the query tiles that see the keys.
template <int D, bool Has_window>
__global__ void QK_LAUNCH_BOUNDS(kThreads) attention_bwd_dkdv_kernel(Params p) {
  constexpr int kLd = D + 8;
  QK_DYNAMIC_SHARED(bf16, smem);
  bf16* sk = smem;
  bf16* sv = sk + tile_elems<D>();
  bf16* sq = sv + tile_elems<D>();
  bf16* sdo = sq + tile_elems<D>();
  float* slse = reinterpret_cast<float*>(sdo + tile_elems<D>());  // log2 domain
  float* sdelta = slse + kBlockM;

  const Segment s = segment_of(p, blockIdx.z);
  const int kvh = blockIdx.y, n0 = blockIdx.x * kBlockN;
  if (n0 >= s.k_len) return;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, g = lane / 4, t = lane % 4;
  const int offset = s.k_len - s.q_len;
  const int64_t q_stride = static_cast<int64_t>(p.heads) * D, kv_stride = static_cast<int64_t>(p.kv_heads) * D;
  const int64_t kv_off = s.k_start * kv_stride + kvh * D;
  // The first query that sees key n0 is n0 - offset; its tile is the first with work. With a window
  // the last is the one whose window still reaches the tile's last key.
  const int m_begin = (max(0, n0 - offset) / kBlockM) * kBlockM;
  const int m_end = Has_window ? min(s.q_len, n0 + kBlockN - 1 - offset + p.window) : s.q_len;
  const int m_tiles = m_end > m_begin ? (m_end - m_begin + kBlockM - 1) / kBlockM : 0;
  const int steps = p.group * m_tiles;
  const int keys[2] = {n0 + warp * 16 + g, n0 + warp * 16 + g + 8};

  auto q_of = [&](int step) { return p.q + s.q_start * q_stride + (kvh * p.group + step / m_tiles) * D; };
  auto do_of = [&](int step) { return p.dout + s.q_start * q_stride + (kvh * p.group + step / m_tiles) * D; };
  auto m0_of = [&](int step) { return m_begin + (step % m_tiles) * kBlockM; };
  auto load_stats = [&](int step) {  // plain stores: published by the barrier at the top of the step
    if (threadIdx.x < kBlockM) {
      const int row = m0_of(step) + threadIdx.x;
      const int64_t at = (kvh * p.group + step / m_tiles) * p.total_q + s.q_start + row;
      slse[threadIdx.x] = row < s.q_len ? p.lse_saved[at] * kLog2e : 0.0f;
      sdelta[threadIdx.x] = row < s.q_len ? p.delta[at] : 0.0f;
    }
  };

  load_tile<D>(sk, p.k + kv_off, kv_stride, n0, s.k_len);
  load_tile<D>(sv, p.v + kv_off, kv_stride, n0, s.k_len);
  if (steps > 0) {
    load_tile<D>(sq, q_of(0), q_stride, m0_of(0), s.q_len);
    load_tile<D>(sdo, do_of(0), q_stride, m0_of(0), s.q_len);
    load_stats(0);
  }
  cp_async_commit();

  float dk[D / 8][4] = {}, dv[D / 8][4] = {};
  for (int step = 0; step < steps; ++step) {
    const int m0 = m0_of(step);
    cp_async_wait<0>();
    __syncthreads();  // Q, dO, lse and delta of this step landed
    float st[kBlockM / 8][4] = {}, dpt[kBlockM / 8][4] = {};
    mma_rows_abt<kBlockM, D>(st, sk + warp * 16 * kLd, sq, kLd, lane);
    mma_rows_abt<kBlockM, D>(dpt, sv + warp * 16 * kLd, sdo, kLd, lane);
    const bool need_mask = n0 + kBlockN > s.k_len || m0 + kBlockM > s.q_len || n0 + kBlockN - 1 > m0 + offset ||
                           (Has_window && m0 + kBlockM - 1 + offset - n0 >= p.window);
#pragma unroll
    for (int ni = 0; ni < kBlockM / 8; ++ni)
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int c = ni * 8 + 2 * t + (i & 1), key = keys[i / 2];
        float pr = exp2f(st[ni][i] * p.scale_log2 - slse[c]);
        if (need_mask && (key >= s.k_len || m0 + c >= s.q_len || !visible<Has_window>(m0 + c, key, offset, p.window)))
          pr = 0.0f;
        st[ni][i] = pr;                                // P^T
        dpt[ni][i] = pr * (dpt[ni][i] - sdelta[c]);  // dS^T
      }
    mma_regs_ab<D, kBlockM>(dv, st, sdo, kLd, lane);
    __syncthreads();  // every warp is done with dO, lse and delta of this step
    if (step + 1 < steps) {
      load_tile<D>(sdo, do_of(step + 1), q_stride, m0_of(step + 1), s.q_len);
      cp_async_commit();
      load_stats(step + 1);
    }
    mma_regs_ab<D, kBlockM>(dk, dpt, sq, kLd, lane);
    __syncthreads();  // every warp is done with Q of this step
    if (step + 1 < steps) {
      load_tile<D>(sq, q_of(step + 1), q_stride, m0_of(step + 1), s.q_len);
      cp_async_commit();
    }
  }
  cp_async_wait<0>();
  store_rows<D>(p.dk + kv_off, kv_stride, dk, n0 + warp * 16, s.k_len, p.scale, p.scale, lane);
  store_rows<D>(p.dv + kv_off, kv_stride, dv, n0 + warp * 16, s.k_len, 1.0f, 1.0f, lane);
}

bool aligned16(const void* ptr) { return reinterpret_cast<uintptr_t>(ptr) % 16 == 0; }

bool supported_head_dim(int d) { return d == 64 || d == 80 || d == 96 || d == 128; }

// Raises the dynamic shared-memory limit when a kernel needs more than the default 48 KiB.
template <typename Kernel>
void allow_smem(Kernel kernel, size_t bytes) {
  if (bytes > 48 * 1024)
    QK_CUDA_CHECK(cudaFuncSetAttribute(reinterpret_cast<const void*>(kernel),
                                       cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)));
}

template <int D, bool Has_window>
void launch_forward_as(const Params& p, int num_seqs, int max_seqlen_q, cudaStream_t stream) {
  const size_t smem = 2 * tile_elems<D>() * sizeof(bf16);
  if (p.seqlens_k != nullptr) {  // decode
    allow_smem(attention_fwd_kernel<D, true, Has_window>, smem);
    const dim3 grid((max_seqlen_q * p.group + kBlockM - 1) / kBlockM, p.kv_heads, num_seqs);
    QK_LAUNCH((attention_fwd_kernel<D, true, Has_window>), grid, dim3(kThreads), smem, stream, p);
  } else {
    allow_smem(attention_fwd_kernel<D, false, Has_window>, smem);
    const dim3 grid((max_seqlen_q + kBlockM - 1) / kBlockM, p.heads, num_seqs);
    QK_LAUNCH((attention_fwd_kernel<D, false, Has_window>), grid, dim3(kThreads), smem, stream, p);
  }
}

template <int D>
void launch_forward(const Params& p, int num_seqs, int max_seqlen_q, cudaStream_t stream) {
  if (p.window > 0) return launch_forward_as<D, true>(p, num_seqs, max_seqlen_q, stream);
  launch_forward_as<D, false>(p, num_seqs, max_seqlen_q, stream);
}

template <int D, bool Has_window>
void launch_backward_as(const Params& p, int num_seqs, int max_seqlen, cudaStream_t stream) {
  const size_t smem_dq = 4 * tile_elems<D>() * sizeof(bf16);
  const size_t smem_dkdv = smem_dq + 2 * kBlockM * sizeof(float);
  allow_smem(attention_bwd_dq_kernel<D, Has_window>, smem_dq);
  allow_smem(attention_bwd_dkdv_kernel<D, Has_window>, smem_dkdv);
  const unsigned tiles = static_cast<unsigned>((max_seqlen + kBlockM - 1) / kBlockM);
  QK_LAUNCH((attention_bwd_dkdv_kernel<D, Has_window>), dim3(tiles, p.kv_heads, num_seqs), dim3(kThreads), smem_dkdv,
            stream, p);
  QK_CHECK_LAUNCH();
  QK_LAUNCH((attention_bwd_dq_kernel<D, Has_window>), dim3(tiles, p.heads, num_seqs), dim3(kThreads), smem_dq, stream,
            p);
}

template <int D>
void launch_backward(const Params& p, int num_seqs, int max_seqlen, cudaStream_t stream) {
  if (p.window > 0) return launch_backward_as<D, true>(p, num_seqs, max_seqlen, stream);
  launch_backward_as<D, false>(p, num_seqs, max_seqlen, stream);
}

// Dispatches a launcher template on the head dimension.
template <template <int> class L, typename... Args>
void dispatch_head_dim(int d, Args&&... args) {
  switch (d) {
    case 64: return L<64>::run(args...);
    case 80: return L<80>::run(args...);
    case 96: return L<96>::run(args...);
    case 128: return L<128>::run(args...);
    default: QK_REQUIRE(false, "head_dim must be 64, 80, 96 or 128");
  }
}
template <int D>
struct ForwardLauncher {
  static void run(const Params& p, int n, int max_len, cudaStream_t st) { launch_forward<D>(p, n, max_len, st); }
};
template <int D>
struct BackwardLauncher {
  static void run(const Params& p, int n, int max_len, cudaStream_t st) { launch_backward<D>(p, n, max_len, st); }
};

Params base_params(int heads, int kv_heads, int head_dim, float scale, int64_t total_q) {
  QK_REQUIRE(heads > 0 && kv_heads > 0 && heads % kv_heads == 0, "kv_heads must divide heads");
  QK_REQUIRE(supported_head_dim(head_dim), "head_dim must be 64, 80, 96 or 128");
  QK_REQUIRE(total_q >= 0, "negative token count");
  Params p{};
  p.heads = heads;
  p.kv_heads = kv_heads;
  p.group = heads / kv_heads;
  p.scale = attention_scale(scale, head_dim);
  p.scale_log2 = p.scale * kLog2e;
  p.total_q = total_q;
  return p;
}

void check_shape(const AttentionShape& s, const int32_t* cu_seqlens) {
  QK_REQUIRE(s.num_seqs >= 1 && cu_seqlens != nullptr, "need cu_seqlens with num_seqs >= 1");
  QK_REQUIRE(s.total_tokens >= 0, "negative total_tokens");
  QK_REQUIRE(s.total_tokens == 0 || (s.max_seqlen > 0 && s.max_seqlen <= s.total_tokens),
             "max_seqlen must be in [1, total_tokens]");
  QK_REQUIRE(s.num_seqs <= 65535, "at most 65535 sequences per call");
  QK_REQUIRE(s.window >= 0, "negative window");
}

}  // namespace

void attention_forward(const bf16* q, const bf16* k, const bf16* v, bf16* o, float* lse, const int32_t* cu_seqlens,
                       const AttentionShape& shape, cudaStream_t stream) {
  QK_NVTX_FUNC();
  Params p = base_params(shape.heads, shape.kv_heads, shape.head_dim, shape.scale, shape.total_tokens);
  check_shape(shape, cu_seqlens);
  if (shape.total_tokens == 0) return;
  QK_REQUIRE(q && k && v && o, "null pointer");
  QK_REQUIRE(aligned16(q) && aligned16(k) && aligned16(v) && aligned16(o), "q, k, v, o must be 16-byte aligned");
  p.q = q, p.k = k, p.v = v, p.o = o, p.lse = lse, p.cu_q = cu_seqlens;
  p.window = attention_effective_window(shape.window, shape.max_seqlen);
  dispatch_head_dim<ForwardLauncher>(shape.head_dim, p, shape.num_seqs, shape.max_seqlen, stream);
  QK_CHECK_LAUNCH();
}

void attention_backward(const bf16* q, const bf16* k, const bf16* v, const bf16* o, const bf16* dout, const float* lse,
                        bf16* dq, bf16* dk, bf16* dv, float* delta, const int32_t* cu_seqlens,
                        const AttentionShape& shape, cudaStream_t stream) {
  QK_NVTX_FUNC();
  Params p = base_params(shape.heads, shape.kv_heads, shape.head_dim, shape.scale, shape.total_tokens);
  check_shape(shape, cu_seqlens);
  if (shape.total_tokens == 0) return;
  QK_REQUIRE(q && k && v && o && dout && lse && dq && dk && dv && delta, "null pointer");
  QK_REQUIRE(aligned16(q) && aligned16(k) && aligned16(v) && aligned16(o) && aligned16(dout) && aligned16(dq) &&
                 aligned16(dk) && aligned16(dv),
             "q, k, v, o, dout, dq, dk, dv must be 16-byte aligned");
  p.q = q, p.k = k, p.v = v, p.lse_saved = lse;
  p.dout = dout, p.delta = delta, p.dq = dq, p.dk = dk, p.dv = dv, p.cu_q = cu_seqlens;
  p.window = attention_effective_window(shape.window, shape.max_seqlen);
  const int64_t rows = shape.total_tokens * shape.heads;
  QK_LAUNCH(attention_bwd_delta_kernel, dim3(static_cast<unsigned>((rows + kWarps - 1) / kWarps)), dim3(kThreads), 0,
            stream, o, dout, delta, shape.total_tokens, shape.heads, shape.head_dim);
  QK_CHECK_LAUNCH();
  dispatch_head_dim<BackwardLauncher>(shape.head_dim, p, shape.num_seqs, shape.max_seqlen, stream);
  QK_CHECK_LAUNCH();
}

void attention_decode_forward(const bf16* q, const bf16* k_cache, const bf16* v_cache, bf16* o, float* lse,
                              const int32_t* cu_seqlens_q, const int32_t* seqlens_k, const AttentionDecodeShape& shape,
                              cudaStream_t stream) {
  QK_NVTX_FUNC();
  Params p = base_params(shape.heads, shape.kv_heads, shape.head_dim, shape.scale, shape.total_q);
  QK_REQUIRE(shape.num_seqs >= 1 && shape.num_seqs <= 65535 && cu_seqlens_q && seqlens_k,
             "need cu_seqlens_q and seqlens_k with 1 <= num_seqs <= 65535");
  QK_REQUIRE(shape.total_q >= 0 && shape.max_seqlen_q <= shape.max_seqlen_k &&
                 shape.max_seqlen_k <= shape.cache_capacity,
             "need max_seqlen_q <= max_seqlen_k <= cache_capacity");
  QK_REQUIRE(shape.window >= 0, "negative window");
  if (shape.total_q == 0) return;
  QK_REQUIRE(shape.max_seqlen_q > 0 && shape.max_seqlen_q <= shape.total_q, "max_seqlen_q must be in [1, total_q]");
  QK_REQUIRE(q && k_cache && v_cache && o, "null pointer");
  QK_REQUIRE(aligned16(q) && aligned16(k_cache) && aligned16(v_cache) && aligned16(o),
             "q, caches and o must be 16-byte aligned");
  p.q = q, p.k = k_cache, p.v = v_cache, p.o = o, p.lse = lse;
  p.cu_q = cu_seqlens_q, p.seqlens_k = seqlens_k, p.k_capacity = shape.cache_capacity;
  p.window = attention_effective_window(shape.window, shape.max_seqlen_k);
  dispatch_head_dim<ForwardLauncher>(shape.head_dim, p, shape.num_seqs, shape.max_seqlen_q, stream);
  QK_CHECK_LAUNCH();
}

}  // namespace qk
