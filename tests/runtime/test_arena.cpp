// The capped device arena on the emulated device (or a real GPU): alignment, the cap, mark and
// release, the peak, and the out-of-memory message.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cstdint>

#include "csrc/core/error.h"
#include "runtime/device/device.h"
#include "runtime/memory/arena.h"

namespace qtrain::rt {
namespace {

bool have_device() { return query_device(0).available; }

TEST(Arena, AlignsAndTracksPeak) {
  if (!have_device()) GTEST_SKIP() << "no CUDA device";
  DeviceArena arena(1 << 20);
  void* a = arena.allocate(5, "a");
  void* b = arena.allocate(7, "b");
  EXPECT_EQ(reinterpret_cast<uintptr_t>(a) % DeviceArena::kAlignment, 0u);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(b) % DeviceArena::kAlignment, 0u);
  EXPECT_EQ(static_cast<char*>(b) - static_cast<char*>(a), static_cast<ptrdiff_t>(DeviceArena::kAlignment));
  const size_t m = arena.mark();
  arena.allocate(1000, "scratch");
  const size_t peak = arena.peak();
  arena.release(m);
  EXPECT_EQ(arena.used(), m);
  EXPECT_EQ(arena.peak(), peak);
  // Memory from the arena is usable device memory.
  Tensor t = arena.allocate_tensor(DType::F32, {3, 5}, "t");
  EXPECT_FALSE(t.device().is_cpu());
  EXPECT_EQ(cudaMemset(t.data(), 0, t.nbytes()), cudaSuccess);
}

TEST(Arena, CapIsHardAndTheMessageSaysWhy) {
  if (!have_device()) GTEST_SKIP() << "no CUDA device";
  DeviceArena arena(4096);
  arena.allocate(4000, "weights");
  try {
    arena.allocate(200, "activations");
    FAIL() << "allocation past the cap succeeded";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::OutOfMemory);
    EXPECT_NE(std::string(e.what()).find("activations"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("of 4.0 KiB"), std::string::npos) << e.what();
  }
  EXPECT_EQ(arena.used(), 4000u);  // a failed allocation changes nothing
}

}  // namespace
}  // namespace qtrain::rt
