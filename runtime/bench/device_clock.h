// The range profiler's clock for a GPU run: each end of a range records a CUDA event on the training
// stream, so a range's time is the device time between the work issued before it and the work issued
// inside it, measured without synchronizing the stream (the profiled steps keep their pace; only the
// event records, a few microseconds of host time each, are added). Work on other streams (the
// offload copies) is not timed. Events come from a pool that grows to the ranges of one step and is
// reused after every qk::prof::take().
#pragma once
#if QTRAIN_HAS_CUDA
#include <cuda_runtime.h>

#include <cstdint>
#include <mutex>
#include <vector>

#include "qk/range_profiler.h"

namespace qtrain::bench {

class DeviceRangeClock final : public qk::prof::Clock {
 public:
  explicit DeviceRangeClock(cudaStream_t stream) : stream_(stream) {}
  ~DeviceRangeClock() override;
  DeviceRangeClock(const DeviceRangeClock&) = delete;
  DeviceRangeClock& operator=(const DeviceRangeClock&) = delete;

  // Called from range constructors and destructors: never throws; a failure is reported by settle().
  int64_t mark() override;
  void settle() override;  // waits for the last event; throws on any failed record
  double ms(int64_t begin, int64_t end) override;
  void reset() override;

 private:
  cudaStream_t stream_;
  std::mutex mu_;
  std::vector<cudaEvent_t> events_;
  size_t next_ = 0;
  bool failed_ = false;
};

}  // namespace qtrain::bench
#endif
