// Integer quantization grids — the one place every method (RTN, GPTQ, GPTAQ,
// activations, KV cache, export) gets its numbers from.
//
// Conventions (QuaRot / GPTQ):
//   symmetric   q ∈ [-2^(b-1), 2^(b-1)-1],  scale = clip·absmax / (2^(b-1)-1),  zero = 0
//   asymmetric  q ∈ [0, 2^b-1],             scale = (max-min) / (2^b-1),        zero = round(-min/scale)
//               with min ≤ 0 ≤ max enforced (min = min(x, 0), max = max(x, 0)), min/max scaled by clip
//   x̂ = scale · (q - zero),  q = clamp(round(x/scale) + zero)
// A zero range falls back to scale 1 (so x̂ = x = 0 exactly).
#pragma once
#include <cmath>
#include <cstdint>
#include <vector>

namespace lowbit {

struct QuantSpec {
  int bits = 16;           // 2..8; 16 = no quantization
  bool sym = true;
  int64_t groupsize = -1;  // -1: one group per row (per output channel / per token)
  float clip_ratio = 1.0f;
  bool mse_clip = false;   // weight clipping search (--w_clip)
  // Throws ArgError for impossible bits/clip/groupsize. A groupsize that does not divide
  // `cols` is allowed for weights: the last group is shorter (GPTQ's convention).
  void validate(int64_t cols, const char* what = "tensor") const;
  int qmin() const { return sym ? -(1 << (bits - 1)) : 0; }
  int qmax() const { return sym ? (1 << (bits - 1)) - 1 : (1 << bits) - 1; }
};

struct QParams {
  float scale = 1.0f;
  float zero = 0.0f;
};

inline float quantize_code(float x, QParams p, int qmin, int qmax) {
  float q = std::nearbyint(x / p.scale) + p.zero;
  return std::fmin(std::fmax(q, float(qmin)), float(qmax));
}
inline float dequantize_code(float q, QParams p) { return p.scale * (q - p.zero); }

// Grid for the values x[0:n] (min/max rule above, times clip).
QParams find_params(const float* x, int64_t n, const QuantSpec& s, float clip = 1.0f);
// The --w_clip search: p = 1 - i/100 for i < 80, keep the grid minimizing Σ|q(x)-x|^2.4.
QParams find_params_mse(const float* x, int64_t n, const QuantSpec& s);
// The grid a weight row/group gets under `s` (mse search or plain, with s.clip_ratio).
QParams weight_params(const float* x, int64_t n, const QuantSpec& s);

// Dynamic per-token (per row, per group of columns) fake quantization of x[rows, cols] in place.
void fake_quant_act(float* x, int64_t rows, int64_t cols, int bits, int64_t groupsize, bool asym, float clip_ratio);

// A quantized [out, in] weight: codes on the grid, per-(row, group) scale/zero, group of each column.
struct QuantizedWeight {
  int bits = 16;
  bool sym = true;
  int64_t groupsize = -1;
  int64_t out = 0, in = 0, ngroups = 1;
  std::vector<int32_t> codes;   // [out, in], in [qmin, qmax]
  std::vector<float> scales;    // [out, ngroups]
  std::vector<float> zeros;     // [out, ngroups] (integers)
  std::vector<int32_t> g_idx;   // [in]
  std::vector<float> dequant() const;  // [out, in]
};

// Streaming moments of activations for the skew-based sym/asym choice.
// Default thresholds: t1 = 0.1 (|mean|/std: a mean one tenth of the spread wastes
// a noticeable part of a symmetric grid) and t2 = 0.5 (|skewness| above 0.5 is the
// usual "moderately skewed" line); both are flags.
struct ActStats {
  double n = 0, s1 = 0, s2 = 0, s3 = 0;
  void add(const float* x, int64_t count);
  double mean() const;
  double stddev() const;
  double skewness() const;
  bool choose_asym(double t1, double t2) const;  // |mean|/std > t1 or |skew| > t2
};

}  // namespace lowbit
