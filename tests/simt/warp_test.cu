// Warp collectives against a host model of CUDA's documented semantics: the four shuffles with
// sub-warp widths (including the out-of-segment rules), votes, __match_any_sync, __syncwarp,
// partial masks and a partial last warp; and (emulated only) that a collective which not every
// lane of its mask reaches fails the launch, naming the kernel.
#include <cuda_bf16.h>

#include <cstdint>
#include <vector>

#include "simt_test.h"

namespace qtrain::simt_test {
namespace {

enum Mode { kIdx, kUp, kDown, kXor };
struct Case {
  Mode mode;
  int param;
  int width;
};
constexpr Case kCases[] = {{kIdx, 7, 32},  {kIdx, -3, 32}, {kIdx, 5, 8},  {kUp, 3, 32},  {kUp, 2, 16},
                           {kDown, 5, 32}, {kDown, 3, 8},  {kXor, 9, 32}, {kXor, 6, 8}, {kXor, 4, 4}};
constexpr int kCaseCount = sizeof(kCases) / sizeof(kCases[0]);

// The value lane `lane` of a warp gets, per the CUDA programming guide.
int shfl_model(const Case& c, int lane, const int* v) {
  const int seg = lane & ~(c.width - 1), last = seg + c.width - 1;
  switch (c.mode) {
    case kIdx: return v[seg + (c.param & (c.width - 1))];
    case kUp: return lane - c.param >= seg ? v[lane - c.param] : v[lane];
    case kDown: return lane + c.param <= last ? v[lane + c.param] : v[lane];
    case kXor: return (lane ^ c.param) <= last ? v[lane ^ c.param] : v[lane];
  }
  return 0;
}

__device__ int value_of(unsigned t) { return static_cast<int>(1000 * (t / 32) + 3 * (t % 32) + 1); }

__global__ void shfl_kernel(int* out, Case* cases, int ncases) {
  const unsigned t = threadIdx.x;
  const int v = value_of(t);
  for (int i = 0; i < ncases; ++i) {
    const Case c = cases[i];
    int r = 0;
    switch (c.mode) {
      case kIdx: r = __shfl_sync(0xffffffffu, v, c.param, c.width); break;
      case kUp: r = __shfl_up_sync(0xffffffffu, v, c.param, c.width); break;
      case kDown: r = __shfl_down_sync(0xffffffffu, v, c.param, c.width); break;
      case kXor: r = __shfl_xor_sync(0xffffffffu, v, c.param, c.width); break;
    }
    out[i * blockDim.x + t] = r;
  }
}

TEST(Warp, ShufflesMatchTheModel) {
  QTRAIN_REQUIRE_DEVICE();
  const int threads = 64;
  std::vector<Case> cases(kCases, kCases + kCaseCount);
  DeviceBuffer<Case> dcases(cases.size());
  QK_CUDA_CHECK(cudaMemcpy(dcases.get(), cases.data(), dcases.bytes(), cudaMemcpyHostToDevice));
  DeviceBuffer<int> out(kCaseCount * threads);
  out.poison();
  QK_LAUNCH(shfl_kernel, dim3(1), dim3(threads), 0, nullptr, out.get(), dcases.get(), kCaseCount);
  QK_CHECK_LAUNCH();
  const auto got = out.download();
  for (int i = 0; i < kCaseCount; ++i) {
    for (int w = 0; w < threads / 32; ++w) {
      int v[32];
      for (int l = 0; l < 32; ++l) v[l] = 1000 * w + 3 * l + 1;
      for (int l = 0; l < 32; ++l)
        ASSERT_EQ(got[i * threads + 32 * w + l], shfl_model(kCases[i], l, v))
            << "case " << i << " warp " << w << " lane " << l;
    }
  }
}

// Other types go through the same shuffle: float, double, bf16.
__global__ void typed_shfl_kernel(float* f, double* d, __nv_bfloat16* h) {
  const unsigned lane = threadIdx.x % 32;
  f[threadIdx.x] = __shfl_down_sync(0xffffffffu, 0.5f * static_cast<float>(lane), 1);
  d[threadIdx.x] = __shfl_xor_sync(0xffffffffu, 1e10 + lane, 1);
  h[threadIdx.x] = __shfl_sync(0xffffffffu, __float2bfloat16_rn(static_cast<float>(lane) + 0.25f), 31 - lane);
}

TEST(Warp, ShufflesCarryFloatDoubleAndBf16) {
  QTRAIN_REQUIRE_DEVICE();
  DeviceBuffer<float> f(32);
  DeviceBuffer<double> d(32);
  DeviceBuffer<__nv_bfloat16> h(32);
  QK_LAUNCH(typed_shfl_kernel, dim3(1), dim3(32), 0, nullptr, f.get(), d.get(), h.get());
  QK_CHECK_LAUNCH();
  const auto gf = f.download();
  const auto gd = d.download();
  const auto gh = h.download();
  for (int l = 0; l < 32; ++l) {
    EXPECT_EQ(gf[l], 0.5f * static_cast<float>(l < 31 ? l + 1 : l));
    EXPECT_EQ(gd[l], 1e10 + (l ^ 1));
    EXPECT_EQ(__bfloat162float(gh[l]), __bfloat162float(__float2bfloat16_rn(static_cast<float>(31 - l) + 0.25f)));
  }
}

// Votes and __match_any_sync over the whole warp, and over each half with a half mask.
__global__ void vote_kernel(unsigned* out) {
  const unsigned t = threadIdx.x, lane = t % 32, warp = t / 32;
  const int p = lane % 3 == 0 || warp == 1;
  unsigned* o = out + 8 * t;
  o[7] = __activemask();  // converged at entry; after the half masks below it need not be
  o[0] = __ballot_sync(0xffffffffu, p);
  o[1] = __any_sync(0xffffffffu, lane == 30 && warp == 0);
  o[2] = __all_sync(0xffffffffu, p);
  o[3] = __match_any_sync(0xffffffffu, lane / 5);
  const unsigned half = lane < 16 ? 0x0000ffffu : 0xffff0000u;
  o[4] = __ballot_sync(half, lane % 2);
  o[5] = __all_sync(half, lane < 16);
  o[6] = __shfl_sync(half, 100 * lane, (lane & 16) + 15 - (lane & 15));
}

TEST(Warp, VotesMatchAndHalfMasks) {
  QTRAIN_REQUIRE_DEVICE();
  DeviceBuffer<unsigned> out(8 * 64);
  QK_LAUNCH(vote_kernel, dim3(1), dim3(64), 0, nullptr, out.get());
  QK_CHECK_LAUNCH();
  const auto got = out.download();
  for (unsigned t = 0; t < 64; ++t) {
    const unsigned lane = t % 32, warp = t / 32;
    const unsigned* o = got.data() + 8 * t;
    unsigned ballot = 0, match = 0;
    for (unsigned j = 0; j < 32; ++j) {
      if (j % 3 == 0 || warp == 1) ballot |= 1u << j;
      if (j / 5 == lane / 5) match |= 1u << j;
    }
    EXPECT_EQ(o[0], ballot) << t;
    EXPECT_EQ(o[1] != 0, warp == 0) << t;
    EXPECT_EQ(o[2] != 0, warp == 1) << t;
    EXPECT_EQ(o[3], match) << t;
    EXPECT_EQ(o[4], lane < 16 ? 0x0000aaaau : 0xaaaa0000u) << t;
    EXPECT_EQ(o[5] != 0, lane < 16) << t;
    EXPECT_EQ(o[6], 100 * ((lane & 16) + 15 - (lane & 15))) << t;
    EXPECT_EQ(o[7], 0xffffffffu) << t;
  }
}

// A block of 40 threads: the second warp has 8 lanes and its collectives involve only those.
__global__ void partial_warp_kernel(unsigned* out) {
  const unsigned lane = threadIdx.x % 32;
  const unsigned mask = __activemask();
  int v = static_cast<int>(lane) + 1;
  for (int off = 16; off > 0; off /= 2) {
    const int other = __shfl_xor_sync(mask, v, off);  // undefined from a lane outside the mask: unused
    if ((mask >> (lane ^ off)) & 1u) v += other;
  }
  out[2 * threadIdx.x] = mask;
  out[2 * threadIdx.x + 1] = static_cast<unsigned>(v);
}

TEST(Warp, PartialLastWarp) {
  QTRAIN_REQUIRE_DEVICE();
  DeviceBuffer<unsigned> out(80);
  QK_LAUNCH(partial_warp_kernel, dim3(1), dim3(40), 0, nullptr, out.get());
  QK_CHECK_LAUNCH();
  const auto got = out.download();
  for (unsigned t = 0; t < 40; ++t) {
    EXPECT_EQ(got[2 * t], t < 32 ? 0xffffffffu : 0xffu) << t;
    EXPECT_EQ(got[2 * t + 1], t < 32 ? 32u * 33u / 2u : 8u * 9u / 2u) << t;
  }
}

// __syncwarp orders shared memory within a warp.
__global__ void syncwarp_kernel(int* out) {
  __shared__ int s[64];
  const unsigned lane = threadIdx.x % 32, base = threadIdx.x - lane;
  s[threadIdx.x] = static_cast<int>(threadIdx.x) * 5;
  __syncwarp();
  out[threadIdx.x] = s[base + (lane + 1) % 32];
}

TEST(Warp, SyncwarpPublishesSharedMemory) {
  QTRAIN_REQUIRE_DEVICE();
  DeviceBuffer<int> out(64);
  QK_LAUNCH(syncwarp_kernel, dim3(1), dim3(64), 0, nullptr, out.get());
  QK_CHECK_LAUNCH();
  const auto got = out.download();
  for (int t = 0; t < 64; ++t) EXPECT_EQ(got[t], 5 * ((t & ~31) + (t % 32 + 1) % 32)) << t;
}

// Deliberately broken: lane 5 leaves before a full-mask shuffle; lanes split between a shuffle and
// a block barrier.
__global__ void shfl_after_exit_kernel(int* out) {
  if (threadIdx.x % 32 == 5) return;
  out[threadIdx.x] = __shfl_sync(0xffffffffu, static_cast<int>(threadIdx.x), 0);
}

__global__ void shfl_vs_barrier_kernel(int* out) {
  if (threadIdx.x < 8) out[threadIdx.x] = __shfl_sync(0xffffffffu, 1, 0);
  else __syncthreads();
}

TEST(Warp, CollectiveNotReachedByTheMaskFails) {
  QTRAIN_REQUIRE_DEVICE();
  SIMT_EMU_ONLY();
  DeviceBuffer<int> out(64);
  std::string err = launch_error([&] {
    QK_LAUNCH(shfl_after_exit_kernel, dim3(1), dim3(64), 0, nullptr, out.get());
    QK_CHECK_LAUNCH();
  });
  EXPECT_NE(err.find("shfl_after_exit_kernel"), std::string::npos) << err;
  EXPECT_NE(err.find("lane 5 of the mask has exited"), std::string::npos) << err;
  err = launch_error([&] {
    QK_LAUNCH(shfl_vs_barrier_kernel, dim3(1), dim3(64), 0, nullptr, out.get());
    QK_CHECK_LAUNCH();
  });
  EXPECT_NE(err.find("shfl_vs_barrier_kernel"), std::string::npos) << err;
  EXPECT_NE(err.find("deadlock"), std::string::npos) << err;
}

}  // namespace
}  // namespace qtrain::simt_test
