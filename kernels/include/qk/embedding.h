// Token embedding: out[t, :] = table[ids[t], :] (bf16 table [vocab, hidden], int32 ids), and its
// gradient for full fine-tuning: dtable[v, :] += sum of dout[t, :] over the tokens t with ids[t] == v.
//
// Deterministic backward without float atomics: the host groups the tokens by id once per batch
// (embedding_grad_plan; the ids come from the host-side data loader anyway, and grouping them there
// is also where out-of-range ids are caught). Each group is one vocabulary row; the kernel gives a
// group to one column slice of threads, which sum the group's dout rows in ascending token order in
// fp32 and add the sum to dtable once. The same batch therefore gives the same bits on every run and
// every device, and rows that no token uses are neither read nor written.
#pragma once
#include <cstdint>
#include <vector>

namespace qk {

// Throws qk::Error naming the first token whose id is outside [0, vocab).
void embedding_check_ids(const int32_t* ids, int64_t tokens, int64_t vocab);

// The tokens grouped by id, as one int32 array to upload: order[tokens] (token indices, grouped by
// id, ascending within a group), offsets[groups + 1] (group g is order[offsets[g], offsets[g + 1])),
// rows[groups] (the vocabulary row of each group, ascending).
struct EmbeddingGradPlan {
  int64_t tokens = 0;
  int64_t groups = 0;
  std::vector<int32_t> data;
  const int32_t* order() const { return data.data(); }
  const int32_t* offsets() const { return data.data() + tokens; }
  const int32_t* rows() const { return data.data() + tokens + groups + 1; }
};

// Checks the ids (as embedding_check_ids) and groups them.
EmbeddingGradPlan embedding_grad_plan(const int32_t* ids, int64_t tokens, int64_t vocab);

}  // namespace qk

namespace qk::cpu {
// The references. Ids out of range throw. The backward accumulates into dtable (+=).
void embedding_forward(const uint16_t* table, const int32_t* ids, uint16_t* out, int64_t tokens, int64_t vocab,
                       int64_t hidden);
void embedding_backward(const uint16_t* dout, const int32_t* ids, float* dtable, int64_t tokens, int64_t vocab,
                        int64_t hidden);
// fp64 versions, for the finite-difference check.
void embedding_forward(const double* table, const int32_t* ids, double* out, int64_t tokens, int64_t vocab,
                       int64_t hidden);
void embedding_backward(const double* dout, const int32_t* ids, double* dtable, int64_t tokens, int64_t vocab,
                        int64_t hidden);
}  // namespace qk::cpu

#if __has_include(<cuda_runtime.h>)
#include <cuda_bf16.h>
#include <cuda_runtime.h>
namespace qk {
// The ids live on the device, so the launcher cannot check them: the kernel never reads outside the
// table, and writes a row of NaN for an id outside [0, vocab) (check on the host where the ids are
// made, with embedding_check_ids or embedding_grad_plan).
void embedding_forward(const __nv_bfloat16* table, const int32_t* ids, __nv_bfloat16* out, int64_t tokens,
                       int64_t vocab, int64_t hidden, cudaStream_t stream);
// plan: EmbeddingGradPlan::data uploaded to the device (tokens + 2 groups + 1 int32). dtable: fp32
// [vocab, hidden], accumulated into (+=); zero it at the start of a step.
void embedding_backward(const __nv_bfloat16* dout, const int32_t* plan, int64_t tokens, int64_t groups,
                        float* dtable, int64_t vocab, int64_t hidden, cudaStream_t stream);
}  // namespace qk
#endif
