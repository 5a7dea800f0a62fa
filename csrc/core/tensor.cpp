// Tensor views and owning host tensors.
#include "csrc/core/tensor.h"

#include <cstdlib>
#include <cstring>
#include <new>

#include "csrc/core/error.h"

namespace qtrain {

std::string Device::str() const { return is_cpu() ? "cpu" : "cuda:" + std::to_string(index); }

Shape::Shape(std::initializer_list<int64_t> d) {
  QTRAIN_CHECK_INTERNAL(d.size() <= kMaxDims, "at most 4 dimensions");
  for (int64_t v : d) {
    QTRAIN_CHECK_INTERNAL(v >= 0, "negative dimension");
    dims[static_cast<size_t>(ndim++)] = v;
  }
}

int64_t Shape::numel() const {
  int64_t n = 1;
  for (int i = 0; i < ndim; ++i) n *= dims[static_cast<size_t>(i)];
  return n;
}

bool Shape::operator==(const Shape& o) const {
  if (ndim != o.ndim) return false;
  for (int i = 0; i < ndim; ++i)
    if (dims[static_cast<size_t>(i)] != o.dims[static_cast<size_t>(i)]) return false;
  return true;
}

std::string Shape::str() const {
  std::string s = "[";
  for (int i = 0; i < ndim; ++i) s += (i ? ", " : "") + std::to_string(dims[static_cast<size_t>(i)]);
  return s + "]";
}

namespace {
std::array<int64_t, kMaxDims> contiguous_strides(const Shape& s) {
  std::array<int64_t, kMaxDims> st{};
  int64_t acc = 1;
  for (int i = s.ndim - 1; i >= 0; --i) {
    st[static_cast<size_t>(i)] = acc;
    acc *= s[i];
  }
  return st;
}
}  // namespace

Tensor::Tensor(void* data, DType dtype, Shape shape, Device device)
    : data_(data), dtype_(dtype), shape_(shape), strides_(contiguous_strides(shape)), device_(device) {}

Tensor::Tensor(void* data, DType dtype, Shape shape, std::array<int64_t, kMaxDims> strides, Device device)
    : data_(data), dtype_(dtype), shape_(shape), strides_(strides), device_(device) {
  QTRAIN_CHECK_INTERNAL(dtype != DType::NF4 || is_contiguous(), "NF4 views must be contiguous");
}

size_t Tensor::nbytes() const { return dtype_bytes(dtype_, static_cast<size_t>(numel())); }

bool Tensor::is_contiguous() const { return strides_ == contiguous_strides(shape_) || numel() <= 1; }

Tensor Tensor::slice_rows(int64_t begin, int64_t end) const {
  QTRAIN_CHECK_INTERNAL(shape_.ndim >= 1 && 0 <= begin && begin <= end && end <= shape_[0], "row slice out of range");
  Shape s = shape_;
  s.dims[0] = end - begin;
  const int64_t offset_elems = begin * strides_[0];
  QTRAIN_CHECK_INTERNAL(dtype_ != DType::NF4 || offset_elems % 2 == 0, "NF4 slice must start on a byte");
  auto* p = static_cast<char*>(data_) + dtype_bytes(dtype_, static_cast<size_t>(offset_elems));
  return Tensor(p, dtype_, s, strides_, device_);
}

Tensor Tensor::reshape(Shape s) const {
  QTRAIN_CHECK_INTERNAL(is_contiguous(), "reshape needs a contiguous view");
  QTRAIN_CHECK_INTERNAL(s.numel() == numel(), "reshape " + shape_.str() + " to " + s.str() + " changes the size");
  return Tensor(data_, dtype_, s, device_);
}

std::string Tensor::str() const { return std::string(dtype_name(dtype_)) + shape_.str() + " " + device_.str(); }

void HostTensor::Free::operator()(void* p) const noexcept { std::free(p); }

HostTensor::HostTensor(DType dtype, Shape shape) {
  const size_t bytes = dtype_bytes(dtype, static_cast<size_t>(shape.numel()));
  const size_t rounded = (bytes + 63) / 64 * 64;
  void* p = std::aligned_alloc(64, rounded == 0 ? 64 : rounded);
  if (p == nullptr) throw_out_of_memory("host allocation of " + std::to_string(bytes) + " bytes failed");
  std::memset(p, 0, rounded == 0 ? 64 : rounded);
  buf_.reset(p);
  view_ = Tensor(p, dtype, shape, Device::cpu());
}

}  // namespace qtrain
