// The range profiler with CUDA events as its clock (runtime/bench/device_clock.h), on the emulated
// device (or a GPU): ranges around device work nest, self and inclusive times add up, the event pool
// is reused after take(), and the profiler writes nothing while off.
#include <gtest/gtest.h>

#include <vector>

#include "qk/cast.h"
#include "qk/nvtx.h"
#include "runtime/bench/device_clock.h"
#include "runtime/device/device.h"
#include "runtime/device/stream.h"
#include "runtime/model/cuda/cuda_util.h"

namespace qtrain::bench {
namespace {

using model::cuda::check_cuda;

const qk::prof::RangeStat* find(const qk::prof::Profile& p, const char* name) {
  for (const auto& r : p.ranges)
    if (r.name == name) return &r;
  return nullptr;
}

TEST(DeviceRangeClock, TimesNestedRangesOnTheStream) {
  if (!rt::query_device().available) GTEST_SKIP() << "no device";
  rt::Stream stream;
  const size_t n = 1 << 16;
  float* src = nullptr;
  __nv_bfloat16* dst = nullptr;
  check_cuda(cudaMalloc(&src, n * 4), "test");
  check_cuda(cudaMalloc(&dst, n * 2), "test");
  check_cuda(cudaMemsetAsync(src, 0, n * 4, stream.get()), "test");
  DeviceRangeClock clock(stream.get());
  for (int round = 0; round < 2; ++round) {  // the second round reuses the pool
    qk::prof::enable(&clock);
    {
      QK_NVTX_RANGE("outer");
      for (int i = 0; i < 3; ++i) {
        QK_NVTX_RANGE("inner");
        qk::cast_f32_to_bf16(src, dst, n, stream.get());  // opens its own range too
      }
    }
    qk::prof::disable();
    const qk::prof::Profile p = qk::prof::take();
    const auto* outer = find(p, "outer");
    const auto* inner = find(p, "inner");
    ASSERT_TRUE(outer && inner);
    EXPECT_EQ(outer->calls, 1);
    EXPECT_EQ(inner->calls, 3);
    EXPECT_EQ(p.ranges.size(), 3u) << "the cast launcher's range";
    EXPECT_DOUBLE_EQ(p.total_ms, outer->inclusive_ms);
    double self = 0.0;
    for (const auto& r : p.ranges) {
      EXPECT_GE(r.self_ms, -1e-3) << r.name;  // event times are rounded to about half a microsecond
      self += r.self_ms;
    }
    EXPECT_NEAR(self, p.total_ms, 1e-6);
    EXPECT_LE(inner->inclusive_ms, outer->inclusive_ms + 1e-3);
  }
  qk::prof::set_clock(nullptr);
  check_cuda(cudaFree(src), "test");
  check_cuda(cudaFree(dst), "test");
}

}  // namespace
}  // namespace qtrain::bench
