// Evidence that qk/simt.h costs the GPU build nothing: one tensor-core tile kernel written twice,
// with the header's constructs (default) and with the raw ones they stand for (-DQK_RAW). compare.sh
// builds both and shows that ptxas reports the same resources and emits the same SASS. Not part of
// any test binary.
#include <cuda_bf16.h>

#include <cstdint>

#include "qk/simt.h"

constexpr int kThreads = 128;
constexpr int kLd = 40;  // padded 32-element rows

#if defined(QK_RAW)
__global__ void __launch_bounds__(kThreads) tc_tile(const __nv_bfloat16* a, const __nv_bfloat16* w, float* c, int k) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  __nv_bfloat16* sa = reinterpret_cast<__nv_bfloat16*>(smem_raw);
#else
__global__ void QK_LAUNCH_BOUNDS(kThreads) tc_tile(const __nv_bfloat16* a, const __nv_bfloat16* w, float* c, int k) {
  QK_DYNAMIC_SHARED(__nv_bfloat16, sa);
#endif
  __nv_bfloat16* sw = sa + 64 * kLd;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  float acc[2][4][4] = {};
  for (int k0 = 0; k0 < k; k0 += 32) {
    for (int ch = threadIdx.x; ch < 256; ch += kThreads) {
      const int r = ch / 4, kc = (ch % 4) * 8;
#if defined(QK_RAW)
      const void* sa_dst = sa + r * kLd + kc;
      const void* a_src = a + r * k + k0 + kc;
      asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(
                       static_cast<uint32_t>(__cvta_generic_to_shared(sa_dst))), "l"(a_src));
      const void* sw_dst = sw + r * kLd + kc;
      const void* w_src = w + r * k + k0 + kc;
      asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(
                       static_cast<uint32_t>(__cvta_generic_to_shared(sw_dst))), "l"(w_src));
#else
      qk::cp_async_16(sa + r * kLd + kc, a + r * k + k0 + kc);
      qk::cp_async_16(sw + r * kLd + kc, w + r * k + k0 + kc);
#endif
    }
#if defined(QK_RAW)
    asm volatile("cp.async.commit_group;\n" ::);
    asm volatile("cp.async.wait_group %0;\n" ::"n"(0) : "memory");
#else
    qk::cp_async_commit();
    qk::cp_async_wait<0>();
#endif
    __syncthreads();
    for (int ks = 0; ks < 32; ks += 16) {
      uint32_t fa[2][4], fw[4][2];
      for (int mi = 0; mi < 2; ++mi) {
        const __nv_bfloat16* p = sa + ((warp / 2) * 32 + mi * 16 + lane % 16) * kLd + ks + (lane / 16) * 8;
#if defined(QK_RAW)
        asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                     : "=r"(fa[mi][0]), "=r"(fa[mi][1]), "=r"(fa[mi][2]), "=r"(fa[mi][3])
                     : "r"(static_cast<uint32_t>(__cvta_generic_to_shared(p))));
#else
        qk::ldmatrix_x4(fa[mi], p);
#endif
      }
      for (int nj = 0; nj < 2; ++nj) {
        const __nv_bfloat16* p =
            sw + ((warp % 2) * 32 + nj * 16 + (lane / 16) * 8 + lane % 8) * kLd + ks + ((lane / 8) % 2) * 8;
        uint32_t r[4];
#if defined(QK_RAW)
        asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                     : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                     : "r"(static_cast<uint32_t>(__cvta_generic_to_shared(p))));
#else
        qk::ldmatrix_x4(r, p);
#endif
        fw[2 * nj][0] = r[0];
        fw[2 * nj][1] = r[1];
        fw[2 * nj + 1][0] = r[2];
        fw[2 * nj + 1][1] = r[3];
      }
      for (int mi = 0; mi < 2; ++mi)
        for (int ni = 0; ni < 4; ++ni) {
#if defined(QK_RAW)
          float* d = acc[mi][ni];
          asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
              "{%10,%11,%12,%13};\n"
              : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
              : "r"(fa[mi][0]), "r"(fa[mi][1]), "r"(fa[mi][2]), "r"(fa[mi][3]), "r"(fw[ni][0]), "r"(fw[ni][1]),
                "f"(d[0]), "f"(d[1]), "f"(d[2]), "f"(d[3]));
#else
          qk::mma_m16n8k16_bf16(acc[mi][ni], fa[mi], fw[ni], acc[mi][ni]);
#endif
        }
    }
    __syncthreads();
  }
  const int g = lane / 4, t = lane % 4;
  for (int mi = 0; mi < 2; ++mi)
    for (int ni = 0; ni < 4; ++ni)
      for (int i = 0; i < 4; ++i)
        c[((warp / 2) * 32 + mi * 16 + g + 8 * (i / 2)) * 64 + (warp % 2) * 32 + ni * 8 + 2 * t + i % 2] =
            acc[mi][ni][i];
}

// The launch site: the header's launcher against a bare <<<>>>.
void launch_tc_tile(const __nv_bfloat16* a, const __nv_bfloat16* w, float* c, int k, cudaStream_t stream) {
  const size_t smem = 2 * 64 * kLd * sizeof(__nv_bfloat16);
#if defined(QK_RAW)
  tc_tile<<<1, kThreads, smem, stream>>>(a, w, c, k);
#else
  QK_LAUNCH(tc_tile, dim3(1), dim3(kThreads), smem, stream, a, w, c, k);
#endif
}
