// The emulated device's cuBLAS: the calls qtrain uses, with the real signatures, served by a host
// GEMM with cuBLAS's semantics (column-major, op(A) m x k, op(B) k x n, leading dimensions, alpha and
// beta, beta == 0 never reads C). Plain loops with fp32 accumulation: shapes under emulation are
// tiny. Type combinations that cuBLAS does not offer for CUBLAS_COMPUTE_32F are NOT_SUPPORTED here
// too, so the emulated build cannot accept a call that the real library would refuse.
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <set>
#include <vector>

#include "qk/simt_emu_device.h"

struct cublasContext {
  cudaStream_t stream = nullptr;
  void* workspace = nullptr;
  size_t workspace_bytes = 0;
  cublasMath_t math = CUBLAS_DEFAULT_MATH;
  cublasPointerMode_t pointer_mode = CUBLAS_POINTER_MODE_HOST;
};

namespace {

std::mutex g_mu;
std::set<cublasHandle_t> g_handles;

bool valid(cublasHandle_t h) {
  std::lock_guard<std::mutex> lock(g_mu);
  return g_handles.count(h) != 0;
}

size_t type_size(cudaDataType t) {
  switch (t) {
    case CUDA_R_16BF:
    case CUDA_R_16F: return 2;
    case CUDA_R_32F: return 4;
    default: return 0;
  }
}

float load(const void* p, cudaDataType t, size_t i) {
  switch (t) {
    case CUDA_R_16BF: return __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]);
    case CUDA_R_16F: return __half2float(static_cast<const __half*>(p)[i]);
    default: return static_cast<const float*>(p)[i];
  }
}

void store(void* p, cudaDataType t, size_t i, float v) {
  switch (t) {
    case CUDA_R_16BF: static_cast<__nv_bfloat16*>(p)[i] = __float2bfloat16_rn(v); break;
    case CUDA_R_16F: static_cast<__half*>(p)[i] = __float2half_rn(v); break;
    default: static_cast<float*>(p)[i] = v; break;
  }
}

bool compute_32f(cublasComputeType_t c) {
  return c == CUBLAS_COMPUTE_32F || c == CUBLAS_COMPUTE_32F_PEDANTIC || c == CUBLAS_COMPUTE_32F_FAST_16F ||
         c == CUBLAS_COMPUTE_32F_FAST_16BF || c == CUBLAS_COMPUTE_32F_FAST_TF32;
}

struct gemm_args {
  cublasOperation_t ta, tb;
  int m, n, k;
  const void* alpha;
  const void* a;
  cudaDataType at;
  int lda;
  long long sa;
  const void* b;
  cudaDataType bt;
  int ldb;
  long long sb;
  const void* beta;
  void* c;
  cudaDataType ct;
  int ldc;
  long long sc;
  int batch;
  cublasComputeType_t compute;
};

bool op_ok(cublasOperation_t op) { return op == CUBLAS_OP_N || op == CUBLAS_OP_T || op == CUBLAS_OP_C; }

