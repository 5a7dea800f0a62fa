// Tensor-core fragment layouts: mma.sync m16n8k16 (bf16 and f16, f32 accumulate) with fragments
// built by hand from the PTX ISA's per-lane layout, checked against a plain matrix product on
// random data; ldmatrix x1/x2/x4 with and without .trans, checked register by register; and the two
// together, the way a GEMM feeds its tiles. A kernel with a wrong fragment index must fail.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <vector>

#include "simt_test.h"

namespace qtrain::simt_test {
namespace {

using qtrain::test::close;

__device__ uint32_t pack(uint16_t lo, uint16_t hi) { return static_cast<uint32_t>(lo) | (static_cast<uint32_t>(hi) << 16); }

// One warp: D (16x8) = A (16x16, row-major) B (16x8, stored [k][n]) + C, fragments per the PTX ISA:
// lane = 4g + t; a0..a3 = rows g, g+8, g, g+8 at columns 2t, 2t+1 (+8 for a2, a3); b0 = rows 2t, 2t+1
// and b1 = rows 2t+8, 2t+9 at column g; c0, c1 = row g and c2, c3 = row g+8 at columns 2t, 2t+1.
template <bool Is_f16, bool Has_wrong_index>
__global__ void mma_kernel(const uint16_t* a, const uint16_t* b, const float* c, float* d) {
  const int lane = threadIdx.x, g = lane / 4, t = lane % 4;
  uint32_t fa[4], fb[2];
  float fc[4], fd[4];
  for (int i = 0; i < 4; ++i) {
    const int row = g + 8 * (i % 2), col = 2 * t + 8 * (i / 2);
    fa[i] = pack(a[row * 16 + col], a[row * 16 + col + 1]);
    fc[i] = c[(g + 8 * (i / 2)) * 8 + 2 * t + i % 2];
  }
  for (int i = 0; i < 2; ++i) fb[i] = pack(b[(2 * t + 8 * i) * 8 + g], b[(2 * t + 8 * i + 1) * 8 + g]);
  if (Has_wrong_index) {  // the classic slip: a1 and a2 swapped
    const uint32_t tmp = fa[1];
    fa[1] = fa[2];
    fa[2] = tmp;
  }
  if (Is_f16) qk::mma_m16n8k16_f16(fd, fa, fb, fc);
  else qk::mma_m16n8k16_bf16(fd, fa, fb, fc);
  for (int i = 0; i < 4; ++i) d[(g + 8 * (i / 2)) * 8 + 2 * t + i % 2] = fd[i];
}

uint16_t f16_bits(float x) {
  const __half h = __float2half_rn(x);
  return __half_as_ushort(h);
}
float f16_value(uint16_t bits) { return __half2float(__ushort_as_half(bits)); }

// D = A B + C on the host, in double.
std::vector<float> reference(const std::vector<float>& a, const std::vector<float>& b, const std::vector<float>& c,
                             int m, int n, int k) {
  std::vector<float> d(m * n);
  for (int i = 0; i < m; ++i)
    for (int j = 0; j < n; ++j) {
      double acc = c[i * n + j];
      for (int p = 0; p < k; ++p) acc += static_cast<double>(a[i * k + p]) * b[p * n + j];
      d[i * n + j] = static_cast<float>(acc);
    }
  return d;
}

struct MmaData {
  std::vector<uint16_t> a, b;
  std::vector<float> af, bf, c;
};

MmaData mma_data(bool f16, uint64_t seed) {
  MmaData x;
  const auto a = qtrain::test::random_f32(16 * 16, seed, 2.0f);
  const auto b = qtrain::test::random_f32(16 * 8, seed + 1, 2.0f);
  x.c = qtrain::test::random_f32(16 * 8, seed + 2);
  for (float v : a) {
    x.a.push_back(f16 ? f16_bits(v) : qk::f32_to_bf16_rn(v));
    x.af.push_back(f16 ? f16_value(x.a.back()) : qk::bf16_to_f32(x.a.back()));
  }
  for (float v : b) {
    x.b.push_back(f16 ? f16_bits(v) : qk::f32_to_bf16_rn(v));
    x.bf.push_back(f16 ? f16_value(x.b.back()) : qk::bf16_to_f32(x.b.back()));
  }
  return x;
}

template <bool Is_f16, bool Has_wrong_index>
std::vector<float> run_mma(const MmaData& x) {
  DeviceBuffer<uint16_t> da(x.a), db(x.b);
  DeviceBuffer<float> dc(x.c), dd(16 * 8);
  dd.poison();
  QK_LAUNCH((mma_kernel<Is_f16, Has_wrong_index>), dim3(1), dim3(32), 0, nullptr, da.get(), db.get(), dc.get(),
            dd.get());
  QK_CHECK_LAUNCH();
  return dd.download();
}

TEST(Mma, Bf16FragmentLayoutMatchesMatmul) {
  QTRAIN_REQUIRE_DEVICE();
  for (uint64_t seed : {1, 2, 3}) {
    const auto x = mma_data(false, seed);
    EXPECT_TRUE(close(run_mma<false, false>(x), reference(x.af, x.bf, x.c, 16, 8, 16), 1e-6)) << seed;
  }
}

TEST(Mma, F16FragmentLayoutMatchesMatmul) {
  QTRAIN_REQUIRE_DEVICE();
  const auto x = mma_data(true, 7);
  EXPECT_TRUE(close(run_mma<true, false>(x), reference(x.af, x.bf, x.c, 16, 8, 16), 1e-6));
}

TEST(Mma, WrongFragmentIndexFails) {
  QTRAIN_REQUIRE_DEVICE();
  const auto x = mma_data(false, 11);
  // Deterministic arithmetic, so the slip shows on hardware too.
  EXPECT_FALSE(close(run_mma<false, true>(x), reference(x.af, x.bf, x.c, 16, 8, 16), 1e-3));
}

// ldmatrix: 32 rows of 8 b16 in shared memory, stored in a permuted order so that only the lane
// addresses decide which row lands where. out[variant][lane][reg].
constexpr int kRowStride = 16;  // elements: 32-byte rows, 16-byte aligned

__host__ __device__ int row_of_lane(int lane) { return (lane * 5 + 3) % 32; }

__global__ void ldmatrix_kernel(uint32_t* out) {
  __shared__ __align__(16) uint16_t s[32 * kRowStride];
  const int lane = threadIdx.x;
  for (int i = lane; i < 32 * kRowStride; i += 32) s[i] = static_cast<uint16_t>(100 * (i / kRowStride) + i % kRowStride);
  __syncthreads();
  const uint16_t* row = s + row_of_lane(lane) * kRowStride;
  uint32_t r1[1], r2[2], r4[4];
  uint32_t* o = out + lane * 4;
  qk::ldmatrix_x1(r1, row);
  o[0 * 128] = r1[0];
  qk::ldmatrix_x2(r2, row);
  for (int i = 0; i < 2; ++i) o[1 * 128 + i] = r2[i];
  qk::ldmatrix_x4(r4, row);
  for (int i = 0; i < 4; ++i) o[2 * 128 + i] = r4[i];
  qk::ldmatrix_x1_trans(r1, row);
  o[3 * 128] = r1[0];
  qk::ldmatrix_x2_trans(r2, row);
  for (int i = 0; i < 2; ++i) o[4 * 128 + i] = r2[i];
  qk::ldmatrix_x4_trans(r4, row);
  for (int i = 0; i < 4; ++i) o[5 * 128 + i] = r4[i];
}

TEST(Ldmatrix, FragmentLayouts) {
  QTRAIN_REQUIRE_DEVICE();
  DeviceBuffer<uint32_t> out(6 * 128);
  QK_CUDA_CHECK(cudaMemset(out.get(), 0, out.bytes()));
  QK_LAUNCH(ldmatrix_kernel, dim3(1), dim3(32), 0, nullptr, out.get());
  QK_CHECK_LAUNCH();
  const auto got = out.download();
  // Matrix i takes its rows from lanes 8i..8i+7; element (r, c) of matrix i:
  auto elem = [](int i, int r, int c) { return static_cast<uint32_t>(100 * row_of_lane(8 * i + r) + c); };
  const int counts[3] = {1, 2, 4};
  for (int v = 0; v < 6; ++v) {
    const bool trans = v >= 3;
    for (int lane = 0; lane < 32; ++lane) {
      const int r = lane / 4, c = 2 * (lane % 4);
      for (int i = 0; i < counts[v % 3]; ++i) {
        const uint32_t want = trans ? elem(i, c, r) | (elem(i, c + 1, r) << 16) : elem(i, r, c) | (elem(i, r, c + 1) << 16);
        EXPECT_EQ(got[v * 128 + lane * 4 + i], want) << "variant " << v << " lane " << lane << " reg " << i;
      }
    }
  }
}

// ldmatrix feeding mma, as in a GEMM: A row-major through x4, B through x2.trans when stored
// [k][n] and through x2 when stored [n][k]. Padded rows keep 16-byte alignment.
__global__ void ldmatrix_mma_kernel(const uint16_t* a, const uint16_t* b, float* d_kn, float* d_nk) {
  constexpr int kA = 24, kB = 8, kBt = 24;
  __shared__ __align__(16) uint16_t sa[16 * kA];
  __shared__ __align__(16) uint16_t sb[16 * kB];
  __shared__ __align__(16) uint16_t sbt[8 * kBt];
  const int lane = threadIdx.x, g = lane / 4, t = lane % 4;
  for (int i = lane; i < 256; i += 32) sa[(i / 16) * kA + i % 16] = a[i];
  for (int i = lane; i < 128; i += 32) {
    sb[(i / 8) * kB + i % 8] = b[i];
    sbt[(i % 8) * kBt + i / 8] = b[i];
  }
  __syncthreads();
  uint32_t fa[4], fb[2], fbt[2];
  qk::ldmatrix_x4(fa, sa + (lane % 16) * kA + (lane / 16) * 8);
  qk::ldmatrix_x2_trans(fb, sb + (lane % 16) * kB);
  qk::ldmatrix_x2(fbt, sbt + (lane % 8) * kBt + ((lane / 8) % 2) * 8);
  const float zero[4] = {0, 0, 0, 0};
  float d[4], dt[4];
  qk::mma_m16n8k16_bf16(d, fa, fb, zero);
  qk::mma_m16n8k16_bf16(dt, fa, fbt, zero);
  for (int i = 0; i < 4; ++i) {
    const int idx = (g + 8 * (i / 2)) * 8 + 2 * t + i % 2;
    d_kn[idx] = d[i];
    d_nk[idx] = dt[i];
  }
}

TEST(Ldmatrix, FeedsMmaLikeAGemm) {
  QTRAIN_REQUIRE_DEVICE();
  const auto x = mma_data(false, 21);
  DeviceBuffer<uint16_t> da(x.a), db(x.b);
  DeviceBuffer<float> d1(128), d2(128);
  d1.poison();
  d2.poison();
  QK_LAUNCH(ldmatrix_mma_kernel, dim3(1), dim3(32), 0, nullptr, da.get(), db.get(), d1.get(), d2.get());
  QK_CHECK_LAUNCH();
  const auto want = reference(x.af, x.bf, std::vector<float>(128, 0.0f), 16, 8, 16);
  EXPECT_TRUE(close(d1.download(), want, 1e-6));
  EXPECT_TRUE(close(d2.download(), want, 1e-6));
}

}  // namespace
}  // namespace qtrain::simt_test
