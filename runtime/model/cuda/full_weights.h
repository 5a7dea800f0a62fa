// Full fine-tuning on the device: every weight of the model trainable. The kernels keep reading the
// bf16 weights of DeviceWeights (a bf16 base: full mode has no NF4); beside them live an fp32 master
// copy of every weight, which the optimizer updates, and an fp32 gradient of every weight, which
// backward accumulates into. refresh_bf16 casts masters -> bf16 weights after each optimizer step.
//
// Memory: two arena buffers of the same layout, masters and grads. The layout is HF's tensor order
// (csrc/io/llama_layout.h) cut into slots, one per device tensor: the embedding, per layer the input
// norm, q/k/v (q, k, v weights back to back, as the fused linear's [q; k; v] rows), o, the q/k/v
// biases (back to back), the post-attention norm, gate/up ([gate; up]), down, then the final norm and
// an untied lm_head. Each slot starts on a 64-element boundary (256 bytes of fp32), the gaps zero.
// So the fused gradients dW_qkv = dY_qkv^T X and dW_gate_up land in place, and every HF tensor is a
// view (pointer + numel) into the one buffer. Tied embeddings have one tensor and one gradient,
// which the LM head and the embedding both accumulate into.
#pragma once
#if QTRAIN_HAS_CUDA
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "runtime/memory/arena.h"
#include "runtime/model/base_weights.h"
#include "runtime/model/cuda/device_lora.h"
#include "runtime/model/cuda/device_weights.h"

namespace qtrain::model::cuda {

// fp32 gradients of one fused linear, accumulated into: dw [out_total, in], db [out_total] (null
// without a bias).
struct FullLinearGrads {
  float* dw = nullptr;
  float* db = nullptr;
};

// Views into FullWeights::grads for one layer.
struct FullLayerGrads {
  float* input_norm = nullptr;
  float* post_norm = nullptr;
  FullLinearGrads qkv, o, gate_up, down;
};

// A weight on the host by its HF name (for saving a model folder).
struct HostTensor {
  std::string name;
  std::vector<int64_t> shape;
  std::vector<float> values;
};

struct FullWeights {
  // One device tensor: its master/grad span and the bf16 copy the kernels read.
  struct Slot {
    size_t offset = 0;  // elements into masters / grads
    size_t numel = 0;
    __nv_bfloat16* w16 = nullptr;
  };
  // One HF tensor: a view into a slot.
  struct Entry {
    std::string name;
    std::vector<int64_t> shape;
    size_t offset = 0;
    size_t numel = 0;
  };

  float* masters = nullptr;  // [total]
  float* grads = nullptr;    // [total]
  size_t total = 0;
  size_t bytes = 0;  // arena bytes taken
  std::vector<Slot> slots;
  std::vector<Entry> entries;  // llama_tensor_layout's order
  std::vector<FullLayerGrads> layers;
  float* embed_grad = nullptr;
  float* head_grad = nullptr;  // == embed_grad when tied
  float* final_norm_grad = nullptr;

  // The trainable tensors by HF name ("model.layers.0.self_attn.q_proj.weight", ...), in
  // llama_tensor_layout's order; value and grad point into masters and grads.
  std::vector<DeviceLoraTensor> tensors() const;
  // bf16 weights = cast(masters), slot by slot.
  void refresh_bf16(cudaStream_t stream) const;
  void zero_grad(cudaStream_t stream) const;
  // The masters on the host, one tensor per HF name (waits for the copies).
  std::vector<HostTensor> download(cudaStream_t stream) const;
};

// Allocates masters and grads from `arena` (persistent: before any step mark), masters = the fp32
// values of `base`, grads zero, and refreshes the bf16 weights of `weights` from the masters (the same
// rounding upload_weights did). `weights` must be bf16 (an NF4 base is BadInput).
FullWeights create_full_weights(const BaseWeights& base, const DeviceWeights& weights, rt::DeviceArena& arena,
                                cudaStream_t stream);

// An HF model folder from host tensors: config.json (torch_dtype "float32") and model.safetensors
// (f32, in the given order), each written to a temporary name and renamed. Creates `dir` if needed.
void save_hf_model(const std::string& dir, const io::ModelConfig& config, const std::vector<HostTensor>& tensors);

}  // namespace qtrain::model::cuda
#endif
