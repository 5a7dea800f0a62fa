// Stream and cuBLAS handle owners.
#include "runtime/device/stream.h"

#if QTRAIN_HAS_CUDA
#include "qk/cuda_check.h"

namespace qtrain::rt {

Stream::Stream() { QK_CUDA_CHECK(cudaStreamCreateWithFlags(&s_, cudaStreamNonBlocking)); }
Stream::~Stream() {
  if (s_ != nullptr) (void)cudaStreamDestroy(s_);
}
void Stream::synchronize() const { QK_CUDA_CHECK(cudaStreamSynchronize(s_)); }

Blas::Blas() { QK_CUBLAS_CHECK(cublasCreate(&h_)); }
Blas::~Blas() {
  if (h_ != nullptr) (void)cublasDestroy(h_);
}

}  // namespace qtrain::rt
#endif
