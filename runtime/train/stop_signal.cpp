// The signal flag: a lock-free atomic is the only thing a handler may touch.
#include "runtime/train/stop_signal.h"

#include <atomic>
#include <csignal>

namespace qtrain::train {
namespace {

std::atomic<int> g_signal{0};
static_assert(std::atomic<int>::is_always_lock_free);

extern "C" void on_stop_signal(int sig) {
  int expected = 0;
  g_signal.compare_exchange_strong(expected, sig);
}

}  // namespace

void install_stop_handlers() {
  g_signal.store(0);
  std::signal(SIGINT, on_stop_signal);
  std::signal(SIGTERM, on_stop_signal);
}

void restore_default_handlers() {
  std::signal(SIGINT, SIG_DFL);
  std::signal(SIGTERM, SIG_DFL);
}

int stop_requested() { return g_signal.load(); }

void request_stop(int signal_number) { g_signal.store(signal_number); }

}  // namespace qtrain::train
