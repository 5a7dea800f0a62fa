// Warp and block sums with shuffles, for kernels whose blocks are whole warps. Included by .cu
// files only (nvcc or the SIMT emulator).
#pragma once
#include "qk/simt.h"

namespace qk {

__device__ __forceinline__ float warp_sum(float v) {
  for (int offset = 16; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

// Sum over the block, returned to every thread (each warp reduces the per-warp sums in the same
// order, so all agree bit for bit). `scratch` holds one float per warp. Ends with a barrier so that
// scratch can be reused right away.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
  v = warp_sum(v);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < static_cast<int>(blockDim.x / 32) ? scratch[lane] : 0.0f;
  v = warp_sum(v);
  __syncthreads();
  return v;
}

}  // namespace qk
