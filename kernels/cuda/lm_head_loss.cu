// Chunked LM head + cross-entropy on the device: cuBLAS for the three products, the fused
// cross-entropy kernel in between, one chunk of logits alive at a time (see qk/lm_head_loss.h).
#include <algorithm>
#include <cstdint>

#include "qk/cross_entropy.h"
#include "qk/cuda_check.h"
#include "qk/lm_head_loss.h"
#include "qk/matmul.h"
#include "qk/nvtx.h"

namespace qk {

void lm_head_loss(cublasHandle_t handle, const LmHeadShape& s, const __nv_bfloat16* hidden,
                  const __nv_bfloat16* weight, const int32_t* labels, float dscale, float* loss, float* logprob,
                  __nv_bfloat16* dhidden, float* dweight, void* workspace, cudaStream_t stream) {
  QK_NVTX_FUNC();
  QK_REQUIRE(s.tokens >= 0 && s.hidden > 0 && s.vocab > 0 && s.chunk_tokens > 0, "bad shape");
  QK_REQUIRE(s.hidden < (int64_t{1} << 31) && s.vocab < (int64_t{1} << 31), "dimension too large for one GEMM");
  if (s.tokens == 0) return;
  QK_REQUIRE(hidden != nullptr && weight != nullptr && labels != nullptr && workspace != nullptr, "null pointer");
  QK_REQUIRE(reinterpret_cast<uintptr_t>(workspace) % 16 == 0, "workspace must be 16-byte aligned");
  auto* logits = static_cast<__nv_bfloat16*>(workspace);
  const bool grad = dhidden != nullptr || dweight != nullptr;
  const int h = static_cast<int>(s.hidden), v = static_cast<int>(s.vocab);
  for (int64_t c0 = 0; c0 < s.tokens; c0 += s.chunk_tokens) {
    const int n = static_cast<int>(std::min(s.chunk_tokens, s.tokens - c0));
    const __nv_bfloat16* hc = hidden + c0 * s.hidden;
    matmul_bf16(handle, GemmShape{false, true, n, v, h}, 1.0f, hc, weight, 0.0f, logits, stream);
    cross_entropy(logits, labels + c0, n, s.vocab, dscale, loss != nullptr ? loss + c0 : nullptr,
                  logprob != nullptr ? logprob + c0 : nullptr, grad ? logits : nullptr, stream);
    if (dhidden != nullptr)
      matmul_bf16(handle, GemmShape{false, false, n, h, v}, 1.0f, logits, weight, 0.0f, dhidden + c0 * s.hidden,
                  stream);
    if (dweight != nullptr)
      matmul_bf16_f32(handle, GemmShape{true, false, v, h, n}, 1.0f, logits, hc, 1.0f, dweight, stream);
  }
}

}  // namespace qk
