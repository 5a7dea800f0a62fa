// Checked CUDA runtime and cuBLAS calls: the message names the statement, file:line and device.
// Header-only so that the emulated device (QK_SIMT_EMULATION) gets the same checks.
#pragma once
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <string>

#include "qk/error.h"

namespace qk::detail {

inline std::string where(const char* stmt, const char* file, int line) {
  int dev = -1;
  if (cudaGetDevice(&dev) != cudaSuccess) dev = -1;
  return std::string(stmt) + " at " + file + ":" + std::to_string(line) + " (device " + std::to_string(dev) + ")";
}

[[noreturn]] inline void fail_cuda(cudaError_t err, const char* stmt, const char* file, int line) {
  const Error::Kind kind = err == cudaErrorMemoryAllocation ? Error::Kind::OutOfMemory : Error::Kind::Device;
  throw Error(kind, std::string("CUDA error ") + cudaGetErrorName(err) + " (" + cudaGetErrorString(err) +
                        "): " + where(stmt, file, line));
}

[[noreturn]] inline void fail_cublas(cublasStatus_t st, const char* stmt, const char* file, int line) {
  const Error::Kind kind = st == CUBLAS_STATUS_ALLOC_FAILED ? Error::Kind::OutOfMemory : Error::Kind::Device;
  throw Error(kind, std::string("cuBLAS error ") + cublasGetStatusName(st) + ": " + where(stmt, file, line));
}

}  // namespace qk::detail

#define QK_CUDA_CHECK(stmt)                                                          \
  do {                                                                               \
    const cudaError_t qk_err_ = (stmt);                                              \
    if (qk_err_ != cudaSuccess) ::qk::detail::fail_cuda(qk_err_, #stmt, __FILE__, __LINE__); \
  } while (0)

#define QK_CUBLAS_CHECK(stmt)                                                          \
  do {                                                                                 \
    const cublasStatus_t qk_st_ = (stmt);                                              \
    if (qk_st_ != CUBLAS_STATUS_SUCCESS) ::qk::detail::fail_cublas(qk_st_, #stmt, __FILE__, __LINE__); \
  } while (0)

// Every launcher ends with this: a failed launch is reported where it happened.
#define QK_CHECK_LAUNCH() QK_CUDA_CHECK(cudaGetLastError())
