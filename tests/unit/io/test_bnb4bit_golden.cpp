// A model quantized by transformers + bitsandbytes (tests/data/bnb_tiny, written by
// tests/reference/bnb_model_golden.py): qtrain's loader accepts it as it is, and its dequantization
// equals bitsandbytes' own, value for value.
#include <gtest/gtest.h>

#include <bit>
#include <cstring>
#include <string>

#include "csrc/io/bnb4bit.h"
#include "csrc/io/hf_config.h"
#include "csrc/io/llama_layout.h"
#include "csrc/io/safetensors.h"
#include "runtime/model/nf4_weights.h"

namespace qtrain::io {
namespace {

const std::string kDir = std::string(QTRAIN_TEST_DATA_DIR) + "/bnb_tiny";

TEST(Bnb4bitGolden, LoadsAndDequantizesLikeBitsandbytes) {
  const ModelConfig config = load_model_config(kDir + "/model");
  ASSERT_TRUE(config.quantization.has_value());
  EXPECT_TRUE(config.quantization->load_in_4bit);
  EXPECT_EQ(config.quantization->quant_type, "nf4");
  EXPECT_TRUE(config.quantization->use_double_quant);
  EXPECT_EQ(config.quantization->compute_dtype, "bfloat16");

  const Checkpoint ckpt = Checkpoint::open(kDir + "/model");
  const LayoutReport report = check_llama_layout(config, ckpt);
  EXPECT_TRUE(report.problems.empty()) << report.problems.front().tensor << ": " << report.problems.front().detail;

  const SafetensorsFile reference = SafetensorsFile::open(kDir + "/dequantized.safetensors");
  const auto weights = model::load_nf4_linear_weights(config, ckpt);
  ASSERT_EQ(weights.size(), 14u);
  size_t partial_blocks = 0, two_nested = 0;
  for (const auto& [name, w] : weights) {
    SCOPED_TRACE(name);
    EXPECT_TRUE(w.double_quant);
    EXPECT_EQ(w.blocksize, 64);
    EXPECT_EQ(w.source_dtype, DType::BF16);
    partial_blocks += w.numel() % 64 != 0;
    two_nested += w.nested_absmax.size() == 2;
    const TensorInfo& info = reference.info(name);
    ASSERT_EQ(info.dtype, DType::F32);
    ASSERT_EQ(info.shape, w.shape);
    const auto ref = reference.data(name);
    const std::vector<float> got = model::dequantize_nf4_f32(w);
    size_t differ = 0;
    for (size_t i = 0; i < got.size(); ++i) {
      float r;
      std::memcpy(&r, ref.data() + 4 * i, 4);
      differ += std::bit_cast<uint32_t>(r) != std::bit_cast<uint32_t>(got[i]);
    }
    EXPECT_EQ(differ, 0u) << "of " << got.size() << " values";
    // Our writer spells the quant state exactly as bitsandbytes did.
    const auto qs = ckpt.data(name + kBnbQuantStateNf4);
    EXPECT_EQ(std::string(reinterpret_cast<const char*>(qs.data()), qs.size()), bnb4bit_quant_state_json(w.quant_state()));
  }
  // k/v ([36, 72]: 40.5 blocks) and gate/up/down ([230, 72] or [72, 230]: 258.75 blocks) of both layers.
  EXPECT_EQ(partial_blocks, 10u);
  EXPECT_EQ(two_nested, 6u);
}

}  // namespace
}  // namespace qtrain::io
