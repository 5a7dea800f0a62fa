// CPU twin of kernels/cuda/embedding.cu, and the host-side grouping of tokens by id that makes the
// CUDA backward deterministic.
#include "qk/embedding.h"

#include <algorithm>
#include <numeric>
#include <string>

#include "qk/bf16_bits.h"
#include "qk/cpu_elem.h"
#include "qk/error.h"

namespace qk {

void embedding_check_ids(const int32_t* ids, int64_t tokens, int64_t vocab) {
  QK_REQUIRE(tokens >= 0 && vocab > 0, "bad sizes");
  QK_REQUIRE(tokens == 0 || ids != nullptr, "null ids");
  for (int64_t t = 0; t < tokens; ++t)
    if (ids[t] < 0 || ids[t] >= vocab)
      QK_REQUIRE(false, "token " + std::to_string(t) + " has id " + std::to_string(ids[t]) + ", outside [0, " +
                            std::to_string(vocab) + ")");
}

EmbeddingGradPlan embedding_grad_plan(const int32_t* ids, int64_t tokens, int64_t vocab) {
  QK_REQUIRE(tokens < (int64_t{1} << 30), "too many tokens for int32 offsets");
  embedding_check_ids(ids, tokens, vocab);
  std::vector<int32_t> order(static_cast<size_t>(tokens));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return ids[a] < ids[b]; });
  std::vector<int32_t> offsets, rows;
  for (int64_t i = 0; i < tokens; ++i) {
    const int32_t id = ids[order[static_cast<size_t>(i)]];
    if (rows.empty() || rows.back() != id) {
      rows.push_back(id);
      offsets.push_back(static_cast<int32_t>(i));
    }
  }
  offsets.push_back(static_cast<int32_t>(tokens));

  EmbeddingGradPlan plan;
  plan.tokens = tokens;
  plan.groups = static_cast<int64_t>(rows.size());
  plan.data = std::move(order);
  plan.data.insert(plan.data.end(), offsets.begin(), offsets.end());
  plan.data.insert(plan.data.end(), rows.begin(), rows.end());
  return plan;
}

}  // namespace qk

namespace qk::cpu {
namespace {

using elem::load;
using elem::store;

template <typename T>
void forward(const T* table, const int32_t* ids, T* out, int64_t tokens, int64_t vocab, int64_t hidden) {
  QK_REQUIRE(hidden > 0, "bad hidden size");
  embedding_check_ids(ids, tokens, vocab);
  QK_REQUIRE(tokens == 0 || (table != nullptr && out != nullptr), "null pointer");
  for (int64_t t = 0; t < tokens; ++t)
    for (int64_t c = 0; c < hidden; ++c) store(out[t * hidden + c], load(table[ids[t] * hidden + c]));
}

// Each token's row goes straight into dtable; the CUDA groups sum first, so the two differ only by
// rounding.
template <typename T, typename G>
void backward(const T* dout, const int32_t* ids, G* dtable, int64_t tokens, int64_t vocab, int64_t hidden) {
  QK_REQUIRE(hidden > 0, "bad hidden size");
  embedding_check_ids(ids, tokens, vocab);
  QK_REQUIRE(tokens == 0 || (dout != nullptr && dtable != nullptr), "null pointer");
  for (int64_t t = 0; t < tokens; ++t)
    for (int64_t c = 0; c < hidden; ++c)
      dtable[ids[t] * hidden + c] = static_cast<G>(dtable[ids[t] * hidden + c] + load(dout[t * hidden + c]));
}

}  // namespace

void embedding_forward(const uint16_t* table, const int32_t* ids, uint16_t* out, int64_t tokens, int64_t vocab,
                       int64_t hidden) {
  forward(table, ids, out, tokens, vocab, hidden);
}
void embedding_backward(const uint16_t* dout, const int32_t* ids, float* dtable, int64_t tokens, int64_t vocab,
                        int64_t hidden) {
  backward(dout, ids, dtable, tokens, vocab, hidden);
}
void embedding_forward(const double* table, const int32_t* ids, double* out, int64_t tokens, int64_t vocab,
                       int64_t hidden) {
  forward(table, ids, out, tokens, vocab, hidden);
}
void embedding_backward(const double* dout, const int32_t* ids, double* dtable, int64_t tokens, int64_t vocab,
                        int64_t hidden) {
  backward(dout, ids, dtable, tokens, vocab, hidden);
}

}  // namespace qk::cpu
