// main() of the real-GPU test binaries. Each binary is one CTest test (label `gpu`): loading the
// CUDA libraries costs about a second per process, too much to pay per case on machines without a
// GPU. Without a device every case reports GTEST_SKIP and the binary exits 77, which CTest shows
// as "Skipped"; with one, the binary's own output names each case (tools/gpu-check reads it).
#include <cuda_runtime.h>
#include <gtest/gtest.h>

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  const int rc = RUN_ALL_TESTS();
  int count = 0;
  const bool have_device = cudaGetDeviceCount(&count) == cudaSuccess && count > 0;
  if (rc == 0 && !have_device) return 77;
  return rc;
}
