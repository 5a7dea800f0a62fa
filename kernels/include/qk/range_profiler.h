// The in-process range profiler behind `qtrain bench`'s per-op table. When it is on, every
// QK_NVTX_RANGE (qk/nvtx.h) also writes its name and the times of its two ends into a log of the
// calling thread; take() turns that log into per-name calls, inclusive time and self time (inclusive
// less the time of the ranges directly inside it), so the self times of all ranges add up to the time
// of the outermost ones. Off by default: a range then costs one relaxed atomic load and a branch.
//
// Times come from a Clock. By default the host's steady clock (the CPU model, the emulator); a GPU run
// passes one that records a CUDA event on the training stream at each end (runtime/bench/device_clock.h),
// so a range measures the device time of the work issued inside it without synchronizing the stream.
// The header has no CUDA in it, so .cu and .cpp files, nvcc and the host compiler, the emulator and
// CPU-only builds all share it.
//
// Ranges are aggregated by name; a range nested inside one of the same name counts its time twice in
// the inclusive column (the self column stays right). Names must outlive take(): string literals or
// __func__, as every QK_NVTX_RANGE in the project passes.
#pragma once
#include <atomic>
#include <chrono>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <vector>

namespace qk::prof {

// How the two ends of a range are timed.
class Clock {
 public:
  virtual ~Clock() = default;
  virtual int64_t mark() = 0;                          // a token for "now"
  virtual void settle() {}                             // wait until every mark so far has happened
  virtual double ms(int64_t begin, int64_t end) = 0;   // between two marks, after settle()
  virtual void reset() {}                              // the tokens handed out so far are spent
};

class HostClock final : public Clock {
 public:
  int64_t mark() override {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
        .count();
  }
  double ms(int64_t begin, int64_t end) override { return static_cast<double>(end - begin) * 1e-6; }
};

struct RangeStat {
  std::string name;
  int64_t calls = 0;
  double self_ms = 0.0;
  double inclusive_ms = 0.0;
};

struct Profile {
  std::vector<RangeStat> ranges;  // in order of first appearance
  double total_ms = 0.0;          // the outermost ranges' time: the sum of every range's self time
};

namespace detail {

struct Record {
  const char* name;
  int32_t parent;  // index of the enclosing record, -1 for an outermost range
  int64_t begin, end;
};

struct ThreadLog {
  std::vector<Record> records;
  std::vector<int32_t> open;  // indices of the ranges pushed and not yet popped
};

inline std::atomic<bool>& on_flag() {
  static std::atomic<bool> on{false};
  return on;
}
inline std::atomic<Clock*>& clock_slot() {
  static std::atomic<Clock*> clock{nullptr};
  return clock;
}
inline Clock& clock() {
  static HostClock host;
  Clock* c = clock_slot().load(std::memory_order_acquire);
  return c != nullptr ? *c : host;
}
inline ThreadLog& thread_log() {
  thread_local ThreadLog log;
  return log;
}

}  // namespace detail

inline bool enabled() { return detail::on_flag().load(std::memory_order_relaxed); }

// The clock of the ranges to come and of take() (null: the host clock). A clock must stay alive
// until the last take() that reads its marks, or until it is replaced.
inline void set_clock(Clock* clock) { detail::clock_slot().store(clock, std::memory_order_release); }

// Starts recording with `clock` (null: the host clock).
inline void enable(Clock* clock = nullptr) {
  set_clock(clock);
  detail::on_flag().store(true, std::memory_order_release);
}

// Stops recording new ranges; ranges already open still close, and take() still reads the log.
inline void disable() { detail::on_flag().store(false, std::memory_order_release); }

inline void push(const char* name) {
  detail::ThreadLog& log = detail::thread_log();
  const int32_t parent = log.open.empty() ? -1 : log.open.back();
  log.records.push_back({name, parent, detail::clock().mark(), 0});
  log.open.push_back(static_cast<int32_t>(log.records.size() - 1));
}

inline void pop() {
  detail::ThreadLog& log = detail::thread_log();
  if (log.open.empty()) return;  // opened before the profiler was on
  log.records[static_cast<size_t>(log.open.back())].end = detail::clock().mark();
  log.open.pop_back();
}

// This thread's ranges since the last take(), aggregated by name; clears the log and lets the clock
// reuse its tokens. Call it between steps: with a range still open it throws std::logic_error.
inline Profile take() {
  detail::ThreadLog& log = detail::thread_log();
  if (!log.open.empty()) throw std::logic_error("qk::prof::take called inside an open range");
  Clock& clock = detail::clock();
  clock.settle();
  const size_t n = log.records.size();
  std::vector<double> inclusive(n), inner(n, 0.0);
  Profile p;
  for (size_t i = 0; i < n; ++i) {
    const detail::Record& r = log.records[i];
    inclusive[i] = clock.ms(r.begin, r.end);
    if (r.parent >= 0) inner[static_cast<size_t>(r.parent)] += inclusive[i];
    else p.total_ms += inclusive[i];
  }
  std::unordered_map<std::string, size_t> index;
  for (size_t i = 0; i < n; ++i) {
    const auto [it, fresh] = index.try_emplace(log.records[i].name, p.ranges.size());
    if (fresh) p.ranges.push_back({log.records[i].name, 0, 0.0, 0.0});
    RangeStat& s = p.ranges[it->second];
    s.calls += 1;
    s.inclusive_ms += inclusive[i];
    s.self_ms += inclusive[i] - inner[i];
  }
  log.records.clear();
  clock.reset();
  return p;
}

// A range for the profiler alone (qk/nvtx.h adds the NVTX push and pop where NVTX is built in).
class Range {
 public:
  explicit Range(const char* name) : on_(enabled()) {
    if (on_) push(name);
  }
  ~Range() {
    if (on_) pop();
  }
  Range(const Range&) = delete;
  Range& operator=(const Range&) = delete;

 private:
  bool on_;
};

}  // namespace qk::prof
