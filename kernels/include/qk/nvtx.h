// RAII ranges around every launcher and layer. Where the CUDA build sets QK_HAS_NVTX they are NVTX
// ranges, so Nsight Systems shows them (the emulator and CPU-only builds have no NVTX); everywhere
// they also feed the in-process range profiler (qk/range_profiler.h) when it is on, which is what
// `qtrain bench` reads for its per-op table. Off, a range costs a branch.
#pragma once

#include "qk/range_profiler.h"

#define QK_NVTX_CAT2(a, b) a##b
#define QK_NVTX_CAT(a, b) QK_NVTX_CAT2(a, b)

#if defined(QK_HAS_NVTX) && QK_HAS_NVTX && !defined(QK_SIMT_EMULATION)
#include <nvtx3/nvToolsExt.h>
namespace qk {
class NvtxRange {
 public:
  explicit NvtxRange(const char* name) : profiled_(prof::enabled()) {
    nvtxRangePushA(name);
    if (profiled_) prof::push(name);
  }
  ~NvtxRange() {
    if (profiled_) prof::pop();
    nvtxRangePop();
  }
  NvtxRange(const NvtxRange&) = delete;
  NvtxRange& operator=(const NvtxRange&) = delete;

 private:
  bool profiled_;
};
}  // namespace qk
#define QK_NVTX_RANGE(name) ::qk::NvtxRange QK_NVTX_CAT(qk_nvtx_range_, __LINE__)(name)
#else
#define QK_NVTX_RANGE(name) ::qk::prof::Range QK_NVTX_CAT(qk_nvtx_range_, __LINE__)(name)
#endif

// A range named after the enclosing function.
#define QK_NVTX_FUNC() QK_NVTX_RANGE(__func__)
