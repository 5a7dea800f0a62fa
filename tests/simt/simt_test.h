// Shared by the emulator self-tests: the op harness's device buffers and random data, plus a way to
// run a launcher and catch the error that QK_CHECK_LAUNCH() throws. The same tests build for a real
// GPU (the _gpu variant, skipped without a device), which confirms the emulated layouts on hardware.
#pragma once
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <functional>
#include <string>

#include "ops/harness.h"
#include "qk/cuda_check.h"
#include "qk/error.h"
#include "qk/simt.h"

namespace qtrain::simt_test {

using qtrain::test::DeviceBuffer;
using qtrain::test::Rng;

// The message of the qk::Error that `f` throws, or "" when it does not throw.
inline std::string launch_error(const std::function<void()>& f) {
  try {
    f();
  } catch (const qk::Error& e) {
    return e.what();
  }
  return "";
}

// Tests that only make sense under the emulator (a divergent barrier hangs a GPU).
#if defined(QTRAIN_TEST_VARIANT_EMU)
#define SIMT_EMU_ONLY() ((void)0)
#else
#define SIMT_EMU_ONLY() GTEST_SKIP() << "emulator-only check"
#endif

}  // namespace qtrain::simt_test