cublasStatus_t gemm(cublasHandle_t h, const gemm_args& g) {
  if (!valid(h)) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (!op_ok(g.ta) || !op_ok(g.tb) || g.m < 0 || g.n < 0 || g.k < 0 || g.batch < 0) return CUBLAS_STATUS_INVALID_VALUE;
  const bool ta = g.ta != CUBLAS_OP_N, tb = g.tb != CUBLAS_OP_N;  // real types: C is T
  if (g.lda < std::max(1, ta ? g.k : g.m) || g.ldb < std::max(1, tb ? g.n : g.k) || g.ldc < std::max(1, g.m))
    return CUBLAS_STATUS_INVALID_VALUE;
  if (!compute_32f(g.compute)) return CUBLAS_STATUS_NOT_SUPPORTED;
  if (g.at != g.bt || type_size(g.at) == 0 || type_size(g.ct) == 0 || (g.ct != g.at && g.ct != CUDA_R_32F))
    return CUBLAS_STATUS_NOT_SUPPORTED;
  if (g.m == 0 || g.n == 0 || g.batch == 0) return CUBLAS_STATUS_SUCCESS;
  if (g.alpha == nullptr || g.beta == nullptr || g.c == nullptr) return CUBLAS_STATUS_INVALID_VALUE;
  if (g.k > 0 && (g.a == nullptr || g.b == nullptr)) return CUBLAS_STATUS_INVALID_VALUE;
  // Host and device pointer modes read the same memory here.
  const float alpha = *static_cast<const float*>(g.alpha);
  const float beta = *static_cast<const float*>(g.beta);

  const size_t es_a = type_size(g.at), es_b = type_size(g.bt), es_c = type_size(g.ct);
  std::vector<float> arow(static_cast<size_t>(g.k));
  for (int batch = 0; batch < g.batch; ++batch) {
    const char* a = static_cast<const char*>(g.a) + batch * g.sa * static_cast<long long>(es_a);
    const char* b = static_cast<const char*>(g.b) + batch * g.sb * static_cast<long long>(es_b);
    char* c = static_cast<char*>(g.c) + batch * g.sc * static_cast<long long>(es_c);
    for (int i = 0; i < g.m; ++i) {
      for (int p = 0; p < g.k; ++p)
        arow[p] = load(a, g.at, ta ? p + static_cast<size_t>(i) * g.lda : i + static_cast<size_t>(p) * g.lda);
      for (int j = 0; j < g.n; ++j) {
        float acc = 0.0f;
        if (alpha != 0.0f)
          for (int p = 0; p < g.k; ++p)
            acc += arow[p] * load(b, g.bt, tb ? j + static_cast<size_t>(p) * g.ldb : p + static_cast<size_t>(j) * g.ldb);
        const size_t ci = i + static_cast<size_t>(j) * g.ldc;
        float v = alpha * acc;
        if (beta != 0.0f) v += beta * load(c, g.ct, ci);
        store(c, g.ct, ci, v);
      }
    }
  }
  return CUBLAS_STATUS_SUCCESS;
}

struct status_info {
  cublasStatus_t code;
  const char* name;
  const char* text;
};
constexpr status_info kStatus[] = {
    {CUBLAS_STATUS_SUCCESS, "CUBLAS_STATUS_SUCCESS", "success"},
    {CUBLAS_STATUS_NOT_INITIALIZED, "CUBLAS_STATUS_NOT_INITIALIZED", "the library was not initialized"},
    {CUBLAS_STATUS_ALLOC_FAILED, "CUBLAS_STATUS_ALLOC_FAILED", "the resource allocation failed"},
    {CUBLAS_STATUS_INVALID_VALUE, "CUBLAS_STATUS_INVALID_VALUE", "an invalid numeric value was used as an argument"},
    {CUBLAS_STATUS_ARCH_MISMATCH, "CUBLAS_STATUS_ARCH_MISMATCH", "an absent device architectural feature is required"},
    {CUBLAS_STATUS_MAPPING_ERROR, "CUBLAS_STATUS_MAPPING_ERROR", "an access to GPU memory space failed"},
    {CUBLAS_STATUS_EXECUTION_FAILED, "CUBLAS_STATUS_EXECUTION_FAILED", "the GPU program failed to execute"},
    {CUBLAS_STATUS_INTERNAL_ERROR, "CUBLAS_STATUS_INTERNAL_ERROR", "an internal operation failed"},
    {CUBLAS_STATUS_NOT_SUPPORTED, "CUBLAS_STATUS_NOT_SUPPORTED", "the functionality requested is not supported"},
    {CUBLAS_STATUS_LICENSE_ERROR, "CUBLAS_STATUS_LICENSE_ERROR", "license error"},
};

}  // namespace

