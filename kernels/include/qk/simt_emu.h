// The SIMT emulator's device side: what a .cu file needs, beyond the CUDA headers in host mode, to
// compile as plain C++ and run on the CPU. Included by qk/simt.h when QK_SIMT_EMULATION is defined.
//
// Blocks run one after another; the threads of a block run as fibers on the launching OS thread,
// each until it reaches a barrier or a warp collective, so a missing barrier gives wrong results and
// a barrier that not every thread (or lane of the mask) reaches fails the launch, naming the kernel.
// __shared__ becomes `static thread_local`: one copy per OS thread, shared by the fibers of a block.
#pragma once

#if !defined(QK_SIMT_EMULATION)
#error "qk/simt_emu.h is the emulated build of qk/simt.h; include qk/simt.h"
#endif

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <source_location>
#include <tuple>
#include <type_traits>
#include <utility>

// ---- Built-in variables: written by the scheduler before it resumes each fiber. ----------------
extern constinit thread_local uint3 threadIdx;
extern constinit thread_local uint3 blockIdx;
extern constinit thread_local dim3 blockDim;
extern constinit thread_local dim3 gridDim;
inline constexpr int warpSize = 32;

// ---- Qualifiers the host-mode headers leave undefined or empty. ---------------------------------
#undef __shared__
#define __shared__ static thread_local
#ifndef __launch_bounds__
#define __launch_bounds__(...)
#endif

namespace qk::emu {

using site = std::source_location;

// What one lane brings to a warp collective and gets back from it. Lives on the lane's stack
// while the lane waits; the scheduler computes every lane's result when the group is complete.
enum class warp_kind : uint8_t {
  shfl_idx, shfl_up, shfl_down, shfl_xor,  // one family: lanes may mix modes
  ballot, any, all, syncwarp, match_any, activemask,
  ldmatrix_x1, ldmatrix_x2, ldmatrix_x4, ldmatrix_x1_trans, ldmatrix_x2_trans, ldmatrix_x4_trans,
  mma_bf16, mma_f16,
};

struct warp_op {
  warp_kind kind;
  unsigned mask = 0xffffffffu;
  int param = 0;  // shfl: source lane / delta / lane mask; vote: predicate
  int width = 32;
  uint64_t value = 0;
  const void* addr = nullptr;  // ldmatrix: this lane's row address
  uint32_t a[4] = {};
  uint32_t b[2] = {};
  float c[4] = {};
  // results
  uint64_t out = 0;
  uint32_t r[4] = {};
  float d[4] = {};
};

// Both suspend the calling fiber until the barrier / warp collective completes (or fail the launch).
void warp_collective(warp_op& op, const site& where);
enum class block_kind : uint8_t { sync, count, all, any };
int block_barrier(block_kind kind, int pred, const site& where);
void yield_thread();
[[noreturn]] void trap(const char* what, const site& where);
unsigned char* dynamic_smem();

// ---- The launcher. ------------------------------------------------------------------------------
struct launch_desc {
  const char* name;
  const void* func;  // identifies the kernel for cudaFuncSetAttribute
  dim3 grid, block;
  size_t smem;
  cudaStream_t stream;
  void* ctx;
  void (*invoke)(void* ctx);  // runs the kernel body for the current emulated thread
};
// Runs the whole grid before returning; errors land in cudaGetLastError().
void launch(const launch_desc& d);

template <typename T>
inline uint64_t to_bits(T v) {
  static_assert(std::is_trivially_copyable_v<T> && sizeof(T) <= 8, "shuffled types are at most 64-bit");
  uint64_t u = 0;
  std::memcpy(&u, static_cast<const void*>(&v), sizeof v);
  return u;
}
template <typename T>
inline T from_bits(uint64_t u) {
  T v;
  std::memcpy(static_cast<void*>(&v), &u, sizeof v);
  return v;
}

template <typename T>
inline T shfl(warp_kind kind, unsigned mask, T var, int param, int width, const site& where) {
  warp_op op{};
  op.kind = kind;
  op.mask = mask;
  op.value = to_bits(var);
  op.param = param;
  op.width = width;
  warp_collective(op, where);
  return from_bits<T>(op.out);
}

inline unsigned vote(warp_kind kind, unsigned mask, int pred, const site& where) {
  warp_op op{};
  op.kind = kind;
  op.mask = mask;
  op.param = pred != 0;
  warp_collective(op, where);
  return static_cast<unsigned>(op.out);
}

}  // namespace qk::emu

