// One launch over many tensors: each tensor's work is cut into fixed-size chunks numbered
// consecutively across tensors (chunk_begin), the grid has one block per chunk, and a block finds
// its tensor by a binary search. Used by the optimizers and the gradient norm, whose tensor tables
// are descriptors with `n` (elements) and `chunk_begin` fields.
#pragma once
#include <cstdint>

#include "qk/hd.h"

namespace qk {

// Index of the last tensor whose chunk_begin <= chunk. Empty tensors share their chunk_begin with
// the next tensor and are never chosen ahead of it.
template <typename Tensor>
QK_HD int tensor_of_chunk(const Tensor* tensors, int count, int64_t chunk) {
  int lo = 0, hi = count - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (tensors[mid].chunk_begin <= chunk) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

// Fills chunk_begin from chunks_of(tensor) and returns the total number of chunks.
template <typename Tensor, typename ChunksOf>
int64_t plan_tensor_chunks(Tensor* tensors, int count, ChunksOf&& chunks_of) {
  int64_t chunks = 0;
  for (int i = 0; i < count; ++i) {
    tensors[i].chunk_begin = chunks;
    chunks += chunks_of(tensors[i]);
  }
  return chunks;
}

}  // namespace qk
