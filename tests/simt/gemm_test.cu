// A tiled tensor-core GEMM written the way production kernels will be: C = A W^T with A [M, K] and
// W [N, K] bf16 row-major (a linear layer), C f32. 64x64 block tiles, BK = 32, four warps of 32x32;
// cp.async double buffering (zero fill past the edges, a scalar path when rows are not 16-byte
// aligned), ldmatrix into fragments, mma.sync m16n8k16. Odd shapes cover every edge; the variant
// without the barrier that ends each k step must fail under the emulator.
#include <cuda_bf16.h>

#include <cstdint>
#include <vector>

#include "simt_test.h"

namespace qtrain::simt_test {
namespace {

constexpr int kBM = 64, kBN = 64, kBK = 32;
constexpr int kLd = kBK + 8;  // padded row: 80 bytes, keeps 16-byte alignment, spreads banks
constexpr int kThreads = 128;

// Rows [row0, row0 + 64) and columns [k0, k0 + 32) of a [rows, k] matrix into a shared tile.
__device__ void load_tile(__nv_bfloat16* dst, const __nv_bfloat16* src, int rows, int k, int row0, int k0,
                          bool vec) {
  for (int c = threadIdx.x; c < kBM * kBK / 8; c += kThreads) {
    const int r = c / (kBK / 8), kc = (c % (kBK / 8)) * 8;
    const int gr = row0 + r, gk = k0 + kc;
    __nv_bfloat16* d = dst + r * kLd + kc;
    if (gr >= rows || gk >= k) {
      qk::cp_async_16_zfill(d, src, false);
    } else if (vec) {  // k % 8 == 0: the whole chunk is inside and 16-byte aligned
      qk::cp_async_16(d, src + static_cast<size_t>(gr) * k + gk);
    } else {
      for (int e = 0; e < 8; ++e)
        d[e] = gk + e < k ? src[static_cast<size_t>(gr) * k + gk + e] : __float2bfloat16_rn(0.0f);
    }
  }
}

template <bool Has_barrier>
__global__ void QK_LAUNCH_BOUNDS(kThreads)
    tc_gemm_kernel(const __nv_bfloat16* a, const __nv_bfloat16* w, float* c, int m, int n, int k) {
  __shared__ __align__(16) __nv_bfloat16 sa[2][kBM * kLd];
  __shared__ __align__(16) __nv_bfloat16 sw[2][kBN * kLd];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int m0 = blockIdx.y * kBM, n0 = blockIdx.x * kBN;
  const int wm = (warp / 2) * 32, wn = (warp % 2) * 32;
  const bool vec = k % 8 == 0;
  float acc[2][4][4] = {};

  const int tiles = (k + kBK - 1) / kBK;
  load_tile(sa[0], a, m, k, m0, 0, vec);
  load_tile(sw[0], w, n, k, n0, 0, vec);
  qk::cp_async_commit();
  for (int kt = 0; kt < tiles; ++kt) {
    const int s = kt & 1;
    if (kt + 1 < tiles) {
      load_tile(sa[s ^ 1], a, m, k, m0, (kt + 1) * kBK, vec);
      load_tile(sw[s ^ 1], w, n, k, n0, (kt + 1) * kBK, vec);
    }
    qk::cp_async_commit();
    qk::cp_async_wait<1>();  // tile kt has landed; tile kt + 1 may still be in flight
    __syncthreads();
    for (int ks = 0; ks < kBK; ks += 16) {
      uint32_t fa[2][4], fw[4][2];
      for (int mi = 0; mi < 2; ++mi)
        qk::ldmatrix_x4(fa[mi], &sa[s][(wm + mi * 16 + lane % 16) * kLd + ks + (lane / 16) * 8]);
      for (int nj = 0; nj < 2; ++nj) {
        uint32_t r[4];
        qk::ldmatrix_x4(r, &sw[s][(wn + nj * 16 + (lane / 16) * 8 + lane % 8) * kLd + ks + ((lane / 8) % 2) * 8]);
        fw[2 * nj][0] = r[0];
        fw[2 * nj][1] = r[1];
        fw[2 * nj + 1][0] = r[2];
        fw[2 * nj + 1][1] = r[3];
      }
      for (int mi = 0; mi < 2; ++mi)
        for (int ni = 0; ni < 4; ++ni) qk::mma_m16n8k16_bf16(acc[mi][ni], fa[mi], fw[ni], acc[mi][ni]);
    }
    if (Has_barrier) __syncthreads();  // everyone is done with stage s before it is refilled
  }

  const int g = lane / 4, t = lane % 4;
  for (int mi = 0; mi < 2; ++mi)
    for (int ni = 0; ni < 4; ++ni)
      for (int i = 0; i < 4; ++i) {
        const int row = m0 + wm + mi * 16 + g + 8 * (i / 2), col = n0 + wn + ni * 8 + 2 * t + i % 2;
        if (row < m && col < n) c[static_cast<size_t>(row) * n + col] = acc[mi][ni][i];
      }
}

template <bool Has_barrier>
std::vector<float> tc_gemm(const std::vector<uint16_t>& a, const std::vector<uint16_t>& w, int m, int n, int k) {
  DeviceBuffer<uint16_t> da(a), dw(w);
  DeviceBuffer<float> dc(static_cast<size_t>(m) * n);
  dc.poison();
  const dim3 grid((n + kBN - 1) / kBN, (m + kBM - 1) / kBM);
  QK_LAUNCH(tc_gemm_kernel<Has_barrier>, grid, dim3(kThreads), 0, nullptr, da.as<__nv_bfloat16>(),
            dw.as<__nv_bfloat16>(), dc.get(), m, n, k);
  QK_CHECK_LAUNCH();
  return dc.download();
}

std::vector<float> reference(const std::vector<uint16_t>& a, const std::vector<uint16_t>& w, int m, int n, int k) {
  std::vector<float> c(static_cast<size_t>(m) * n);
  for (int i = 0; i < m; ++i)
    for (int j = 0; j < n; ++j) {
      double acc = 0;
      for (int p = 0; p < k; ++p)
        acc += static_cast<double>(qk::bf16_to_f32(a[i * k + p])) * qk::bf16_to_f32(w[j * k + p]);
      c[static_cast<size_t>(i) * n + j] = static_cast<float>(acc);
    }
  return c;
}

struct Shape {
  int m, n, k;
};

TEST(TensorCoreGemm, MatchesReferenceOnOddShapes) {
  QTRAIN_REQUIRE_DEVICE();
  // Aligned and unaligned k, partial tiles in every direction, more than one block each way.
  for (const Shape s : {Shape{37, 45, 40}, Shape{70, 9, 27}, Shape{64, 64, 64}, Shape{5, 130, 96}, Shape{1, 1, 1}}) {
    const auto a = qtrain::test::random_bf16(static_cast<size_t>(s.m) * s.k, 100 + s.k);
    const auto w = qtrain::test::random_bf16(static_cast<size_t>(s.n) * s.k, 200 + s.k);
    EXPECT_TRUE(qtrain::test::close(tc_gemm<true>(a, w, s.m, s.n, s.k), reference(a, w, s.m, s.n, s.k), 1e-5))
        << s.m << "x" << s.n << "x" << s.k;
  }
}

TEST(TensorCoreGemm, MissingBarrierGivesWrongResults) {
  QTRAIN_REQUIRE_DEVICE();
  const int m = 40, n = 40, k = 96;
  const auto a = qtrain::test::random_bf16(m * k, 1);
  const auto w = qtrain::test::random_bf16(n * k, 2);
  const auto got = tc_gemm<false>(a, w, m, n, k);
#if defined(QTRAIN_TEST_VARIANT_EMU)
  EXPECT_FALSE(qtrain::test::close(got, reference(a, w, m, n, k), 1e-3));
#else
  (void)got;  // on hardware a missing barrier may happen to work
#endif
}

}  // namespace
}  // namespace qtrain::simt_test
