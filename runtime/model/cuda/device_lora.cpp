// The LoRA adapter on the device (see device_lora.h).
#include "runtime/model/cuda/device_lora.h"

#if QTRAIN_HAS_CUDA
#include <cmath>
#include <set>

#include "csrc/core/error.h"
#include "csrc/core/rng.h"
#include "csrc/io/llama_layout.h"
#include "qk/cast.h"
#include "runtime/model/cuda/cuda_util.h"

namespace qtrain::model::cuda {

namespace {

std::string key_a(int64_t layer, Proj p) { return peft_module_path(layer, p) + ".lora_A.weight"; }
std::string key_b(int64_t layer, Proj p) { return peft_module_path(layer, p) + ".lora_B.weight"; }

template <typename T>
T* alloc(rt::DeviceArena& arena, size_t n, const char* what) {
  return static_cast<T*>(arena.allocate(n * sizeof(T), what));
}

}  // namespace

const std::vector<Proj>& fused_projs(int which) {
  static const std::vector<Proj> k[4] = {{Proj::Q, Proj::K, Proj::V}, {Proj::O}, {Proj::Gate, Proj::Up}, {Proj::Down}};
  return k[which];
}

DeviceLora upload_lora(const BaseWeights& base, const PeftAdapter& ad, const std::string& where, rt::DeviceArena& arena,
                       cudaStream_t stream) {
  if (ad.config.r <= 0) throw_bad_input(where, "lora_r must be positive");
  const size_t start = arena.used();
  DeviceLora d;
  d.config = ad.config;
  const int r = static_cast<int>(ad.config.r);
  std::set<std::string> used;
  auto take = [&](const std::string& key, const std::vector<int64_t>& shape) -> const std::vector<float>& {
    auto it = ad.tensors.find(key);
    if (it == ad.tensors.end()) throw_bad_input(where, "missing LoRA tensor", key);
    if (it->second.shape != shape)
      throw_bad_input(
          where,
          "LoRA tensor has shape " + io::shape_string(it->second.shape) + ", expected " + io::shape_string(shape), key);
    used.insert(key);
    return it->second.values;
  };
  for (size_t l = 0; l < base.layers.size(); ++l) {
    std::array<DeviceLoraLinear, 4> lin;
    for (int which = 0; which < 4; ++which) {
      DeviceLoraLinear& x = lin[static_cast<size_t>(which)];
      const std::vector<Proj>& projs = fused_projs(which);
      x.in = static_cast<int>(base.layers[l][projs[0]].in);
      x.r = r;
      for (Proj p : projs) x.r_total += ad.config.targets_proj(p) ? r : 0;
      const size_t a_numel = static_cast<size_t>(x.r_total) * static_cast<size_t>(x.in);
      if (a_numel > 0) {
        x.a = alloc<float>(arena, a_numel, "lora A");
        x.da = alloc<float>(arena, a_numel, "lora dA");
        x.a16 = alloc<__nv_bfloat16>(arena, a_numel, "lora A bf16");
      }
      int a_row = 0;
      for (size_t g = 0; g < projs.size(); ++g) {
        DeviceLoraGroup grp;
        grp.proj = projs[g];
        grp.targeted = ad.config.targets_proj(projs[g]);
        grp.out = static_cast<int>(base.layers[l][projs[g]].out);
        if (grp.targeted) {
          grp.r = r;
          grp.a_row = a_row;
          a_row += r;
          const size_t b_numel = static_cast<size_t>(grp.out) * static_cast<size_t>(r);
          grp.b = alloc<float>(arena, b_numel, "lora B");
          grp.db = alloc<float>(arena, b_numel, "lora dB");
          grp.b16 = alloc<__nv_bfloat16>(arena, b_numel, "lora B bf16");
          const int64_t li = static_cast<int64_t>(l);
          const std::vector<float>& a = take(key_a(li, grp.proj), {r, x.in});
          const std::vector<float>& b = take(key_b(li, grp.proj), {grp.out, r});
          copy_to_device(x.a + static_cast<size_t>(grp.a_row) * static_cast<size_t>(x.in), a.data(), a.size() * 4,
                         stream);
          copy_to_device(grp.b, b.data(), b.size() * 4, stream);
        }
        x.groups.push_back(grp);
      }
    }
    d.layers.push_back(lin);
  }
  for (const auto& [key, t] : ad.tensors) {
    if (!used.count(key)) throw_bad_input(where, "unexpected tensor for this model and adapter config", key);
  }
  d.bytes = arena.used() - start;
  d.refresh_bf16(stream);
  d.zero_grad(stream);
  check_cuda(cudaStreamSynchronize(stream), "lora upload");
  return d;
}

PeftAdapter init_peft_adapter(const BaseWeights& base, const LoraConfig& lora, uint64_t seed) {
  if (lora.r <= 0) throw_bad_input("lora", "lora_r must be positive");
  if (!(lora.dropout >= 0.0 && lora.dropout < 1.0)) throw_bad_input("lora", "lora_dropout must be in [0, 1)");
  PeftAdapter ad;
  ad.config = lora;
  for (size_t l = 0; l < base.layers.size(); ++l) {
    for (Proj p : kAllProjs) {
      if (!lora.targets_proj(p)) continue;
      const LinearWeight& w = base.layers[l][p];
      const int64_t li = static_cast<int64_t>(l);
      std::vector<float> a(static_cast<size_t>(lora.r * w.in));
      const double bound = 1.0 / std::sqrt(static_cast<double>(w.in));
      Rng rng = Rng::for_stream(seed, key_a(li, p));
      for (float& v : a) v = static_cast<float>((2.0 * rng.uniform() - 1.0) * bound);
      ad.tensors[key_a(li, p)] = {{lora.r, w.in}, std::move(a)};
      ad.tensors[key_b(li, p)] = {{w.out, lora.r}, std::vector<float>(static_cast<size_t>(w.out * lora.r), 0.0f)};
    }
  }
  return ad;
}

std::vector<DeviceLoraTensor> DeviceLora::tensors() const {
  std::vector<DeviceLoraTensor> out;
  for (size_t l = 0; l < layers.size(); ++l) {
    for (const DeviceLoraLinear& x : layers[l]) {
      for (size_t g = 0; g < x.groups.size(); ++g) {
        const DeviceLoraGroup& grp = x.groups[g];
        if (!grp.targeted) continue;
        const size_t a_numel = static_cast<size_t>(x.r) * static_cast<size_t>(x.in);
        const size_t a_off = static_cast<size_t>(grp.a_row) * static_cast<size_t>(x.in);
        const int64_t li = static_cast<int64_t>(l);
        out.push_back({key_a(li, grp.proj), {x.r, x.in}, x.a + a_off, x.da + a_off, a_numel});
        out.push_back({key_b(li, grp.proj), {grp.out, x.r}, grp.b, grp.db, static_cast<size_t>(grp.out) * x.r});
      }
    }
  }
  return out;
}

void DeviceLora::refresh_bf16(cudaStream_t stream) const {
  for (const auto& layer : layers) {
    for (const DeviceLoraLinear& x : layer) {
      if (x.r_total > 0) qk::cast_f32_to_bf16(x.a, x.a16, static_cast<size_t>(x.r_total) * x.in, stream);
      for (const DeviceLoraGroup& g : x.groups)
        if (g.targeted) qk::cast_f32_to_bf16(g.b, g.b16, static_cast<size_t>(g.out) * x.r, stream);
    }
  }
}

void DeviceLora::zero_grad(cudaStream_t stream) const {
  for (const auto& layer : layers) {
    for (const DeviceLoraLinear& x : layer) {
      if (x.r_total > 0)
        check_cuda(cudaMemsetAsync(x.da, 0, static_cast<size_t>(x.r_total) * x.in * 4, stream), "zero_grad");
      for (const DeviceLoraGroup& g : x.groups)
        if (g.targeted) check_cuda(cudaMemsetAsync(g.db, 0, static_cast<size_t>(g.out) * x.r * 4, stream), "zero_grad");
    }
  }
}

qk::LoraLinear DeviceLora::view(int64_t layer, int which, bool enabled) const {
  const DeviceLoraLinear& x = layers[static_cast<size_t>(layer)][static_cast<size_t>(which)];
  qk::LoraLinear v;
  v.in = x.in;
  v.a = x.a16;
  v.num_groups = static_cast<int>(x.groups.size());
  const float s = qk::lora_scale(static_cast<float>(config.alpha), x.r, config.use_rslora);
  for (size_t g = 0; g < x.groups.size(); ++g) {
    const DeviceLoraGroup& grp = x.groups[g];
    v.groups[g] = {grp.b16, grp.out, grp.r, enabled && grp.targeted ? s : 0.0f};
  }
  return v;
}

int DeviceLora::r_total(int which) const {
  return layers.empty() ? 0 : layers[0][static_cast<size_t>(which)].r_total;
}

qk::LoraGrads DeviceLora::grads(int64_t layer, int which) const {
  const DeviceLoraLinear& x = layers[static_cast<size_t>(layer)][static_cast<size_t>(which)];
  qk::LoraGrads g;
  g.da = x.da;
  for (size_t i = 0; i < x.groups.size(); ++i) g.db[i] = x.groups[i].db;
  return g;
}

PeftAdapter download_lora(const DeviceLora& lora, cudaStream_t stream) {
  PeftAdapter ad;
  ad.config = lora.config;
  for (const DeviceLoraTensor& t : lora.tensors()) {
    std::vector<float> v(t.numel);
    copy_to_host(v.data(), t.value, t.numel * 4, stream);
    ad.tensors[t.name] = {t.shape, std::move(v)};
  }
  return ad;
}

}  // namespace qtrain::model::cuda
#endif
