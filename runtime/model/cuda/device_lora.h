// The LoRA adapter on the device, laid out for the grouped LoRA linear: per
// fused linear (q/k/v, o, gate/up, down) one concatenated A [r_total, in] and
// one B per group, each as an fp32 master, its fp32 gradient and the bf16 copy
// the kernel reads (refresh_bf16 after every optimizer step). A projection the
// adapter does not target still gets a group (its columns of the fused output)
// but with rank 0: no rows of A, no B, no X A columns, nothing allocated. A
// fused linear with no targeted projection has no A either (r_total 0: the
// kernel runs its base alone).
#pragma once
#if QTRAIN_HAS_CUDA
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "qk/lora_linear.h"
#include "runtime/memory/arena.h"
#include "runtime/model/base_weights.h"
#include "runtime/model/lora_config.h"
#include "runtime/model/peft_adapter.h"

namespace qtrain::model::cuda {

struct DeviceLoraGroup {
  Proj proj = Proj::Q;
  bool targeted = false;
  int out = 0;
  int r = 0;           // the adapter's r when targeted, else 0 (and b, db, b16 null)
  int a_row = 0;       // its first row in the concatenated A
  float* b = nullptr;  // fp32 master [out, r]
  float* db = nullptr;
  __nv_bfloat16* b16 = nullptr;
};

struct DeviceLoraLinear {
  int in = 0;
  int r = 0;           // the adapter's rank (of each targeted group)
  int r_total = 0;     // r times the number of targeted groups
  float* a = nullptr;  // fp32 master [r_total, in], group g's rows at groups[g].a_row; null when r_total is 0
  float* da = nullptr;
  __nv_bfloat16* a16 = nullptr;
  std::vector<DeviceLoraGroup> groups;
};

// One trainable tensor by its PEFT key; value and grad are device pointers
// (fp32, `numel` each).
struct DeviceLoraTensor {
  std::string name;
  std::vector<int64_t> shape;
  float* value = nullptr;
  float* grad = nullptr;
  size_t numel = 0;
};

struct DeviceLora {
  LoraConfig config;
  std::vector<std::array<DeviceLoraLinear, 4>> layers;  // qkv, o, gate_up, down
  size_t bytes = 0;

  // Layer by layer, modules in block order, A before B
  // (CpuLlamaModel::lora_tensors' order).
  std::vector<DeviceLoraTensor> tensors() const;
  void refresh_bf16(cudaStream_t stream) const;
  void zero_grad(cudaStream_t stream) const;
  // The kernel's view of linear `which` (0..3) of `layer`; `enabled` false
  // gives scale 0 (the base alone).
  qk::LoraLinear view(int64_t layer, int which, bool enabled) const;
  qk::LoraGrads grads(int64_t layer, int which) const;
  // The X A width of fused linear `which` (the same in every layer): 0 when no group is targeted.
  int r_total(int which) const;
};

// The groups of the four fused linears of a block.
const std::vector<Proj>& fused_projs(int which);

// Allocates from `arena` and uploads `adapter` (shapes checked against `base`,
// as the CPU model does; BadInput naming `where` otherwise).
DeviceLora upload_lora(const BaseWeights& base, const PeftAdapter& adapter, const std::string& where,
                       rt::DeviceArena& arena, cudaStream_t stream);
// PEFT's initialization with the CPU model's random streams: A ~ U(-1/sqrt(in),
// 1/sqrt(in)), B = 0.
PeftAdapter init_peft_adapter(const BaseWeights& base, const LoraConfig& lora, uint64_t seed);
// The master weights back on the host.
PeftAdapter download_lora(const DeviceLora& lora, cudaStream_t stream);

}  // namespace qtrain::model::cuda
#endif
