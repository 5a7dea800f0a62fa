// RAII NVTX ranges so Nsight Systems shows every launcher and layer. Compiled out unless
// QK_HAS_NVTX is set (the CUDA build sets it; the emulator and CPU-only builds do not).
#pragma once

#if defined(QK_HAS_NVTX) && QK_HAS_NVTX && !defined(QK_SIMT_EMULATION)
#include <nvtx3/nvToolsExt.h>
namespace qk {
class NvtxRange {
 public:
  explicit NvtxRange(const char* name) { nvtxRangePushA(name); }
  ~NvtxRange() { nvtxRangePop(); }
  NvtxRange(const NvtxRange&) = delete;
  NvtxRange& operator=(const NvtxRange&) = delete;
};
}  // namespace qk
#define QK_NVTX_CAT2(a, b) a##b
#define QK_NVTX_CAT(a, b) QK_NVTX_CAT2(a, b)
#define QK_NVTX_RANGE(name) ::qk::NvtxRange QK_NVTX_CAT(qk_nvtx_range_, __LINE__)(name)
#else
#define QK_NVTX_RANGE(name) ((void)0)
#endif

// A range named after the enclosing function.
#define QK_NVTX_FUNC() QK_NVTX_RANGE(__func__)
