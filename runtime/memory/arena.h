// DeviceArena: all device memory of a run comes from one cudaMalloc'd slab with a hard byte cap
// (gpu_memory_limit), so a large GPU can stand in for a 24 GB card and a step never calls
// cudaMalloc. Bump allocation with 256-byte alignment; mark()/release() free everything allocated
// after a mark (per-step scratch). Exhaustion is an OutOfMemory error that says what was asked for
// and what is in use.
#pragma once
#include <cstddef>
#include <string>

#include "csrc/core/tensor.h"

namespace qtrain::rt {

class DeviceArena {
 public:
  static constexpr size_t kAlignment = 256;

  // Reserves `cap_bytes` on device `device` now; throws OutOfMemory if that fails.
  DeviceArena(size_t cap_bytes, int device = 0);
  ~DeviceArena();
  DeviceArena(const DeviceArena&) = delete;
  DeviceArena& operator=(const DeviceArena&) = delete;

  void* allocate(size_t bytes, const char* what);
  Tensor allocate_tensor(DType dtype, Shape shape, const char* what);

  size_t mark() const { return used_; }
  void release(size_t mark);

  size_t capacity() const { return cap_; }
  size_t used() const { return used_; }
  size_t peak() const { return peak_; }
  int device() const { return device_; }

 private:
  std::byte* base_ = nullptr;
  size_t cap_ = 0;
  size_t used_ = 0;
  size_t peak_ = 0;
  int device_ = 0;
};

std::string format_bytes(size_t bytes);  // "1.50 GiB", "12.0 MiB", "512 B"

}  // namespace qtrain::rt
