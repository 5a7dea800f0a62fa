// The SFT loop: set-up (data, model, optimizer, resume), steps, evaluation, checkpoints, the end.
#include "runtime/train/sft_trainer.h"

#include <chrono>
#include <cmath>
#include <filesystem>

#include "csrc/core/error.h"
#include "csrc/data/sft_dataset.h"
#include "runtime/optim/schedule.h"
#include "runtime/train/accumulate.h"
#include "runtime/train/batch_convert.h"
#include "runtime/train/checkpoint.h"
#include "runtime/train/host_optimizer.h"
#include "runtime/train/run_setup.h"
#include "runtime/train/stop_signal.h"
#include "runtime/train/train_backend.h"

namespace qtrain::train {
namespace fs = std::filesystem;
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

struct Resume {
  std::string dir;
  TrainerState state;
};

std::optional<Resume> find_resume(const config::RunConfig& cfg, const TrainOptions& opt, std::FILE* log) {
  std::string dir;
  if (!cfg.resume_from_checkpoint.empty()) {
    dir = cfg.resume_from_checkpoint;
    if (!fs::is_directory(dir)) throw_bad_input(cfg.source, "no such checkpoint folder: " + dir, "key resume_from_checkpoint");
  } else if (opt.resume) {
    const auto newest = newest_checkpoint(cfg.output_dir);
    if (!newest) {
      std::fprintf(log, "no checkpoint in %s: starting from step 0\n", cfg.output_dir.c_str());
      return std::nullopt;
    }
    dir = newest->path;
  } else {
    return std::nullopt;
  }
  return Resume{dir, read_trainer_state((fs::path(dir) / "trainer_state.json").string())};
}

}  // namespace

