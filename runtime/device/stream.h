// RAII owners for a CUDA stream and a cuBLAS handle (with its workspace taken from the caller).
#pragma once
#if QTRAIN_HAS_CUDA
#include <cublas_v2.h>
#include <cuda_runtime.h>

namespace qtrain::rt {

class Stream {
 public:
  Stream();
  ~Stream();
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
  cudaStream_t get() const { return s_; }
  void synchronize() const;

 private:
  cudaStream_t s_ = nullptr;
};

class Blas {
 public:
  Blas();
  ~Blas();
  Blas(const Blas&) = delete;
  Blas& operator=(const Blas&) = delete;
  cublasHandle_t get() const { return h_; }

 private:
  cublasHandle_t h_ = nullptr;
};

}  // namespace qtrain::rt
#endif
