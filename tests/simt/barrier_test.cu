// Block-level semantics: thread/block indices in 3-D, __syncthreads and its count/and/or forms,
// static and dynamic shared memory, the dynamic shared memory limit, and (emulated only) that a
// missing barrier gives wrong results and a divergent one fails the launch naming the kernel.
#include <vector>

#include "simt_test.h"

namespace qtrain::simt_test {
namespace {

constexpr int kMaxBlock = 256;

// out[b, t] = in[b, (t + shift) mod n]: each thread reads what another one wrote.
template <bool Has_barrier>
__global__ void rotate_kernel(const int* in, int* out, int shift) {
  __shared__ int s[kMaxBlock];
  const unsigned n = blockDim.x * blockDim.y * blockDim.z;
  const unsigned t = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
  const unsigned block = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
  s[t] = in[block * n + t];
  if (Has_barrier) __syncthreads();
  out[block * n + t] = s[(t + shift) % n];
}

template <bool Has_barrier>
std::vector<int> rotate(const std::vector<int>& in, dim3 grid, dim3 block, int shift) {
  DeviceBuffer<int> din(in), dout(in.size());
  dout.poison();
  QK_LAUNCH(rotate_kernel<Has_barrier>, grid, block, 0, nullptr, din.get(), dout.get(), shift);
  QK_CHECK_LAUNCH();
  return dout.download();
}

std::vector<int> rotate_reference(const std::vector<int>& in, unsigned n, int shift) {
  std::vector<int> out(in.size());
  for (size_t b = 0; b < in.size() / n; ++b)
    for (unsigned t = 0; t < n; ++t) out[b * n + t] = in[b * n + (t + shift) % n];
  return out;
}

std::vector<int> iota_values(size_t n) {
  std::vector<int> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<int>(1000 + 7 * i);
  return v;
}

TEST(Barrier, ThreadsSeeEachOthersWritesIn3dBlocks) {
  QTRAIN_REQUIRE_DEVICE();
  const dim3 grid(3, 2, 1), block(7, 3, 2);  // 42 threads: a partial second warp
  const unsigned n = 42;
  const auto in = iota_values(6 * n);
  for (int shift : {1, 41, 13})
    EXPECT_EQ(rotate<true>(in, grid, block, shift), rotate_reference(in, n, shift)) << "shift " << shift;
}

TEST(Barrier, MissingBarrierGivesWrongResults) {
  QTRAIN_REQUIRE_DEVICE();
  const dim3 grid(4), block(96);
  const auto in = iota_values(4 * 96);
  const auto got = rotate<false>(in, grid, block, 1);
#if defined(QTRAIN_TEST_VARIANT_EMU)
  // Thread t reads s[t + 1] before thread t + 1 has written it.
  EXPECT_NE(got, rotate_reference(in, 96, 1));
  // Reading a lower thread's slot works in forward order, so reverse order is needed to catch it.
  qk::emu::set_thread_order(qk::emu::thread_order::reverse);
  const auto reversed = rotate<false>(in, grid, block, 95);
  qk::emu::set_thread_order(qk::emu::thread_order::forward);
  EXPECT_NE(reversed, rotate_reference(in, 96, 95));
#else
  (void)got;  // on hardware a missing barrier may happen to work
#endif
}

TEST(Barrier, ShuffledOrderKeepsCorrectKernelsCorrect) {
  QTRAIN_REQUIRE_DEVICE();
  SIMT_EMU_ONLY();
#if defined(QTRAIN_TEST_VARIANT_EMU)
  qk::emu::set_thread_order(qk::emu::thread_order::shuffle, 42);
  const auto in = iota_values(3 * 100);
  const auto got = rotate<true>(in, dim3(3), dim3(100), 37);
  qk::emu::set_thread_order(qk::emu::thread_order::forward);
  EXPECT_EQ(got, rotate_reference(in, 100, 37));
#endif
}

// out[block] = {count, and, or} of (threadIdx.x % 3 == 0), and of "always", over the block.
__global__ void vote_kernel(int* out) {
  const int p = threadIdx.x % 3 == 0;
  const int count = __syncthreads_count(p);
  const int all_p = __syncthreads_and(p);
  const int any_p = __syncthreads_or(p);
  const int all_true = __syncthreads_and(1);
  if (threadIdx.x == 0) {
    out[4 * blockIdx.x + 0] = count;
    out[4 * blockIdx.x + 1] = all_p;
    out[4 * blockIdx.x + 2] = any_p;
    out[4 * blockIdx.x + 3] = all_true;
  }
}

TEST(Barrier, CountAndOr) {
  QTRAIN_REQUIRE_DEVICE();
  DeviceBuffer<int> out(8);
  QK_LAUNCH(vote_kernel, dim3(2), dim3(77), 0, nullptr, out.get());
  QK_CHECK_LAUNCH();
  const auto got = out.download();
  for (int b = 0; b < 2; ++b) {
    EXPECT_EQ(got[4 * b + 0], 26);  // 0, 3, ..., 75
    EXPECT_EQ(got[4 * b + 1], 0);
    EXPECT_NE(got[4 * b + 2], 0);
    EXPECT_NE(got[4 * b + 3], 0);
  }
}

// Reverses each block's slice through dynamic shared memory.
__global__ void reverse_kernel(const float* in, float* out, int n) {
  QK_DYNAMIC_SHARED(float, s);
  const int base = blockIdx.x * n;
  for (int i = threadIdx.x; i < n; i += blockDim.x) s[i] = in[base + i];
  __syncthreads();
  for (int i = threadIdx.x; i < n; i += blockDim.x) out[base + i] = s[n - 1 - i];
}

void reverse(const float* in, float* out, int blocks, int n) {
  QK_LAUNCH(reverse_kernel, dim3(blocks), dim3(64), n * sizeof(float), nullptr, in, out, n);
  QK_CHECK_LAUNCH();
}

TEST(SharedMemory, DynamicIsPerBlock) {
  QTRAIN_REQUIRE_DEVICE();
  const int n = 300, blocks = 3;
  const auto in = qtrain::test::random_f32(n * blocks, 5);
  DeviceBuffer<float> din(in), dout(in.size());
  dout.poison();
  reverse(din.get(), dout.get(), blocks, n);
  const auto got = dout.download();
  for (int b = 0; b < blocks; ++b)
    for (int i = 0; i < n; ++i) ASSERT_EQ(got[b * n + i], in[b * n + n - 1 - i]) << b << " " << i;
}

TEST(SharedMemory, OverDefaultLimitNeedsTheAttribute) {
  QTRAIN_REQUIRE_DEVICE();
  const int n = 20000;  // 80 000 bytes: over the 48 KiB default, within every sm_80+ opt-in limit
  const auto in = qtrain::test::random_f32(n, 9);
  DeviceBuffer<float> din(in), dout(in.size());
  const std::string err = launch_error([&] { reverse(din.get(), dout.get(), 1, n); });
  EXPECT_FALSE(err.empty());
#if defined(QTRAIN_TEST_VARIANT_EMU)
  EXPECT_NE(err.find("reverse_kernel"), std::string::npos) << err;
#endif
  QK_CUDA_CHECK(cudaFuncSetAttribute(reinterpret_cast<const void*>(reverse_kernel),
                                     cudaFuncAttributeMaxDynamicSharedMemorySize, n * sizeof(float)));
  reverse(din.get(), dout.get(), 1, n);
  const auto got = dout.download();
  for (int i = 0; i < n; ++i) ASSERT_EQ(got[i], in[n - 1 - i]) << i;
}

// Deliberately broken kernels: barriers that not every thread reaches.
__global__ void half_barrier_kernel(int* out) {
  if (threadIdx.x < 16) __syncthreads();
  out[threadIdx.x] = 1;
}

__global__ void split_barrier_kernel(int* out) {
  if (threadIdx.x % 2) {
    out[threadIdx.x] = 1;
    __syncthreads();
  } else {
    out[threadIdx.x] = 2;
    __syncthreads();
  }
}

__global__ void early_exit_kernel(int* out, int n) {
  __shared__ int s[64];
  if (static_cast<int>(threadIdx.x) >= n) return;
  s[threadIdx.x] = static_cast<int>(threadIdx.x);
  __syncthreads();
  out[threadIdx.x] = s[(threadIdx.x + 1) % n];
}

TEST(Barrier, DivergentBarrierFailsNamingTheKernel) {
  QTRAIN_REQUIRE_DEVICE();
  SIMT_EMU_ONLY();
  DeviceBuffer<int> out(64);
  std::string err = launch_error([&] {
    QK_LAUNCH(half_barrier_kernel, dim3(2), dim3(64), 0, nullptr, out.get());
    QK_CHECK_LAUNCH();
  });
  EXPECT_NE(err.find("half_barrier_kernel"), std::string::npos) << err;
  EXPECT_NE(err.find("has exited"), std::string::npos) << err;
  EXPECT_NE(err.find("block (0,0,0)"), std::string::npos) << err;

  err = launch_error([&] {
    QK_LAUNCH(split_barrier_kernel, dim3(1), dim3(64), 0, nullptr, out.get());
    QK_CHECK_LAUNCH();
  });
  EXPECT_NE(err.find("split_barrier_kernel"), std::string::npos) << err;
  EXPECT_NE(err.find("divergent barrier"), std::string::npos) << err;

  err = launch_error([&] {
    QK_LAUNCH(early_exit_kernel, dim3(1), dim3(64), 0, nullptr, out.get(), 40);
    QK_CHECK_LAUNCH();
  });
  EXPECT_NE(err.find("early_exit_kernel"), std::string::npos) << err;

  // The failure is reported once and the device keeps working.
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
  QK_LAUNCH(early_exit_kernel, dim3(1), dim3(64), 0, nullptr, out.get(), 64);
  QK_CHECK_LAUNCH();
  const auto got = out.download();
  for (int i = 0; i < 64; ++i) EXPECT_EQ(got[i], (i + 1) % 64);
}

TEST(Launch, InvalidConfigurationIsReported) {
  QTRAIN_REQUIRE_DEVICE();
  DeviceBuffer<int> out(64);
  const std::string err = launch_error([&] {
    QK_LAUNCH(half_barrier_kernel, dim3(1), dim3(2048), 0, nullptr, out.get());
    QK_CHECK_LAUNCH();
  });
  EXPECT_NE(err.find("cudaErrorInvalidConfiguration"), std::string::npos) << err;
}

}  // namespace
}  // namespace qtrain::simt_test
