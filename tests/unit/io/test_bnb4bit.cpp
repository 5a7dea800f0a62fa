// bitsandbytes 4-bit layout: the quant_state JSON as Python writes it, its parser, and the loader's
// answer to malformed checkpoints (every one a BadInput naming the file and the tensor).
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "csrc/io/bnb4bit.h"
#include "csrc/io/hf_config.h"
#include "csrc/io/safetensors.h"
#include "csrc/io/tiny_model.h"
#include "runtime/model/nf4_weights.h"
#include "runtime/model/quantize_checkpoint.h"
#include "unit/io/io_test_util.h"

namespace qtrain::io {
namespace {

using testing::expect_bad_input;
using testing::ScratchDir;

TEST(Bnb4bit, PythonFloatRepr) {
  EXPECT_EQ(python_float_repr(0.0), "0.0");
  EXPECT_EQ(python_float_repr(-0.0), "-0.0");
  EXPECT_EQ(python_float_repr(1.0), "1.0");
  EXPECT_EQ(python_float_repr(0.5), "0.5");
  EXPECT_EQ(python_float_repr(0.0001), "0.0001");
  EXPECT_EQ(python_float_repr(0.00001), "1e-05");
  EXPECT_EQ(python_float_repr(1.5e-7), "1.5e-07");
  EXPECT_EQ(python_float_repr(123.25), "123.25");
  EXPECT_EQ(python_float_repr(1e15), "1000000000000000.0");
  EXPECT_EQ(python_float_repr(1e16), "1e+16");
  EXPECT_EQ(python_float_repr(-2.5e100), "-2.5e+100");
  // A float32 offset printed as the double it is (what offset.item() hands to json.dumps); the
  // value is the nested_offset of tests/data/bnb_tiny's down_proj, written by bitsandbytes.
  EXPECT_EQ(python_float_repr(static_cast<double>(0.06607633084058762f)), "0.06607633084058762");
  EXPECT_EQ(python_float_repr(static_cast<double>(0.1f)), "0.10000000149011612");
}

TEST(Bnb4bit, QuantStateJsonKeyOrderAndSpelling) {
  Bnb4bitQuantState s;
  s.shape = {72, 230};
  EXPECT_EQ(bnb4bit_quant_state_json(s),
            "{\"quant_type\": \"nf4\", \"blocksize\": 64, \"dtype\": \"bfloat16\", \"shape\": [72, 230]}");
  s.nested = true;
  s.nested_offset = 0.06607633084058762f;
  const std::string text = bnb4bit_quant_state_json(s);
  // Byte for byte what bitsandbytes 0.50.2 wrote for this weight (tests/data/bnb_tiny).
  EXPECT_EQ(text,
            "{\"quant_type\": \"nf4\", \"blocksize\": 64, \"dtype\": \"bfloat16\", \"shape\": [72, 230], "
            "\"nested_blocksize\": 256, \"nested_dtype\": \"float32\", \"nested_offset\": 0.06607633084058762}");
  EXPECT_EQ(parse_bnb4bit_quant_state(text, "f", "t"), s);
}

TEST(Bnb4bit, QuantStateParserRejects) {
  auto bad = [](const std::string& json, const std::string& fragment) {
    expect_bad_input([&] { parse_bnb4bit_quant_state(json, "m.safetensors", "w.quant_state"); }, "m.safetensors",
                     fragment);
  };
  const std::string tail = ", \"blocksize\": 64, \"dtype\": \"bfloat16\", \"shape\": [4, 64]}";
  bad("{\"quant_type\": \"fp4\"" + tail, "\"fp4\" is not supported");
  bad("{\"quant_type\": \"int4\"" + tail, "unknown quant_type");
  bad("{\"quant_type\": \"nf4\", \"blocksize\": 48, \"dtype\": \"bfloat16\", \"shape\": [4, 64]}", "blocksize 48");
  bad("{\"quant_type\": \"nf4\", \"blocksize\": 64, \"dtype\": \"int8\", \"shape\": [4, 64]}", "dtype \"int8\"");
  bad("{\"quant_type\": \"nf4\", \"blocksize\": 64, \"dtype\": \"bfloat16\", \"shape\": [256]}", "[out, in]");
  bad("{\"quant_type\": \"nf4\", \"blocksize\": 64, \"dtype\": \"bfloat16\"}", "lacks \"shape\"");
  bad("{\"quant_type\": \"nf4\"" + tail.substr(0, tail.size() - 1) + ", \"nested_blocksize\": 256}",
      "only some of nested");
  bad("{\"quant_type\": \"nf4\"" + tail.substr(0, tail.size() - 1) + ", \"colour\": 1}", "unknown key \"colour\"");
  bad("{\"quant_type\": \"nf4\", ", "not valid JSON");
  bad("[1, 2]", "not a JSON object");
  EXPECT_NO_THROW(parse_bnb4bit_quant_state("{\"quant_type\": \"nf4\"" + tail, "f", "t"));
}

// ---- malformed checkpoints ----------------------------------------------------------------------

struct OwnedTensor {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  std::string bytes;
};

std::vector<OwnedTensor> read_all(const std::string& path) {
  const SafetensorsFile f = SafetensorsFile::open(path);
  std::vector<OwnedTensor> out;
  for (const TensorInfo& t : f.tensors()) {
    const auto d = f.data(t.name);
    out.push_back({t.name, t.dtype, t.shape, std::string(reinterpret_cast<const char*>(d.data()), d.size())});
  }
  return out;
}

void write_all(const std::string& path, const std::vector<OwnedTensor>& tensors) {
  std::vector<TensorToWrite> w;
  for (const auto& t : tensors)
    w.push_back({t.name, t.dtype, t.shape, {reinterpret_cast<const std::byte*>(t.bytes.data()), t.bytes.size()}});
  write_safetensors(path, w);
}

OwnedTensor* find(std::vector<OwnedTensor>& ts, const std::string& name) {
  for (auto& t : ts)
    if (t.name == name) return &t;
  ADD_FAILURE() << "no tensor " << name;
  return nullptr;
}

class Bnb4bitMalformed : public ::testing::Test {
 protected:
  void SetUp() override {
    TinyModelOptions opt;
    opt.seed = 3;
    write_tiny_model(scratch_.file("tiny"), opt);
    model::quantize_checkpoint(scratch_.file("tiny"), scratch_.file("q"), {});
  }
  // A copy of the quantized model with model.safetensors changed by `mutate`.
  std::string variant(const std::string& name, const std::function<void(std::vector<OwnedTensor>&)>& mutate) {
    const std::string dir = scratch_.file(name);
    std::filesystem::copy(scratch_.file("q"), dir);
    auto tensors = read_all(dir + "/model.safetensors");
    mutate(tensors);
    write_all(dir + "/model.safetensors", tensors);
    return dir;
  }
  static void load(const std::string& dir) {
    const ModelConfig c = load_model_config(dir);
    const Checkpoint ckpt = Checkpoint::open(dir);
    model::load_nf4_linear_weights(c, ckpt);
  }
  void expect_rejected(const std::string& dir, const std::string& fragment) {
    expect_bad_input([&] { load(dir); }, dir + "/model.safetensors", fragment);
  }
  ScratchDir scratch_;
  const std::string w_ = "model.layers.1.mlp.up_proj.weight";
};

TEST_F(Bnb4bitMalformed, ValidModelLoads) {
  const ModelConfig c = load_model_config(scratch_.file("q"));
  const auto weights = model::load_nf4_linear_weights(c, Checkpoint::open(scratch_.file("q")));
  EXPECT_EQ(weights.size(), 14u);
}

TEST_F(Bnb4bitMalformed, MissingAbsmax) {
  const auto dir = variant("no_absmax", [&](auto& ts) { std::erase_if(ts, [&](auto& t) { return t.name == w_ + ".absmax"; }); });
  expect_rejected(dir, "no tensor \"" + w_ + ".absmax\"");
}

TEST_F(Bnb4bitMalformed, MissingQuantState) {
  const auto dir = variant("no_state", [&](auto& ts) {
    std::erase_if(ts, [&](auto& t) { return t.name == w_ + ".quant_state.bitsandbytes__nf4"; });
  });
  expect_rejected(dir, w_ + ".quant_state.bitsandbytes__nf4\" is missing");
}

TEST_F(Bnb4bitMalformed, WrongQuantStateJson) {
  const auto dir = variant("bad_json", [&](auto& ts) {
    auto* t = find(ts, w_ + ".quant_state.bitsandbytes__nf4");
    t->bytes = "{\"quant_type\": \"nf4\", \"blocksize\": 64}";
    t->shape = {static_cast<int64_t>(t->bytes.size())};
  });
  expect_rejected(dir, "quant_state lacks \"dtype\" (tensor \"" + w_ + ".quant_state.bitsandbytes__nf4\")");
  const auto dir2 = variant("not_json", [&](auto& ts) {
    auto* t = find(ts, w_ + ".quant_state.bitsandbytes__nf4");
    t->bytes.resize(t->bytes.size() / 2);
    t->shape = {static_cast<int64_t>(t->bytes.size())};
  });
  expect_rejected(dir2, "not valid JSON (tensor \"" + w_ + ".quant_state.bitsandbytes__nf4\"");
}

TEST_F(Bnb4bitMalformed, Fp4) {
  const auto dir = variant("fp4", [&](auto& ts) {
    auto* t = find(ts, w_ + ".quant_state.bitsandbytes__nf4");
    t->name = w_ + ".quant_state.bitsandbytes__fp4";
  });
  expect_rejected(dir, "fp4 4-bit weights are not supported");
  const auto dir2 = variant("fp4_json", [&](auto& ts) {
    auto* t = find(ts, w_ + ".quant_state.bitsandbytes__nf4");
    t->bytes.replace(t->bytes.find("nf4"), 3, "fp4");
  });
  expect_rejected(dir2, "\"fp4\" is not supported");
}

TEST_F(Bnb4bitMalformed, ShapeMismatch) {
  const auto dir = variant("shape", [&](auto& ts) {
    auto* t = find(ts, w_ + ".quant_state.bitsandbytes__nf4");
    t->bytes.replace(t->bytes.find("[176, 64]"), 9, "[64, 176]");
  });
  expect_rejected(dir, "quant_state shape [64, 176] does not match the model's [176, 64]");
}

TEST_F(Bnb4bitMalformed, TruncatedPackedWeight) {
  const auto dir = variant("truncated", [&](auto& ts) {
    auto* t = find(ts, w_);
    t->bytes.resize(t->bytes.size() - 8);
    t->shape = {static_cast<int64_t>(t->bytes.size()), 1};
  });
  expect_rejected(dir, "packed 4-bit weight has shape [5624, 1], expected [5632, 1]");
}

TEST_F(Bnb4bitMalformed, WrongAbsmaxSizeAndDtype) {
  const auto dir = variant("absmax_short", [&](auto& ts) {
    auto* t = find(ts, w_ + ".absmax");
    t->bytes.resize(t->bytes.size() - 1);
    t->shape = {static_cast<int64_t>(t->bytes.size())};
  });
  expect_rejected(dir, "double-quantized absmax has shape [175], expected [176]");
  const auto dir2 = variant("absmax_f32", [&](auto& ts) {
    auto* t = find(ts, w_ + ".absmax");
    t->bytes.resize(t->bytes.size() * 4);
    t->dtype = DType::F32;
  });
  expect_rejected(dir2, "double-quantized absmax has dtype f32, expected u8");
}

TEST_F(Bnb4bitMalformed, WrongCodeTables) {
  const auto dir = variant("quant_map", [&](auto& ts) {
    auto* t = find(ts, w_ + ".quant_map");
    t->bytes[5 * 4] ^= 1;  // one ulp off in code 5
  });
  expect_rejected(dir, "quant_map is not the NF4 code table (value 5");
  const auto dir2 = variant("nested_map", [&](auto& ts) {
    auto* t = find(ts, w_ + ".nested_quant_map");
    std::memset(t->bytes.data(), 0, t->bytes.size());
  });
  expect_rejected(dir2, "nested_quant_map is not the signed 8-bit dynamic code");
  const auto dir3 = variant("missing_nested", [&](auto& ts) {
    std::erase_if(ts, [&](auto& t) { return t.name == w_ + ".nested_absmax"; });
  });
  expect_rejected(dir3, "nested_absmax is missing");
}

}  // namespace
}  // namespace qtrain::io
