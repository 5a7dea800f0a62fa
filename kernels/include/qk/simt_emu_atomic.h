// Atomics for the SIMT emulator (included by qk/simt_emu.h). The threads of a launch are fibers on
// one OS thread that switch only at barriers, so a plain read-modify-write is already atomic with
// respect to every other emulated thread. Each returns the old value, as CUDA's do.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

namespace qk::emu {
template <typename T, typename F>
inline T rmw(T* address, F f) {
  const T old = *address;
  *address = f(old);
  return old;
}
}  // namespace qk::emu

#define QK_EMU_ATOMIC(name, T, expr) \
  inline T name(T* address, T val) { return ::qk::emu::rmw(address, [&]([[maybe_unused]] T old) -> T { return (expr); }); }

QK_EMU_ATOMIC(atomicAdd, int, old + val)
QK_EMU_ATOMIC(atomicAdd, unsigned, old + val)
QK_EMU_ATOMIC(atomicAdd, unsigned long long, old + val)
QK_EMU_ATOMIC(atomicAdd, float, old + val)
QK_EMU_ATOMIC(atomicAdd, double, old + val)
QK_EMU_ATOMIC(atomicAdd, __nv_bfloat16, __float2bfloat16_rn(__bfloat162float(old) + __bfloat162float(val)))
QK_EMU_ATOMIC(atomicAdd, __half, __float2half_rn(__half2float(old) + __half2float(val)))
QK_EMU_ATOMIC(atomicAdd, __nv_bfloat162,
              __floats2bfloat162_rn(__low2float(old) + __low2float(val), __high2float(old) + __high2float(val)))
QK_EMU_ATOMIC(atomicAdd, __half2,
              __floats2half2_rn(__low2float(old) + __low2float(val), __high2float(old) + __high2float(val)))
QK_EMU_ATOMIC(atomicSub, int, old - val)
QK_EMU_ATOMIC(atomicSub, unsigned, old - val)
QK_EMU_ATOMIC(atomicExch, int, val)
QK_EMU_ATOMIC(atomicExch, unsigned, val)
QK_EMU_ATOMIC(atomicExch, unsigned long long, val)
QK_EMU_ATOMIC(atomicExch, float, val)
QK_EMU_ATOMIC(atomicMin, int, val < old ? val : old)
QK_EMU_ATOMIC(atomicMin, unsigned, val < old ? val : old)
QK_EMU_ATOMIC(atomicMin, long long, val < old ? val : old)
QK_EMU_ATOMIC(atomicMin, unsigned long long, val < old ? val : old)
QK_EMU_ATOMIC(atomicMax, int, val > old ? val : old)
QK_EMU_ATOMIC(atomicMax, unsigned, val > old ? val : old)
QK_EMU_ATOMIC(atomicMax, long long, val > old ? val : old)
QK_EMU_ATOMIC(atomicMax, unsigned long long, val > old ? val : old)
QK_EMU_ATOMIC(atomicAnd, int, old & val)
QK_EMU_ATOMIC(atomicAnd, unsigned, old & val)
QK_EMU_ATOMIC(atomicAnd, unsigned long long, old & val)
QK_EMU_ATOMIC(atomicOr, int, old | val)
QK_EMU_ATOMIC(atomicOr, unsigned, old | val)
QK_EMU_ATOMIC(atomicOr, unsigned long long, old | val)
QK_EMU_ATOMIC(atomicXor, int, old ^ val)
QK_EMU_ATOMIC(atomicXor, unsigned, old ^ val)
QK_EMU_ATOMIC(atomicXor, unsigned long long, old ^ val)
// Wrapping counters: inc wraps to 0 past val, dec wraps to val below 0 (or above val).
QK_EMU_ATOMIC(atomicInc, unsigned, old >= val ? 0u : old + 1)
QK_EMU_ATOMIC(atomicDec, unsigned, (old == 0 || old > val) ? val : old - 1)

#undef QK_EMU_ATOMIC

template <typename T>
inline T qk_emu_atomic_cas(T* address, T compare, T val) {
  const T old = *address;
  if (old == compare) *address = val;
  return old;
}
inline int atomicCAS(int* a, int c, int v) { return qk_emu_atomic_cas(a, c, v); }
inline unsigned atomicCAS(unsigned* a, unsigned c, unsigned v) { return qk_emu_atomic_cas(a, c, v); }
inline unsigned long long atomicCAS(unsigned long long* a, unsigned long long c, unsigned long long v) {
  return qk_emu_atomic_cas(a, c, v);
}
inline unsigned short atomicCAS(unsigned short* a, unsigned short c, unsigned short v) {
  return qk_emu_atomic_cas(a, c, v);
}
