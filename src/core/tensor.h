// A minimal n-d tensor: shared storage + byte offset + shape + dtype + device.
// Tensors are always row-major contiguous (views are made by offsetting rows);
// that keeps every kernel a plain loop over [rows, cols] and matches HF layout.
#pragma once
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "core/dtype.h"

namespace lowbit {

enum class Device : uint8_t { CPU, CUDA };

using Shape = std::vector<int64_t>;
std::string shape_str(const Shape& s);  // "[2, 3]"
int64_t shape_numel(const Shape& s);

// Owns (or keeps alive) a block of memory.
struct Storage {
  void* data = nullptr;
  size_t nbytes = 0;
  Device device = Device::CPU;
  std::shared_ptr<void> owner;  // frees the memory, or pins an mmap
};

class Tensor {
 public:
  Tensor() = default;

  // Fresh zero-initialized CPU tensor.
  static Tensor zeros(const Shape& shape, DType dtype = DType::F32);
  static Tensor empty(const Shape& shape, DType dtype = DType::F32);
  // Wraps external memory; `owner` keeps it alive (e.g. an mmap'd file).
  static Tensor wrap(void* data, const Shape& shape, DType dtype, std::shared_ptr<void> owner);
  static Tensor from_vector(const std::vector<float>& v, const Shape& shape);

  bool defined() const { return storage_ != nullptr; }
  const Shape& shape() const { return shape_; }
  int64_t dim() const { return int64_t(shape_.size()); }
  int64_t size(int64_t i) const { return shape_.at(i < 0 ? shape_.size() + i : i); }
  int64_t numel() const { return shape_numel(shape_); }
  size_t nbytes() const { return size_t(numel()) * dtype_size(dtype_); }
  DType dtype() const { return dtype_; }
  Device device() const { return device_; }

  // Identity of the underlying storage (caches of derived data, e.g. device copies, key on it).
  std::weak_ptr<const void> storage_handle() const { return storage_; }

  void* raw() { return static_cast<char*>(storage_->data) + offset_; }
  const void* raw() const { return static_cast<const char*>(storage_->data) + offset_; }
  template <class T> T* data() { return static_cast<T*>(raw()); }
  template <class T> const T* data() const { return static_cast<const T*>(raw()); }
  // Typed f32 access with a dtype check (throws DTypeError).
  float* f32();
  const float* f32() const;

  // Same storage, new shape (numel must match).
  Tensor reshape(const Shape& shape) const;
  // Rows [begin, end) along dim 0; shares storage.
  Tensor rows(int64_t begin, int64_t end) const;
  // Deep copy converted to `dtype` (always contiguous, CPU).
  Tensor to(DType dtype) const;
  Tensor clone() const { return to(dtype_); }
  // f32 copy into a caller-provided buffer of numel() floats.
  void copy_to_f32(float* dst) const;
  std::vector<float> to_vector() const;

 private:
  std::shared_ptr<Storage> storage_;
  size_t offset_ = 0;  // bytes
  Shape shape_;
  DType dtype_ = DType::F32;
  Device device_ = Device::CPU;
};

}  // namespace lowbit