cublasStatus_t cublasCreate_v2(cublasHandle_t* handle) {
  if (handle == nullptr) return CUBLAS_STATUS_INVALID_VALUE;
  *handle = new cublasContext;
  std::lock_guard<std::mutex> lock(g_mu);
  g_handles.insert(*handle);
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasDestroy_v2(cublasHandle_t handle) {
  {
    std::lock_guard<std::mutex> lock(g_mu);
    if (g_handles.erase(handle) == 0) return CUBLAS_STATUS_NOT_INITIALIZED;
  }
  delete handle;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetStream_v2(cublasHandle_t handle, cudaStream_t stream) {
  if (!valid(handle)) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (!qk::emu::stream_is_valid(stream)) return CUBLAS_STATUS_INVALID_VALUE;
  handle->stream = stream;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasGetStream_v2(cublasHandle_t handle, cudaStream_t* stream) {
  if (!valid(handle)) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (stream == nullptr) return CUBLAS_STATUS_INVALID_VALUE;
  *stream = handle->stream;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetWorkspace_v2(cublasHandle_t handle, void* workspace, size_t bytes) {
  if (!valid(handle)) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (bytes > 0 && (workspace == nullptr || reinterpret_cast<uintptr_t>(workspace) % 256 != 0))
    return CUBLAS_STATUS_INVALID_VALUE;
  handle->workspace = workspace;
  handle->workspace_bytes = bytes;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetMathMode(cublasHandle_t handle, cublasMath_t mode) {
  if (!valid(handle)) return CUBLAS_STATUS_NOT_INITIALIZED;
  handle->math = mode;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasGetMathMode(cublasHandle_t handle, cublasMath_t* mode) {
  if (!valid(handle)) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (mode == nullptr) return CUBLAS_STATUS_INVALID_VALUE;
  *mode = handle->math;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetPointerMode_v2(cublasHandle_t handle, cublasPointerMode_t mode) {
  if (!valid(handle)) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (mode != CUBLAS_POINTER_MODE_HOST && mode != CUBLAS_POINTER_MODE_DEVICE) return CUBLAS_STATUS_INVALID_VALUE;
  handle->pointer_mode = mode;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasGetPointerMode_v2(cublasHandle_t handle, cublasPointerMode_t* mode) {
  if (!valid(handle)) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (mode == nullptr) return CUBLAS_STATUS_INVALID_VALUE;
  *mode = handle->pointer_mode;
  return CUBLAS_STATUS_SUCCESS;
}

const char* cublasGetStatusName(cublasStatus_t status) {
  for (const auto& s : kStatus)
    if (s.code == status) return s.name;
  return "CUBLAS_STATUS_UNKNOWN";
}

const char* cublasGetStatusString(cublasStatus_t status) {
  for (const auto& s : kStatus)
    if (s.code == status) return s.text;
  return "unknown status";
}

cublasStatus_t cublasGemmEx(cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb, int m, int n,
                            int k, const void* alpha, const void* A, cudaDataType Atype, int lda, const void* B,
                            cudaDataType Btype, int ldb, const void* beta, void* C, cudaDataType Ctype, int ldc,
                            cublasComputeType_t computeType, cublasGemmAlgo_t) {
  return gemm(handle, gemm_args{transa, transb, m, n, k, alpha, A, Atype, lda, 0, B, Btype, ldb, 0, beta, C, Ctype,
                                ldc, 0, 1, computeType});
}

cublasStatus_t cublasGemmStridedBatchedEx(cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb,
                                          int m, int n, int k, const void* alpha, const void* A, cudaDataType Atype,
                                          int lda, long long int strideA, const void* B, cudaDataType Btype, int ldb,
                                          long long int strideB, const void* beta, void* C, cudaDataType Ctype,
                                          int ldc, long long int strideC, int batchCount,
                                          cublasComputeType_t computeType, cublasGemmAlgo_t) {
  return gemm(handle, gemm_args{transa, transb, m, n, k, alpha, A, Atype, lda, strideA, B, Btype, ldb, strideB, beta,
                                C, Ctype, ldc, strideC, batchCount, computeType});
}

cublasStatus_t cublasSgemm_v2(cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb, int m, int n,
                              int k, const float* alpha, const float* A, int lda, const float* B, int ldb,
                              const float* beta, float* C, int ldc) {
  return gemm(handle, gemm_args{transa, transb, m, n, k, alpha, A, CUDA_R_32F, lda, 0, B, CUDA_R_32F, ldb, 0, beta, C,
                                CUDA_R_32F, ldc, 0, 1, CUBLAS_COMPUTE_32F});
}
