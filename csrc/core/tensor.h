// Tensor: a non-owning view {data, dtype, shape (up to 4 dims), strides in elements, device} and
// HostTensor, an owning, 64-byte aligned host buffer. Device buffers are owned by the runtime's
// arena, which hands out views. Packed NF4 views are always contiguous (two elements per byte).
#pragma once
#include <array>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>

#include "csrc/core/dtype.h"

namespace qtrain {

struct Device {
  enum class Kind : uint8_t { Cpu, Cuda };
  Kind kind = Kind::Cpu;
  int index = 0;
  static Device cpu() { return {}; }
  static Device cuda(int i = 0) { return {Kind::Cuda, i}; }
  bool is_cpu() const { return kind == Kind::Cpu; }
  bool operator==(const Device&) const = default;
  std::string str() const;  // "cpu", "cuda:0"
};

constexpr int kMaxDims = 4;

struct Shape {
  int ndim = 0;
  std::array<int64_t, kMaxDims> dims{};
  Shape() = default;
  Shape(std::initializer_list<int64_t> d);
  int64_t operator[](int i) const { return dims[static_cast<size_t>(i)]; }
  int64_t numel() const;
  bool operator==(const Shape& o) const;
  std::string str() const;  // "[4, 8]"
};

class Tensor {
 public:
  Tensor() = default;
  // Contiguous (row-major) view.
  Tensor(void* data, DType dtype, Shape shape, Device device = Device::cpu());
  // Strided view (strides in elements); NF4 views must be contiguous.
  Tensor(void* data, DType dtype, Shape shape, std::array<int64_t, kMaxDims> strides, Device device);

  void* data() const { return data_; }
  template <typename T>
  T* data_as() const { return static_cast<T*>(data_); }
  DType dtype() const { return dtype_; }
  const Shape& shape() const { return shape_; }
  int ndim() const { return shape_.ndim; }
  int64_t size(int i) const { return shape_[i]; }
  int64_t stride(int i) const { return strides_[static_cast<size_t>(i)]; }
  Device device() const { return device_; }
  int64_t numel() const { return shape_.numel(); }
  // Bytes spanned by a contiguous view (NF4: two elements per byte, rounded up).
  size_t nbytes() const;
  bool is_contiguous() const;
  // A view of rows [begin, end) along dimension 0.
  Tensor slice_rows(int64_t begin, int64_t end) const;
  // Same data, another shape with the same element count; requires a contiguous view.
  Tensor reshape(Shape s) const;
  std::string str() const;  // "bf16[4, 8] cpu"

 private:
  void* data_ = nullptr;
  DType dtype_ = DType::F32;
  Shape shape_;
  std::array<int64_t, kMaxDims> strides_{};
  Device device_;
};

// Owning host tensor, contiguous, 64-byte aligned, zero-initialised.
class HostTensor {
 public:
  HostTensor() = default;
  HostTensor(DType dtype, Shape shape);
  Tensor view() const { return view_; }
  operator Tensor() const { return view_; }  // NOLINT: a HostTensor is usable wherever a view is
  template <typename T>
  T* data_as() const { return view_.data_as<T>(); }
  int64_t numel() const { return view_.numel(); }
  size_t nbytes() const { return view_.nbytes(); }

 private:
  struct Free {
    void operator()(void* p) const noexcept;
  };
  std::unique_ptr<void, Free> buf_;
  Tensor view_;
};

}  // namespace qtrain
