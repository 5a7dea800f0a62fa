// CUDA events as the range profiler's clock (see device_clock.h).
#include "runtime/bench/device_clock.h"

#if QTRAIN_HAS_CUDA
#include "csrc/core/error.h"
#include "runtime/model/cuda/cuda_util.h"

namespace qtrain::bench {

using model::cuda::check_cuda;

DeviceRangeClock::~DeviceRangeClock() {
  for (cudaEvent_t e : events_) (void)cudaEventDestroy(e);
}

int64_t DeviceRangeClock::mark() {
  std::lock_guard<std::mutex> lock(mu_);
  if (next_ == events_.size()) {
    cudaEvent_t e = nullptr;
    if (cudaEventCreate(&e) != cudaSuccess) {
      (void)cudaGetLastError();
      failed_ = true;
      return -1;
    }
    events_.push_back(e);
  }
  const size_t i = next_++;
  if (cudaEventRecord(events_[i], stream_) != cudaSuccess) {
    (void)cudaGetLastError();
    failed_ = true;
  }
  return static_cast<int64_t>(i);
}

void DeviceRangeClock::settle() {
  std::lock_guard<std::mutex> lock(mu_);
  if (failed_) throw_internal("range profiler: recording a CUDA event failed");
  if (next_ > 0) check_cuda(cudaEventSynchronize(events_[next_ - 1]), "range profiler");
}

double DeviceRangeClock::ms(int64_t begin, int64_t end) {
  std::lock_guard<std::mutex> lock(mu_);
  const auto valid = [this](int64_t i) { return i >= 0 && static_cast<size_t>(i) < next_; };
  if (!valid(begin) || !valid(end)) throw_internal("range profiler: a range end has no event");
  float out = 0.0f;
  check_cuda(cudaEventElapsedTime(&out, events_[static_cast<size_t>(begin)], events_[static_cast<size_t>(end)]),
             "range profiler");
  return static_cast<double>(out);
}

void DeviceRangeClock::reset() {
  std::lock_guard<std::mutex> lock(mu_);
  next_ = 0;
  failed_ = false;
}

}  // namespace qtrain::bench
#endif
