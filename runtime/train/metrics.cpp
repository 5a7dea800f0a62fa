// Metrics records as JSON, the progress line, the metrics file and the SVG loss curve.
#include "runtime/train/metrics.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "csrc/core/error.h"

namespace qtrain::train {
namespace {

// JSON has no NaN or infinity: a skipped step's loss is written as null.
nlohmann::ordered_json number(double x) { return std::isfinite(x) ? nlohmann::ordered_json(x) : nullptr; }

std::string fmt(const char* f, double x) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, x);
  return buf;
}

}  // namespace

std::string step_json(const StepRecord& r) {
  nlohmann::ordered_json j;
  j["type"] = "train";
  j["step"] = r.step;
  j["total_steps"] = r.total_steps;
  j["epoch"] = r.epoch;
  j["loss"] = number(r.loss);
  j["lr"] = r.lr;
  j["grad_norm"] = number(r.grad_norm);
  j["tokens"] = r.tokens;
  j["tokens_per_s"] = r.tokens_per_s;
  j["memory_bytes"] = r.memory_bytes;
  j["elapsed_s"] = r.elapsed_s;
  j["remaining_s"] = r.remaining_s;
  if (r.skipped) j["skipped"] = true;
  return j.dump();
}

std::string eval_json(const EvalRecord& r) {
  nlohmann::ordered_json j;
  j["type"] = "eval";
  j["step"] = r.step;
  j["eval_loss"] = number(r.loss);
  j["eval_perplexity"] = number(r.perplexity);
  j["eval_tokens"] = r.tokens;
  return j.dump();
}

std::string format_duration(double seconds) {
  const auto s = static_cast<long long>(std::max(0.0, std::round(seconds)));
  char buf[48];
  if (s >= 3600)
    std::snprintf(buf, sizeof buf, "%lld:%02lld:%02lld", s / 3600, s / 60 % 60, s % 60);
  else
    std::snprintf(buf, sizeof buf, "%lld:%02lld", s / 60, s % 60);
  return buf;
}

std::string progress_line(const StepRecord& r) {
  std::string s = "step " + std::to_string(r.step) + "/" + std::to_string(r.total_steps);
  s += " | loss " + (r.skipped ? std::string("skipped (not finite)") : fmt("%.4f", r.loss));
  s += " | lr " + fmt("%.2e", r.lr);
  s += " | grad " + fmt("%.3f", r.grad_norm);
  s += " | " + fmt("%.0f", r.tokens_per_s) + " tok/s";
  s += " | mem " + fmt("%.1f", static_cast<double>(r.memory_bytes) / (1024.0 * 1024.0)) + " MiB";
  s += " | " + format_duration(r.elapsed_s) + " elapsed | " + format_duration(r.remaining_s) + " left";
  return s;
}

std::string eval_line(const EvalRecord& r) {
  return "eval @ step " + std::to_string(r.step) + " | loss " + fmt("%.4f", r.loss) + " | perplexity " +
         fmt("%.3f", r.perplexity) + " | " + std::to_string(r.tokens) + " target tokens";
}

uint64_t host_rss_bytes() {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("VmRSS:", 0) == 0) {
      std::istringstream in(line.substr(6));
      uint64_t kib = 0;
      in >> kib;
      return kib * 1024;
    }
  }
  return 0;
}

void write_text_file(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    if (!f) throw_bad_input(tmp, "cannot create file");
    f << text;
    if (!f.flush()) throw_bad_input(tmp, "write failed");
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) throw_bad_input(path, "cannot rename temporary file: " + ec.message());
}

MetricsLog::~MetricsLog() {
  if (f_) std::fclose(f_);
}

void MetricsLog::open(const std::string& path, int64_t keep_through_step, std::vector<StepRecord>& steps,
                      std::vector<EvalRecord>& evals) {
  path_ = path;
  steps.clear();
  evals.clear();
  std::string kept;
  if (keep_through_step >= 0) {
    std::ifstream in(path);
    std::string line;
    while (std::getline(in, line)) {
      if (line.empty()) continue;
      nlohmann::json j;
      try {
        j = nlohmann::json::parse(line);
      } catch (const nlohmann::json::exception&) {
        continue;  // a line cut short by a kill: drop it
      }
      const int64_t step = j.value("step", int64_t{-1});
      if (step < 0 || step > keep_through_step) continue;
      auto num = [&](const char* k) { return j.contains(k) && j[k].is_number() ? j[k].get<double>() : NAN; };
      if (j.value("type", "") == "train") {
        StepRecord r;
        r.step = step;
        r.total_steps = j.value("total_steps", int64_t{0});
        r.loss = num("loss");
        r.lr = num("lr");
        r.grad_norm = num("grad_norm");
        r.skipped = j.value("skipped", false);
        steps.push_back(r);
      } else if (j.value("type", "") == "eval") {
        evals.push_back({step, num("eval_loss"), num("eval_perplexity"), j.value("eval_tokens", int64_t{0})});
      }
      kept += line + "\n";
    }
  }
  write_text_file(path, kept);
  f_ = std::fopen(path.c_str(), "ab");
  if (!f_) throw_bad_input(path, "cannot open for appending");
}

