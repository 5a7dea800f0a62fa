// The optimizer: state layout (one allocation, carved per tensor), paging, clipping, the fused
// update, and save/load of the state.
#include "runtime/optim/optimizer.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <map>

#include "csrc/core/error.h"
#include "qk/adamw8bit.h"

#if QTRAIN_HAS_CUDA
#include "csrc/io/safetensors.h"
#include "qk/adamw.h"
#include "qk/cuda_check.h"
#include "qk/grad_norm.h"
#include "runtime/memory/arena.h"
#endif

namespace qtrain::rt {

OptimizerKind parse_optimizer_name(const std::string& name, const std::string& file) {
  if (name == "adamw" || name == "adamw_torch") return OptimizerKind::AdamW;
  if (name == "adamw_8bit" || name == "adamw_bnb_8bit") return OptimizerKind::AdamW8bit;
  if (name == "paged_adamw_32bit") return OptimizerKind::PagedAdamW32bit;
  if (name == "paged_adamw_8bit") return OptimizerKind::PagedAdamW8bit;
  throw_bad_input(file, "unknown optimizer '" + name + "' (expected adamw, adamw_8bit, paged_adamw_32bit or paged_adamw_8bit)",
                  "key 'optimizer'");
}

const char* optimizer_name(OptimizerKind kind) {
  switch (kind) {
    case OptimizerKind::AdamW: return "adamw";
    case OptimizerKind::AdamW8bit: return "adamw_8bit";
    case OptimizerKind::PagedAdamW32bit: return "paged_adamw_32bit";
    case OptimizerKind::PagedAdamW8bit: return "paged_adamw_8bit";
  }
  return "?";
}

bool optimizer_is_paged(OptimizerKind kind) {
  return kind == OptimizerKind::PagedAdamW32bit || kind == OptimizerKind::PagedAdamW8bit;
}
bool optimizer_is_8bit(OptimizerKind kind) {
  return kind == OptimizerKind::AdamW8bit || kind == OptimizerKind::PagedAdamW8bit;
}

size_t optimizer_state_bytes(OptimizerKind kind, const std::vector<int64_t>& sizes) {
  size_t bytes = 0;
  for (int64_t n : sizes) {
    const size_t un = static_cast<size_t>(n);
    if (optimizer_is_8bit(kind) && qk::adamw8bit_is_quantized(n))
      bytes += 2 * un + 2 * sizeof(float) * static_cast<size_t>(qk::adamw8bit_blocks(n));
    else
      bytes += 2 * sizeof(float) * un;
  }
  return bytes;
}

#if QTRAIN_HAS_CUDA

namespace {

constexpr size_t kAlign = 256;
size_t align_up(size_t x) { return (x + kAlign - 1) / kAlign * kAlign; }

// One named state buffer of one tensor, as saved: "<tensor>.<suffix>".
struct Slot {
  std::string name;
  DType dtype;
  int64_t count;
  void* ptr = nullptr;
  size_t bytes() const { return static_cast<size_t>(count) * (dtype == DType::U8 ? 1 : 4); }
};

void* device_alloc(size_t bytes, const char* what, bool managed) {
  void* p = nullptr;
  const cudaError_t err = managed ? cudaMallocManaged(&p, bytes == 0 ? 1 : bytes, cudaMemAttachGlobal)
                                  : cudaMalloc(&p, bytes == 0 ? 1 : bytes);
  if (err != cudaSuccess) {
    (void)cudaGetLastError();
    throw_out_of_memory(std::string("cannot allocate ") + what + " (" + format_bytes(bytes) + ", " +
                        (managed ? "managed" : "device") + " memory): " + cudaGetErrorString(err));
  }
  return p;
}

}  // namespace

struct Optimizer::Impl {
  void* states = nullptr;  // one allocation, managed when paged
  size_t states_alloc = 0;
  std::vector<Slot> slots;
  // Kernel tables in device memory.
  qk::AdamWTensor* table32 = nullptr;
  int64_t chunks32 = 0;
  qk::AdamW8bitTensor* table8 = nullptr;
  int64_t chunks8 = 0;
  qk::NormTensor* norm_table = nullptr;
  int64_t norm_chunks = 0;
  float* norm_work = nullptr;  // norm_chunks partials, then the norm
  ~Impl() {
    for (void* p : {states, static_cast<void*>(table32), static_cast<void*>(table8), static_cast<void*>(norm_table),
                    static_cast<void*>(norm_work)})
      if (p != nullptr) (void)cudaFree(p);
  }
};

Optimizer::Optimizer(const OptimizerConfig& config, std::vector<TrainableTensor> tensors, cudaStream_t stream,
                     int device)
    : config_(config), tensors_(std::move(tensors)), stream_(stream), device_(device), impl_(std::make_unique<Impl>()) {
  const bool paged = optimizer_is_paged(config_.kind), eight = optimizer_is_8bit(config_.kind);
  std::map<std::string, int> seen;
  for (const auto& t : tensors_) {
    QTRAIN_CHECK_INTERNAL(t.n >= 0 && (t.n == 0 || (t.param != nullptr && t.grad != nullptr)),
                          "trainable tensor '" + t.name + "' without buffers");
    QTRAIN_CHECK_INTERNAL(seen[t.name]++ == 0, "trainable tensor '" + t.name + "' listed twice");
  }

  // Lay out every state buffer in one allocation.
  std::vector<size_t> offsets;
  size_t total = 0;
  for (const auto& t : tensors_) {
    if (eight && qk::adamw8bit_is_quantized(t.n)) {
      const int64_t blocks = qk::adamw8bit_blocks(t.n);
      impl_->slots.push_back({t.name + ".state1", DType::U8, t.n});
      impl_->slots.push_back({t.name + ".state2", DType::U8, t.n});
      impl_->slots.push_back({t.name + ".absmax1", DType::F32, blocks});
      impl_->slots.push_back({t.name + ".absmax2", DType::F32, blocks});
    } else {
      impl_->slots.push_back({t.name + ".exp_avg", DType::F32, t.n});
      impl_->slots.push_back({t.name + ".exp_avg_sq", DType::F32, t.n});
    }
  }
  for (const auto& s : impl_->slots) {
    offsets.push_back(total);
    total += align_up(s.bytes());
    state_bytes_ += s.bytes();
  }
  QK_CUDA_CHECK(cudaSetDevice(device_));
  impl_->states = device_alloc(total, "optimizer states", paged);
  impl_->states_alloc = total;
  for (size_t i = 0; i < impl_->slots.size(); ++i) impl_->slots[i].ptr = static_cast<std::byte*>(impl_->states) + offsets[i];
  // New states are zero: fp32 moments 0, and 8-bit codes 0 with absmax 0, as bitsandbytes starts.
  QK_CUDA_CHECK(cudaMemset(impl_->states, 0, total));

  if (paged) {
    int concurrent = 0;
    if (cudaDeviceGetAttribute(&concurrent, cudaDevAttrConcurrentManagedAccess, device_) != cudaSuccess) {
      (void)cudaGetLastError();
      concurrent = 0;
    }
    prefetch_ = concurrent != 0;
  }

  // Kernel tables.
  const int count = static_cast<int>(tensors_.size());
  size_t slot = 0;
  if (eight) {
    std::vector<qk::AdamW8bitTensor> table(tensors_.size());
    for (size_t i = 0; i < tensors_.size(); ++i) {
      const auto& t = tensors_[i];
      qk::AdamW8bitTensor& x = table[i];
      x = {t.param, t.grad, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, t.n, 0};
      if (qk::adamw8bit_is_quantized(t.n)) {
        x.q1 = static_cast<uint8_t*>(impl_->slots[slot++].ptr);
        x.q2 = static_cast<uint8_t*>(impl_->slots[slot++].ptr);
        x.absmax1 = static_cast<float*>(impl_->slots[slot++].ptr);
        x.absmax2 = static_cast<float*>(impl_->slots[slot++].ptr);
      } else {
        x.m = static_cast<float*>(impl_->slots[slot++].ptr);
        x.v = static_cast<float*>(impl_->slots[slot++].ptr);
      }
    }
    impl_->chunks8 = qk::adamw8bit_plan_chunks(table.data(), count);
    impl_->table8 = static_cast<qk::AdamW8bitTensor*>(
        device_alloc(table.size() * sizeof(qk::AdamW8bitTensor), "optimizer tensor table", false));
    QK_CUDA_CHECK(cudaMemcpy(impl_->table8, table.data(), table.size() * sizeof(qk::AdamW8bitTensor),
                             cudaMemcpyHostToDevice));
  } else {
    std::vector<qk::AdamWTensor> table(tensors_.size());
    for (size_t i = 0; i < tensors_.size(); ++i) {
      const auto& t = tensors_[i];
      float* m = static_cast<float*>(impl_->slots[slot++].ptr);
      float* v = static_cast<float*>(impl_->slots[slot++].ptr);
      table[i] = {t.param, t.grad, m, v, t.n, 0};
    }
    impl_->chunks32 = qk::adamw_plan_chunks(table.data(), count);
    impl_->table32 = static_cast<qk::AdamWTensor*>(
        device_alloc(table.size() * sizeof(qk::AdamWTensor), "optimizer tensor table", false));
    QK_CUDA_CHECK(
        cudaMemcpy(impl_->table32, table.data(), table.size() * sizeof(qk::AdamWTensor), cudaMemcpyHostToDevice));
  }
  std::vector<qk::NormTensor> norms(tensors_.size());
  for (size_t i = 0; i < tensors_.size(); ++i) norms[i] = {tensors_[i].grad, tensors_[i].n, 0};
  impl_->norm_chunks = qk::norm_plan_chunks(norms.data(), count);
  impl_->norm_table =
      static_cast<qk::NormTensor*>(device_alloc(norms.size() * sizeof(qk::NormTensor), "gradient norm table", false));
  QK_CUDA_CHECK(
      cudaMemcpy(impl_->norm_table, norms.data(), norms.size() * sizeof(qk::NormTensor), cudaMemcpyHostToDevice));
  impl_->norm_work = static_cast<float*>(
      device_alloc((static_cast<size_t>(impl_->norm_chunks) + 1) * sizeof(float), "gradient norm workspace", false));
}

Optimizer::~Optimizer() = default;

std::string Optimizer::describe() const {
  std::string where = "device memory";
  if (optimizer_is_paged(config_.kind))
    where = prefetch_ ? "managed memory, prefetched to the GPU before each step"
                      : "managed memory, no prefetch (the device lacks concurrentManagedAccess; pages migrate on use)";
  return std::string(optimizer_name(config_.kind)) + ": " + std::to_string(tensors_.size()) + " tensors, " +
         format_bytes(state_bytes_) + " of state in " + where;
}

StepInfo Optimizer::step(float lr, float grad_scale) { return step_with_norm(lr, grad_scale, grad_norm()); }

float Optimizer::grad_norm() {
  float norm = 0.0f;
  float* norm_out = impl_->norm_work + impl_->norm_chunks;
  qk::global_l2_norm(impl_->norm_table, static_cast<int>(tensors_.size()), impl_->norm_chunks, impl_->norm_work,
                     norm_out, stream_);
  QK_CUDA_CHECK(cudaMemcpyAsync(&norm, norm_out, sizeof(float), cudaMemcpyDeviceToHost, stream_));
  QK_CUDA_CHECK(cudaStreamSynchronize(stream_));
  return norm;
}

StepInfo Optimizer::step_with_norm(float lr, float grad_scale, float raw_norm) {
  StepInfo info;
  if (prefetch_ && impl_->states_alloc > 0) {
#if CUDART_VERSION >= 13000
    cudaMemLocation loc{};
    loc.type = cudaMemLocationTypeDevice;
    loc.id = device_;
    QK_CUDA_CHECK(cudaMemPrefetchAsync(impl_->states, impl_->states_alloc, loc, 0, stream_));
#else
    QK_CUDA_CHECK(cudaMemPrefetchAsync(impl_->states, impl_->states_alloc, device_, stream_));
#endif
  }
  // The norm is of the raw gradients; scaling them scales it. Clipping as torch's clip_grad_norm_.
  info.grad_norm = raw_norm * grad_scale;
  if (config_.max_grad_norm > 0.0f) {
    const double f = static_cast<double>(config_.max_grad_norm) / (static_cast<double>(info.grad_norm) + 1e-6);
    info.clip_factor = static_cast<float>(std::min(1.0, f));
  }

  qk::AdamWParams params;
  params.lr = lr;
  params.beta1 = config_.beta1;
  params.beta2 = config_.beta2;
  params.eps = config_.eps;
  params.weight_decay = config_.weight_decay;
  params.grad_scale = grad_scale * info.clip_factor;
  params.step = ++step_;
  const int count = static_cast<int>(tensors_.size());
  if (optimizer_is_8bit(config_.kind))
    qk::adamw8bit_update(impl_->table8, count, impl_->chunks8, params, stream_);
  else
    qk::adamw_update(impl_->table32, count, impl_->chunks32, params, stream_);
  info.step = step_;
  return info;
}

void Optimizer::save(const std::string& path) const {
  QK_CUDA_CHECK(cudaStreamSynchronize(stream_));
  std::vector<std::vector<std::byte>> host(impl_->slots.size());
  std::vector<io::TensorToWrite> out;
  for (size_t i = 0; i < impl_->slots.size(); ++i) {
    const Slot& s = impl_->slots[i];
    host[i].resize(s.bytes());
    if (s.bytes() > 0) QK_CUDA_CHECK(cudaMemcpy(host[i].data(), s.ptr, s.bytes(), cudaMemcpyDeviceToHost));
    out.push_back({s.name, s.dtype, {s.count}, std::span<const std::byte>(host[i].data(), host[i].size())});
  }
  io::write_safetensors(path, out,
                        {{"format", "qtrain optimizer state"},
                         {"optimizer", optimizer_name(config_.kind)},
                         {"step", std::to_string(step_)}});
}

void Optimizer::load(const std::string& path) {
  const io::SafetensorsFile f = io::SafetensorsFile::open(path);
  const auto& meta = f.metadata();
  const auto kind = meta.find("optimizer");
  const auto step = meta.find("step");
  if (kind == meta.end() || step == meta.end())
    throw_bad_input(path, "not an optimizer state (no 'optimizer' and 'step' metadata)");
  if (kind->second != optimizer_name(config_.kind))
    throw_bad_input(path, "optimizer state of '" + kind->second + "', but this run uses '" +
                              optimizer_name(config_.kind) + "'");
  int64_t loaded_step = 0;
  try {
    size_t used = 0;
    loaded_step = std::stoll(step->second, &used);
    if (used != step->second.size() || loaded_step < 0) throw std::invalid_argument("step");
  } catch (const std::exception&) {
    throw_bad_input(path, "bad step count '" + step->second + "'", "metadata 'step'");
  }
  if (f.tensors().size() != impl_->slots.size())
    throw_bad_input(path, "holds " + std::to_string(f.tensors().size()) + " state tensors, this run has " +
                              std::to_string(impl_->slots.size()));
  for (const Slot& s : impl_->slots) {
    const io::TensorInfo& info = f.info(s.name);  // BadInput naming the file when absent
    if (info.dtype != s.dtype || info.shape != std::vector<int64_t>{s.count})
      throw_bad_input(path, "state tensor has the wrong dtype or shape (expected " +
                                std::string(s.dtype == DType::U8 ? "U8" : "F32") + " [" + std::to_string(s.count) + "])",
                      s.name);
  }
  QK_CUDA_CHECK(cudaStreamSynchronize(stream_));
  for (const Slot& s : impl_->slots) {
    const auto bytes = f.data(s.name);
    if (!bytes.empty()) QK_CUDA_CHECK(cudaMemcpy(s.ptr, bytes.data(), bytes.size(), cudaMemcpyHostToDevice));
  }
  step_ = loaded_step;
}

#endif

}  // namespace qtrain::rt
