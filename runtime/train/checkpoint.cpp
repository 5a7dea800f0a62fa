// Checkpoint folders: naming, atomic creation, rotation, and the trainer state file.
#include "runtime/train/checkpoint.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "csrc/core/error.h"
#include "runtime/train/metrics.h"

namespace qtrain::train {

namespace fs = std::filesystem;

std::string trainer_state_json(const TrainerState& s) {
  nlohmann::ordered_json j;
  j["global_step"] = s.global_step;
  j["total_steps"] = s.total_steps;
  j["micro_step"] = s.micro_step;
  j["seed"] = s.seed;
  j["data_epoch"] = s.data_position.epoch;
  j["data_index"] = s.data_position.index;
  j["nonfinite_in_a_row"] = s.nonfinite_in_a_row;
  j["tokens_seen"] = s.tokens_seen;
  j["elapsed_s"] = s.elapsed_s;
  return j.dump(2) + "\n";
}

TrainerState parse_trainer_state(const std::string& json_text, const std::string& path) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(json_text);
  } catch (const nlohmann::json::exception& e) {
    throw_bad_input(path, std::string("not valid JSON: ") + e.what());
  }
  if (!j.is_object()) throw_bad_input(path, "trainer state must be a JSON object");
  auto get_int = [&](const char* key) -> int64_t {
    if (!j.contains(key) || !j[key].is_number_integer()) throw_bad_input(path, "missing or non-integer field", key);
    return j[key].get<int64_t>();
  };
  TrainerState s;
  s.global_step = get_int("global_step");
  s.total_steps = get_int("total_steps");
  s.micro_step = get_int("micro_step");
  if (!j.contains("seed") || !j["seed"].is_number_unsigned()) throw_bad_input(path, "missing or bad field", "seed");
  s.seed = j["seed"].get<uint64_t>();
  s.data_position.epoch = get_int("data_epoch");
  s.data_position.index = get_int("data_index");
  s.nonfinite_in_a_row = get_int("nonfinite_in_a_row");
  s.tokens_seen = get_int("tokens_seen");
  if (!j.contains("elapsed_s") || !j["elapsed_s"].is_number()) throw_bad_input(path, "missing field", "elapsed_s");
  s.elapsed_s = j["elapsed_s"].get<double>();
  if (s.global_step < 0 || s.micro_step < 0 || s.data_position.epoch < 0 || s.data_position.index < 0)
    throw_bad_input(path, "negative step or position");
  return s;
}

TrainerState read_trainer_state(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw_bad_input(path, "cannot open trainer state");
  std::ostringstream ss;
  ss << f.rdbuf();
  return parse_trainer_state(ss.str(), path);
}

std::vector<CheckpointEntry> list_checkpoints(const std::string& output_dir) {
  std::vector<CheckpointEntry> out;
  std::error_code ec;
  if (!fs::is_directory(output_dir, ec)) return out;
  for (const auto& e : fs::directory_iterator(output_dir, ec)) {
    const std::string name = e.path().filename().string();
    const std::string prefix = "checkpoint-";
    if (name.rfind(prefix, 0) != 0 || name.size() == prefix.size() || name.size() > prefix.size() + 18) continue;
    const std::string digits = name.substr(prefix.size());
    if (!std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; })) continue;
    if (!e.is_directory()) continue;
    out.push_back({std::stoll(digits), e.path().string()});
  }
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.step < b.step; });
  return out;
}

std::optional<CheckpointEntry> newest_checkpoint(const std::string& output_dir) {
  auto all = list_checkpoints(output_dir);
  if (all.empty()) return std::nullopt;
  return all.back();
}

void rotate_checkpoints(const std::string& output_dir, int64_t keep) {
  if (keep <= 0) return;
  const auto all = list_checkpoints(output_dir);
  for (size_t i = 0; i + static_cast<size_t>(keep) < all.size(); ++i) {
    std::error_code ec;
    fs::remove_all(all[i].path, ec);
    if (ec) throw_bad_input(all[i].path, "cannot remove old checkpoint: " + ec.message());
  }
}

std::string save_checkpoint(const std::string& output_dir, int64_t step,
                            const std::function<void(const std::string& dir)>& fill, int64_t keep) {
  const fs::path final_dir = fs::path(output_dir) / ("checkpoint-" + std::to_string(step));
  const fs::path tmp_dir = fs::path(output_dir) / ("checkpoint-" + std::to_string(step) + ".tmp");
  std::error_code ec;
  fs::remove_all(tmp_dir, ec);
  fs::create_directories(tmp_dir, ec);
  if (ec) throw_bad_input(tmp_dir.string(), "cannot create checkpoint folder: " + ec.message());
  fill(tmp_dir.string());
  fs::remove_all(final_dir, ec);
  fs::rename(tmp_dir, final_dir, ec);
  if (ec) throw_bad_input(final_dir.string(), "cannot rename checkpoint folder into place: " + ec.message());
  rotate_checkpoints(output_dir, keep);
  return final_dir.string();
}

}  // namespace qtrain::train