void MetricsLog::write(const std::string& json_line) {
  if (!f_) throw_internal("MetricsLog::write before open");
  if (std::fputs((json_line + "\n").c_str(), f_) < 0 || std::fflush(f_) != 0)
    throw_bad_input(path_, "write failed");
}

std::string loss_curve_svg(const std::vector<StepRecord>& steps, const std::vector<EvalRecord>& evals) {
  constexpr double kW = 720, kH = 420, kLeft = 70, kRight = 20, kTop = 40, kBottom = 50;
  double lo = INFINITY, hi = -INFINITY;
  int64_t max_step = 1;
  for (const auto& r : steps) {
    if (!std::isfinite(r.loss)) continue;
    lo = std::min(lo, r.loss);
    hi = std::max(hi, r.loss);
    max_step = std::max(max_step, r.step);
  }
  for (const auto& r : evals) {
    if (!std::isfinite(r.loss)) continue;
    lo = std::min(lo, r.loss);
    hi = std::max(hi, r.loss);
    max_step = std::max(max_step, r.step);
  }
  if (!std::isfinite(lo)) lo = 0, hi = 1;
  if (hi - lo < 1e-9) hi = lo + 1;
  const double pad = 0.05 * (hi - lo);
  lo = std::max(0.0, lo - pad);
  hi += pad;
  auto px = [&](double step) { return kLeft + (kW - kLeft - kRight) * step / static_cast<double>(max_step); };
  auto py = [&](double loss) { return kTop + (kH - kTop - kBottom) * (hi - loss) / (hi - lo); };
  std::ostringstream s;
  s.precision(6);
  s << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << kW << "\" height=\"" << kH << "\" viewBox=\"0 0 "
    << kW << ' ' << kH << "\" font-family=\"sans-serif\" font-size=\"12\">\n";
  s << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  s << "<text x=\"" << kW / 2 << "\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">qtrain loss</text>\n";
  // Axes, and a tick with its value at each end and the middle.
  s << "<path d=\"M" << kLeft << ',' << kTop << " V" << kH - kBottom << " H" << kW - kRight
    << "\" stroke=\"black\" fill=\"none\"/>\n";
  for (int i = 0; i <= 4; ++i) {
    const double v = lo + (hi - lo) * i / 4.0, y = py(v);
    s << "<line x1=\"" << kLeft - 4 << "\" y1=\"" << y << "\" x2=\"" << kW - kRight << "\" y2=\"" << y
      << "\" stroke=\"#ddd\"/>\n";
    s << "<text x=\"" << kLeft - 8 << "\" y=\"" << y + 4 << "\" text-anchor=\"end\">" << fmt("%.3g", v) << "</text>\n";
  }
  for (int i = 0; i <= 4; ++i) {
    const double st = static_cast<double>(max_step) * i / 4.0, x = px(st);
    s << "<text x=\"" << x << "\" y=\"" << kH - kBottom + 18 << "\" text-anchor=\"middle\">" << fmt("%.0f", st)
      << "</text>\n";
  }
  s << "<text x=\"" << (kLeft + kW - kRight) / 2 << "\" y=\"" << kH - 12 << "\" text-anchor=\"middle\">step</text>\n";
  auto polyline = [&](const std::vector<std::pair<double, double>>& pts, const char* colour, bool dots) {
    if (pts.empty()) return;
    s << "<polyline fill=\"none\" stroke=\"" << colour << "\" stroke-width=\"1.5\" points=\"";
    for (const auto& [x, y] : pts) s << px(x) << ',' << py(y) << ' ';
    s << "\"/>\n";
    if (dots)
      for (const auto& [x, y] : pts)
        s << "<circle cx=\"" << px(x) << "\" cy=\"" << py(y) << "\" r=\"3\" fill=\"" << colour << "\"/>\n";
  };
  std::vector<std::pair<double, double>> train, eval;
  for (const auto& r : steps)
    if (std::isfinite(r.loss)) train.emplace_back(static_cast<double>(r.step), r.loss);
  for (const auto& r : evals)
    if (std::isfinite(r.loss)) eval.emplace_back(static_cast<double>(r.step), r.loss);
  polyline(train, "#1f77b4", false);
  polyline(eval, "#d62728", true);
  // Legend.
  const double lx = kW - kRight - 130;
  s << "<line x1=\"" << lx << "\" y1=\"" << kTop + 10 << "\" x2=\"" << lx + 24 << "\" y2=\"" << kTop + 10
    << "\" stroke=\"#1f77b4\" stroke-width=\"2\"/><text x=\"" << lx + 30 << "\" y=\"" << kTop + 14
    << "\">train loss</text>\n";
  s << "<line x1=\"" << lx << "\" y1=\"" << kTop + 28 << "\" x2=\"" << lx + 24 << "\" y2=\"" << kTop + 28
    << "\" stroke=\"#d62728\" stroke-width=\"2\"/><text x=\"" << lx + 30 << "\" y=\"" << kTop + 32
    << "\">eval loss</text>\n";
  s << "</svg>\n";
  return s.str();
}

void write_loss_curve(const std::string& path, const std::vector<StepRecord>& steps,
                      const std::vector<EvalRecord>& evals) {
  write_text_file(path, loss_curve_svg(steps, evals));
}

}  // namespace qtrain::train
