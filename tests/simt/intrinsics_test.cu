// Atomics and the device-only intrinsics the emulator supplies, against host models: bf16/f16
// conversions round to nearest even (ties, overflow, NaN, subnormals), fast math within tolerance,
// bit intrinsics exactly. On a GPU the same expectations check the emulator's models.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "simt_test.h"

namespace qtrain::simt_test {
namespace {

struct Counters {
  float f32;
  int i32;
  unsigned u32;
  unsigned long long u64;
  int max_i;
  int min_i;
  unsigned cas_sum;
  unsigned inc;
  int exch;
};

__global__ void atomics_kernel(Counters* c) {
  const unsigned t = blockIdx.x * blockDim.x + threadIdx.x;
  atomicAdd(&c->f32, 0.5f);
  atomicAdd(&c->i32, -static_cast<int>(t));
  atomicAdd(&c->u32, t);
  atomicAdd(&c->u64, 1ull << 33);
  atomicMax(&c->max_i, static_cast<int>(t * 7 % 101));
  atomicMin(&c->min_i, static_cast<int>(t * 7 % 101) - 50);
  unsigned old = c->cas_sum, seen;
  do {  // add t through compare-and-swap
    seen = old;
    old = atomicCAS(&c->cas_sum, seen, seen + t);
  } while (old != seen);
  atomicInc(&c->inc, 9);  // counts modulo 10
  atomicExch(&c->exch, 42);
}

TEST(Atomics, AllThreadsCount) {
  QTRAIN_REQUIRE_DEVICE();
  const unsigned blocks = 3, threads = 70, n = blocks * threads;
  Counters init{0.0f, 0, 0, 0, -1000, 1000, 0, 0, 0};
  DeviceBuffer<Counters> c(1);
  QK_CUDA_CHECK(cudaMemcpy(c.get(), &init, sizeof init, cudaMemcpyHostToDevice));
  QK_LAUNCH(atomics_kernel, dim3(blocks), dim3(threads), 0, nullptr, c.get());
  QK_CHECK_LAUNCH();
  const Counters got = c.download()[0];
  int max_i = -1000, min_i = 1000;
  for (unsigned t = 0; t < n; ++t) {
    max_i = std::max(max_i, static_cast<int>(t * 7 % 101));
    min_i = std::min(min_i, static_cast<int>(t * 7 % 101) - 50);
  }
  EXPECT_EQ(got.f32, 0.5f * n);
  EXPECT_EQ(got.i32, -static_cast<int>(n * (n - 1) / 2));
  EXPECT_EQ(got.u32, n * (n - 1) / 2);
  EXPECT_EQ(got.u64, static_cast<unsigned long long>(n) << 33);
  EXPECT_EQ(got.max_i, max_i);
  EXPECT_EQ(got.min_i, min_i);
  EXPECT_EQ(got.cas_sum, n * (n - 1) / 2);
  EXPECT_EQ(got.inc, n % 10);
  EXPECT_EQ(got.exch, 42);
}

__global__ void convert_kernel(const float* x, __nv_bfloat16* b, __half* h, float* back, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  b[i] = __float2bfloat16_rn(x[i]);
  h[i] = __float2half_rn(x[i]);
  back[i] = __bfloat162float(b[i]) + __half2float(h[i]);
}

TEST(Intrinsics, Bf16AndF16RoundToNearestEven) {
  QTRAIN_REQUIRE_DEVICE();
  std::vector<float> x = qtrain::test::random_f32(200, 3, 100.0f);
  for (uint32_t bits : {0x3f808000u, 0x3f818000u, 0x7f7fffffu, 0x00000001u, 0x80000000u, 0x7fc00000u, 0x7f800000u,
                        0x477ff000u, 0x33800000u, 0x387fc000u})
    x.push_back(qk::f32_from_bits(bits));
  const int n = static_cast<int>(x.size());
  DeviceBuffer<float> dx(x), back(n);
  DeviceBuffer<uint16_t> b(n), h(n);
  QK_LAUNCH(convert_kernel, dim3((n + 63) / 64), dim3(64), 0, nullptr, dx.get(), b.as<__nv_bfloat16>(),
            h.as<__half>(), back.get(), n);
  QK_CHECK_LAUNCH();
  const auto gb = b.download();
  const auto gh = h.download();
  for (int i = 0; i < n; ++i) {
    const uint16_t want_b = qk::f32_to_bf16_rn(x[i]);
    if (std::isnan(x[i])) {
      EXPECT_TRUE(std::isnan(qk::bf16_to_f32(gb[i]))) << i;
    } else {
      EXPECT_EQ(gb[i], want_b) << "x = " << x[i];
    }
    const uint16_t want_h = __half_as_ushort(__float2half_rn(x[i]));  // the host conversion is exact RNE
    if (!std::isnan(x[i])) {
      EXPECT_EQ(gh[i], want_h) << "x = " << x[i];
    }
  }
}

__global__ void math_kernel(const float* x, float* out, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const float v = x[i];
  out[6 * i + 0] = __expf(v);
  out[6 * i + 1] = __logf(fabsf(v));
  out[6 * i + 2] = rsqrtf(fabsf(v));
  out[6 * i + 3] = __fdividef(v, 3.0f);
  out[6 * i + 4] = fmaxf(v, 0.25f) + fminf(v, -0.25f);
  out[6 * i + 5] = __saturatef(v);
}

TEST(Intrinsics, FastMathWithinTolerance) {
  QTRAIN_REQUIRE_DEVICE();
  const auto x = qtrain::test::random_f32(77, 8, 4.0f);
  const int n = static_cast<int>(x.size());
  DeviceBuffer<float> dx(x), out(6 * n);
  QK_LAUNCH(math_kernel, dim3(2), dim3(64), 0, nullptr, dx.get(), out.get(), n);
  QK_CHECK_LAUNCH();
  const auto got = out.download();
  for (int i = 0; i < n; ++i) {
    const double v = x[i];
    const double want[6] = {std::exp(v), std::log(std::fabs(v)), 1.0 / std::sqrt(std::fabs(v)), v / 3.0,
                            std::fmax(v, 0.25) + std::fmin(v, -0.25), v < 0 ? 0.0 : (v > 1 ? 1.0 : v)};
    for (int j = 0; j < 6; ++j)
      EXPECT_NEAR(got[6 * i + j], want[j], 1e-5 * std::fmax(1.0, std::fabs(want[j]))) << "x = " << v << " op " << j;
  }
}

__global__ void bits_kernel(const unsigned* x, unsigned* out, int n) {
  const int i = threadIdx.x;
  if (i >= n) return;
  const unsigned v = x[i], w = x[(i + 1) % n];
  unsigned* o = out + 9 * i;
  o[0] = __popc(v);
  o[1] = __clz(static_cast<int>(v));
  o[2] = __ffs(static_cast<int>(v));
  o[3] = __brev(v);
  o[4] = __byte_perm(v, w, 0x5140);
  o[5] = __funnelshift_l(v, w, i);
  o[6] = __funnelshift_r(v, w, i);
  o[7] = __umulhi(v, w);
  o[8] = __float_as_uint(__uint_as_float(v));
}

TEST(Intrinsics, BitOperations) {
  QTRAIN_REQUIRE_DEVICE();
  std::vector<unsigned> x = {0u, 1u, 0x80000000u, 0xffffffffu, 0x12345678u, 0xdeadbeefu, 0x00f000f0u};
  Rng r(5);
  while (x.size() < 40) x.push_back(static_cast<unsigned>(r.next()));
  const int n = static_cast<int>(x.size());
  DeviceBuffer<unsigned> dx(x), out(9 * n);
  QK_LAUNCH(bits_kernel, dim3(1), dim3(64), 0, nullptr, dx.get(), out.get(), n);
  QK_CHECK_LAUNCH();
  const auto got = out.download();
  for (int i = 0; i < n; ++i) {
    const unsigned v = x[i], w = x[(i + 1) % n];
    const uint64_t wv = (static_cast<uint64_t>(w) << 32) | v;
    unsigned popc = 0, clz = 32, ffs = 0, brev = 0;
    for (int b = 0; b < 32; ++b) {
      popc += (v >> b) & 1u;
      if ((v >> b) & 1u) clz = 31 - b;
      if (!ffs && ((v >> b) & 1u)) ffs = b + 1;
      brev |= ((v >> b) & 1u) << (31 - b);
    }
    unsigned perm = 0;
    for (int k = 0; k < 4; ++k) perm |= static_cast<unsigned>((wv >> (8 * ((0x5140u >> (4 * k)) & 7u))) & 0xffu) << (8 * k);
    const unsigned want[9] = {popc,
                              clz,
                              ffs,
                              brev,
                              perm,
                              static_cast<unsigned>((wv << (i & 31)) >> 32),
                              static_cast<unsigned>(wv >> (i & 31)),
                              static_cast<unsigned>((static_cast<uint64_t>(v) * w) >> 32),
                              v};
    for (int j = 0; j < 9; ++j) EXPECT_EQ(got[9 * i + j], want[j]) << "x = " << v << " op " << j;
  }
}

}  // namespace
}  // namespace qtrain::simt_test
