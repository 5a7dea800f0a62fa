// CPU twin of kernels/cuda/adamw.cu, and the chunk planning both share.
#include "qk/adamw.h"

#include "qk/error.h"
#include "qk/multi_tensor.h"

namespace qk {

int64_t adamw_plan_chunks(AdamWTensor* tensors, int count) {
  QK_REQUIRE(count >= 0, "negative tensor count");
  for (int i = 0; i < count; ++i) QK_REQUIRE(tensors[i].n >= 0, "negative tensor size");
  return plan_tensor_chunks(tensors, count, [](const AdamWTensor& t) { return (t.n + kAdamWChunk - 1) / kAdamWChunk; });
}

}  // namespace qk

namespace qk::cpu {

void adamw_update(const AdamWTensor* tensors, int count, const AdamWParams& params) {
  QK_REQUIRE(params.step >= 1, "AdamW step counts from 1");
  const AdamWStepConsts c = adamw_step_consts(params);
  for (int t = 0; t < count; ++t) {
    const AdamWTensor& x = tensors[t];
    for (int64_t i = 0; i < x.n; ++i) adamw_element(c, x.param[i], x.grad[i], x.m[i], x.v[i]);
  }
}

}  // namespace qk::cpu