TrainResult run_sft(const config::RunConfig& cfg, const TrainOptions& opt) {
  std::FILE* log = opt.log;
  check_sft_supported(cfg);
  const auto t_setup = Clock::now();

  // Data.
  const text::Tokenizer tok = data::load_run_tokenizer(cfg);
  const data::SftData d = data::build_sft_data(cfg, tok);
  for (const auto& w : d.stats.warnings) std::fprintf(stderr, "qtrain: warning: %s\n", w.c_str());
  const data::BatchOptions train_opt = batch_options_for_run(cfg, tok.pad_id(), true);
  data::BatchIterator it(d.train, train_opt);
  const int64_t total = config::total_optimizer_steps(cfg, it.batches_per_epoch());
  config::check_total_steps(cfg, total);
  const int64_t warmup = config::resolved_warmup_steps(cfg, total);
  (void)rt::parse_lr_schedule(cfg.lr_scheduler);  // a bad name fails before the model loads
  (void)parse_optimizer_kind(cfg.optimizer, cfg.source);
  const int64_t accum = cfg.gradient_accumulation_steps;

  // Model, adapter, optimizer; a checkpoint replaces the fresh ones.
  const std::optional<Resume> resume = find_resume(cfg, opt, log);
  const bool full = cfg.adapter == "full";
  // Full fine-tuning checkpoints hold the whole model: a resumed run loads its weights from there.
  const std::unique_ptr<TrainBackend> backend = make_train_backend(cfg, log, full && resume ? resume->dir : "");
  TrainBackend& m = *backend;
  if (full)
    m.enable_full_finetune();
  else if (resume)
    m.load_adapter(resume->dir);
  else if (!cfg.lora_model_dir.empty())
    m.load_adapter(cfg.lora_model_dir);
  else
    m.init_lora(lora_config_for_run(cfg), static_cast<uint64_t>(cfg.seed));
  m.make_optimizer(cfg);
  const int64_t trainable = m.trainable_parameters();
  TrainerState state;
  state.total_steps = total;
  state.seed = static_cast<uint64_t>(cfg.seed);
  if (resume) {
    m.load_optimizer((fs::path(resume->dir) / "optimizer.safetensors").string());
    const TrainerState saved = resume->state;
    if (saved.seed != state.seed)
      throw_bad_input(resume->dir, "checkpoint was trained with seed " + std::to_string(saved.seed) +
                                       ", the run file says " + std::to_string(cfg.seed), "key seed");
    if (saved.total_steps != total)
      std::fprintf(stderr, "qtrain: warning: %s was written by a run of %lld steps, this one has %lld; the lr "
                           "schedule differs from the interrupted run's\n",
                   resume->dir.c_str(), static_cast<long long>(saved.total_steps), static_cast<long long>(total));
    state = saved;
    state.total_steps = total;
    it.seek(state.data_position);
  }

  std::error_code ec;
  fs::create_directories(cfg.output_dir, ec);
  if (ec) throw_bad_input(cfg.output_dir, "cannot create output_dir: " + ec.message(), "key output_dir");
  config::write_resolved_config(cfg, cfg.output_dir);
  std::vector<StepRecord> history;
  std::vector<EvalRecord> evals;
  MetricsLog metrics;
  metrics.open((fs::path(cfg.output_dir) / "metrics.jsonl").string(), resume ? state.global_step : -1, history, evals);

  const io::ModelConfig& mc = m.config();
  const std::string what = full ? std::string("full fine-tuning")
                                : "LoRA r " + std::to_string(m.lora_config().r);
  std::fprintf(log, "model %s: %lld layers, hidden %lld, vocab %lld; %s on %zu tensors, %lld trainable parameters\n",
               cfg.base_model.c_str(), static_cast<long long>(mc.num_hidden_layers),
               static_cast<long long>(mc.hidden_size), static_cast<long long>(mc.vocab_size), what.c_str(),
               m.trainable_tensors(), static_cast<long long>(trainable));
  std::fprintf(log, "device: %s\n", m.describe().c_str());
  std::fprintf(log, "data: %zu train, %zu eval examples; %lld micro-batches of %lld per epoch, %lld per step; "
               "%lld steps (%lld warmup), %s lr %g, %s\n",
               d.train.size(), d.val.size(), static_cast<long long>(it.batches_per_epoch()),
               static_cast<long long>(cfg.micro_batch_size), static_cast<long long>(accum),
               static_cast<long long>(total), static_cast<long long>(warmup), cfg.lr_scheduler.c_str(),
               cfg.learning_rate, m.optimizer_description().c_str());
  if (resume)
    std::fprintf(log, "resuming from %s at step %lld\n", resume->dir.c_str(),
                 static_cast<long long>(state.global_step));
  std::fprintf(log, "set-up %.1f s\n", seconds_since(t_setup));
  std::fflush(log);

  TrainResult result;
  result.total_steps = total;
  result.resumed_from = resume ? state.global_step : -1;
  const data::BatchOptions eval_opt = batch_options_for_run(cfg, tok.pad_id(), false);
  auto run_eval = [&](int64_t step) {
    const EvalRecord r = evaluate_examples([&m](const model::Batch& b) { return m.evaluate(b); }, d.val, eval_opt, step);
    metrics.write(eval_json(r));
    evals.push_back(r);
    if (!result.first_eval) result.first_eval = r;
    result.last_eval = r;
    std::fprintf(log, "%s\n", eval_line(r).c_str());
    std::fflush(log);
  };
  auto save = [&](int64_t step) {
    state.data_position = it.position();
    const int64_t keep = cfg.save_total_limit.value_or(0);
    result.last_checkpoint = save_checkpoint(cfg.output_dir, step, [&](const std::string& dir) {
      m.save_trained(dir, cfg.base_model);
      m.save_optimizer((fs::path(dir) / "optimizer.safetensors").string());
      write_text_file((fs::path(dir) / "trainer_state.json").string(), trainer_state_json(state));
    }, keep);
  };

  const bool has_eval = !d.val.empty();
  if (has_eval && !resume) run_eval(0);

  const auto t_start = Clock::now();
  const double elapsed_before = state.elapsed_s;
  const int64_t first_step = state.global_step;
  bool have_first_loss = false;
  int64_t last_saved = resume ? state.global_step : -1;
  int64_t last_eval = resume ? state.global_step : 0;
  while (state.global_step < total) {
    const auto t_step = Clock::now();
    std::vector<model::Batch> group;
    int64_t tokens = 0;
    for (int64_t k = 0; k < accum; ++k) {
      const data::Batch b = it.next();
      for (int32_t len : b.lengths) tokens += len;
      group.push_back(to_model_batch(b));
    }
    const GroupResult g = m.forward_backward(group, state.seed, state.micro_step);
    const double loss = g.loss;
    const double norm = m.grad_norm();
    const double lr = step_learning_rate(cfg, state.global_step, total);
    ++state.global_step;
    StepRecord r;
    r.step = state.global_step;
    r.total_steps = total;
    r.loss = loss;
    r.lr = lr;
    r.grad_norm = norm;
    r.tokens = tokens;
    if (!std::isfinite(loss) || !std::isfinite(norm)) {
      r.skipped = true;
      ++state.nonfinite_in_a_row;
      std::fprintf(stderr, "qtrain: warning: step %lld: %s is not finite; step skipped\n",
                   static_cast<long long>(r.step), std::isfinite(loss) ? "the gradient norm" : "the loss");
    } else {
      state.nonfinite_in_a_row = 0;
      const double scale = cfg.max_grad_norm > 0 && norm > cfg.max_grad_norm ? cfg.max_grad_norm / (norm + 1e-6) : 1.0;
      m.update(lr, scale);
      if (!have_first_loss) result.first_loss = loss;
      have_first_loss = true;
      result.last_loss = loss;
    }
    state.tokens_seen += tokens;
    result.tokens += tokens;
    const double step_s = seconds_since(t_step), run_s = seconds_since(t_start);
    state.elapsed_s = elapsed_before + run_s;
    r.tokens_per_s = step_s > 0 ? static_cast<double>(tokens) / step_s : 0.0;
    r.memory_bytes = m.memory_bytes();
    r.elapsed_s = state.elapsed_s;
    r.remaining_s = run_s / static_cast<double>(state.global_step - first_step) *
                    static_cast<double>(total - state.global_step);
    const data::BatchPosition pos = it.position();
    r.epoch = static_cast<double>(pos.epoch) +
              static_cast<double>(pos.index) / static_cast<double>(std::max<int64_t>(1, it.batches_per_epoch()));
    metrics.write(step_json(r));
    history.push_back(r);
    if (cfg.logging_steps <= 1 || r.step % cfg.logging_steps == 0 || r.step == total || r.skipped) {
      std::fprintf(log, "%s\n", progress_line(r).c_str());
      std::fflush(log);
    }
    if (state.nonfinite_in_a_row >= kMaxNonFiniteSteps)
      throw_bad_input(cfg.source, "the loss or gradient was not finite for " + std::to_string(kMaxNonFiniteSteps) +
                                      " steps in a row: stopping (try a lower learning_rate)",
                      "step " + std::to_string(r.step));

    if (has_eval && cfg.eval_steps && r.step % *cfg.eval_steps == 0) {
      run_eval(r.step);
      last_eval = r.step;
    }
    if (cfg.save_steps && r.step % *cfg.save_steps == 0 && r.step < total) {
      save(r.step);
      last_saved = r.step;
    }
    const int sig = stop_requested();
    if ((sig || (opt.stop_at_step > 0 && r.step >= opt.stop_at_step)) && r.step < total) {
      if (last_saved != r.step) save(r.step);
      result.stop_signal = sig;
      result.stopped_early = true;
      break;
    }
  }
  result.steps_done = state.global_step;
  result.seconds = seconds_since(t_start);

  if (!result.stopped_early) {
    if (has_eval && last_eval != state.global_step) run_eval(state.global_step);
    m.save_trained(cfg.output_dir, cfg.base_model);
    if (full) copy_tokenizer_files(cfg.base_model, cfg.output_dir);
  }
  write_loss_curve((fs::path(cfg.output_dir) / "loss_curve.svg").string(), history, evals);

  if (result.stopped_early) {
    std::fprintf(log, "stopped after step %lld/%lld%s; checkpoint %s (continue with --resume)\n",
                 static_cast<long long>(result.steps_done), static_cast<long long>(total),
                 result.stop_signal ? " on a signal" : "", result.last_checkpoint.c_str());
  } else {
    std::fprintf(log, "done: %lld steps in %s, %.0f tokens/s; train loss %.4f -> %.4f", static_cast<long long>(total),
                 format_duration(result.seconds).c_str(),
                 result.seconds > 0 ? static_cast<double>(result.tokens) / result.seconds : 0.0, result.first_loss,
                 result.last_loss);
    if (!evals.empty())
      std::fprintf(log, "; eval loss %.4f -> %.4f (perplexity %.2f -> %.2f)", evals.front().loss, evals.back().loss,
                   evals.front().perplexity, evals.back().perplexity);
    std::fprintf(log, "\n%s: %s/%s; metrics: %s/metrics.jsonl; curve: %s/loss_curve.svg\n", full ? "model" : "adapter",
                 cfg.output_dir.c_str(), full ? "model.safetensors" : "adapter_model.safetensors",
                 cfg.output_dir.c_str(), cfg.output_dir.c_str());
  }
  std::fflush(log);
  return result;
}

}  // namespace qtrain::train
