// Optimizer names as axolotl spells them, the error for an unknown one, and the state sizes the
// memory plan relies on.
#include <gtest/gtest.h>

#include <string>

#include "csrc/core/error.h"
#include "runtime/optim/optimizer.h"

namespace qtrain::rt {
namespace {

TEST(OptimizerNames, AxolotlNamesRoundTrip) {
  for (OptimizerKind k : {OptimizerKind::AdamW, OptimizerKind::AdamW8bit, OptimizerKind::PagedAdamW32bit,
                          OptimizerKind::PagedAdamW8bit})
    EXPECT_EQ(parse_optimizer_name(optimizer_name(k)), k);
  EXPECT_EQ(parse_optimizer_name("adamw_torch"), OptimizerKind::AdamW);
  EXPECT_TRUE(optimizer_is_paged(OptimizerKind::PagedAdamW8bit));
  EXPECT_FALSE(optimizer_is_paged(OptimizerKind::AdamW8bit));
  EXPECT_TRUE(optimizer_is_8bit(OptimizerKind::PagedAdamW8bit));
  EXPECT_FALSE(optimizer_is_8bit(OptimizerKind::PagedAdamW32bit));
}

TEST(OptimizerNames, UnknownNameIsBadInputNamingTheKey) {
  try {
    parse_optimizer_name("sgd", "run.yaml");
    FAIL() << "accepted sgd";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::BadInput);
    EXPECT_EQ(exit_code(e.kind()), 2);
    const std::string w = e.what();
    EXPECT_NE(w.find("run.yaml"), std::string::npos) << w;
    EXPECT_NE(w.find("optimizer"), std::string::npos) << w;
    EXPECT_NE(w.find("sgd"), std::string::npos) << w;
  }
}

TEST(OptimizerNames, StateBytes) {
  // 32-bit: 8 bytes per element.
  EXPECT_EQ(optimizer_state_bytes(OptimizerKind::AdamW, {300, 5000}), 8u * 5300);
  EXPECT_EQ(optimizer_state_bytes(OptimizerKind::PagedAdamW32bit, {4096}), 8u * 4096);
  // 8-bit: under 4096 elements fp32 states; from 4096 on 2 bytes + two fp32 absmax per 256-block.
  EXPECT_EQ(optimizer_state_bytes(OptimizerKind::AdamW8bit, {4095}), 8u * 4095);
  EXPECT_EQ(optimizer_state_bytes(OptimizerKind::AdamW8bit, {4096}), 2u * 4096 + 8u * 16);
  EXPECT_EQ(optimizer_state_bytes(OptimizerKind::PagedAdamW8bit, {4097, 0}), 2u * 4097 + 8u * 17);
}

}  // namespace
}  // namespace qtrain::rt
