// Device query over the CUDA runtime API (real, or the SIMT emulator's device).
#include "runtime/device/device.h"

#include <cstdio>

#if QTRAIN_HAS_CUDA
#include <cuda_runtime.h>
#endif

namespace qtrain::rt {

std::string DeviceInfo::str() const {
  if (!available) return "no GPU (" + reason + ")";
  const double gib = static_cast<double>(total_bytes) / (1024.0 * 1024.0 * 1024.0);
  char buf[256];
  std::snprintf(buf, sizeof buf, "cuda:%d %s, sm_%d%d, %d SMs, %.1f GiB%s", index, name.c_str(), cc_major, cc_minor,
                sm_count, gib, emulated ? " (emulated on the CPU)" : "");
  return buf;
}

#if QTRAIN_HAS_CUDA

bool built_with_cuda() { return true; }

DeviceInfo query_device(int index) {
  DeviceInfo info;
  info.index = index;
#if defined(QK_SIMT_EMULATION)
  info.emulated = true;
#endif
  cudaError_t err = cudaGetDeviceCount(&info.count);
  if (err != cudaSuccess || info.count == 0) {
    (void)cudaGetLastError();  // clear the sticky "no device" error so later checks start clean
    info.count = 0;
    info.reason = err == cudaSuccess ? "no CUDA device" : std::string(cudaGetErrorString(err));
    return info;
  }
  if (index < 0 || index >= info.count) {
    info.reason = "device " + std::to_string(index) + " out of range (" + std::to_string(info.count) + " present)";
    return info;
  }
  cudaDeviceProp prop{};
  if (cudaGetDeviceProperties(&prop, index) != cudaSuccess) {
    (void)cudaGetLastError();
    info.reason = "cudaGetDeviceProperties failed";
    return info;
  }
  info.available = true;
  info.name = prop.name;
  info.cc_major = prop.major;
  info.cc_minor = prop.minor;
  info.sm_count = prop.multiProcessorCount;
  info.total_bytes = prop.totalGlobalMem;
  info.concurrent_managed_access = prop.concurrentManagedAccess != 0;
  int prev = 0;
  if (cudaGetDevice(&prev) == cudaSuccess && cudaSetDevice(index) == cudaSuccess) {
    size_t free_b = 0, total_b = 0;
    if (cudaMemGetInfo(&free_b, &total_b) == cudaSuccess) info.free_bytes = free_b;
    (void)cudaSetDevice(prev);
  }
  (void)cudaGetLastError();
  return info;
}

#else

bool built_with_cuda() { return false; }

DeviceInfo query_device(int index) {
  DeviceInfo info;
  info.index = index;
  info.reason = "qtrain was built without CUDA";
  return info;
}

#endif

}  // namespace qtrain::rt
