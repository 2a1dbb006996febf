#include "quant/rtn_quant.h"

#include <algorithm>

namespace lowbit {

QuantizedWeight quantize_rtn(const float* W, int64_t out, int64_t in, const QuantSpec& s) {
  s.validate(in, "RTN weight");
  QuantizedWeight q;
  q.bits = s.bits;
  q.sym = s.sym;
  q.groupsize = s.groupsize;
  q.out = out;
  q.in = in;
  const int64_t g = s.groupsize > 0 ? s.groupsize : in;
  q.ngroups = (in + g - 1) / g;  // the last group may be shorter
  q.codes.resize(size_t(out * in));
  q.scales.resize(size_t(out * q.ngroups));
  q.zeros.resize(size_t(out * q.ngroups));
  q.g_idx.resize(size_t(in));
  for (int64_t c = 0; c < in; ++c) q.g_idx[size_t(c)] = int32_t(c / g);
  const int qmin = s.qmin(), qmax = s.qmax();
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < out; ++r)
    for (int64_t k = 0; k < q.ngroups; ++k) {
      const float* w = W + r * in + k * g;
      const int64_t len = std::min(g, in - k * g);
      QParams p = weight_params(w, len, s);
      q.scales[size_t(r * q.ngroups + k)] = p.scale;
      q.zeros[size_t(r * q.ngroups + k)] = p.zero;
      for (int64_t i = 0; i < len; ++i) q.codes[size_t(r * in + k * g + i)] = int32_t(quantize_code(w[i], p, qmin, qmax));
    }
  return q;
}

}  // namespace lowbit
