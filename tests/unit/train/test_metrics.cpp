// The trainer's reports: JSON lines (a non-finite loss becomes null), the progress line, the
// metrics file cut back to a checkpoint's step on resume, and the SVG loss curve.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "runtime/train/metrics.h"

namespace qtrain::train {
namespace {

namespace fs = std::filesystem;

StepRecord record(int64_t step, double loss) {
  StepRecord r;
  r.step = step;
  r.total_steps = 20;
  r.loss = loss;
  r.lr = 1e-3;
  r.grad_norm = 0.5;
  r.tokens_per_s = 1000;
  r.memory_bytes = 50ull << 20;
  r.elapsed_s = 65;
  r.remaining_s = 3725;
  return r;
}

TEST(Metrics, JsonLines) {
  const auto j = nlohmann::json::parse(step_json(record(3, 2.5)));
  EXPECT_EQ(j["type"], "train");
  EXPECT_EQ(j["step"], 3);
  EXPECT_DOUBLE_EQ(j["loss"].get<double>(), 2.5);
  EXPECT_DOUBLE_EQ(j["lr"].get<double>(), 1e-3);
  for (const char* k : {"grad_norm", "tokens_per_s", "memory_bytes", "elapsed_s", "remaining_s", "total_steps"})
    EXPECT_TRUE(j.contains(k)) << k;
  StepRecord bad = record(4, NAN);
  bad.skipped = true;
  const auto jb = nlohmann::json::parse(step_json(bad));
  EXPECT_TRUE(jb["loss"].is_null());
  EXPECT_TRUE(jb["skipped"].get<bool>());
  const auto je = nlohmann::json::parse(eval_json({5, 1.5, std::exp(1.5), 77}));
  EXPECT_EQ(je["type"], "eval");
  EXPECT_DOUBLE_EQ(je["eval_perplexity"].get<double>(), std::exp(1.5));
  // Doubles survive the trip exactly (resume compares losses bit for bit).
  const double x = 2.0 / 3.0;
  EXPECT_EQ(nlohmann::json::parse(step_json(record(1, x)))["loss"].get<double>(), x);
}

TEST(Metrics, ProgressLine) {
  const std::string s = progress_line(record(3, 2.5));
  EXPECT_NE(s.find("step 3/20"), std::string::npos) << s;
  EXPECT_NE(s.find("loss 2.5000"), std::string::npos) << s;
  EXPECT_NE(s.find("lr 1.00e-03"), std::string::npos) << s;
  EXPECT_NE(s.find("grad 0.500"), std::string::npos) << s;
  EXPECT_NE(s.find("1000 tok/s"), std::string::npos) << s;
  EXPECT_NE(s.find("mem 50.0 MiB"), std::string::npos) << s;
  EXPECT_NE(s.find("1:05 elapsed"), std::string::npos) << s;
  EXPECT_NE(s.find("1:02:05 left"), std::string::npos) << s;
  EXPECT_EQ(format_duration(0), "0:00");
  EXPECT_GT(host_rss_bytes(), 0u);
}

TEST(Metrics, ResumeKeepsRecordsUpToTheCheckpoint) {
  const fs::path d = fs::temp_directory_path() / ("qtrain_metrics_" + std::to_string(::getpid()));
  fs::create_directories(d);
  const std::string path = (d / "metrics.jsonl").string();
  std::vector<StepRecord> steps;
  std::vector<EvalRecord> evals;
  {
    MetricsLog log;
    log.open(path, -1, steps, evals);
    for (int64_t s = 1; s <= 6; ++s) log.write(step_json(record(s, 3.0 - 0.1 * static_cast<double>(s))));
    log.write(eval_json({4, 2.0, std::exp(2.0), 10}));
    log.write(eval_json({6, 1.9, std::exp(1.9), 10}));
  }
  { std::ofstream(path, std::ios::app) << "{\"type\":\"train\",\"st"; }  // cut short by a kill
  MetricsLog log;
  log.open(path, 4, steps, evals);
  ASSERT_EQ(steps.size(), 4u);
  EXPECT_EQ(steps.back().step, 4);
  EXPECT_DOUBLE_EQ(steps.back().loss, 3.0 - 0.4);
  ASSERT_EQ(evals.size(), 1u);
  EXPECT_EQ(evals[0].step, 4);
  log.write(step_json(record(5, 1.0)));
  std::ifstream in(path);
  std::string line;
  int n = 0;
  while (std::getline(in, line)) {
    EXPECT_TRUE(nlohmann::json::parse(line).is_object());  // every line is whole
    ++n;
  }
  EXPECT_EQ(n, 6);
  fs::remove_all(d);
}

TEST(Metrics, LossCurveSvg) {
  std::vector<StepRecord> steps;
  for (int64_t s = 1; s <= 30; ++s) steps.push_back(record(s, 4.0 / static_cast<double>(s)));
  steps[10].loss = NAN;  // a skipped step leaves a gap, not a NaN in the file
  const std::vector<EvalRecord> evals = {{0, 4.5, 0, 1}, {15, 1.0, 0, 1}, {30, 0.5, 0, 1}};
  const std::string svg = loss_curve_svg(steps, evals);
  EXPECT_EQ(svg.rfind("<svg xmlns=\"http://www.w3.org/2000/svg\"", 0), 0u);
  EXPECT_NE(svg.find("</svg>"), std::string::npos);
  EXPECT_EQ(svg.find("nan"), std::string::npos);
  EXPECT_EQ(svg.find("inf"), std::string::npos);
  // Two polylines (train, eval) and a dot per eval point.
  size_t lines = 0, dots = 0;
  for (size_t at = 0; (at = svg.find("<polyline", at)) != std::string::npos; ++at) ++lines;
  for (size_t at = 0; (at = svg.find("<circle", at)) != std::string::npos; ++at) ++dots;
  EXPECT_EQ(lines, 2u);
  EXPECT_EQ(dots, 3u);
  EXPECT_NE(svg.find("train loss"), std::string::npos);
  EXPECT_NE(svg.find("eval loss"), std::string::npos);
  // Empty input still gives a valid picture.
  EXPECT_NE(loss_curve_svg({}, {}).find("</svg>"), std::string::npos);
}

}  // namespace
}  // namespace qtrain::train
