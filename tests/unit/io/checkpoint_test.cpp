// Checkpoint folders: a single model.safetensors, or shards listed by model.safetensors.index.json,
// with every inconsistency between the index and the shards rejected by name.
#include <gtest/gtest.h>

#include <filesystem>
#include <string>
#include <vector>

#include "csrc/io/safetensors.h"
#include "io_test_util.h"

namespace qtrain::io {
namespace {

using testing::expect_bad_input;
using testing::ScratchDir;
using testing::write_file;

void write_shard(const std::string& path, const std::vector<std::string>& names) {
  // The byte strings must outlive the write: TensorToWrite only points at them.
  std::vector<std::string> bytes;
  for (const std::string& n : names) bytes.push_back(n + "-data");  // distinct content per tensor
  std::vector<TensorToWrite> ts;
  for (size_t i = 0; i < names.size(); ++i) {
    ts.push_back({names[i], DType::U8, {static_cast<int64_t>(bytes[i].size())},
                  {reinterpret_cast<const std::byte*>(bytes[i].data()), bytes[i].size()}});
  }
  write_safetensors(path, ts, {{"format", "pt"}});
}

std::string data_of(const Checkpoint& c, const std::string& name) {
  const auto d = c.data(name);
  return {reinterpret_cast<const char*>(d.data()), d.size()};
}

// Two shards and an index; the default layout used by most tests.
const char* kIndex = R"({"metadata": {"total_size": 123},
  "weight_map": {"a.weight": "model-00001-of-00002.safetensors",
                 "b.weight": "model-00001-of-00002.safetensors",
                 "c.weight": "model-00002-of-00002.safetensors"}})";

void write_two_shards(const ScratchDir& dir) {
  write_shard(dir.file("model-00001-of-00002.safetensors"), {"a.weight", "b.weight"});
  write_shard(dir.file("model-00002-of-00002.safetensors"), {"c.weight"});
}

TEST(Checkpoint, SingleFile) {
  ScratchDir dir;
  write_shard(dir.file("model.safetensors"), {"z", "y"});
  const Checkpoint c = Checkpoint::open(dir.str());
  EXPECT_EQ(c.names(), (std::vector<std::string>{"y", "z"}));
  EXPECT_EQ(c.files().size(), 1u);
  EXPECT_EQ(c.file_of("y"), dir.file("model.safetensors"));
  EXPECT_EQ(data_of(c, "z"), "z-data");
  EXPECT_EQ(c.info("y").shape, (std::vector<int64_t>{6}));
  EXPECT_TRUE(c.contains("z"));
  EXPECT_FALSE(c.contains("x"));
  expect_bad_input([&] { (void)c.info("x"); }, dir.str(), "no tensor named \"x\"");
  expect_bad_input([&] { (void)c.data("x"); }, dir.str(), "no tensor named \"x\"");
}

TEST(Checkpoint, Sharded) {
  ScratchDir dir;
  write_two_shards(dir);
  write_file(dir.file("model.safetensors.index.json"), kIndex);
  const Checkpoint c = Checkpoint::open(dir.str());
  EXPECT_EQ(c.names(), (std::vector<std::string>{"a.weight", "b.weight", "c.weight"}));
  EXPECT_EQ(c.files().size(), 2u);
  EXPECT_EQ(c.file_of("a.weight"), dir.file("model-00001-of-00002.safetensors"));
  EXPECT_EQ(c.file_of("c.weight"), dir.file("model-00002-of-00002.safetensors"));
  EXPECT_EQ(data_of(c, "b.weight"), "b.weight-data");
  EXPECT_EQ(data_of(c, "c.weight"), "c.weight-data");
}

TEST(Checkpoint, RejectsFolderWithoutSafetensors) {
  ScratchDir dir;
  write_file(dir.file("config.json"), "{}");
  expect_bad_input([&] { Checkpoint::open(dir.str()); }, dir.str(), "no model.safetensors");
  expect_bad_input([&] { Checkpoint::open(dir.file("absent")); }, dir.file("absent"), "not a directory");
}

