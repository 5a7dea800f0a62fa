// The frozen base model on the device: bf16 embeddings, norms and biases, and
// the linear weights of every block in bf16 or NF4 with double-quantized absmax
// (blocksize 64, quantized on the device from the loaded floating weights by
// the same kernels whose bytes match bitsandbytes). q/k/v and gate/up are
// stored concatenated ([q; k; v] and [gate; up] rows), as the grouped LoRA
// linear reads them.
#pragma once
#if QTRAIN_HAS_CUDA
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <vector>

#include "qk/nf4_gemm.h"
#include "runtime/memory/arena.h"
#include "runtime/model/base_weights.h"

namespace qtrain::model::cuda {

struct DeviceLinear {
  int out = 0;  // rows of the (concatenated) weight
  int in = 0;
  __nv_bfloat16* w = nullptr;     // bf16 [out, in]; null for an NF4 weight
  qk::Nf4GemmWeight nf4{};        // NF4 [out, in] when w is null
  __nv_bfloat16* bias = nullptr;  // [out] or null
};

struct DeviceLayer {
  __nv_bfloat16* input_norm = nullptr;
  __nv_bfloat16* post_norm = nullptr;
  DeviceLinear qkv, o, gate_up, down;
};

struct DeviceWeights {
  __nv_bfloat16* embed = nullptr;  // [vocab, hidden]
  __nv_bfloat16* head = nullptr;   // [vocab, hidden]; == embed when tied
  __nv_bfloat16* final_norm = nullptr;
  std::vector<DeviceLayer> layers;
  bool nf4 = false;
  size_t bytes = 0;  // arena bytes the weights took
};

// Allocates from `arena` (persistent: call before any step mark) and waits for
// the uploads.
DeviceWeights upload_weights(const BaseWeights& base, bool nf4, rt::DeviceArena& arena, cudaStream_t stream);

}  // namespace qtrain::model::cuda
#endif
