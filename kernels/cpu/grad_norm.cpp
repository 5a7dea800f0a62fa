// CPU twin of kernels/cuda/grad_norm.cu and the chunk planning both use.
#include "qk/grad_norm.h"

#include <cmath>

#include "qk/error.h"
#include "qk/multi_tensor.h"

namespace qk {

int64_t norm_plan_chunks(NormTensor* tensors, int count) {
  QK_REQUIRE(count >= 0, "negative tensor count");
  for (int i = 0; i < count; ++i) QK_REQUIRE(tensors[i].n >= 0, "negative tensor size");
  return plan_tensor_chunks(tensors, count, [](const NormTensor& t) { return (t.n + kNormChunk - 1) / kNormChunk; });
}

}  // namespace qk

namespace qk::cpu {

double global_l2_norm(const NormTensor* tensors, int count) {
  double sum = 0;
  for (int t = 0; t < count; ++t)
    for (int64_t i = 0; i < tensors[t].n; ++i) sum += static_cast<double>(tensors[t].data[i]) * tensors[t].data[i];
  return std::sqrt(sum);
}

}  // namespace qk::cpu
