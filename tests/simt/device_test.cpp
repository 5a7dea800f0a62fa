// The emulated device's runtime API and cuBLAS, checked against host models; built for a real GPU
// too, where the same expectations hold for the real libraries (which is what keeps the emulated
// ones honest). Checks of emulator-only behaviour are marked.
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "simt_test.h"

namespace qtrain::simt_test {
namespace {

using qtrain::test::close;

TEST(Runtime, DeviceMemoryRoundTrip) {
  QTRAIN_REQUIRE_DEVICE();
  int count = 0, dev = -1;
  QK_CUDA_CHECK(cudaGetDeviceCount(&count));
  QK_CUDA_CHECK(cudaGetDevice(&dev));
  EXPECT_GE(count, 1);
  EXPECT_EQ(dev, 0);
  cudaDeviceProp prop;
  QK_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  EXPECT_EQ(prop.warpSize, 32);
  EXPECT_GE(prop.major, 8);

  std::vector<int> host(1000);
  for (int i = 0; i < 1000; ++i) host[i] = i * 3;
  void* d = nullptr;
  QK_CUDA_CHECK(cudaMalloc(&d, 4000));
  EXPECT_EQ(reinterpret_cast<uintptr_t>(d) % 256, 0u);
  cudaStream_t s;
  QK_CUDA_CHECK(cudaStreamCreate(&s));
  QK_CUDA_CHECK(cudaMemcpyAsync(d, host.data(), 4000, cudaMemcpyHostToDevice, s));
  QK_CUDA_CHECK(cudaMemsetAsync(d, 0, 400, s));
  std::vector<int> back(1000, -1);
  QK_CUDA_CHECK(cudaMemcpyAsync(back.data(), d, 4000, cudaMemcpyDeviceToHost, s));
  QK_CUDA_CHECK(cudaStreamSynchronize(s));
  for (int i = 0; i < 1000; ++i) ASSERT_EQ(back[i], i < 100 ? 0 : i * 3);
  QK_CUDA_CHECK(cudaStreamDestroy(s));
  QK_CUDA_CHECK(cudaFree(d));

  size_t free_bytes = 0, total = 0;
  QK_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total));
  EXPECT_GT(total, 0u);
  EXPECT_LE(free_bytes, total);
}

TEST(Runtime, ManagedPinnedAndEvents) {
  QTRAIN_REQUIRE_DEVICE();
  float* m = nullptr;
  QK_CUDA_CHECK(cudaMallocManaged(&m, 1024 * sizeof(float)));
  cudaMemLocation loc{};
  loc.type = cudaMemLocationTypeDevice;
  loc.id = 0;
  QK_CUDA_CHECK(cudaMemPrefetchAsync(m, 1024 * sizeof(float), loc, 0, nullptr));
  void* pinned = nullptr;
  QK_CUDA_CHECK(cudaMallocHost(&pinned, 4096));
  cudaEvent_t a, b;
  QK_CUDA_CHECK(cudaEventCreate(&a));
  QK_CUDA_CHECK(cudaEventCreate(&b));
  QK_CUDA_CHECK(cudaEventRecord(a, nullptr));
  QK_CUDA_CHECK(cudaMemcpy(m, pinned, 4096, cudaMemcpyHostToDevice));
  QK_CUDA_CHECK(cudaEventRecord(b, nullptr));
  QK_CUDA_CHECK(cudaEventSynchronize(b));
  float ms = -1;
  QK_CUDA_CHECK(cudaEventElapsedTime(&ms, a, b));
  EXPECT_GE(ms, 0.0f);
  QK_CUDA_CHECK(cudaEventDestroy(a));
  QK_CUDA_CHECK(cudaEventDestroy(b));
  QK_CUDA_CHECK(cudaFreeHost(pinned));
  QK_CUDA_CHECK(cudaFree(m));
}

TEST(Runtime, EmulatorRejectsWhatAGpuWould) {
  QTRAIN_REQUIRE_DEVICE();
  SIMT_EMU_ONLY();
  std::vector<int> host(16);
  int* d = nullptr;
  QK_CUDA_CHECK(cudaMalloc(&d, 64));
  // Pageable host memory on the device side of a copy, a prefetch of non-managed memory, a double
  // free, an unknown stream.
  EXPECT_EQ(cudaMemcpy(host.data(), d, 64, cudaMemcpyHostToDevice), cudaErrorInvalidValue);
  cudaMemLocation loc{};
  EXPECT_EQ(cudaMemPrefetchAsync(d, 64, loc, 0, nullptr), cudaErrorInvalidValue);
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidValue);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
  QK_CUDA_CHECK(cudaFree(d));
  EXPECT_EQ(cudaFree(d), cudaErrorInvalidValue);
  int bogus = 0;
  EXPECT_EQ(cudaStreamSynchronize(reinterpret_cast<cudaStream_t>(&bogus)), cudaErrorInvalidResourceHandle);
  EXPECT_STREQ(cudaGetErrorName(cudaErrorInvalidValue), "cudaErrorInvalidValue");
  (void)cudaGetLastError();
}

