// PackedWeight (nn/linear.h): packing, validation and dequantization, apart from the
// layer code so parsers of untrusted checkpoints (and their fuzz target) link only this.
#include <cmath>
#include <cstring>

#include "core/error.h"
#include "nn/linear.h"
#include "quant/qgrid.h"

namespace lowbit {

PackedWeight PackedWeight::pack(const QuantizedWeight& q) {
  PackedWeight p;
  p.bits = q.bits;
  p.sym = q.sym;
  p.groupsize = q.groupsize;
  p.out = q.out;
  p.in = q.in;
  p.ngroups = q.ngroups;
  const int32_t off = q.sym ? (1 << (q.bits - 1)) : 0;  // stored unsigned
  const int64_t rb = p.row_bytes();
  p.qweight = Tensor::zeros({q.out, rb}, DType::U8);
  uint8_t* pk = p.qweight.data<uint8_t>();
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < q.out; ++r) {
    uint8_t* row = pk + r * rb;
    for (int64_t c = 0; c < q.in; ++c) {
      const uint32_t u = uint32_t(q.codes[size_t(r * q.in + c)] + off);
      LOWBIT_ASSERT(u < (1u << q.bits));
      const int64_t bit = c * q.bits;
      const uint32_t v = u << (bit % 8);
      row[bit / 8] |= uint8_t(v & 0xff);
      if ((bit % 8) + q.bits > 8) row[bit / 8 + 1] |= uint8_t(v >> 8);
    }
  }
  p.scales = Tensor::from_vector(q.scales, {q.out, q.ngroups});
  p.qzeros = Tensor::empty({q.out, q.ngroups}, DType::I32);
  for (size_t i = 0; i < q.zeros.size(); ++i) p.qzeros.data<int32_t>()[i] = int32_t(q.zeros[i]) + off;
  p.g_idx = Tensor::empty({q.in}, DType::I32);
  std::memcpy(p.g_idx.raw(), q.g_idx.data(), q.g_idx.size() * 4);
  return p;
}

void PackedWeight::validate(const std::string& what) const {
  LOWBIT_CHECK(bits >= 2 && bits <= 8, FormatError, "{}: {} bits (supported: 2..8)", what, bits);
  LOWBIT_CHECK(qweight.defined() && scales.defined() && qzeros.defined() && g_idx.defined(), FormatError,
               "{}: needs qweight, scales, qzeros and g_idx", what);
  LOWBIT_CHECK(qweight.dtype() == DType::U8 && scales.dtype() == DType::F32 && qzeros.dtype() == DType::I32 &&
                   g_idx.dtype() == DType::I32,
               FormatError, "{}: qweight/scales/qzeros/g_idx must be U8/F32/I32/I32", what);
  const bool fits = qweight.shape() == Shape{out, row_bytes()} && g_idx.shape() == Shape{in} && ngroups >= 1 &&
                    scales.shape() == Shape{out, ngroups} && qzeros.shape() == scales.shape();
  LOWBIT_CHECK(fits,
               ShapeError, "{}: qweight {} / scales {} / qzeros {} / g_idx {} do not fit a [{}, {}] {}-bit weight",
               what, shape_str(qweight.shape()), shape_str(scales.shape()), shape_str(qzeros.shape()),
               shape_str(g_idx.shape()), out, in, bits);
  const int32_t* g = g_idx.data<int32_t>();
  for (int64_t c = 0; c < in; ++c)
    LOWBIT_CHECK(g[c] >= 0 && g[c] < ngroups, FormatError, "{}.g_idx[{}] = {} is outside [0, {})", what, c, g[c],
                 ngroups);
  const int32_t* z = qzeros.data<int32_t>();
  const float* s = scales.data<float>();
  for (int64_t i = 0; i < out * ngroups; ++i) {
    LOWBIT_CHECK(z[i] >= 0 && z[i] < (1 << bits), FormatError, "{}.qzeros entry {} = {} is outside [0, 2^{})", what,
                 i, z[i], bits);
    LOWBIT_CHECK(std::isfinite(s[i]), FormatError, "{}.scales entry {} is not finite", what, i);
  }
}

void PackedWeight::dequantize(float* W) const {
  const int64_t rb = row_bytes();
  const uint8_t* pk = qweight.data<uint8_t>();
  const float* s = scales.data<float>();
  const int32_t* z = qzeros.data<int32_t>();
  const int32_t* g = g_idx.data<int32_t>();
  const int32_t off = sym ? (1 << (bits - 1)) : 0;
  const uint32_t mask = (1u << bits) - 1;
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < out; ++r) {
    const uint8_t* row = pk + r * rb;
    float* w = W + r * in;
    for (int64_t c = 0; c < in; ++c) {
      const int64_t bit = c * bits, b = bit / 8;
      uint32_t v = row[b];
      if ((bit % 8) + bits > 8) v |= uint32_t(row[b + 1]) << 8;  // the code straddles two bytes
      const int32_t u = int32_t((v >> (bit % 8)) & mask);
      const int64_t k = r * ngroups + g[c];
      w[c] = dequantize_code(float(u - off), QParams{s[k], float(z[k] - off)});
    }
  }
}

}  // namespace lowbit