TEST(Checkpoint, RejectsInvalidIndex) {
  ScratchDir dir;
  write_two_shards(dir);
  const std::string index = dir.file("model.safetensors.index.json");
  write_file(index, "{\"weight_map\": ");
  expect_bad_input([&] { Checkpoint::open(dir.str()); }, index, "invalid JSON");
  write_file(index, "[]");
  expect_bad_input([&] { Checkpoint::open(dir.str()); }, index, "not a JSON object");
  write_file(index, R"({"metadata": {"total_size": 1}})");
  expect_bad_input([&] { Checkpoint::open(dir.str()); }, index, "missing \"weight_map\"");
  write_file(index, R"({"weight_map": ["a.weight"]})");
  expect_bad_input([&] { Checkpoint::open(dir.str()); }, index, "\"weight_map\" must be an object");
  write_file(index, R"({"weight_map": {"a.weight": 1}})");
  expect_bad_input([&] { Checkpoint::open(dir.str()); }, index, "shard name must be a string");
  write_file(index, R"({"weight_map": {"a.weight": "../model-00001-of-00002.safetensors"}})");
  expect_bad_input([&] { Checkpoint::open(dir.str()); }, index, "invalid shard file name");
  write_file(index, R"({"weight_map": {}})");
  expect_bad_input([&] { Checkpoint::open(dir.str()); }, index, "lists no tensors");
}

TEST(Checkpoint, RejectsMissingShard) {
  ScratchDir dir;
  write_shard(dir.file("model-00001-of-00002.safetensors"), {"a.weight", "b.weight"});
  write_file(dir.file("model.safetensors.index.json"), kIndex);
  const std::string missing = dir.file("model-00002-of-00002.safetensors");
  expect_bad_input([&] { Checkpoint::open(dir.str()); }, missing, "is missing");
}

TEST(Checkpoint, RejectsMalformedShard) {
  ScratchDir dir;
  write_two_shards(dir);
  write_file(dir.file("model.safetensors.index.json"), kIndex);
  const std::string shard = dir.file("model-00002-of-00002.safetensors");
  write_file(shard, "short");
  expect_bad_input([&] { Checkpoint::open(dir.str()); }, shard, "too short");
}

TEST(Checkpoint, RejectsTensorListedTwiceInIndex) {
  ScratchDir dir;
  write_two_shards(dir);
  const std::string index = dir.file("model.safetensors.index.json");
  write_file(index, R"({"weight_map": {"a.weight": "model-00001-of-00002.safetensors",
                                       "b.weight": "model-00001-of-00002.safetensors",
                                       "c.weight": "model-00002-of-00002.safetensors",
                                       "a.weight": "model-00002-of-00002.safetensors"}})");
  expect_bad_input([&] { Checkpoint::open(dir.str()); }, index, "tensor listed twice in weight_map (\"a.weight\")");
}

TEST(Checkpoint, RejectsTensorAbsentFromItsShard) {
  ScratchDir dir;
  write_two_shards(dir);
  write_file(dir.file("model.safetensors.index.json"),
             R"({"weight_map": {"a.weight": "model-00001-of-00002.safetensors",
                                "b.weight": "model-00001-of-00002.safetensors",
                                "c.weight": "model-00002-of-00002.safetensors",
                                "d.weight": "model-00002-of-00002.safetensors"}})");
  expect_bad_input([&] { Checkpoint::open(dir.str()); }, dir.file("model-00002-of-00002.safetensors"),
                   "absent from this shard (tensor \"d.weight\")");
}

TEST(Checkpoint, RejectsTensorMissingFromIndex) {
  ScratchDir dir;
  write_two_shards(dir);
  write_file(dir.file("model.safetensors.index.json"),
             R"({"weight_map": {"a.weight": "model-00001-of-00002.safetensors",
                                "c.weight": "model-00002-of-00002.safetensors"}})");
  expect_bad_input([&] { Checkpoint::open(dir.str()); }, dir.file("model-00001-of-00002.safetensors"),
                   "not listed in model.safetensors.index.json (tensor \"b.weight\")");
}

TEST(Checkpoint, RejectsTensorInTwoShards) {
  ScratchDir dir;
  write_shard(dir.file("model-00001-of-00002.safetensors"), {"a.weight", "b.weight"});
  write_shard(dir.file("model-00002-of-00002.safetensors"), {"c.weight", "a.weight"});
  write_file(dir.file("model.safetensors.index.json"), kIndex);
  expect_bad_input([&] { Checkpoint::open(dir.str()); }, dir.file("model-00002-of-00002.safetensors"),
                   "tensor present in two shards (tensor \"a.weight\"");
}

}  // namespace
}  // namespace qtrain::io
