// The LoRA adapter's shape: which linear layers carry one, its rank and scale, and the dropout on
// its input. Names follow PEFT (FORMATS.md): y = W x + s B A x with s = alpha / r, or alpha / sqrt(r)
// with rsLoRA.
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <vector>

namespace qtrain::model {

// The seven linear layers of a Llama block, in the order the block runs them.
enum class Proj : uint8_t { Q, K, V, O, Gate, Up, Down };
inline constexpr int kNumProj = 7;
inline constexpr std::array<Proj, kNumProj> kAllProjs = {Proj::Q, Proj::K,  Proj::V,   Proj::O,
                                                        Proj::Gate, Proj::Up, Proj::Down};

const char* proj_name(Proj p);    // "q_proj", ..., "down_proj"
const char* proj_parent(Proj p);  // "self_attn" or "mlp"
bool proj_from_name(const std::string& name, Proj& out);
// PEFT's module path of one linear layer: "base_model.model.model.layers.3.self_attn.q_proj".
std::string peft_module_path(int64_t layer, Proj p);

struct LoraConfig {
  int64_t r = 8;
  double alpha = 16.0;
  bool use_rslora = false;
  double dropout = 0.0;  // probability of zeroing an element of the LoRA input
  std::vector<Proj> targets{kAllProjs.begin(), kAllProjs.end()};

  double scale() const;
  bool targets_proj(Proj p) const;
};

// Accepts PEFT's names ("q_proj", ...) and "all-linear"; anything else is BadInput naming `where`.
std::vector<Proj> parse_target_modules(const std::vector<std::string>& names, const std::string& where);

}  // namespace qtrain::model
