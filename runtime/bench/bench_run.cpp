// `qtrain bench`'s measurement (see bench_run.h): builds the model from random weights, runs warmup
// and timed training steps, and gathers throughput, FLOPs, phase times and memory.
#include "runtime/bench/bench_run.h"

#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdarg>
#include <cstdio>
#include <random>
#include <vector>

#include "csrc/core/error.h"
#include "qk/nvtx.h"
#include "runtime/device/device.h"
#include "runtime/memory/arena.h"
#include "runtime/memory/plan.h"
#include "runtime/model/batch.h"
#include "runtime/model/cpu/llama_model.h"
#include "runtime/model/lora_config.h"
#include "runtime/model/random_weights.h"
#include "runtime/train/host_optimizer.h"

#if QTRAIN_HAS_CUDA
#include <cuda_runtime.h>

#include "runtime/bench/device_clock.h"
#include "runtime/model/cuda/cuda_util.h"
#include "runtime/model/cuda/llama_model.h"
#endif

namespace qtrain::bench {
namespace {

using Clock = std::chrono::steady_clock;

double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

// B rows of T random tokens, each row one example whose labels are its own next tokens (the last
// position has none), so every step sees the same amount of loss work as a packed real batch.
model::Batch random_batch(int64_t rows, int64_t seq, int64_t vocab, uint64_t seed) {
  std::mt19937_64 rng(seed ^ 0x62656e6368ull);
  std::uniform_int_distribution<int32_t> token(0, static_cast<int32_t>(vocab - 1));
  model::Batch b;
  b.seq = seq;
  for (int64_t r = 0; r < rows; ++r) {
    std::vector<int32_t> ids(static_cast<size_t>(seq + 1));
    for (int32_t& id : ids) id = token(rng);
    std::vector<int32_t> labels(ids.begin() + 1, ids.end());
    ids.pop_back();
    labels.back() = model::kIgnoreLabel;
    model::append_row(b, ids, labels, 0);
  }
  return b;
}

model::LoraConfig bench_lora(int64_t r) {
  model::LoraConfig lora;
  lora.r = r;
  lora.alpha = 2.0 * static_cast<double>(r);  // the usual alpha = 2r; the scale does not change the cost
  return lora;
}

size_t host_peak_rss() {
  rusage u{};
  if (getrusage(RUSAGE_SELF, &u) != 0) return 0;
  return static_cast<size_t>(u.ru_maxrss) * 1024;  // Linux reports KiB
}

// Step times and phase sums of the timed steps.
struct Timing {
  std::vector<double> step_ms;
  PhaseMs sum;
  void add(double fwd, double bwd, double opt, double step) {
    sum.forward += fwd, sum.backward += bwd, sum.optimizer += opt;
    step_ms.push_back(step);
  }
};

void finish(const Timing& t, BenchResult& r) {
  const double n = static_cast<double>(t.step_ms.size());
  r.timed_steps = static_cast<int64_t>(t.step_ms.size());
  double total = 0.0;
  for (double ms : t.step_ms) total += ms;
  r.step_ms_mean = total / n;
  r.step_ms_min = *std::min_element(t.step_ms.begin(), t.step_ms.end());
  r.step_ms_max = *std::max_element(t.step_ms.begin(), t.step_ms.end());
  r.phases = {t.sum.forward / n, t.sum.backward / n, t.sum.optimizer / n};
  r.tokens_per_s = static_cast<double>(r.tokens_per_step) / (r.step_ms_mean / 1e3);
  r.achieved_tflops = r.flops.per_token * r.tokens_per_s / 1e12;
  if (r.peak_tflops > 0) r.mfu = r.achieved_tflops / r.peak_tflops;
}

// printf into the report, one line at a time (the attribute lets the compiler check every format).
__attribute__((format(printf, 2, 3))) void append_line(std::string& out, const char* fmt, ...) {
  char buf[1024];
  va_list args;
  va_start(args, fmt);
  std::vsnprintf(buf, sizeof buf, fmt, args);
  va_end(args);
  out += buf;
  out += '\n';
}

constexpr double kLearningRate = 2e-4;

// Runs `n` more steps with the range profiler on, one profile per step. `step` opens no range of its
// own: the step range here is the outermost one, so the self shares cover the whole step.
template <typename Step>
OpShares profile_steps(int64_t n, qk::prof::Clock* clock, const std::string& clock_name, Step&& step) {
  struct Off {  // leaves the profiler off, its log empty and no clock of ours behind, however we exit
    ~Off() {
      qk::prof::disable();
      try {
        (void)qk::prof::take();
      } catch (const std::exception&) {
      }
      qk::prof::set_clock(nullptr);
    }
  } off;
  std::vector<qk::prof::Profile> profiles;
  qk::prof::enable(clock);
  for (int64_t s = 0; s < n; ++s) {
    {
      QK_NVTX_RANGE("train_step");
      step();
    }
    profiles.push_back(qk::prof::take());
  }
  return summarize_op_shares(profiles, clock_name);
}

void run_cpu(const BenchOptions& opt, const io::ModelConfig& config, BenchResult& r) {
  r.backend = "cpu";
  r.device = "host CPU";
  r.checkpointing = false;
  r.flops = count_flops(config, opt.lora_r, opt.seq, false);
  r.peak_tflops = opt.peak_tflops;
  // The CPU model computes in fp32 from dequantized weights: an NF4 round trip gives it the values a
  // QLoRA base holds.
  model::CpuLlamaModel m(model::random_base_weights(config, opt.seed, true));
  m.init_lora(bench_lora(opt.lora_r), opt.seed);
  const train::OptimizerKind kind =
      rt::optimizer_is_8bit(opt.optimizer) ? train::OptimizerKind::AdamW8bit : train::OptimizerKind::AdamW;
  train::HostOptimizer optimizer(kind, train::OptimizerHyper{}, m.lora_tensors());
  const model::Batch batch = random_batch(opt.batch, opt.seq, config.vocab_size, opt.seed);
  Timing timing;
  for (int64_t s = 0; s < opt.warmup + opt.steps; ++s) {
    const auto t0 = Clock::now();
    const double loss = m.forward(batch).loss;
    const double fwd = ms_since(t0);
    const auto t1 = Clock::now();
    m.backward();
    const double bwd = ms_since(t1);
    const auto t2 = Clock::now();
    optimizer.step(kLearningRate, 1.0);
    m.zero_grad();
    const double upd = ms_since(t2);
    const double step = ms_since(t0);
    if (s == 0) r.first_loss = loss;
    r.last_loss = loss;
    if (s >= opt.warmup) timing.add(fwd, bwd, upd, step);
  }
  finish(timing, r);
  if (opt.op_share_steps > 0)
    r.op_shares = profile_steps(opt.op_share_steps, nullptr, "host clock; the CPU model's ranges", [&] {
      (void)m.forward(batch);
      m.backward();
      QK_NVTX_RANGE("optimizer_step");
      optimizer.step(kLearningRate, 1.0);
      m.zero_grad();
    });
}

#if QTRAIN_HAS_CUDA
using model::cuda::check_cuda;

class Events {
 public:
  Events() {
    for (cudaEvent_t& e : e_) check_cuda(cudaEventCreate(&e), "bench event");
  }
  ~Events() {
    for (cudaEvent_t e : e_)
      if (e) (void)cudaEventDestroy(e);
  }
  Events(const Events&) = delete;
  Events& operator=(const Events&) = delete;
  cudaEvent_t operator[](int i) const { return e_[i]; }
  float ms(int a, int b) const {
    float out = 0.0f;
    check_cuda(cudaEventElapsedTime(&out, e_[a], e_[b]), "bench event time");
    return out;
  }