// ---- cuBLAS ---------------------------------------------------------------------------------------

struct GemmCase {
  cublasOperation_t ta, tb;
  int m, n, k, pad;
  float alpha, beta;
  cudaDataType ab, c;
  int batch;
};

size_t type_size(cudaDataType t) { return t == CUDA_R_32F ? 4 : 2; }

// Values exactly representable in every input type, stored as `t`.
std::vector<uint8_t> encode(const std::vector<float>& v, cudaDataType t) {
  std::vector<uint8_t> out(v.size() * type_size(t));
  for (size_t i = 0; i < v.size(); ++i) {
    if (t == CUDA_R_32F) {
      std::memcpy(&out[4 * i], &v[i], 4);
    } else {
      const uint16_t bits = t == CUDA_R_16BF ? qk::f32_to_bf16_rn(v[i]) : __half_as_ushort(__float2half_rn(v[i]));
      std::memcpy(&out[2 * i], &bits, 2);
    }
  }
  return out;
}

std::vector<float> decode(const std::vector<uint8_t>& b, cudaDataType t) {
  std::vector<float> out(b.size() / type_size(t));
  for (size_t i = 0; i < out.size(); ++i) {
    if (t == CUDA_R_32F) {
      std::memcpy(&out[i], &b[4 * i], 4);
    } else {
      uint16_t bits;
      std::memcpy(&bits, &b[2 * i], 2);
      out[i] = t == CUDA_R_16BF ? qk::bf16_to_f32(bits) : __half2float(__ushort_as_half(bits));
    }
  }
  return out;
}

// Quarter-integers in [-4, 4]: exact in bf16 and f16, so only the accumulation order differs.
std::vector<float> quarters(size_t n, uint64_t seed) {
  Rng r(seed);
  std::vector<float> v(n);
  for (auto& x : v) x = static_cast<float>(static_cast<int>(r.next() % 33) - 16) / 4.0f;
  return v;
}

