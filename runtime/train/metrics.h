// What the trainer reports: one record per optimizer step and per evaluation, written as
// metrics.jsonl (one JSON object a line, flushed per line so a killed run keeps what it logged),
// the progress line on the terminal, and the loss curve as a hand-written SVG.
#pragma once
#include <cstdint>
#include <cstdio>
#include <optional>
#include <string>
#include <vector>

namespace qtrain::train {

struct StepRecord {
  int64_t step = 0;  // 1-based optimizer step
  int64_t total_steps = 0;
  double loss = 0.0;  // mean over the step's target tokens (NaN/inf for a skipped step)
  double lr = 0.0;
  double grad_norm = 0.0;  // before clipping
  double tokens_per_s = 0.0;
  uint64_t memory_bytes = 0;  // host RSS on the CPU backend, the device arena's peak on a GPU
  double elapsed_s = 0.0;
  double remaining_s = 0.0;
  int64_t tokens = 0;  // input tokens of the step
  double epoch = 0.0;  // fractional epoch reached
  bool skipped = false;
};

struct EvalRecord {
  int64_t step = 0;  // optimizer steps done when evaluated
  double loss = 0.0;
  double perplexity = 0.0;
  int64_t tokens = 0;  // target tokens evaluated
};

std::string step_json(const StepRecord& r);  // {"type":"train","step":...}
std::string eval_json(const EvalRecord& r);  // {"type":"eval","step":...}

// "step 12/200 | loss 2.3456 | lr 1.00e-03 | grad 0.812 | 1234 tok/s | mem 45.1 MiB | 0:12 elapsed | 0:40 left"
std::string progress_line(const StepRecord& r);
std::string eval_line(const EvalRecord& r);
// "1:02:03" or "2:03".
std::string format_duration(double seconds);
// Resident set size of this process (VmRSS), 0 when unknown.
uint64_t host_rss_bytes();

// Appends lines to <path>, flushing each.
class MetricsLog {
 public:
  MetricsLog() = default;
  MetricsLog(const MetricsLog&) = delete;
  MetricsLog& operator=(const MetricsLog&) = delete;
  ~MetricsLog();
  // Opens for appending after keeping only the records whose step is <= keep_through_step (a resumed
  // run drops what the interrupted run logged after its checkpoint); -1 starts a new file. Returns
  // the kept records.
  void open(const std::string& path, int64_t keep_through_step, std::vector<StepRecord>& steps,
            std::vector<EvalRecord>& evals);
  void write(const std::string& json_line);

 private:
  std::FILE* f_ = nullptr;
  std::string path_;
};

// Train loss per step (a line) and eval loss (a line with dots), axes with their ranges. Written
// atomically.
std::string loss_curve_svg(const std::vector<StepRecord>& steps, const std::vector<EvalRecord>& evals);
void write_loss_curve(const std::string& path, const std::vector<StepRecord>& steps,
                      const std::vector<EvalRecord>& evals);

// Writes `text` to path atomically (temporary name, then rename).
void write_text_file(const std::string& path, const std::string& text);

}  // namespace qtrain::train