namespace qk {

template <typename... KArgs, typename... Args>
inline void simt_launch(const char* name, void (*kernel)(KArgs...), dim3 grid, dim3 block, size_t smem,
                        cudaStream_t stream, Args&&... args) {
  static_assert(sizeof...(KArgs) == sizeof...(Args), "QK_LAUNCH: wrong number of kernel arguments");
  // Converted once, as the real launch does; every emulated thread gets its own copy of the values.
  struct pack {
    void (*kernel)(KArgs...);
    std::tuple<std::decay_t<KArgs>...> params;
  };
  pack p{kernel, std::tuple<std::decay_t<KArgs>...>(std::forward<Args>(args)...)};
  const emu::launch_desc d{name,  reinterpret_cast<const void*>(kernel),
                           grid,  block,
                           smem,  stream,
                           &p,    [](void* ctx) {
                             auto* q = static_cast<pack*>(ctx);
                             std::apply(q->kernel, q->params);
                           }};
  emu::launch(d);
}

}  // namespace qk

// cuda_runtime.h offers this typed overload to nvcc only.
template <typename... KArgs>
inline cudaError_t cudaFuncSetAttribute(void (*kernel)(KArgs...), cudaFuncAttribute attr, int value) {
  return ::cudaFuncSetAttribute(reinterpret_cast<const void*>(kernel), attr, value);
}

#define QK_LAUNCH(kernel, grid, block, smem, stream, ...) \
  ::qk::simt_launch(#kernel, kernel, grid, block, smem, stream __VA_OPT__(, ) __VA_ARGS__)
#define QK_DYNAMIC_SHARED(T, name) T* name = reinterpret_cast<T*>(::qk::emu::dynamic_smem())
#define QK_LAUNCH_BOUNDS(...)

// ---- Barriers and warp collectives, with CUDA's names. ------------------------------------------
inline void __syncthreads(const qk::emu::site& w = qk::emu::site::current()) {
  qk::emu::block_barrier(qk::emu::block_kind::sync, 0, w);
}
inline int __syncthreads_count(int pred, const qk::emu::site& w = qk::emu::site::current()) {
  return qk::emu::block_barrier(qk::emu::block_kind::count, pred, w);
}
inline int __syncthreads_and(int pred, const qk::emu::site& w = qk::emu::site::current()) {
  return qk::emu::block_barrier(qk::emu::block_kind::all, pred, w);
}
inline int __syncthreads_or(int pred, const qk::emu::site& w = qk::emu::site::current()) {
  return qk::emu::block_barrier(qk::emu::block_kind::any, pred, w);
}
inline void __syncwarp(unsigned mask = 0xffffffffu, const qk::emu::site& w = qk::emu::site::current()) {
  qk::emu::vote(qk::emu::warp_kind::syncwarp, mask, 0, w);
}

template <typename T>
inline T __shfl_sync(unsigned mask, T var, int src_lane, int width = warpSize,
                     const qk::emu::site& w = qk::emu::site::current()) {
  return qk::emu::shfl(qk::emu::warp_kind::shfl_idx, mask, var, src_lane, width, w);
}
template <typename T>
inline T __shfl_up_sync(unsigned mask, T var, unsigned delta, int width = warpSize,
                        const qk::emu::site& w = qk::emu::site::current()) {
  return qk::emu::shfl(qk::emu::warp_kind::shfl_up, mask, var, static_cast<int>(delta), width, w);
}
template <typename T>
inline T __shfl_down_sync(unsigned mask, T var, unsigned delta, int width = warpSize,
                          const qk::emu::site& w = qk::emu::site::current()) {
  return qk::emu::shfl(qk::emu::warp_kind::shfl_down, mask, var, static_cast<int>(delta), width, w);
}
template <typename T>
inline T __shfl_xor_sync(unsigned mask, T var, int lane_mask, int width = warpSize,
                         const qk::emu::site& w = qk::emu::site::current()) {
  return qk::emu::shfl(qk::emu::warp_kind::shfl_xor, mask, var, lane_mask, width, w);
}
inline unsigned __ballot_sync(unsigned mask, int pred, const qk::emu::site& w = qk::emu::site::current()) {
  return qk::emu::vote(qk::emu::warp_kind::ballot, mask, pred, w);
}
inline int __any_sync(unsigned mask, int pred, const qk::emu::site& w = qk::emu::site::current()) {
  return static_cast<int>(qk::emu::vote(qk::emu::warp_kind::any, mask, pred, w));
}
inline int __all_sync(unsigned mask, int pred, const qk::emu::site& w = qk::emu::site::current()) {
  return static_cast<int>(qk::emu::vote(qk::emu::warp_kind::all, mask, pred, w));
}
template <typename T>
inline unsigned __match_any_sync(unsigned mask, T value, const qk::emu::site& w = qk::emu::site::current()) {
  return static_cast<unsigned>(qk::emu::shfl(qk::emu::warp_kind::match_any, mask, qk::emu::to_bits(value), 0, 32, w));
}
// The lanes of the caller's warp that are here together: those that reach this call before the
// rest of the warp has to wait elsewhere or has exited (how a diverged warp looks).
inline unsigned __activemask(const qk::emu::site& w = qk::emu::site::current()) {
  return qk::emu::vote(qk::emu::warp_kind::activemask, 0xffffffffu, 0, w);
}

// Fences order nothing between fibers of one OS thread; a spin-wait must let the others run.
inline void __threadfence() {}
inline void __threadfence_block() {}
inline void __threadfence_system() {}
inline void __nanosleep(unsigned) { qk::emu::yield_thread(); }
[[noreturn]] inline void __trap(const qk::emu::site& w = qk::emu::site::current()) { qk::emu::trap("__trap()", w); }

#include "qk/simt_emu_atomic.h"
#include "qk/simt_emu_math.h"

// ---- The PTX wrappers of qk/simt.h, emulated with the PTX ISA's fragment layouts. -------------
namespace qk {

namespace emu {
template <size_t N>
inline void ldmatrix(warp_kind kind, uint32_t (&r)[N], const void* row, const site& where) {
  warp_op op{};
  op.kind = kind;
  op.addr = row;
  warp_collective(op, where);
  for (size_t i = 0; i < N; ++i) r[i] = op.r[i];
}
inline void mma(warp_kind kind, float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2], const float (&c)[4],
                const site& where) {
  warp_op op{};
  op.kind = kind;
  for (int i = 0; i < 4; ++i) op.a[i] = a[i], op.c[i] = c[i];
  op.b[0] = b[0];
  op.b[1] = b[1];
  warp_collective(op, where);
  for (int i = 0; i < 4; ++i) d[i] = op.d[i];
}
}  // namespace emu

inline void mma_m16n8k16_bf16(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2], const float (&c)[4],
                              const emu::site& w = emu::site::current()) {
  emu::mma(emu::warp_kind::mma_bf16, d, a, b, c, w);
}
inline void mma_m16n8k16_f16(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2], const float (&c)[4],
                             const emu::site& w = emu::site::current()) {
  emu::mma(emu::warp_kind::mma_f16, d, a, b, c, w);
}
inline void ldmatrix_x1(uint32_t (&r)[1], const void* row, const emu::site& w = emu::site::current()) {
  emu::ldmatrix(emu::warp_kind::ldmatrix_x1, r, row, w);
}
inline void ldmatrix_x2(uint32_t (&r)[2], const void* row, const emu::site& w = emu::site::current()) {
  emu::ldmatrix(emu::warp_kind::ldmatrix_x2, r, row, w);
}
inline void ldmatrix_x4(uint32_t (&r)[4], const void* row, const emu::site& w = emu::site::current()) {
  emu::ldmatrix(emu::warp_kind::ldmatrix_x4, r, row, w);
}
inline void ldmatrix_x1_trans(uint32_t (&r)[1], const void* row, const emu::site& w = emu::site::current()) {
  emu::ldmatrix(emu::warp_kind::ldmatrix_x1_trans, r, row, w);
}
inline void ldmatrix_x2_trans(uint32_t (&r)[2], const void* row, const emu::site& w = emu::site::current()) {
  emu::ldmatrix(emu::warp_kind::ldmatrix_x2_trans, r, row, w);
}
inline void ldmatrix_x4_trans(uint32_t (&r)[4], const void* row, const emu::site& w = emu::site::current()) {
  emu::ldmatrix(emu::warp_kind::ldmatrix_x4_trans, r, row, w);
}

