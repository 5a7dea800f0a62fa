// Checkpoint folders: atomic creation, rotation to save_total_limit, listing that ignores
// unfinished or foreign folders, and the trainer state round trip.
#include <gtest/gtest.h>

#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "csrc/core/error.h"
#include "runtime/train/checkpoint.h"

namespace qtrain::train {
namespace {

namespace fs = std::filesystem;

fs::path scratch(const char* name) {
  const fs::path d = fs::temp_directory_path() / (std::string("qtrain_ckpt_") + name + std::to_string(::getpid()));
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

TEST(Checkpoint, RotationKeepsTheNewest) {
  const fs::path d = scratch("rot");
  fs::create_directories(d / "checkpoint-7.tmp");  // an interrupted save: never listed
  fs::create_directories(d / "checkpoint-x");
  for (int64_t step : {10, 20, 30, 40, 50}) {
    const std::string path = save_checkpoint(d.string(), step, [](const std::string& dir) {
      std::ofstream(fs::path(dir) / "f.txt") << "x";
    }, 2);
    EXPECT_TRUE(fs::exists(fs::path(path) / "f.txt"));
  }
  const auto all = list_checkpoints(d.string());
  ASSERT_EQ(all.size(), 2u);
  EXPECT_EQ(all[0].step, 40);
  EXPECT_EQ(all[1].step, 50);
  EXPECT_EQ(newest_checkpoint(d.string())->step, 50);
  EXPECT_FALSE(fs::exists(d / "checkpoint-50.tmp"));
  EXPECT_TRUE(fs::exists(d / "checkpoint-x"));  // not ours: left alone
  // keep <= 0 keeps everything; a step saved twice is replaced.
  save_checkpoint(d.string(), 60, [](const std::string&) {}, 0);
  save_checkpoint(d.string(), 60, [](const std::string&) {}, 0);
  EXPECT_EQ(list_checkpoints(d.string()).size(), 3u);
  // Numeric, not lexicographic order.
  save_checkpoint(d.string(), 100, [](const std::string&) {}, 0);
  EXPECT_EQ(newest_checkpoint(d.string())->step, 100);
  EXPECT_FALSE(newest_checkpoint((d / "missing").string()).has_value());
  fs::remove_all(d);
}

TEST(Checkpoint, FailedFillLeavesNoCheckpoint) {
  const fs::path d = scratch("fail");
  EXPECT_THROW(save_checkpoint(d.string(), 5, [](const std::string&) { throw_internal("disk full"); }, 0), Error);
  EXPECT_TRUE(list_checkpoints(d.string()).empty());
  fs::remove_all(d);
}

TEST(Checkpoint, TrainerStateRoundTrip) {
  TrainerState s;
  s.global_step = 12;
  s.total_steps = 40;
  s.micro_step = 48;
  s.seed = 0xfedcba9876543210ull;
  s.data_position = {3, 7};
  s.nonfinite_in_a_row = 1;
  s.tokens_seen = 123456;
  s.elapsed_s = 1.25;
  EXPECT_EQ(parse_trainer_state(trainer_state_json(s), "t.json"), s);
  EXPECT_THROW(parse_trainer_state("{}", "t.json"), Error);
  EXPECT_THROW(parse_trainer_state("not json", "t.json"), Error);
  try {
    parse_trainer_state(R"({"global_step": "x"})", "t.json");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("t.json"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("global_step"), std::string::npos);
  }
}

}  // namespace
}  // namespace qtrain::train
