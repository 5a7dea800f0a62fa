// Tensor views, owning host tensors, dtype sizes, errors and exit codes.
#include <gtest/gtest.h>

#include "csrc/core/error.h"
#include "csrc/core/tensor.h"

namespace qtrain {
namespace {

TEST(DType, SizesAndNames) {
  EXPECT_EQ(dtype_bytes(DType::F32, 3), 12u);
  EXPECT_EQ(dtype_bytes(DType::BF16, 3), 6u);
  EXPECT_EQ(dtype_bytes(DType::NF4, 3), 2u);  // packed, rounded up
  EXPECT_EQ(dtype_bytes(DType::I64, 2), 16u);
  EXPECT_STREQ(dtype_name(DType::NF4), "nf4");
  EXPECT_EQ(dtype_from_safetensors("BF16"), DType::BF16);
  EXPECT_EQ(dtype_from_safetensors("F8_E4M3"), std::nullopt);
  EXPECT_EQ(dtype_safetensors_name(DType::NF4), nullptr);
}

TEST(Tensor, ContiguousViewSliceReshape) {
  HostTensor t(DType::F32, {4, 6});
  for (int i = 0; i < 24; ++i) t.data_as<float>()[i] = static_cast<float>(i + 1);
  Tensor v = t.view();
  EXPECT_EQ(v.numel(), 24);
  EXPECT_EQ(v.nbytes(), 96u);
  EXPECT_TRUE(v.is_contiguous());
  EXPECT_EQ(v.stride(0), 6);
  EXPECT_EQ(v.stride(1), 1);
  Tensor rows = v.slice_rows(1, 3);
  EXPECT_EQ(rows.shape(), Shape({2, 6}));
  EXPECT_EQ(rows.data_as<float>()[0], 7.0f);
  Tensor r = v.reshape({2, 3, 4});
  EXPECT_EQ(r.ndim(), 3);
  EXPECT_EQ(r.stride(0), 12);
  EXPECT_EQ(r.str(), "f32[2, 3, 4] cpu");
  EXPECT_THROW(v.reshape({5, 5}), Error);
  EXPECT_THROW(v.slice_rows(3, 5), Error);
}

TEST(Tensor, StridedViewIsNotContiguous) {
  HostTensor t(DType::BF16, {4, 6});
  Tensor col(t.view().data(), DType::BF16, {4, 3}, {6, 1, 0, 0}, Device::cpu());
  EXPECT_FALSE(col.is_contiguous());
  EXPECT_THROW(col.reshape({12}), Error);
}

TEST(Tensor, Nf4IsPacked) {
  HostTensor t(DType::NF4, {3, 5});
  EXPECT_EQ(t.nbytes(), 8u);
  EXPECT_EQ(t.view().slice_rows(2, 3).data(), static_cast<char*>(t.view().data()) + 5);
  EXPECT_THROW(t.view().slice_rows(1, 2), Error);  // row 1 starts mid-byte
}

TEST(Tensor, HostTensorIsAlignedAndZeroed) {
  HostTensor t(DType::U8, {13});
  EXPECT_EQ(reinterpret_cast<uintptr_t>(t.view().data()) % 64, 0u);
  for (int i = 0; i < 13; ++i) EXPECT_EQ(t.data_as<uint8_t>()[i], 0);
  EXPECT_EQ(Device::cuda(1).str(), "cuda:1");
}

TEST(Errors, ExitCodesAndMessages) {
  EXPECT_EQ(exit_code(ErrorKind::BadInput), 2);
  EXPECT_EQ(exit_code(ErrorKind::OutOfMemory), 3);
  EXPECT_EQ(exit_code(ErrorKind::Internal), 1);
  try {
    throw_bad_input("model/config.json", "missing field", "key hidden_size");
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::BadInput);
    EXPECT_STREQ(e.what(), "model/config.json: missing field (key hidden_size)");
  }
}

}  // namespace
}  // namespace qtrain
