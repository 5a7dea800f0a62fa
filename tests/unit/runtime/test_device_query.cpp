// Device query and byte formatting on the host build: without a GPU the query answers "no GPU"
// cleanly instead of failing.
#include <gtest/gtest.h>

#include "runtime/device/device.h"
#include "runtime/memory/arena.h"

namespace qtrain::rt {
namespace {

TEST(DeviceQuery, AnswersWithOrWithoutAGpu) {
  const DeviceInfo info = query_device(0);
  if (info.available) {
    EXPECT_GT(info.total_bytes, 0u);
    EXPECT_GT(info.sm_count, 0);
    EXPECT_NE(info.str().find("cuda:0"), std::string::npos);
  } else {
    EXPECT_FALSE(info.reason.empty());
    EXPECT_EQ(info.str().rfind("no GPU", 0), 0u) << info.str();
  }
}

TEST(DeviceQuery, OutOfRangeIndexIsNotAvailable) {
  const DeviceInfo info = query_device(1000);
  EXPECT_FALSE(info.available);
}

TEST(FormatBytes, Units) {
  EXPECT_EQ(format_bytes(512), "512 B");
  EXPECT_EQ(format_bytes(1536), "1.5 KiB");
  EXPECT_EQ(format_bytes(size_t{3} << 20), "3.0 MiB");
  EXPECT_EQ(format_bytes(size_t{3} << 29), "1.50 GiB");
}

}  // namespace
}  // namespace qtrain::rt