 private:
  cudaEvent_t e_[4] = {};
};

void run_cuda(const BenchOptions& opt, const io::ModelConfig& config, const rt::DeviceInfo& dev, BenchResult& r) {
  r.backend = "cuda";
  r.device = dev.name;
  r.checkpointing = opt.checkpointing;
  r.flops = count_flops(config, opt.lora_r, opt.seq, opt.checkpointing);
  r.peak_tflops = opt.peak_tflops > 0 ? opt.peak_tflops : peak_bf16_tflops(dev.name);

  model::CudaModelOptions mo;
  // The CUDA context, cuBLAS handles and the optimizer's states live outside the arena: leave them
  // room rather than claiming all free memory.
  constexpr size_t kMargin = size_t{2} << 30;
  mo.arena_bytes = opt.arena_bytes > 0 ? opt.arena_bytes : (dev.free_bytes > 2 * kMargin ? dev.free_bytes - kMargin : dev.free_bytes / 2);
  mo.nf4 = true;
  mo.checkpointing = opt.checkpointing;
  mo.device = dev.index;
  std::fprintf(stderr, "bench: building %s from random weights on the host...\n", opt.preset.c_str());
  model::CudaLlamaModel m(model::random_base_weights(config, opt.seed, false), mo);
  r.arena_weights = m.arena().used();
  m.init_lora(bench_lora(opt.lora_r), opt.seed);
  r.arena_adapter = m.arena().used() - r.arena_weights;

  std::vector<rt::TrainableTensor> tensors;
  for (const auto& t : m.lora_tensors())
    tensors.push_back({t.name, t.value, t.grad, static_cast<int64_t>(t.numel)});
  rt::OptimizerConfig oc;
  oc.kind = opt.optimizer;
  rt::Optimizer optimizer(oc, std::move(tensors), m.stream(), dev.index);
  r.optimizer_bytes = optimizer.state_bytes();

  const model::Batch batch = random_batch(opt.batch, opt.seq, config.vocab_size, opt.seed);
  Events ev;
  Timing timing;
  std::fprintf(stderr, "bench: %lld warmup + %lld timed steps...\n", static_cast<long long>(opt.warmup),
               static_cast<long long>(opt.steps));
  for (int64_t s = 0; s < opt.warmup + opt.steps; ++s) {
    check_cuda(cudaStreamSynchronize(m.stream()), "bench step");
    const auto t0 = Clock::now();
    check_cuda(cudaEventRecord(ev[0], m.stream()), "bench event");
    const double loss = m.forward(batch).loss;
    check_cuda(cudaEventRecord(ev[1], m.stream()), "bench event");
    m.backward();
    check_cuda(cudaEventRecord(ev[2], m.stream()), "bench event");
    optimizer.step(static_cast<float>(kLearningRate), 1.0f);
    m.refresh_lora_bf16();
    m.zero_grad();
    check_cuda(cudaEventRecord(ev[3], m.stream()), "bench event");
    check_cuda(cudaEventSynchronize(ev[3]), "bench step");
    const double step = ms_since(t0);
    if (s == 0) r.first_loss = loss;
    r.last_loss = loss;
    if (s >= opt.warmup) timing.add(ev.ms(0, 1), ev.ms(1, 2), ev.ms(2, 3), step);
  }
  finish(timing, r);
  r.arena_peak = m.arena().peak();
  r.arena_capacity = m.arena().capacity();
  if (opt.op_share_steps > 0) {
    std::fprintf(stderr, "bench: %lld profiled steps...\n", static_cast<long long>(opt.op_share_steps));
    DeviceRangeClock clock(m.stream());
    r.op_shares = profile_steps(opt.op_share_steps, &clock, "CUDA events on the training stream", [&] {
      (void)m.forward(batch);
      m.backward();
      QK_NVTX_RANGE("optimizer_step");
      optimizer.step(static_cast<float>(kLearningRate), 1.0f);
      m.refresh_lora_bf16();
      m.zero_grad();
    });
  }
}
#endif

}  // namespace

FlopCount count_flops(const io::ModelConfig& c, int64_t lora_r, int64_t seq, bool recompute) {
  const int64_t head_dim = c.head_dim > 0 ? c.head_dim : c.hidden_size / c.num_attention_heads;
  const int64_t kv_heads = c.num_key_value_heads > 0 ? c.num_key_value_heads : c.num_attention_heads;
  const int64_t h = c.hidden_size, q = c.num_attention_heads * head_dim, kv = kv_heads * head_dim;
  const int64_t ff = c.intermediate_size;
  // (out, in) of q, k, v, o, gate, up, down.
  const int64_t shapes[7][2] = {{q, h}, {kv, h}, {kv, h}, {h, q}, {ff, h}, {ff, h}, {h, ff}};
  FlopCount f;
  for (const auto& s : shapes) {
    f.layer_params += s[0] * s[1];
    f.lora_params += lora_r * (s[0] + s[1]);
  }
  f.layers = c.num_hidden_layers;
  f.layer_params *= f.layers;
  f.lora_params *= f.layers;
  f.head_params = c.vocab_size * h;
  f.attn_width = q;
  f.seq = seq;
  f.recompute = recompute;
  // Per token, with a frozen base (no weight gradients for it):
  //   base linears  2N forward + 2N backward (input gradients only)        = 4 (N_layers + N_head)
  //   recompute     the blocks run forward again in backward (not lm_head)  + 2 N_layers
  //   LoRA          2 forward + 2 input gradients + 2 weight gradients      = 6 N_lora (+ 2 recomputed)
  //   attention     causal, per layer: QK^T and PV forward 2 d T (half of the T x T square),
  //                 backward twice that                                      = 6 L d T (+ 2 L d T recomputed)
  const double c_re = recompute ? 1.0 : 0.0;
  const double n_layers = static_cast<double>(f.layer_params), n_head = static_cast<double>(f.head_params);
  const double n_lora = static_cast<double>(f.lora_params);
  const double attn = static_cast<double>(f.layers) * static_cast<double>(q) * static_cast<double>(seq);
  f.per_token = 4.0 * (n_layers + n_head) + 2.0 * c_re * n_layers + (6.0 + 2.0 * c_re) * n_lora +
                (6.0 + 2.0 * c_re) * attn;
  char buf[512];
  if (recompute)
    std::snprintf(buf, sizeof buf,
                  "4*(N_layers + N_head) + 2*N_layers + 8*N_lora + 8*L*d*T with N_layers %lld, N_head %lld, "
                  "N_lora %lld, L %lld, d %lld, T %lld",
                  static_cast<long long>(f.layer_params), static_cast<long long>(f.head_params),
                  static_cast<long long>(f.lora_params), static_cast<long long>(f.layers),
                  static_cast<long long>(q), static_cast<long long>(seq));
  else
    std::snprintf(buf, sizeof buf,
                  "4*(N_layers + N_head) + 6*N_lora + 6*L*d*T with N_layers %lld, N_head %lld, N_lora %lld, "
                  "L %lld, d %lld, T %lld",
                  static_cast<long long>(f.layer_params), static_cast<long long>(f.head_params),
                  static_cast<long long>(f.lora_params), static_cast<long long>(f.layers),
                  static_cast<long long>(q), static_cast<long long>(seq));
  f.formula = buf;
  return f;
}

double peak_bf16_tflops(const std::string& name) {
  // Most specific names first ("H100 PCIe" before "H100", "L40S" before "L40" before "L4").
  static const struct {
    const char* key;
    double tflops;
  } table[] = {
      {"H200", 989.4},     {"H100 PCIe", 756.0}, {"H100 NVL", 835.0}, {"H100", 989.4},   {"H800", 989.4},
      {"GH200", 989.4},    {"A100", 312.0},      {"A800", 312.0},     {"L40S", 362.1},   {"L40", 181.0},
      {"L4", 121.0},       {"A10G", 70.0},       {"A10", 125.0},      {"RTX 6000 Ada", 364.2},
      {"RTX A6000", 154.8}, {"RTX 4090", 165.2},  {"RTX 3090", 71.0},
  };
  for (const auto& e : table)
    if (name.find(e.key) != std::string::npos) return e.tflops;
  return 0.0;
}

BenchResult run_bench(const BenchOptions& opt) {
  if (opt.seq < 1) throw_bad_input("--seq", "must be at least 1");
  if (opt.batch < 1) throw_bad_input("--batch", "must be at least 1");
  if (opt.steps < 1) throw_bad_input("--steps", "must be at least 1");
  if (opt.warmup < 0) throw_bad_input("--warmup", "must not be negative");
  if (opt.lora_r < 1) throw_bad_input("--lora-r", "must be at least 1");
  if (opt.op_share_steps < 0) throw_bad_input("--op-shares", "must not be negative");
  if (opt.peak_tflops < 0) throw_bad_input("--peak-tflops", "must not be negative");
  const io::ModelConfig config = rt::model_preset(opt.preset);

  BenchResult r;
  r.tokens_per_step = opt.batch * opt.seq;
  rt::PlanInput plan;
  plan.model = config;
  plan.adapter = rt::AdapterKind::QLoRA;
  plan.lora_r = opt.lora_r;
  plan.micro_batch_size = opt.batch;
  plan.sequence_len = opt.seq;
  plan.gradient_checkpointing = opt.checkpointing;
  plan.optimizer = opt.optimizer;
  const rt::MemoryPlan mp = rt::make_memory_plan(plan);
  r.plan_peak = mp.peak;
  r.plan_weights = mp.bytes_of(rt::kPlanBaseWeights) + mp.bytes_of(rt::kPlanBf16Parts);
  r.plan_adapter = mp.bytes_of(rt::kPlanLora) + mp.bytes_of(rt::kPlanGrads);
  r.plan_step = rt::plan_step_bytes(mp);
  r.plan_optimizer = mp.bytes_of(rt::kPlanOptimizer);

  const rt::DeviceInfo dev = rt::query_device(0);
  const bool gpu = dev.available && !dev.emulated && !opt.cpu;
  if (!gpu) {
    if (opt.preset != "tiny")
      throw_bad_input("--preset", "the CPU model is an fp32 reference for tiny models; bench " + opt.preset +
                                      " needs a GPU" + (opt.cpu ? std::string(" (drop --cpu)") : " (" + dev.reason + ")") +
                                      ", or use --preset tiny");
    if (!opt.cpu) r.note = "no GPU (" + dev.reason + "): the CPU model runs instead";
    run_cpu(opt, config, r);
  } else {
#if QTRAIN_HAS_CUDA
    run_cuda(opt, config, dev, r);
#endif
  }
  r.host_peak_rss = host_peak_rss();
  return r;
}

std::string format_bench(const BenchOptions& opt, const BenchResult& r) {
  std::string out;
  auto ll = [](int64_t v) { return static_cast<long long>(v); };
  auto share = [&r](double ms) { return r.step_ms_mean > 0 ? 100.0 * ms / r.step_ms_mean : 0.0; };
  const io::ModelConfig c = rt::model_preset(opt.preset);

  if (!r.note.empty()) append_line(out, "note: %s", r.note.c_str());
  append_line(out, "preset: %s (%lld layers, hidden %lld, intermediate %lld, vocab %lld)", opt.preset.c_str(),
       ll(c.num_hidden_layers), ll(c.hidden_size), ll(c.intermediate_size), ll(c.vocab_size));
  append_line(out, "backend: %s on %s", r.backend.c_str(), r.device.c_str());
  append_line(out, "settings: batch %lld x seq %lld, QLoRA (NF4 base) r %lld on all 7 linear kinds, checkpointing %s, "
       "optimizer %s",
       ll(opt.batch), ll(opt.seq), ll(opt.lora_r), r.checkpointing ? "on" : "off", rt::optimizer_name(opt.optimizer));
  if (r.backend == "cpu" && opt.checkpointing) append_line(out, "  (the CPU model keeps every activation: no recompute)");
  append_line(out, "steps: %lld timed after %lld warmup", ll(r.timed_steps), ll(opt.warmup));
  append_line(out, "loss: %.4f (first step) -> %.4f (last step)", r.first_loss, r.last_loss);
  append_line(out, "step time: %.2f ms mean (min %.2f, max %.2f)", r.step_ms_mean, r.step_ms_min, r.step_ms_max);
  append_line(out, "  forward: %.2f ms (%.1f%%)", r.phases.forward, share(r.phases.forward));
  append_line(out, "  backward: %.2f ms (%.1f%%)", r.phases.backward, share(r.phases.backward));
  append_line(out, "  optimizer: %.2f ms (%.1f%%)", r.phases.optimizer, share(r.phases.optimizer));
  append_line(out, "tokens/s: %.1f (%lld tokens per step)", r.tokens_per_s, ll(r.tokens_per_step));
  append_line(out, "flops/token: %.4g = %s", r.flops.per_token, r.flops.formula.c_str());
  append_line(out, "achieved: %.4g TFLOP/s", r.achieved_tflops);
  if (r.peak_tflops > 0)
    append_line(out, "mfu: %.2f%% of %.1f TFLOP/s (bf16 dense peak)", 100.0 * r.mfu, r.peak_tflops);
  else
    append_line(out, "mfu: n/a (%s; give --peak-tflops)", r.backend == "cpu" ? "no peak for the CPU" : "device not in the peak table");
  const double plan = static_cast<double>(r.plan_peak);
  if (r.backend == "cuda") {
    const size_t measured = r.arena_peak + r.optimizer_bytes;
    append_line(out, "arena peak: %s of %s reserved", rt::format_bytes(r.arena_peak).c_str(),
         rt::format_bytes(r.arena_capacity).c_str());
    append_line(out, "optimizer states: %s (outside the arena)", rt::format_bytes(r.optimizer_bytes).c_str());
    append_line(out, "plan peak: %s; measured (arena + optimizer) %s, %+.1f%% vs plan", rt::format_bytes(r.plan_peak).c_str(),
         rt::format_bytes(measured).c_str(), 100.0 * (static_cast<double>(measured) - plan) / plan);
    // The plan category by category; cuBLAS's workspace is cuBLAS's own, outside the arena.
    auto vs = [&out](const char* what, size_t got, size_t want) {
      append_line(out, "  %s: measured %s, plan %s (%+.1f%%)", what, rt::format_bytes(got).c_str(),
                  rt::format_bytes(want).c_str(),
                  want ? 100.0 * (static_cast<double>(got) - static_cast<double>(want)) / static_cast<double>(want) : 0.0);
    };
    vs("weights", r.arena_weights, r.plan_weights);
    vs("adapter + gradients", r.arena_adapter, r.plan_adapter);
    vs("step (activations + workspaces)", r.arena_peak - r.arena_weights - r.arena_adapter, r.plan_step);
    vs("optimizer states", r.optimizer_bytes, r.plan_optimizer);
  } else {
    append_line(out, "arena peak: n/a (the CPU model has no device arena)");
    append_line(out, "plan peak: %s (a GPU run with these settings)", rt::format_bytes(r.plan_peak).c_str());
  }
  append_line(out, "host peak rss: %s", rt::format_bytes(r.host_peak_rss).c_str());
  if (r.op_shares.steps > 0) out += format_op_shares(r.op_shares);
  append_line(out, "per-op timeline: nsys profile -t cuda,nvtx -o qtrain_bench qtrain bench --preset %s --seq %lld --batch %lld "
       "--steps %lld; then nsys stats -r nvtx_sum qtrain_bench.nsys-rep",
       opt.preset.c_str(), ll(opt.seq), ll(opt.batch), ll(opt.steps));
  return out;
}

}  // namespace qtrain::bench
