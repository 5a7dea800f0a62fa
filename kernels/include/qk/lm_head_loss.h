// The LM head and its cross-entropy in token chunks, so [tokens x vocab] logits are never held:
// for each chunk of `chunk_tokens` rows of the final hidden states,
//   logits = h_chunk W^T           (bf16, into a [chunk_tokens, vocab] workspace)
//   loss, logprob, dlogits         (qk::cross_entropy, dlogits in place of the logits)
//   dh_chunk = dlogits W           (bf16)
//   dW += dlogits^T h_chunk        (fp32, only for a trainable lm_head: full fine-tuning)
// Workspace: chunk_tokens * vocab bf16 (lm_head_loss_workspace_bytes). With chunk_tokens = 1024
// and vocab 128256 that is 251 MiB, against 3.9 GiB for fp32 logits of 8192 tokens.
// Forward only (eval, reference log-probabilities): pass dhidden = nullptr and dweight = nullptr.
#pragma once
#include <cstddef>
#include <cstdint>

namespace qk {

struct LmHeadShape {
  int64_t tokens = 0;
  int64_t hidden = 0;
  int64_t vocab = 0;
  int64_t chunk_tokens = 1024;
};

inline size_t lm_head_loss_workspace_bytes(const LmHeadShape& s) {
  const int64_t rows = s.chunk_tokens < s.tokens ? s.chunk_tokens : s.tokens;
  return static_cast<size_t>(rows) * static_cast<size_t>(s.vocab) * 2;
}

}  // namespace qk

namespace qk::cpu {
// bf16 as uint16_t bits. hidden [tokens, hidden], weight [vocab, hidden], labels [tokens];
// loss/logprob [tokens]; dhidden [tokens, hidden] bf16 (may be null); dweight [vocab, hidden] fp32
// accumulated into (may be null).
void lm_head_loss(const LmHeadShape& s, const uint16_t* hidden, const uint16_t* weight, const int32_t* labels,
                  float dscale, float* loss, float* logprob, uint16_t* dhidden, float* dweight);
}  // namespace qk::cpu

#if __has_include(<cuda_runtime.h>)
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
namespace qk {
// workspace: at least lm_head_loss_workspace_bytes(s) bytes of device memory, 16-byte aligned.
void lm_head_loss(cublasHandle_t handle, const LmHeadShape& s, const __nv_bfloat16* hidden,
                  const __nv_bfloat16* weight, const int32_t* labels, float dscale, float* loss, float* logprob,
                  __nv_bfloat16* dhidden, float* dweight, void* workspace, cudaStream_t stream);
}  // namespace qk
#endif
