// PEFT adapter folders (see peft_adapter.h).
#include "runtime/model/peft_adapter.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "csrc/core/error.h"
#include "csrc/core/half.h"
#include "csrc/io/safetensors.h"

namespace qtrain::model {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

std::string read_text(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw_bad_input(path, "cannot open the file");
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

void write_text_atomic(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    if (!f) throw_bad_input(tmp, "cannot create the file");
    f << text;
    f.flush();
    if (!f) throw_bad_input(tmp, "write failed");
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) throw_bad_input(path, "cannot rename the temporary file into place: " + ec.message());
}

bool empty_or_null(const json& j) { return j.is_null() || (j.is_object() && j.empty()) || (j.is_array() && j.empty()); }

LoraConfig parse_config(const json& j, const std::string& path) {
  if (!j.is_object()) throw_bad_input(path, "expected a JSON object");
  if (!j.contains("peft_type") || j["peft_type"] != "LORA") throw_bad_input(path, "peft_type must be \"LORA\"");
  LoraConfig c;
  try {
    c.r = j.value("r", int64_t{8});
    c.alpha = j.value("lora_alpha", 8.0);
    c.use_rslora = j.value("use_rslora", false);
    c.dropout = j.value("lora_dropout", 0.0);
    if (j.value("use_dora", false)) throw_bad_input(path, "DoRA adapters are not supported", "use_dora");
    if (j.contains("bias") && j["bias"] != "none") throw_bad_input(path, "only bias \"none\" is supported", "bias");
    for (const char* key : {"rank_pattern", "alpha_pattern", "layers_to_transform", "modules_to_save"}) {
      if (j.contains(key) && !empty_or_null(j[key]))
        throw_bad_input(path, "per-module or per-layer LoRA settings are not supported", key);
    }
    if (j.value("fan_in_fan_out", false)) throw_bad_input(path, "fan_in_fan_out is not supported", "fan_in_fan_out");
    std::vector<std::string> names;
    const json& tm = j.contains("target_modules") ? j["target_modules"] : json();
    if (tm.is_string()) {
      names.push_back(tm.get<std::string>());
    } else if (tm.is_array()) {
      for (const json& n : tm) names.push_back(n.get<std::string>());
    } else {
      throw_bad_input(path, "target_modules must be a list of names or \"all-linear\"", "target_modules");
    }
    c.targets = parse_target_modules(names, path);
  } catch (const json::exception& e) {
    throw_bad_input(path, std::string("malformed adapter config: ") + e.what());
  }
  if (c.r <= 0) throw_bad_input(path, "r must be positive", "r");
  if (!(c.dropout >= 0.0 && c.dropout < 1.0)) throw_bad_input(path, "lora_dropout must be in [0, 1)", "lora_dropout");
  return c;
}

}  // namespace

PeftAdapter load_peft_adapter(const std::string& dir) {
  const std::string cfg_path = (fs::path(dir) / "adapter_config.json").string();
  const std::string st_path = (fs::path(dir) / "adapter_model.safetensors").string();
  PeftAdapter a;
  json j;
  try {
    j = json::parse(read_text(cfg_path));
  } catch (const json::exception& e) {
    throw_bad_input(cfg_path, std::string("invalid JSON: ") + e.what());
  }
  a.config = parse_config(j, cfg_path);
  if (j.contains("base_model_name_or_path") && j["base_model_name_or_path"].is_string())
    a.base_model_name_or_path = j["base_model_name_or_path"].get<std::string>();

  const io::SafetensorsFile f = io::SafetensorsFile::open(st_path);
  for (const io::TensorInfo& t : f.tensors()) {
    AdapterTensor at;
    at.shape = t.shape;
    const size_t n = t.numel();
    at.values.resize(n);
    const std::span<const std::byte> bytes = f.data(t.name);
    if (t.dtype == DType::F32) {
      std::memcpy(at.values.data(), bytes.data(), n * 4);
    } else if (t.dtype == DType::BF16 || t.dtype == DType::F16) {
      for (size_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, bytes.data() + 2 * i, 2);
        at.values[i] = t.dtype == DType::BF16 ? bf16_bits_to_f32(h) : f16_bits_to_f32(h);
      }
    } else {
      throw_bad_input(st_path, "adapter tensor has dtype " + std::string(dtype_name(t.dtype)) +
                                   ", expected f32, bf16 or f16", t.name);
    }
    a.tensors.emplace(t.name, std::move(at));
  }
  return a;
}

std::string peft_adapter_config_json(const PeftAdapter& a) {
  json j;  // nlohmann's object keeps its keys sorted
  j["alpha_pattern"] = json::object();
  j["base_model_name_or_path"] = a.base_model_name_or_path.empty() ? json() : json(a.base_model_name_or_path);
  j["bias"] = "none";
  j["fan_in_fan_out"] = false;
  j["inference_mode"] = true;
  j["init_lora_weights"] = true;
  j["layers_to_transform"] = nullptr;
  j["lora_alpha"] = a.config.alpha;
  j["lora_dropout"] = a.config.dropout;
  j["modules_to_save"] = nullptr;
  j["peft_type"] = "LORA";
  j["r"] = a.config.r;
  j["rank_pattern"] = json::object();
  j["revision"] = nullptr;
  std::vector<std::string> names;
  for (Proj p : a.config.targets) names.emplace_back(proj_name(p));
  std::sort(names.begin(), names.end());
  j["target_modules"] = names;
  j["task_type"] = "CAUSAL_LM";
  j["use_dora"] = false;
  j["use_rslora"] = a.config.use_rslora;
  return j.dump(2) + "\n";
}

void save_peft_adapter(const std::string& dir, const PeftAdapter& a) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw_bad_input(dir, "cannot create the folder: " + ec.message());
  std::vector<io::TensorToWrite> out;
  for (const auto& [name, t] : a.tensors) {  // std::map: sorted by name
    out.push_back({name, DType::F32, t.shape,
                   std::as_bytes(std::span<const float>(t.values.data(), t.values.size()))});
  }
  io::write_safetensors((fs::path(dir) / "adapter_model.safetensors").string(), out, {{"format", "pt"}});
  write_text_atomic((fs::path(dir) / "adapter_config.json").string(), peft_adapter_config_json(a));
}

}  // namespace qtrain::model
