#include "quant/qgrid.h"

#include <algorithm>

#include "backend/cuda_api.h"
#include "core/error.h"

namespace lowbit {

void QuantSpec::validate(int64_t cols, const char* what) const {
  LOWBIT_CHECK((bits >= 2 && bits <= 8) || bits == 16, ArgError, "{}: {} bits not supported (2..8, or 16)", what,
               bits);
  LOWBIT_CHECK(clip_ratio > 0.0f && clip_ratio <= 1.0f, ArgError, "{}: clip ratio {} must be in (0, 1]", what,
               clip_ratio);
  // Weight groups follow GPTQ: group k holds columns [k·g, min((k+1)·g, cols)), so a
  // groupsize that does not divide `cols` leaves a shorter last group, and one of at
  // least `cols` is a single group (per channel).
  LOWBIT_CHECK(groupsize == -1 || groupsize > 0, ArgError, "{}: groupsize {} must be positive or -1", what,
               groupsize);
  (void)cols;
}

QParams find_params(const float* x, int64_t n, const QuantSpec& s, float clip) {
  float mn = 0.0f, mx = 0.0f;
  for (int64_t i = 0; i < n; ++i) {
    mn = std::min(mn, x[i]);
    mx = std::max(mx, x[i]);
  }
  QParams p;
  if (s.sym) {
    float amax = std::max(-mn, mx) * clip;
    p.scale = amax > 0 ? amax / float(s.qmax()) : 1.0f;
    p.zero = 0.0f;
  } else {
    mn *= clip;
    mx *= clip;
    if (mx - mn <= 0.0f) return p;  // all zeros
    p.scale = (mx - mn) / float(s.qmax());
    p.zero = std::nearbyint(-mn / p.scale);
  }
  return p;
}

QParams find_params_mse(const float* x, int64_t n, const QuantSpec& s) {
  QParams best = find_params(x, n, s, 1.0f);
  double best_err = INFINITY;
  const int qmin = s.qmin(), qmax = s.qmax();
  for (int i = 0; i < 80; ++i) {
    const float p = 1.0f - float(i) / 100.0f;
    QParams c = find_params(x, n, s, p);
    double err = 0;
    for (int64_t k = 0; k < n; ++k) {
      float d = dequantize_code(quantize_code(x[k], c, qmin, qmax), c) - x[k];
      err += std::pow(std::fabs(double(d)), 2.4);
    }
    if (err < best_err) {
      best_err = err;
      best = c;
    }
  }
  return best;
}

QParams weight_params(const float* x, int64_t n, const QuantSpec& s) {
  return s.mse_clip ? find_params_mse(x, n, s) : find_params(x, n, s, s.clip_ratio);
}

void fake_quant_act(float* x, int64_t rows, int64_t cols, int bits, int64_t groupsize, bool asym, float clip) {
  if (bits == 16) return;
  QuantSpec s;
  s.bits = bits;
  s.sym = !asym;
  s.clip_ratio = clip;
  s.validate(cols, "activation");  // bits 2..8, clip in (0, 1]
  const int64_t g = groupsize > 0 ? groupsize : cols;
  LOWBIT_CHECK(cols % g == 0, ShapeError, "activation groupsize {} does not divide the dimension {}", g, cols);
  if (default_device() == Device::CUDA && rows * cols >= (int64_t(1) << 16)) {  // same arithmetic on the GPU
    cuda::act_quant_host(x, rows, cols, bits, groupsize, asym, clip);
    return;
  }
  const int qmin = s.qmin(), qmax = s.qmax();
#pragma omp parallel for schedule(static) if (rows * cols > (1 << 15))
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c0 = 0; c0 < cols; c0 += g) {
      float* v = x + r * cols + c0;
      QParams p = find_params(v, g, s, clip);
      for (int64_t i = 0; i < g; ++i) v[i] = dequantize_code(quantize_code(v[i], p, qmin, qmax), p);
    }
}

std::vector<float> QuantizedWeight::dequant() const {
  std::vector<float> W(static_cast<size_t>(out * in));
  for (int64_t r = 0; r < out; ++r)
    for (int64_t c = 0; c < in; ++c) {
      const size_t gi = size_t(r * ngroups + g_idx[size_t(c)]);
      W[size_t(r * in + c)] = dequantize_code(float(codes[size_t(r * in + c)]), QParams{scales[gi], zeros[gi]});
    }
  return W;
}

void ActStats::add(const float* x, int64_t count) {
  double a = 0, b = 0, c = 0;
  for (int64_t i = 0; i < count; ++i) {
    const double v = x[i];
    a += v;
    b += v * v;
    c += v * v * v;
  }
  n += double(count);
  s1 += a;
  s2 += b;
  s3 += c;
}
double ActStats::mean() const { return n > 0 ? s1 / n : 0.0; }
double ActStats::stddev() const {
  if (n <= 0) return 0.0;
  const double m = mean();
  return std::sqrt(std::max(0.0, s2 / n - m * m));
}
double ActStats::skewness() const {
  const double sd = stddev();
  if (sd <= 0) return 0.0;
  const double m = mean();
  const double m3 = s3 / n - 3 * m * (s2 / n) + 2 * m * m * m;  // E[(x-μ)^3]
  return m3 / (sd * sd * sd);
}
bool ActStats::choose_asym(double t1, double t2) const {
  const double sd = stddev();
  if (sd <= 0) return false;
  return std::fabs(mean()) / sd > t1 || std::fabs(skewness()) > t2;
}

}  // namespace lowbit
