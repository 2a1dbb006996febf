// Checked weight loading (see weights.h).
#include "models/weights.h"

#include <cmath>

#include "core/error.h"

namespace lowbit {

namespace {

// NaN or Inf anywhere in a weight makes every later number meaningless: refuse it at load,
// naming the tensor (f16/bf16 checked on their bits: exponent all ones).
void check_finite(const WeightSource& st, const std::string& name, const Tensor& t) {
  const int64_t n = t.numel();
  int64_t bad = -1;
  switch (t.dtype()) {
    case DType::F32: {
      const float* p = t.data<float>();
      for (int64_t i = 0; i < n && bad < 0; ++i)
        if (!std::isfinite(p[i])) bad = i;
      break;
    }
    case DType::F16: {
      const uint16_t* p = t.data<uint16_t>();
      for (int64_t i = 0; i < n && bad < 0; ++i)
        if ((p[i] & 0x7c00) == 0x7c00) bad = i;
      break;
    }
    case DType::BF16: {
      const uint16_t* p = t.data<uint16_t>();
      for (int64_t i = 0; i < n && bad < 0; ++i)
        if ((p[i] & 0x7f80) == 0x7f80) bad = i;
      break;
    }
    default:
      break;
  }
  LOWBIT_CHECK(bad < 0, NumericError, "{}: tensor '{}' holds a NaN or Inf (element {})", st.source, name, bad);
}

}  // namespace

Tensor load_checked(const WeightSource& st, const std::string& name, const Shape& want) {
  Tensor t = st.get(name);
  LOWBIT_CHECK(t.defined(), ShapeError, "{}: missing tensor '{}'", st.source, name);
  LOWBIT_CHECK(t.shape() == want, ShapeError, "{}: tensor '{}' has shape {} but config.json implies {}",
               st.source, name, shape_str(t.shape()), shape_str(want));
  LOWBIT_CHECK(dtype_is_float(t.dtype()) && t.dtype() != DType::F64, DTypeError,
               "{}: tensor '{}' has unsupported dtype {} (expected f32, f16 or bf16)", st.source, name,
               dtype_name(t.dtype()));
  check_finite(st, name, t);
  return t;
}

Linear load_linear(const WeightSource& st, const std::string& name, int64_t out, int64_t in, bool bias) {
  Linear l;
  l.name = name;
  l.n_out = out;
  l.n_in = in;
  std::shared_ptr<const PackedWeight> p = st.get_packed ? st.get_packed(name, out, in) : nullptr;
  if (p) {
    LOWBIT_CHECK(!st.get(name + ".weight").defined(), FormatError,
                 "{}: linear '{}' is stored twice (as '{}.weight' and as packed codes)", st.source, name, name);
    LOWBIT_CHECK(p->out == out && p->in == in, ShapeError,
                 "{}: packed weight '{}' is [{}, {}] but config.json implies [{}, {}]", st.source, name, p->out, p->in,
                 out, in);
    l.qw = std::move(p);
  } else {
    l.W = load_checked(st, name + ".weight", {out, in});
  }
  if (bias) l.bias = load_checked(st, name + ".bias", {out}).to(DType::F32);
  return l;
}

}  // namespace lowbit
