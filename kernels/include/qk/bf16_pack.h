// Device-side loads and stores of N consecutive bf16 values (N = 1, 2, 4, 8) as one 2-, 4-, 8- or
// 16-byte access, converted to and from fp32. The memory-bound kernels (embedding, rmsnorm, rope,
// swiglu) pick the widest N their shape and alignment allow; one access per thread per N values is
// what lets them approach copy bandwidth. Included by .cu files only (nvcc or the SIMT emulator).
#pragma once
#include <cuda_bf16.h>

#include <cstdint>
#include <type_traits>

#include "qk/simt.h"

namespace qk::pack {

__device__ __forceinline__ float lo_f32(uint32_t w) { return __uint_as_float(w << 16); }
__device__ __forceinline__ float hi_f32(uint32_t w) { return __uint_as_float(w & 0xffff0000u); }
__device__ __forceinline__ uint32_t bits(float f) {
  return static_cast<uint32_t>(__bfloat16_as_ushort(__float2bfloat16_rn(f)));
}
__device__ __forceinline__ uint32_t pack2(float lo, float hi) { return bits(lo) | (bits(hi) << 16); }

// p must be aligned to 2 N bytes.
template <int N>
__device__ __forceinline__ void load(const __nv_bfloat16* p, float (&v)[N]) {
  static_assert(N == 1 || N == 2 || N == 4 || N == 8, "1, 2, 4 or 8 values");
  if constexpr (N == 8) {
    const uint4 r = *reinterpret_cast<const uint4*>(p);
    v[0] = lo_f32(r.x), v[1] = hi_f32(r.x), v[2] = lo_f32(r.y), v[3] = hi_f32(r.y);
    v[4] = lo_f32(r.z), v[5] = hi_f32(r.z), v[6] = lo_f32(r.w), v[7] = hi_f32(r.w);
  } else if constexpr (N == 4) {
    const uint2 r = *reinterpret_cast<const uint2*>(p);
    v[0] = lo_f32(r.x), v[1] = hi_f32(r.x), v[2] = lo_f32(r.y), v[3] = hi_f32(r.y);
  } else if constexpr (N == 2) {
    const uint32_t r = *reinterpret_cast<const uint32_t*>(p);
    v[0] = lo_f32(r), v[1] = hi_f32(r);
  } else {
    v[0] = __bfloat162float(*p);
  }
}

template <int N>
__device__ __forceinline__ void store(__nv_bfloat16* p, const float (&v)[N]) {
  static_assert(N == 1 || N == 2 || N == 4 || N == 8, "1, 2, 4 or 8 values");
  if constexpr (N == 8) {
    *reinterpret_cast<uint4*>(p) =
        make_uint4(pack2(v[0], v[1]), pack2(v[2], v[3]), pack2(v[4], v[5]), pack2(v[6], v[7]));
  } else if constexpr (N == 4) {
    *reinterpret_cast<uint2*>(p) = make_uint2(pack2(v[0], v[1]), pack2(v[2], v[3]));
  } else if constexpr (N == 2) {
    *reinterpret_cast<uint32_t*>(p) = pack2(v[0], v[1]);
  } else {
    *p = __float2bfloat16_rn(v[0]);
  }
}

// Rounds an fp32 value to bf16 precision and back: what a bf16 intermediate keeps.
__device__ __forceinline__ float round_bf16(float f) { return __bfloat162float(__float2bfloat16_rn(f)); }

// Whether every pointer is aligned to `bytes` (null pointers count as aligned).
template <typename... P>
inline bool aligned_to(size_t bytes, const P*... p) {
  return ((reinterpret_cast<uintptr_t>(p) % bytes == 0) && ...);
}

// Calls f(std::integral_constant<int, n>{}) for a runtime width n in {1, 2, 4, 8}: launchers pick
// the width at run time and the kernels take it as a template parameter.
template <typename F>
inline void with_width(int n, F&& f) {
  switch (n) {
    case 8: f(std::integral_constant<int, 8>{}); break;
    case 4: f(std::integral_constant<int, 4>{}); break;
    case 2: f(std::integral_constant<int, 2>{}); break;
    default: f(std::integral_constant<int, 1>{});
  }
}

}  // namespace qk::pack
