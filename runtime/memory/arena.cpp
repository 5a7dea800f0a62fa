// The capped device arena.
#include "runtime/memory/arena.h"

#include <cstdio>

#include "csrc/core/error.h"

#if QTRAIN_HAS_CUDA
#include <cuda_runtime.h>
#endif

namespace qtrain::rt {

std::string format_bytes(size_t bytes) {
  char buf[64];
  const double b = static_cast<double>(bytes);
  if (bytes >= (size_t{1} << 30)) std::snprintf(buf, sizeof buf, "%.2f GiB", b / (1 << 30));
  else if (bytes >= (size_t{1} << 20)) std::snprintf(buf, sizeof buf, "%.1f MiB", b / (1 << 20));
  else if (bytes >= (size_t{1} << 10)) std::snprintf(buf, sizeof buf, "%.1f KiB", b / (1 << 10));
  else std::snprintf(buf, sizeof buf, "%zu B", bytes);
  return buf;
}

#if QTRAIN_HAS_CUDA

DeviceArena::DeviceArena(size_t cap_bytes, int device) : cap_(cap_bytes), device_(device) {
  if (cudaSetDevice(device) != cudaSuccess) {
    (void)cudaGetLastError();
    throw_internal("cannot select CUDA device " + std::to_string(device));
  }
  void* p = nullptr;
  if (cap_ > 0 && cudaMalloc(&p, cap_) != cudaSuccess) {
    (void)cudaGetLastError();
    throw_out_of_memory("cannot reserve the device arena of " + format_bytes(cap_) + " on cuda:" +
                        std::to_string(device) + " (lower gpu_memory_limit or free the GPU)");
  }
  base_ = static_cast<std::byte*>(p);
}

DeviceArena::~DeviceArena() {
  if (base_ != nullptr) (void)cudaFree(base_);
}

#else

DeviceArena::DeviceArena(size_t, int) { throw_internal("qtrain was built without CUDA: no device arena"); }
DeviceArena::~DeviceArena() = default;

#endif

void* DeviceArena::allocate(size_t bytes, const char* what) {
  const size_t start = (used_ + kAlignment - 1) / kAlignment * kAlignment;
  if (start > cap_ || bytes > cap_ - start) {
    throw_out_of_memory(std::string("device arena exhausted allocating ") + what + " (" + format_bytes(bytes) +
                        "): " + format_bytes(used_) + " of " + format_bytes(cap_) + " in use");
  }
  used_ = start + bytes;
  if (used_ > peak_) peak_ = used_;
  return base_ + start;
}

Tensor DeviceArena::allocate_tensor(DType dtype, Shape shape, const char* what) {
  void* p = allocate(dtype_bytes(dtype, static_cast<size_t>(shape.numel())), what);
  return Tensor(p, dtype, shape, Device::cuda(device_));
}

void DeviceArena::release(size_t mark) {
  QTRAIN_CHECK_INTERNAL(mark <= used_, "arena release past the current top");
  used_ = mark;
}

}  // namespace qtrain::rt
