#include "core/tensor.h"

#include <cstdlib>
#include <cstring>

#include "core/error.h"

namespace lowbit {

std::string shape_str(const Shape& s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + "]";
}

int64_t shape_numel(const Shape& s) {
  int64_t n = 1;
  for (auto d : s) n *= d;
  return n;
}

Tensor Tensor::empty(const Shape& shape, DType dtype) {
  for (auto d : shape) LOWBIT_CHECK(d >= 0, ShapeError, "negative dimension in shape {}", shape_str(shape));
  size_t nbytes = size_t(shape_numel(shape)) * dtype_size(dtype);
  // 64-byte alignment for SIMD; always allocate at least one cache line.
  size_t alloc = (nbytes + 63) / 64 * 64;
  if (alloc == 0) alloc = 64;
  void* p = std::aligned_alloc(64, alloc);
  if (!p) throw Error(fmt::format("out of memory allocating {} bytes for tensor {}", alloc, shape_str(shape)));
  Tensor t;
  t.storage_ = std::make_shared<Storage>();
  t.storage_->data = p;
  t.storage_->nbytes = nbytes;
  t.storage_->owner = std::shared_ptr<void>(p, [](void* q) { std::free(q); });
  t.shape_ = shape;
  t.dtype_ = dtype;
  return t;
}

Tensor Tensor::zeros(const Shape& shape, DType dtype) {
  Tensor t = empty(shape, dtype);
  std::memset(t.raw(), 0, t.nbytes());
  return t;
}

Tensor Tensor::wrap(void* data, const Shape& shape, DType dtype, std::shared_ptr<void> owner) {
  Tensor t;
  t.storage_ = std::make_shared<Storage>();
  t.storage_->data = data;
  t.storage_->nbytes = size_t(shape_numel(shape)) * dtype_size(dtype);
  t.storage_->owner = std::move(owner);
  t.shape_ = shape;
  t.dtype_ = dtype;
  return t;
}

Tensor Tensor::from_vector(const std::vector<float>& v, const Shape& shape) {
  LOWBIT_CHECK(int64_t(v.size()) == shape_numel(shape), ShapeError,
               "from_vector: {} values for shape {}", v.size(), shape_str(shape));
  Tensor t = empty(shape, DType::F32);
  std::memcpy(t.raw(), v.data(), v.size() * 4);
  return t;
}

float* Tensor::f32() {
  LOWBIT_CHECK(dtype_ == DType::F32, DTypeError, "expected an f32 tensor, got {}", dtype_name(dtype_));
  return data<float>();
}
const float* Tensor::f32() const {
  LOWBIT_CHECK(dtype_ == DType::F32, DTypeError, "expected an f32 tensor, got {}", dtype_name(dtype_));
  return data<float>();
}

Tensor Tensor::reshape(const Shape& shape) const {
  LOWBIT_CHECK(shape_numel(shape) == numel(), ShapeError, "cannot reshape {} to {}",
               shape_str(shape_), shape_str(shape));
  Tensor t = *this;
  t.shape_ = shape;
  return t;
}

Tensor Tensor::rows(int64_t begin, int64_t end) const {
  LOWBIT_CHECK(dim() >= 1 && begin >= 0 && begin <= end && end <= shape_[0], ShapeError,
               "rows [{}, {}) out of range for shape {}", begin, end, shape_str(shape_));
  int64_t row = numel() / (shape_[0] ? shape_[0] : 1);
  Tensor t = *this;
  t.offset_ += size_t(begin * row) * dtype_size(dtype_);
  t.shape_[0] = end - begin;
  return t;
}

void Tensor::copy_to_f32(float* dst) const { convert_to_f32(dtype_, raw(), dst, size_t(numel())); }

std::vector<float> Tensor::to_vector() const {
  std::vector<float> v(static_cast<size_t>(numel()));
  copy_to_f32(v.data());
  return v;
}

Tensor Tensor::to(DType dtype) const {
  Tensor t = empty(shape_, dtype);
  if (dtype == dtype_) {
    std::memcpy(t.raw(), raw(), nbytes());
  } else if (dtype == DType::F32) {
    copy_to_f32(t.data<float>());
  } else {
    std::vector<float> tmp = to_vector();
    convert_from_f32(dtype, tmp.data(), t.raw(), tmp.size());
  }
  return t;
}

}  // namespace lowbit
