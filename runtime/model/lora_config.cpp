// LoRA names and scale (see lora_config.h).
#include "runtime/model/lora_config.h"

#include <algorithm>
#include <cmath>

#include "csrc/core/error.h"

namespace qtrain::model {

const char* proj_name(Proj p) {
  static constexpr const char* kNames[kNumProj] = {"q_proj", "k_proj", "v_proj", "o_proj",
                                                   "gate_proj", "up_proj", "down_proj"};
  return kNames[static_cast<int>(p)];
}

const char* proj_parent(Proj p) { return static_cast<int>(p) <= static_cast<int>(Proj::O) ? "self_attn" : "mlp"; }

bool proj_from_name(const std::string& name, Proj& out) {
  for (Proj p : kAllProjs) {
    if (name == proj_name(p)) {
      out = p;
      return true;
    }
  }
  return false;
}

std::string peft_module_path(int64_t layer, Proj p) {
  return "base_model.model.model.layers." + std::to_string(layer) + "." + proj_parent(p) + "." + proj_name(p);
}

double LoraConfig::scale() const {
  return use_rslora ? alpha / std::sqrt(static_cast<double>(r)) : alpha / static_cast<double>(r);
}

bool LoraConfig::targets_proj(Proj p) const { return std::find(targets.begin(), targets.end(), p) != targets.end(); }

std::vector<Proj> parse_target_modules(const std::vector<std::string>& names, const std::string& where) {
  std::vector<Proj> out;
  for (const std::string& n : names) {
    if (n == "all-linear") return {kAllProjs.begin(), kAllProjs.end()};
    Proj p;
    if (!proj_from_name(n, p))
      throw_bad_input(where, "unsupported LoRA target module '" + n + "' (expected q_proj, k_proj, v_proj, o_proj, "
                             "gate_proj, up_proj, down_proj or all-linear)");
    if (std::find(out.begin(), out.end(), p) == out.end()) out.push_back(p);
  }
  std::sort(out.begin(), out.end());
  if (out.empty()) throw_bad_input(where, "no LoRA target modules");
  return out;
}

}  // namespace qtrain::model
