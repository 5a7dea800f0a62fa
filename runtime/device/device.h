// Device query: which GPU is here, if any. Never throws when there is none: "no GPU" is an ordinary
// answer (CI machines have no GPU; tests skip on it).
#pragma once
#include <cstddef>
#include <string>

namespace qtrain::rt {

struct DeviceInfo {
  bool available = false;
  bool emulated = false;     // the SIMT emulator's device (CPU memory, CPU execution)
  std::string reason;        // why not available
  int index = 0;
  int count = 0;
  std::string name;
  int cc_major = 0, cc_minor = 0;
  int sm_count = 0;
  size_t total_bytes = 0;
  size_t free_bytes = 0;
  bool concurrent_managed_access = false;
  std::string str() const;   // one line for logs and `qtrain inspect`
};

// Whether this binary was built with a CUDA backend (real or emulated).
bool built_with_cuda();
DeviceInfo query_device(int index = 0);

}  // namespace qtrain::rt
