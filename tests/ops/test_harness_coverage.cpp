// The harness's coverage summary: every CUDA op (one .cu in kernels/cuda) must have cases in
// tests/ops/test_<op>.cpp in this binary. Prints a table of cases per op; an op with none is
// reported as untested and fails the check.
#include <gtest/gtest.h>

#include <cstdio>
#include <map>
#include <sstream>
#include <string>

#ifndef QTRAIN_CUDA_OPS
#error "QTRAIN_CUDA_OPS (comma-separated op names) is set by tests/CMakeLists.txt"
#endif

namespace {

TEST(Harness, EveryCudaOpHasCases) {
  std::map<std::string, int> cases;  // op -> number of test cases from tests/ops/test_<op>.cpp
  std::stringstream ops(QTRAIN_CUDA_OPS);
  for (std::string op; std::getline(ops, op, ',');)
    if (!op.empty()) cases[op] = 0;
  const auto* unit = ::testing::UnitTest::GetInstance();
  for (int s = 0; s < unit->total_test_suite_count(); ++s) {
    const auto* suite = unit->GetTestSuite(s);
    for (int t = 0; t < suite->total_test_count(); ++t) {
      std::string file = suite->GetTestInfo(t)->file();
      file = file.substr(file.find_last_of('/') + 1);
      if (file.rfind("test_", 0) != 0) continue;
      const std::string op = file.substr(5, file.find('.') - 5);
      if (cases.count(op) != 0) ++cases[op];
    }
  }
#if defined(QTRAIN_TEST_VARIANT_EMU)
  const char* column = "emulated";
#else
  const char* column = "gpu";
#endif
  std::printf("%-24s %s cases\n", "op", column);
  int untested = 0;
  for (const auto& [op, n] : cases) {
    std::printf("%-24s %d%s\n", op.c_str(), n, n == 0 ? "  UNTESTED" : "");
    untested += n == 0;
  }
  EXPECT_EQ(untested, 0) << untested << " CUDA op(s) have no op-harness cases";
}

}  // namespace
