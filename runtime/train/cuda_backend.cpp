// TrainBackend over CudaLlamaModel + rt::Optimizer.
#include "runtime/train/cuda_backend.h"

#include "csrc/core/error.h"

#if QTRAIN_HAS_CUDA
#include <algorithm>

#include "runtime/device/device.h"
#include "runtime/memory/arena.h"
#include "runtime/model/cuda/llama_model.h"
#include "runtime/optim/optimizer.h"
#include "runtime/train/run_plan.h"
#include "runtime/train/run_setup.h"

namespace qtrain::train {
namespace {

// The arena holds the model and every step's buffers; the optimizer states (unless paged: managed
// memory the driver may evict) and cuBLAS's workspace live beside it. With gpu_memory_limit those
// come out of the limit, so that the whole run stays under it; without one the arena takes the
// free device memory less them and a margin for the CUDA context's own allocations.
size_t arena_cap(const config::RunConfig& cfg, const rt::DeviceInfo& dev, const rt::MemoryPlan& plan,
                 bool paged) {
  const size_t outside = plan.bytes_of(rt::kPlanCublas) + (paged ? 0 : plan.bytes_of(rt::kPlanOptimizer));
  if (cfg.gpu_memory_limit_bytes) {
    const size_t limit = static_cast<size_t>(cfg.gpu_memory_limit_bytes);
    return limit > outside ? limit - outside : 0;
  }
  const size_t margin = std::max<size_t>(size_t{512} << 20, dev.free_bytes / 20) + outside;
  return dev.free_bytes > margin ? dev.free_bytes - margin : 0;
}

class CudaBackend final : public TrainBackend {
 public:
  CudaBackend(const config::RunConfig& cfg, std::FILE* log, const std::string& model_dir)
      : cfg_(cfg), dev_(rt::query_device(0)) {
    model_config_ = io::load_model_config(model_dir);
    const rt::PlanInput in = plan_input_for_run(cfg, model_config_);
    const rt::MemoryPlan plan = rt::make_memory_plan(in);
    const bool paged = rt::optimizer_is_paged(in.optimizer);
    cap_ = arena_cap(cfg, dev_, plan, paged);
    // What the whole run may use, as the plan counts it (for the out-of-memory report).
    budget_ = cfg.gpu_memory_limit_bytes
                  ? static_cast<size_t>(cfg.gpu_memory_limit_bytes)
                  : cap_ + plan.bytes_of(rt::kPlanCublas) + (paged ? 0 : plan.bytes_of(rt::kPlanOptimizer));
    if (cfg.gpu_memory_limit_bytes && plan.peak > cfg.gpu_memory_limit_bytes)
      std::fprintf(log, "warning: the memory plan (%s) exceeds gpu_memory_limit (%s); see `qtrain plan`\n",
                   rt::format_bytes(plan.peak).c_str(), rt::format_bytes(cfg.gpu_memory_limit_bytes).c_str());
    guarded([&] {
      model::CudaModelOptions opt;
      opt.arena_bytes = cap_;
      opt.nf4 = cfg.adapter == "qlora";
      opt.checkpointing = cfg.gradient_checkpointing;
      model::LoadOptions load;
      load.quantize_nf4 = opt.nf4;
      model_ = model::CudaLlamaModel::load(model_dir, load, opt);
    });
  }

  const char* name() const override { return "cuda"; }
  std::string describe() const override {
    return dev_.name + (dev_.emulated ? " (emulated)" : "") + ", bf16 activations, " +
           (model_->options().nf4 ? "NF4" : "bf16") + " base, arena " + rt::format_bytes(cap_) +
           (model_->options().checkpointing ? ", gradient checkpointing" : "");
  }
  const io::ModelConfig& config() const override { return model_->config(); }
  const model::LoraConfig& lora_config() const override { return lora_; }

