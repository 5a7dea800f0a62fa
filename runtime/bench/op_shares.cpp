// Merging and printing the range profiles of the profiled steps (see op_shares.h).
#include "runtime/bench/op_shares.h"

#include <algorithm>
#include <cstdio>
#include <map>

namespace qtrain::bench {

OpShares summarize_op_shares(const std::vector<qk::prof::Profile>& steps, const std::string& clock) {
  OpShares out;
  out.steps = static_cast<int64_t>(steps.size());
  out.clock = clock;
  if (steps.empty()) return out;
  std::map<std::string, size_t> index;
  double total = 0.0;
  for (const qk::prof::Profile& p : steps) {
    total += p.total_ms;
    for (const qk::prof::RangeStat& r : p.ranges) {
      const auto [it, fresh] = index.try_emplace(r.name, out.ops.size());
      if (fresh) out.ops.push_back({r.name, 0.0, 0.0, 0.0, 0.0, 0.0});
      OpShare& o = out.ops[it->second];
      o.calls += static_cast<double>(r.calls);
      o.self_ms += r.self_ms;
      o.inclusive_ms += r.inclusive_ms;
    }
  }
  const double n = static_cast<double>(steps.size());
  out.step_ms = total / n;
  for (OpShare& o : out.ops) {
    o.self_share = total > 0 ? o.self_ms / total : 0.0;
    o.inclusive_share = total > 0 ? o.inclusive_ms / total : 0.0;
    o.calls /= n, o.self_ms /= n, o.inclusive_ms /= n;
  }
  std::stable_sort(out.ops.begin(), out.ops.end(),
                   [](const OpShare& a, const OpShare& b) { return a.self_share > b.self_share; });
  return out;
}

std::string format_op_shares(const OpShares& s) {
  std::string out;
  char line[256];
  std::snprintf(line, sizeof line, "op shares: %lld profiled steps after the timed ones, %.2f ms per step (%s)\n",
                static_cast<long long>(s.steps), s.step_ms, s.clock.c_str());
  out += line;
  std::snprintf(line, sizeof line, "  %-30s %10s %10s %7s %10s %7s\n", "range", "calls/step", "self ms", "self%",
                "incl ms", "incl%");
  out += line;
  double sum = 0.0;
  for (const OpShare& o : s.ops) {
    std::snprintf(line, sizeof line, "  %-30s %10.1f %10.3f %6.1f%% %10.3f %6.1f%%\n", o.name.c_str(), o.calls,
                  o.self_ms, 100.0 * o.self_share, o.inclusive_ms, 100.0 * o.inclusive_share);
    out += line;
    sum += o.self_share;
  }
  std::snprintf(line, sizeof line, "  self shares sum to %.1f%% of the step\n", 100.0 * sum);
  out += line;
  return out;
}

}  // namespace qtrain::bench
