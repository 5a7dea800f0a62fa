// PEFT adapter folders: loading one written by PEFT itself, saving ours (every key of FORMATS.md,
// sorted; tensors sorted, f32, metadata {"format": "pt"}) and reading it back bit for bit, PEFT's
// initialization, and refusals of adapters the model cannot use.
#include <gtest/gtest.h>

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "csrc/core/error.h"
#include "csrc/io/safetensors.h"
#include "runtime/model/cpu/llama_model.h"

namespace qtrain::model {
namespace {

namespace fs = std::filesystem;
const fs::path kCase = fs::path(QTRAIN_TEST_DATA_DIR) / "model_golden" / "llama3_gqa";

fs::path temp_dir(const std::string& name) {
  const fs::path d = fs::temp_directory_path() / ("qtrain_test_peft_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(d);
  return d;
}

TEST(PeftAdapter, LoadsPeftsOwnFolder) {
  const PeftAdapter a = load_peft_adapter((kCase / "adapter").string());
  EXPECT_EQ(a.config.r, 4);
  EXPECT_EQ(a.config.alpha, 8.0);
  EXPECT_TRUE(a.config.use_rslora);
  EXPECT_DOUBLE_EQ(a.config.scale(), 4.0);
  EXPECT_EQ(a.config.targets.size(), 7u);
  EXPECT_EQ(a.tensors.size(), 28u);
  const AdapterTensor& t = a.tensors.at("base_model.model.model.layers.1.self_attn.k_proj.lora_B.weight");
  EXPECT_EQ(t.shape, (std::vector<int64_t>{32, 4}));
}

TEST(PeftAdapter, SaveAndLoadRoundTrip) {
  CpuLlamaModel m = CpuLlamaModel::load((kCase / "model").string());
  LoraConfig lc;
  lc.r = 5;
  lc.alpha = 7.5;
  lc.dropout = 0.05;
  lc.targets = {Proj::Q, Proj::V, Proj::Down};
  m.init_lora(lc, 3);
  float x = 0.01f;
  for (LoraTensorRef& t : m.lora_tensors()) for (float& v : t.value) v += (x = -x * 1.01f);
  const fs::path dir = temp_dir("roundtrip");
  m.save_adapter(dir.string(), "tiny/llama3");

  const io::SafetensorsFile f = io::SafetensorsFile::open((dir / "adapter_model.safetensors").string());
  EXPECT_EQ(f.metadata().at("format"), "pt");
  std::vector<std::string> names;
  for (const io::TensorInfo& t : f.tensors()) {
    names.push_back(t.name);
    EXPECT_EQ(t.dtype, DType::F32);
  }
  EXPECT_TRUE(std::is_sorted(names.begin(), names.end()));
  EXPECT_EQ(names.size(), 2u * 3u * 2u);

  std::ifstream jf(dir / "adapter_config.json");
  const nlohmann::ordered_json j = nlohmann::ordered_json::parse(jf);
  std::vector<std::string> keys;
  for (const auto& [k, v] : j.items()) keys.push_back(k);
  EXPECT_TRUE(std::is_sorted(keys.begin(), keys.end()));
  for (const char* k : {"peft_type", "task_type", "base_model_name_or_path", "r", "lora_alpha", "lora_dropout",
                        "target_modules", "bias", "fan_in_fan_out", "use_rslora", "use_dora", "modules_to_save",
                        "init_lora_weights", "rank_pattern", "alpha_pattern", "layers_to_transform",
                        "inference_mode", "revision"})
    EXPECT_TRUE(j.contains(k)) << k;
  EXPECT_EQ(j["target_modules"], nlohmann::ordered_json({"down_proj", "q_proj", "v_proj"}));
  EXPECT_EQ(j["base_model_name_or_path"], "tiny/llama3");
  EXPECT_EQ(j["lora_alpha"], 7.5);

  CpuLlamaModel m2 = CpuLlamaModel::load((kCase / "model").string());
  m2.load_adapter(dir.string());
  EXPECT_EQ(m2.lora_config().r, 5);
  EXPECT_EQ(m2.lora_config().targets, lc.targets);
  EXPECT_DOUBLE_EQ(m2.lora_config().dropout, 0.05);
  std::vector<LoraTensorRef> a = m.lora_tensors(), b = m2.lora_tensors();
  ASSERT_EQ(a.size(), b.size());
  for (size_t k = 0; k < a.size(); ++k) {
    EXPECT_EQ(a[k].name, b[k].name);
    EXPECT_TRUE(std::equal(a[k].value.begin(), a[k].value.end(), b[k].value.begin())) << a[k].name;
  }
  fs::remove_all(dir);
}

TEST(PeftAdapter, InitFollowsPeft) {
  CpuLlamaModel m = CpuLlamaModel::load((kCase / "model").string());
  m.init_lora(LoraConfig{}, 11);
  std::vector<float> first;
  for (LoraTensorRef& t : m.lora_tensors()) {
    if (t.name.find("lora_B") != std::string::npos) {
      for (float v : t.value) ASSERT_EQ(v, 0.0f) << t.name;
      continue;
    }
    const float bound = 1.0f / std::sqrt(static_cast<float>(t.shape[1]));
    float lo = 1, hi = -1;
    for (float v : t.value) {
      ASSERT_LE(std::abs(v), bound) << t.name;
      lo = std::min(lo, v);
      hi = std::max(hi, v);
    }
    EXPECT_LT(lo, -0.5f * bound);  // spread over the range, not clustered
    EXPECT_GT(hi, 0.5f * bound);
    if (first.empty()) first.assign(t.value.begin(), t.value.end());
  }
  CpuLlamaModel again = CpuLlamaModel::load((kCase / "model").string());
  again.init_lora(LoraConfig{}, 11);
  EXPECT_TRUE(std::equal(first.begin(), first.end(), again.lora_tensors()[0].value.begin()));
  again.init_lora(LoraConfig{}, 12);
  EXPECT_FALSE(std::equal(first.begin(), first.end(), again.lora_tensors()[0].value.begin()));
}

TEST(PeftAdapter, RefusesAdaptersThatDoNotFit) {
  CpuLlamaModel m = CpuLlamaModel::load((kCase / "model").string());
  PeftAdapter good = load_peft_adapter((kCase / "adapter").string());
  PeftAdapter a = good;
  a.tensors.erase("base_model.model.model.layers.0.mlp.up_proj.lora_A.weight");
  EXPECT_THROW(m.set_adapter(a, "adapter"), Error);
  a = good;
  a.tensors.at("base_model.model.model.layers.0.mlp.up_proj.lora_B.weight").shape = {4, 112};
  EXPECT_THROW(m.set_adapter(a, "adapter"), Error);
  a = good;
  a.tensors["base_model.model.lm_head.lora_A.weight"] = {{4, 64}, std::vector<float>(256)};
  EXPECT_THROW(m.set_adapter(a, "adapter"), Error);
  a = good;
  a.config.targets = {Proj::Q};  // tensors of other modules are then unexpected
  EXPECT_THROW(m.set_adapter(a, "adapter"), Error);

  const fs::path dir = temp_dir("dora");
  fs::create_directories(dir);
  fs::copy_file(kCase / "adapter" / "adapter_model.safetensors", dir / "adapter_model.safetensors");
  std::ifstream in(kCase / "adapter" / "adapter_config.json");
  nlohmann::json j = nlohmann::json::parse(in);
  j["use_dora"] = true;
  std::ofstream(dir / "adapter_config.json") << j.dump();
  EXPECT_THROW(load_peft_adapter(dir.string()), Error);
  j["use_dora"] = false;
  j["target_modules"] = {"q_proj", "lm_head"};
  std::ofstream(dir / "adapter_config.json") << j.dump();
  EXPECT_THROW(load_peft_adapter(dir.string()), Error);
  fs::remove_all(dir);
}

}  // namespace
}  // namespace qtrain::model
