// Host optimizer: state buffers per tensor, one qk::cpu call per step over all of them, and the
// state file. State tensor names: "<peft name>.<field>" with field exp_avg / exp_avg_sq (fp32) or
// q1 / q2 / absmax1 / absmax2 (8-bit); the metadata holds the kind and step count.
#include "runtime/train/host_optimizer.h"

#include <cstring>
#include <map>
#include <span>

#include "csrc/core/error.h"
#include "csrc/io/safetensors.h"
#include "qk/adamw.h"
#include "qk/adamw8bit.h"

namespace qtrain::train {

OptimizerKind parse_optimizer_kind(const std::string& name, const std::string& source) {
  if (name == "adamw" || name == "paged_adamw_32bit") return OptimizerKind::AdamW;
  if (name == "adamw_8bit" || name == "paged_adamw_8bit") return OptimizerKind::AdamW8bit;
  throw_bad_input(source, "unknown optimizer '" + name + "'", "key optimizer");
}

const char* optimizer_kind_name(OptimizerKind kind) { return kind == OptimizerKind::AdamW ? "adamw" : "adamw_8bit"; }

HostOptimizer::HostOptimizer(OptimizerKind kind, const OptimizerHyper& hyper, std::vector<model::LoraTensorRef> tensors)
    : kind_(kind), hyper_(hyper), tensors_(std::move(tensors)) {
  states_.resize(tensors_.size());
  for (size_t i = 0; i < tensors_.size(); ++i) {
    const auto n = static_cast<int64_t>(tensors_[i].value.size());
    State& s = states_[i];
    if (kind_ == OptimizerKind::AdamW8bit && qk::adamw8bit_is_quantized(n)) {
      // Zero bytes with absmax 0, as bitsandbytes allocates new states.
      s.q1.assign(static_cast<size_t>(n), 0);
      s.q2.assign(static_cast<size_t>(n), 0);
      s.absmax1.assign(static_cast<size_t>(qk::adamw8bit_blocks(n)), 0.0f);
      s.absmax2.assign(s.absmax1.size(), 0.0f);
    } else {
      s.m.assign(static_cast<size_t>(n), 0.0f);
      s.v.assign(static_cast<size_t>(n), 0.0f);
    }
  }
}

void HostOptimizer::step(double lr, double grad_scale) {
  ++steps_;
  qk::AdamWParams p;
  p.lr = static_cast<float>(lr);
  p.beta1 = static_cast<float>(hyper_.beta1);
  p.beta2 = static_cast<float>(hyper_.beta2);
  p.eps = static_cast<float>(hyper_.eps);
  p.weight_decay = static_cast<float>(hyper_.weight_decay);
  p.grad_scale = static_cast<float>(grad_scale);
  p.step = steps_;
  if (kind_ == OptimizerKind::AdamW) {
    std::vector<qk::AdamWTensor> t;
    for (size_t i = 0; i < tensors_.size(); ++i)
      t.push_back({tensors_[i].value.data(), tensors_[i].grad.data(), states_[i].m.data(), states_[i].v.data(),
                   static_cast<int64_t>(tensors_[i].value.size()), 0});
    qk::adamw_plan_chunks(t.data(), static_cast<int>(t.size()));
    qk::cpu::adamw_update(t.data(), static_cast<int>(t.size()), p);
    return;
  }
  std::vector<qk::AdamW8bitTensor> t;
  for (size_t i = 0; i < tensors_.size(); ++i) {
    State& s = states_[i];
    auto ptr = [](auto& v) { return v.empty() ? nullptr : v.data(); };
    t.push_back({tensors_[i].value.data(), tensors_[i].grad.data(), ptr(s.q1), ptr(s.q2), ptr(s.absmax1),
                 ptr(s.absmax2), ptr(s.m), ptr(s.v), static_cast<int64_t>(tensors_[i].value.size()), 0});
  }
  qk::adamw8bit_plan_chunks(t.data(), static_cast<int>(t.size()));
  qk::cpu::adamw8bit_update(t.data(), static_cast<int>(t.size()), p);
}

namespace {

template <typename T>
std::span<const std::byte> bytes_of(const std::vector<T>& v) {
  return std::as_bytes(std::span<const T>(v));
}

template <typename T>
void read_into(const io::SafetensorsFile& f, const std::string& name, DType dtype, std::vector<T>& dst) {
  if (!f.contains(name)) throw_bad_input(f.path(), "optimizer state lacks tensor " + name);
  const io::TensorInfo& info = f.info(name);
  if (info.dtype != dtype || info.numel() != dst.size())
    throw_bad_input(f.path(), "optimizer state tensor has the wrong dtype or size", name);
  const auto data = f.data(name);
  std::memcpy(dst.data(), data.data(), data.size());
}

}  // namespace

void HostOptimizer::save(const std::string& path) const {
  std::vector<io::TensorToWrite> out;
  for (size_t i = 0; i < tensors_.size(); ++i) {
    const State& s = states_[i];
    const std::string& name = tensors_[i].name;
    const std::vector<int64_t> shape = {static_cast<int64_t>(tensors_[i].value.size())};
    if (!s.m.empty() || s.q1.empty()) {
      out.push_back({name + ".exp_avg", DType::F32, shape, bytes_of(s.m)});
      out.push_back({name + ".exp_avg_sq", DType::F32, shape, bytes_of(s.v)});
    } else {
      const std::vector<int64_t> blocks = {static_cast<int64_t>(s.absmax1.size())};
      out.push_back({name + ".q1", DType::U8, shape, bytes_of(s.q1)});
      out.push_back({name + ".q2", DType::U8, shape, bytes_of(s.q2)});
      out.push_back({name + ".absmax1", DType::F32, blocks, bytes_of(s.absmax1)});
      out.push_back({name + ".absmax2", DType::F32, blocks, bytes_of(s.absmax2)});
    }
  }
  io::write_safetensors(path, out, {{"optimizer", optimizer_kind_name(kind_)}, {"step", std::to_string(steps_)}});
}

void HostOptimizer::load(const std::string& path) {
  const io::SafetensorsFile f = io::SafetensorsFile::open(path);
  const auto kind = f.metadata().find("optimizer");
  if (kind == f.metadata().end() || kind->second != optimizer_kind_name(kind_))
    throw_bad_input(path, std::string("optimizer state is not of optimizer ") + optimizer_kind_name(kind_),
                    "metadata optimizer");
  const auto step = f.metadata().find("step");
  int64_t steps = -1;
  try {
    if (step != f.metadata().end()) steps = std::stoll(step->second);
  } catch (const std::exception&) {
    steps = -1;
  }
  if (steps < 0) throw_bad_input(path, "optimizer state lacks a valid step count", "metadata step");
  size_t expected = 0;
  for (size_t i = 0; i < tensors_.size(); ++i) {
    State& s = states_[i];
    const std::string& name = tensors_[i].name;
    if (!s.m.empty() || s.q1.empty()) {
      read_into(f, name + ".exp_avg", DType::F32, s.m);
      read_into(f, name + ".exp_avg_sq", DType::F32, s.v);
      expected += 2;
    } else {
      read_into(f, name + ".q1", DType::U8, s.q1);
      read_into(f, name + ".q2", DType::U8, s.q2);
      read_into(f, name + ".absmax1", DType::F32, s.absmax1);
      read_into(f, name + ".absmax2", DType::F32, s.absmax2);
      expected += 4;
    }
  }
  if (f.tensors().size() != expected)
    throw_bad_input(path, "optimizer state holds tensors the model does not have");
  steps_ = steps;
}

}  // namespace qtrain::train