void run_gemm_case(cublasHandle_t h, const GemmCase& g) {
  const bool ta = g.ta != CUBLAS_OP_N, tb = g.tb != CUBLAS_OP_N;
  const int lda = std::max(1, (ta ? g.k : g.m) + g.pad), ldb = std::max(1, (tb ? g.n : g.k) + g.pad);
  const int ldc = g.m + g.pad;
  const long long sa = static_cast<long long>(lda) * (ta ? g.m : g.k) + 3;
  const long long sb = static_cast<long long>(ldb) * (tb ? g.k : g.n) + 5;
  const long long sc = static_cast<long long>(ldc) * g.n + 7;
  const auto a = quarters(sa * g.batch, 1), b = quarters(sb * g.batch, 2);
  auto c = quarters(sc * g.batch, 3);
  if (g.beta == 0.0f) c.assign(c.size(), NAN);  // beta == 0 must not read C
  const auto ea = encode(a, g.ab), eb = encode(b, g.ab), ec = encode(c, g.c);
  DeviceBuffer<uint8_t> da(ea), db(eb), dc(ec);
  if (g.batch == 1) {
    QK_CUBLAS_CHECK(cublasGemmEx(h, g.ta, g.tb, g.m, g.n, g.k, &g.alpha, da.get(), g.ab, lda, db.get(), g.ab, ldb,
                                 &g.beta, dc.get(), g.c, ldc, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  } else {
    QK_CUBLAS_CHECK(cublasGemmStridedBatchedEx(h, g.ta, g.tb, g.m, g.n, g.k, &g.alpha, da.get(), g.ab, lda, sa,
                                               db.get(), g.ab, ldb, sb, &g.beta, dc.get(), g.c, ldc, sc, g.batch,
                                               CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  }
  auto got = decode(dc.download(), g.c);
  // Column-major reference; elements outside the m x n window (padding) must be untouched.
  std::vector<float> want = decode(ec, g.c);
  for (int batch = 0; batch < g.batch; ++batch)
    for (int i = 0; i < g.m; ++i)
      for (int j = 0; j < g.n; ++j) {
        double acc = 0;
        for (int p = 0; p < g.k; ++p) {
          const double av = a[batch * sa + (ta ? p + i * lda : i + p * lda)];
          const double bv = b[batch * sb + (tb ? j + p * ldb : p + j * ldb)];
          acc += av * bv;
        }
        float& w = want[batch * sc + i + j * ldc];
        const double old = g.beta == 0.0f ? 0.0 : static_cast<double>(w);
        w = decode(encode({static_cast<float>(g.alpha * acc + g.beta * old)}, g.c), g.c)[0];
      }
  for (size_t i = 0; i < want.size(); ++i)
    if (std::isnan(want[i])) want[i] = got[i] = 0.0f;  // untouched NaN padding compares equal
  EXPECT_TRUE(close(got, want, g.c == CUDA_R_32F ? 1e-6 : 8e-3))
      << g.m << "x" << g.n << "x" << g.k << " ta " << ta << " tb " << tb << " batch " << g.batch;
}

TEST(Cublas, GemmExSemantics) {
  QTRAIN_REQUIRE_DEVICE();
  cublasHandle_t h;
  QK_CUBLAS_CHECK(cublasCreate(&h));
  QK_CUBLAS_CHECK(cublasSetStream(h, nullptr));
  QK_CUBLAS_CHECK(cublasSetMathMode(h, CUBLAS_DEFAULT_MATH));
  const GemmCase cases[] = {
      {CUBLAS_OP_N, CUBLAS_OP_N, 5, 7, 13, 0, 1.0f, 0.0f, CUDA_R_16BF, CUDA_R_32F, 1},
      {CUBLAS_OP_T, CUBLAS_OP_N, 11, 3, 17, 2, 0.5f, 1.0f, CUDA_R_16BF, CUDA_R_32F, 1},
      {CUBLAS_OP_N, CUBLAS_OP_T, 9, 13, 5, 1, 2.0f, -0.5f, CUDA_R_16BF, CUDA_R_16BF, 1},
      {CUBLAS_OP_T, CUBLAS_OP_T, 7, 5, 11, 3, 1.0f, 0.25f, CUDA_R_16F, CUDA_R_16F, 1},
      {CUBLAS_OP_N, CUBLAS_OP_N, 6, 4, 9, 0, 1.0f, 0.0f, CUDA_R_32F, CUDA_R_32F, 1},
      {CUBLAS_OP_T, CUBLAS_OP_N, 5, 6, 7, 1, 1.0f, 0.0f, CUDA_R_16BF, CUDA_R_32F, 3},
      {CUBLAS_OP_N, CUBLAS_OP_T, 4, 9, 3, 0, 0.5f, 1.0f, CUDA_R_16BF, CUDA_R_16BF, 2},
      {CUBLAS_OP_N, CUBLAS_OP_N, 3, 3, 0, 0, 1.0f, 0.5f, CUDA_R_16BF, CUDA_R_32F, 1},  // k = 0: C = beta C
  };
  for (const auto& g : cases) run_gemm_case(h, g);
  QK_CUBLAS_CHECK(cublasDestroy(h));
}

TEST(Cublas, RefusesWhatCublasRefuses) {
  QTRAIN_REQUIRE_DEVICE();
  cublasHandle_t h;
  QK_CUBLAS_CHECK(cublasCreate(&h));
  DeviceBuffer<float> buf(64);
  const float one = 1.0f, zero = 0.0f;
  // bf16 inputs into an f16 C: no such combination.
  EXPECT_EQ(cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, 2, 2, 2, &one, buf.get(), CUDA_R_16BF, 2, buf.get(), CUDA_R_16BF,
                         2, &zero, buf.get(), CUDA_R_16F, 2, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
            CUBLAS_STATUS_NOT_SUPPORTED);
  // lda smaller than the rows of A.
  EXPECT_EQ(cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, 4, 2, 2, &one, buf.get(), CUDA_R_32F, 3, buf.get(), CUDA_R_32F, 2,
                         &zero, buf.get(), CUDA_R_32F, 4, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
            CUBLAS_STATUS_INVALID_VALUE);
  EXPECT_STREQ(cublasGetStatusName(CUBLAS_STATUS_NOT_SUPPORTED), "CUBLAS_STATUS_NOT_SUPPORTED");
  QK_CUBLAS_CHECK(cublasDestroy(h));
}

}  // namespace
}  // namespace qtrain::simt_test
