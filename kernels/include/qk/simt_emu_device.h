// Internal to the SIMT emulator: what its scheduler (kernels/simt/emu_scheduler.cpp) needs from its
// emulated device (kernels/simt/emu_runtime.cpp). Kernels and their callers never include this.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <string>

namespace qk::emu {

// The emulated device, an sm_80-like part.
inline constexpr size_t kDefaultDynamicSmem = 48 * 1024;
inline constexpr size_t kMaxDynamicSmemOptin = 163 * 1024;
inline constexpr int kMaxThreadsPerBlock = 1024;

// Records a failed launch for cudaGetLastError(); cudaGetErrorString(err) returns `detail` (which
// names the kernel) until the next failure.
void set_launch_error(cudaError_t err, std::string detail);
bool stream_is_valid(cudaStream_t stream);
// The dynamic shared memory a kernel may use: 48 KiB, or what cudaFuncSetAttribute allowed.
size_t max_dynamic_smem(const void* func);

}  // namespace qk::emu
