// AdamW (decoupled weight decay, PyTorch's formulation) over fp32 master weights, for many tensors
// in one launch: the caller describes every tensor once (a table in device memory, built at
// set-up, so a training step allocates nothing) and each step is a single kernel over all chunks.
//   p <- p - lr * wd * p
//   m <- b1 m + (1 - b1) g,   v <- b2 v + (1 - b2) g^2,   with g = grad * grad_scale
//   p <- p - (lr / (1 - b1^t)) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
// grad_scale carries gradient clipping (and 1/accumulation steps) into the update without a pass.
#pragma once
#include <cmath>
#include <cstddef>
#include <cstdint>

#include "qk/hd.h"

namespace qk {

struct AdamWParams {
  float lr = 1e-3f;
  float beta1 = 0.9f;
  float beta2 = 0.999f;
  float eps = 1e-8f;
  float weight_decay = 0.0f;
  float grad_scale = 1.0f;
  int64_t step = 1;  // 1-based, after increment (as PyTorch's state["step"])
};

// One tensor's buffers; chunk_begin is filled by adamw_plan_chunks.
struct AdamWTensor {
  float* param;
  const float* grad;
  float* m;
  float* v;
  int64_t n;
  int64_t chunk_begin;
};

constexpr int64_t kAdamWChunk = 2048;  // elements per thread block

// Fills chunk_begin for each tensor and returns the total number of chunks (the grid size).
int64_t adamw_plan_chunks(AdamWTensor* tensors, int count);

// Per-step constants shared by the kernel and the CPU twin, computed on the host in double.
struct AdamWStepConsts {
  float lr, beta1, beta2, eps, decay_factor, step_size, inv_sqrt_bc2, grad_scale;
};
inline AdamWStepConsts adamw_step_consts(const AdamWParams& p) {
  const double bc1 = 1.0 - std::pow(static_cast<double>(p.beta1), static_cast<double>(p.step));
  const double bc2 = 1.0 - std::pow(static_cast<double>(p.beta2), static_cast<double>(p.step));
  return {p.lr,
          p.beta1,
          p.beta2,
          p.eps,
          static_cast<float>(1.0 - static_cast<double>(p.lr) * p.weight_decay),
          static_cast<float>(p.lr / bc1),
          static_cast<float>(1.0 / std::sqrt(bc2)),
          p.grad_scale};
}

// The update of one element, shared by the kernel and its twin so both round alike.
QK_HD void adamw_element(const AdamWStepConsts& c, float& p, float g, float& m, float& v) {
  g *= c.grad_scale;
  p *= c.decay_factor;
  m = c.beta1 * m + (1.0f - c.beta1) * g;
  v = c.beta2 * v + (1.0f - c.beta2) * (g * g);
  const float denom = sqrtf(v) * c.inv_sqrt_bc2 + c.eps;
  p -= c.step_size * (m / denom);
}

}  // namespace qk

namespace qk::cpu {
// Host pointers in `tensors`.
void adamw_update(const AdamWTensor* tensors, int count, const AdamWParams& params);
}  // namespace qk::cpu

#if __has_include(<cuda_runtime.h>)
#include <cuda_runtime.h>
namespace qk {
// `device_tensors` is a table in device memory (count entries, chunk_begin planned) whose
// pointers are device pointers; total_chunks is what adamw_plan_chunks returned.
void adamw_update(const AdamWTensor* device_tensors, int count, int64_t total_chunks, const AdamWParams& params,
                  cudaStream_t stream);
}  // namespace qk
#endif