// cp.async is a plain copy here: the data is in place before cp_async_wait, as the real one
// guarantees after it. Unaligned addresses fail the launch, as they fault on the GPU.
inline void cp_async_16(void* smem, const void* gmem, const emu::site& w = emu::site::current()) {
  if ((reinterpret_cast<uintptr_t>(smem) | reinterpret_cast<uintptr_t>(gmem)) % 16 != 0)
    emu::trap("cp_async_16 with an address not 16-byte aligned", w);
  std::memcpy(smem, gmem, 16);
}
inline void cp_async_16_zfill(void* smem, const void* gmem, bool valid, const emu::site& w = emu::site::current()) {
  if (!valid) {
    if (reinterpret_cast<uintptr_t>(smem) % 16 != 0) emu::trap("cp_async_16_zfill with an unaligned address", w);
    std::memset(smem, 0, 16);
    return;
  }
  cp_async_16(smem, gmem, w);
}
inline void cp_async_commit() {}
template <int N>
inline void cp_async_wait() {
  static_assert(N >= 0, "cp_async_wait<N>: N is a count of groups");
}
inline void cp_async_wait_all() {}

}  // namespace qk

namespace qk::emu {
// The order in which the scheduler resumes the threads of a block between barriers. forward is the
// default; reverse and shuffle expose reads of data that a barrier should have published (a
// missing barrier) that forward order happens to satisfy. QK_SIMT_ORDER=forward|reverse|shuffle[:seed]
// sets it from the environment.
enum class thread_order { forward, reverse, shuffle };
void set_thread_order(thread_order order, uint64_t seed = 1);
thread_order get_thread_order();
}  // namespace qk::emu
