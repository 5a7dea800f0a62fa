// TrainBackend over CpuLlamaModel + HostOptimizer.
#include "runtime/train/cpu_backend.h"

#include "csrc/core/error.h"
#include "qk/grad_norm.h"
#include "runtime/train/host_optimizer.h"
#include "runtime/train/metrics.h"
#include "runtime/train/run_setup.h"

namespace qtrain::train {
namespace {

class CpuBackend final : public TrainBackend {
 public:
  CpuBackend(const config::RunConfig& cfg, const std::string& model_dir)
      : model_(load_model_for_run(cfg, model_dir)), qlora_(cfg.adapter == "qlora") {}

  const char* name() const override { return "cpu"; }
  std::string describe() const override {
    return std::string("cpu (fp32 activations, ") + (qlora_ ? "NF4" : "fp32") + " base)";
  }
  const io::ModelConfig& config() const override { return model_.config(); }
  const model::LoraConfig& lora_config() const override { return model_.lora_config(); }

  void init_lora(const model::LoraConfig& lora, uint64_t seed) override { model_.init_lora(lora, seed); }
  void load_adapter(const std::string& dir) override { model_.load_adapter(dir); }
  void enable_full_finetune() override { model_.set_full_finetune(true); }
  bool full_finetune() const override { return model_.full_finetune(); }
  void make_optimizer(const config::RunConfig& cfg) override {
    tensors_ = model_.trainable_tensors();
    kind_ = parse_optimizer_kind(cfg.optimizer, cfg.source);
    optimizer_ = std::make_unique<HostOptimizer>(
        kind_, OptimizerHyper{cfg.adam_beta1, cfg.adam_beta2, cfg.adam_epsilon, cfg.weight_decay}, tensors_);
  }
  std::string optimizer_description() const override { return optimizer_kind_name(kind_); }
  int64_t trainable_parameters() const override {
    int64_t n = 0;
    for (const auto& t : tensors_) n += static_cast<int64_t>(t.value.size());
    return n;
  }
  size_t trainable_tensors() const override { return tensors_.size(); }

  GroupResult forward_backward(const std::vector<model::Batch>& group, uint64_t seed, int64_t& micro_step) override {
    model_.set_training(true);
    model_.zero_grad();
    return forward_backward_group(model_, group, seed, micro_step);
  }
  double grad_norm() override {
    std::vector<qk::NormTensor> t;
    for (const auto& x : tensors_) t.push_back({x.grad.data(), static_cast<int64_t>(x.grad.size()), 0});
    qk::norm_plan_chunks(t.data(), static_cast<int>(t.size()));
    return qk::cpu::global_l2_norm(t.data(), static_cast<int>(t.size()));
  }
  void update(double lr, double grad_scale) override { optimizer_->step(lr, grad_scale); }
  model::ForwardResult evaluate(const model::Batch& batch) override { return model_.evaluate(batch); }

  void save_trained(const std::string& dir, const std::string& base_model_name) override {
    if (model_.full_finetune())
      model_.save_weights(dir);
    else
      model_.save_adapter(dir, base_model_name);
  }
  void save_optimizer(const std::string& path) override { optimizer_->save(path); }
  void load_optimizer(const std::string& path) override { optimizer_->load(path); }
  uint64_t memory_bytes() const override { return host_rss_bytes(); }

 private:
  model::CpuLlamaModel model_;
  bool qlora_;
  std::vector<model::LoraTensorRef> tensors_;
  OptimizerKind kind_ = OptimizerKind::AdamW;
  std::unique_ptr<HostOptimizer> optimizer_;
};

}  // namespace

std::unique_ptr<TrainBackend> make_cpu_backend(const config::RunConfig& cfg, const std::string& model_dir) {
  return std::make_unique<CpuBackend>(cfg, model_dir);
}

}  // namespace qtrain::train
