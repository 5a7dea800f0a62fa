// Choosing the backend of a run.
#include "runtime/train/train_backend.h"

#include "csrc/core/error.h"
#include "runtime/device/device.h"
#include "runtime/train/cpu_backend.h"
#include "runtime/train/cuda_backend.h"

namespace qtrain::train {

std::string resolve_device(const config::RunConfig& cfg) {
  if (cfg.device == "cpu") return "cpu";
  const bool built = rt::built_with_cuda();
  const rt::DeviceInfo dev = built ? rt::query_device(0) : rt::DeviceInfo{};
  if (cfg.device == "cuda") {
    if (!built) throw_bad_input(cfg.source, "device: cuda, but this qtrain was built without CUDA", "key device");
    if (!dev.available) throw_bad_input(cfg.source, "device: cuda, but no GPU is usable: " + dev.reason, "key device");
    return "cuda";
  }
  // auto: a real GPU. The emulated device (tests) is only used when asked for by name.
  return built && dev.available && !dev.emulated ? "cuda" : "cpu";
}

std::unique_ptr<TrainBackend> make_train_backend(const config::RunConfig& cfg, std::FILE* log,
                                                 const std::string& model_dir) {
  const std::string dir = model_dir.empty() ? cfg.base_model : model_dir;
  if (resolve_device(cfg) == "cuda") return make_cuda_backend(cfg, log, dir);
  return make_cpu_backend(cfg, dir);
}

}  // namespace qtrain::train