  void init_lora(const model::LoraConfig& lora, uint64_t seed) override {
    guarded([&] { model_->init_lora(lora, seed); });
    lora_ = lora;
  }
  void load_adapter(const std::string& dir) override {
    guarded([&] { model_->load_adapter(dir); });
    lora_ = model_->adapter().config;
  }
  void enable_full_finetune() override {
    guarded([&] { model_->set_full_finetune(true); });
  }
  bool full_finetune() const override { return model_->full_finetune(); }
  void make_optimizer(const config::RunConfig& cfg) override {
    rt::OptimizerConfig oc;
    oc.kind = rt::parse_optimizer_name(cfg.optimizer, cfg.source);
    oc.beta1 = static_cast<float>(cfg.adam_beta1);
    oc.beta2 = static_cast<float>(cfg.adam_beta2);
    oc.eps = static_cast<float>(cfg.adam_epsilon);
    oc.weight_decay = static_cast<float>(cfg.weight_decay);
    oc.max_grad_norm = 0.0f;  // the trainer passes the clip factor as grad_scale
    std::vector<rt::TrainableTensor> t;
    params_ = 0;
    for (const auto& x : model_->trainable_tensors()) {
      t.push_back({x.name, x.value, x.grad, static_cast<int64_t>(x.numel)});
      params_ += static_cast<int64_t>(x.numel);
    }
    guarded([&] { optimizer_ = std::make_unique<rt::Optimizer>(oc, std::move(t), model_->stream(), 0); });
  }
  std::string optimizer_description() const override { return optimizer_->describe(); }
  int64_t trainable_parameters() const override { return params_; }
  size_t trainable_tensors() const override { return model_->trainable_tensors().size(); }

  GroupResult forward_backward(const std::vector<model::Batch>& group, uint64_t seed, int64_t& micro_step) override {
    GroupResult r;
    for (const model::Batch& b : group)
      for (int32_t l : b.labels) r.targets += l != model::kIgnoreLabel;
    double sum = 0.0;
    guarded([&] {
      model_->set_training(true);
      model_->zero_grad();
      model_->set_grad_denominator(r.targets);
      for (const model::Batch& b : group) {
        model_->set_dropout_seed(micro_dropout_seed(seed, micro_step++));
        const model::ForwardResult f = model_->forward(b);
        sum += f.loss * static_cast<double>(f.label_tokens);
        if (r.targets && f.label_tokens) model_->backward();
      }
      model_->set_grad_denominator(0);
    });
    r.loss = r.targets ? sum / static_cast<double>(r.targets) : 0.0;
    return r;
  }
  double grad_norm() override {
    last_norm_ = optimizer_->grad_norm();
    return last_norm_;
  }
  void update(double lr, double grad_scale) override {
    optimizer_->step_with_norm(static_cast<float>(lr), static_cast<float>(grad_scale), last_norm_);
    model_->refresh_bf16();
  }
  model::ForwardResult evaluate(const model::Batch& batch) override {
    model::ForwardResult f;
    guarded([&] {
      model_->set_training(false);
      f = model_->forward(batch);
      model_->set_training(true);
    });
    return f;
  }

  void save_trained(const std::string& dir, const std::string& base_model_name) override {
    if (model_->full_finetune()) {
      model_->save_weights(dir);
      return;
    }
    model::PeftAdapter a = model_->adapter();
    a.base_model_name_or_path = base_model_name;
    model::save_peft_adapter(dir, a);
  }
  void save_optimizer(const std::string& path) override { optimizer_->save(path); }
  void load_optimizer(const std::string& path) override { optimizer_->load(path); }
  uint64_t memory_bytes() const override { return model_->arena().peak(); }

 private:
  // An arena overflow becomes an OutOfMemory error carrying the run's memory plan and advice.
  template <typename F>
  void guarded(F&& f) {
    try {
      f();
    } catch (const Error& e) {
      if (e.kind() != ErrorKind::OutOfMemory) throw;
      throw Error(ErrorKind::OutOfMemory, out_of_memory_report(e.what(), cfg_, model_config_, budget_));
    }
  }

  config::RunConfig cfg_;
  rt::DeviceInfo dev_;
  io::ModelConfig model_config_;
  size_t cap_ = 0;     // the arena
  size_t budget_ = 0;  // the arena, cuBLAS's workspace and unpaged optimizer states
  std::unique_ptr<model::CudaLlamaModel> model_;
  model::LoraConfig lora_;
  std::unique_ptr<rt::Optimizer> optimizer_;
  int64_t params_ = 0;
  float last_norm_ = 0.0f;
};

}  // namespace

std::unique_ptr<TrainBackend> make_cuda_backend(const config::RunConfig& cfg, std::FILE* log,
                                                const std::string& model_dir) {
  return std::make_unique<CudaBackend>(cfg, log, model_dir);
}

}  // namespace qtrain::train

#else

namespace qtrain::train {
std::unique_ptr<TrainBackend> make_cuda_backend(const config::RunConfig&, std::FILE*, const std::string&) {
  throw_internal("qtrain was built without CUDA: no GPU backend");
}
}  // namespace qtrain::train

#endif
