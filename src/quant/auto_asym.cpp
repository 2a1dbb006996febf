// The seed's skew statistics and decision (definitions in auto_asym.h).
#include "quant/auto_asym.h"

#include <cmath>

namespace lowbit {

SeedSkewStats seed_skew_stats(const float* x, int64_t n) {
  SeedSkewStats s;
  s.n = n;
  if (n <= 0) return s;
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) sum += double(x[i]);
  s.mean = sum / double(n);
  double m2 = 0, m3 = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double d = double(x[i]) - s.mean;
    m2 += d * d;
    m3 += d * d * d;
  }
  s.std = n > 1 ? std::sqrt(m2 / double(n - 1)) : 0.0;
  s.skew = (m3 / double(n)) / (s.std * s.std * s.std + 1e-6);
  return s;
}

bool seed_choose_asym(const SeedSkewStats& s, double t1, double t2) {
  return std::fabs(s.mean) / (s.std + 1e-6) > t1 || std::fabs(s.skew) > t2;
}

}  // namespace lowbit
