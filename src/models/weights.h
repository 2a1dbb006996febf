// Loading checked weights from any tensor source (a safetensors store, a checkpoint with
// packed codes, a name-mapping view of another model's file). Shared by every model family.
//
// Every tensor is checked against the shape the config implies (ShapeError), its dtype
// (f32/f16/bf16, DTypeError) and for NaN/Inf (NumericError), each error naming the source
// and the tensor.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "core/tensor.h"
#include "nn/linear.h"

namespace lowbit {

// `get(name)` returns an undefined Tensor when absent.
using TensorSource = std::function<Tensor(const std::string& name)>;
// `get_packed(linear, out, in)` returns a linear's packed codes (validated against [out, in]),
// or null when that linear is not quantized. May be empty (no packed weights anywhere).
using PackedSource =
    std::function<std::shared_ptr<const PackedWeight>(const std::string& linear, int64_t out, int64_t in)>;

struct WeightSource {
  const TensorSource& get;
  const PackedSource& get_packed;
  const std::string& source;  // names the file or directory in errors
};

// The tensor `name` with shape `want` (kept in its file dtype, zero copy).
Tensor load_checked(const WeightSource& src, const std::string& name, const Shape& want);
// The linear `name` ("<name>.weight" [out, in] or packed codes; "<name>.bias" [out] as f32 when `bias`).
Linear load_linear(const WeightSource& src, const std::string& name, int64_t out, int64_t in, bool bias);

}  // namespace lowbit
