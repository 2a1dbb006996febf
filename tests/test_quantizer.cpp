// Integer grids (qgrid) and round-to-nearest weight quantization (rtn_quant):
// grids checked against numbers worked out by hand from the QuaRot/GPTQ
// formulas, the --w_clip search against a brute force written here, the
// per-token activation fake quant, the skew-based auto-asym rule, code packing
// and the errors bad inputs must raise.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "core/error.h"
#include "quant/checkpoint.h"
#include "quant/checkpoint_meta.h"
#include "quant/config.h"
#include "quant/qgrid.h"
#include "quant/rtn_quant.h"
#include "testing.h"

using namespace lowbit;

namespace {

// ---- independent f64 grid (the formulas of qgrid.h, written out again) --------
struct RefGrid {
  double scale = 1, zero = 0;
  int qmin = 0, qmax = 0;
};
// sym:  scale = clip·absmax/(2^(b-1)-1), q ∈ [-2^(b-1), 2^(b-1)-1]
// asym: min = clip·min(x,0), max = clip·max(x,0), scale = (max-min)/(2^b-1),
//       zero = round(-min/scale), q ∈ [0, 2^b-1]
RefGrid ref_grid(const float* x, int64_t n, int bits, bool sym, double clip) {
  double mn = 0, mx = 0;
  for (int64_t i = 0; i < n; ++i) {
    mn = std::min(mn, double(x[i]));
    mx = std::max(mx, double(x[i]));
  }
  RefGrid g;
  if (sym) {
    g.qmin = -(1 << (bits - 1));
    g.qmax = (1 << (bits - 1)) - 1;
    const double amax = std::max(-mn, mx) * clip;
    g.scale = amax > 0 ? amax / g.qmax : 1.0;
  } else {
    g.qmin = 0;
    g.qmax = (1 << bits) - 1;
    mn *= clip;
    mx *= clip;
    if (mx - mn > 0) {
      g.scale = (mx - mn) / g.qmax;
      g.zero = std::nearbyint(-mn / g.scale);
    }
  }
  return g;
}
double ref_code(double x, const RefGrid& g) {
  return std::clamp(std::nearbyint(x / g.scale) + g.zero, double(g.qmin), double(g.qmax));
}
double ref_fq(double x, const RefGrid& g) { return g.scale * (ref_code(x, g) - g.zero); }
// Distance of x/scale from a rounding tie (x.5): f32 and f64 may round such values differently.
bool near_tie(double x, const RefGrid& g) {
  const double v = x / g.scale;
  return std::fabs(std::fabs(v - std::floor(v)) - 0.5) < 1e-4;
}

// Plain brute force of the --w_clip search: p = 1 - i/100 (i = 0..79), error Σ|q(x)-x|^2.4,
// first minimum wins. Returns the best grid and its error.
std::pair<RefGrid, double> brute_force_clip(const float* x, int64_t n, int bits, bool sym) {
  RefGrid best;
  double best_err = INFINITY;
  for (int i = 0; i < 80; ++i) {
    const double p = 1.0 - i / 100.0;
    RefGrid g = ref_grid(x, n, bits, sym, p);
    double err = 0;
    for (int64_t k = 0; k < n; ++k) err += std::pow(std::fabs(ref_fq(x[k], g) - x[k]), 2.4);
    if (err < best_err) {
      best_err = err;
      best = g;
    }
  }
  return {best, best_err};
}
double clip_error(const float* x, int64_t n, const RefGrid& g) {
  double err = 0;
  for (int64_t k = 0; k < n; ++k) err += std::pow(std::fabs(ref_fq(x[k], g) - x[k]), 2.4);
  return err;
}

std::vector<float> randn(size_t n, uint64_t seed, float sd = 1.0f) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> d(0.0f, sd);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

QuantSpec spec(int bits, bool sym, int64_t g = -1) {
  QuantSpec s;
  s.bits = bits;
  s.sym = sym;
  s.groupsize = g;
  return s;
}

}  // namespace

// ---- grid ranges -----------------------------------------------------------------

TEST(QGrid, RangesFollowQuaRotConvention) {
  // sym [-2^(b-1), 2^(b-1)-1], asym [0, 2^b-1], written out for every width.
  const int want[9][4] = {{}, {}, {-2, 1, 0, 3},      {-4, 3, 0, 7},      {-8, 7, 0, 15},
                          {-16, 15, 0, 31},           {-32, 31, 0, 63},   {-64, 63, 0, 127}, {-128, 127, 0, 255}};
  for (int b = 2; b <= 8; ++b) {
    EXPECT_EQ(spec(b, true).qmin(), want[b][0]) << b;
    EXPECT_EQ(spec(b, true).qmax(), want[b][1]) << b;
    EXPECT_EQ(spec(b, false).qmin(), want[b][2]) << b;
    EXPECT_EQ(spec(b, false).qmax(), want[b][3]) << b;
  }
}

// ---- find_params / fake quant by hand ------------------------------------------------

TEST(QGrid, SymmetricByHand) {
  // 4 bits: absmax 1.75 → scale = 1.75/7 = 0.25 (exact in binary), zero 0.
  const std::vector<float> x = {0.3f, -1.75f, 0.9f, 1.1f, -0.6f, 0.0f};
  QParams p = find_params(x.data(), int64_t(x.size()), spec(4, true));
  EXPECT_EQ(p.scale, 0.25f);
  EXPECT_EQ(p.zero, 0.0f);
  // x/scale = 1.2, -7, 3.6, 4.4, -2.4, 0 → codes 1, -7, 4, 4, -2, 0
  const float codes[] = {1, -7, 4, 4, -2, 0};
  const float deq[] = {0.25f, -1.75f, 1.0f, 1.0f, -0.5f, 0.0f};
  for (size_t i = 0; i < x.size(); ++i) {
    float q = quantize_code(x[i], p, -8, 7);
    EXPECT_EQ(q, codes[i]) << i;
    EXPECT_EQ(dequantize_code(q, p), deq[i]) << i;
  }
  // Ties round half to even (torch.round / nearbyint): 0.625/0.25 = 2.5 → 2, 0.875/0.25 = 3.5 → 4,
  // -0.625/0.25 = -2.5 → -2.
  EXPECT_EQ(quantize_code(0.625f, p, -8, 7), 2.0f);
  EXPECT_EQ(quantize_code(0.875f, p, -8, 7), 4.0f);
  EXPECT_EQ(quantize_code(-0.625f, p, -8, 7), -2.0f);
  // clip 0.5: absmax 0.875 → scale 0.125; -1.75 → -14 clamps to -8 (-1.0), 1.1 → 8.8 → 9 clamps to 7 (0.875).
  QParams c = find_params(x.data(), int64_t(x.size()), spec(4, true), 0.5f);
  EXPECT_EQ(c.scale, 0.125f);
  EXPECT_EQ(dequantize_code(quantize_code(-1.75f, c, -8, 7), c), -1.0f);
  EXPECT_EQ(dequantize_code(quantize_code(1.1f, c, -8, 7), c), 0.875f);
  // 2 bits, positive absmax: {0.6, -0.2} → scale 0.6/1, codes round(1)=1, round(-1/3)=0.
  const std::vector<float> y = {0.6f, -0.2f};
  QParams p2 = find_params(y.data(), 2, spec(2, true));
  EXPECT_FLOAT_EQ(p2.scale, 0.6f);
  EXPECT_EQ(quantize_code(0.6f, p2, -2, 1), 1.0f);
  EXPECT_EQ(quantize_code(-0.2f, p2, -2, 1), 0.0f);
  // 8 bits: absmax 12.7 → scale 0.1; 5.04/0.1 = 50.4 → 50.
  const std::vector<float> z = {-12.7f, 5.04f};
  QParams p8 = find_params(z.data(), 2, spec(8, true));
  EXPECT_FLOAT_EQ(p8.scale, 0.1f);
  EXPECT_EQ(quantize_code(5.04f, p8, -128, 127), 50.0f);
  EXPECT_EQ(quantize_code(-12.7f, p8, -128, 127), -127.0f);
}

TEST(QGrid, AsymmetricByHand) {
  // 3 bits: min -0.3, max 1.2 → scale = 1.5/7, zero = round(0.3/(1.5/7)) = round(1.4) = 1.
  const std::vector<float> x = {-0.3f, 1.2f, 0.45f, 0.9f};
  QParams p = find_params(x.data(), 4, spec(3, false));
  const double scale = 1.5 / 7;
  EXPECT_NEAR(p.scale, scale, 1e-7);  // f32 rounding of 1.5/7
  EXPECT_EQ(p.zero, 1.0f);
  // x/scale = -1.4, 5.6, 2.1, 4.2 → round −1, 6, 2, 4 → +zero: 0, 7, 3, 5
  const int codes[] = {0, 7, 3, 5};
  for (int i = 0; i < 4; ++i) {
    float q = quantize_code(x[size_t(i)], p, 0, 7);
    EXPECT_EQ(q, float(codes[i])) << i;
    EXPECT_NEAR(dequantize_code(q, p), scale * (codes[i] - 1), 1e-6) << i;
  }
  // All positive: min is taken as 0 → zero 0. 2 bits, {0.4, 2.1, 1.2}: scale 2.1/3 = 0.7,
  // 0.4/0.7 = 0.57 → 1, 3, 1.71 → 2.
  const std::vector<float> y = {0.4f, 2.1f, 1.2f};
  QParams py = find_params(y.data(), 3, spec(2, false));
  EXPECT_NEAR(py.scale, 0.7, 1e-7);
  EXPECT_EQ(py.zero, 0.0f);
  EXPECT_EQ(quantize_code(0.4f, py, 0, 3), 1.0f);
  EXPECT_EQ(quantize_code(2.1f, py, 0, 3), 3.0f);
  EXPECT_EQ(quantize_code(1.2f, py, 0, 3), 2.0f);
  // All negative: max is taken as 0. 2 bits, {-1, -3}: scale 3/3 = 1, zero round(3) = 3,
  // codes -1+3 = 2, -3+3 = 0, dequant exact.
  const std::vector<float> z = {-1.0f, -3.0f};
  QParams pz = find_params(z.data(), 2, spec(2, false));
  EXPECT_EQ(pz.scale, 1.0f);
  EXPECT_EQ(pz.zero, 3.0f);
  EXPECT_EQ(quantize_code(-1.0f, pz, 0, 3), 2.0f);
  EXPECT_EQ(quantize_code(-3.0f, pz, 0, 3), 0.0f);
  EXPECT_EQ(dequantize_code(2.0f, pz), -1.0f);
  // clip 0.5 on {-1, 3} at 2 bits: min -0.5, max 1.5 → scale 2/3, zero round(0.75) = 1.
  const std::vector<float> w = {-1.0f, 3.0f};
  QParams pw = find_params(w.data(), 2, spec(2, false), 0.5f);
  EXPECT_NEAR(pw.scale, 2.0 / 3, 1e-7);
  EXPECT_EQ(pw.zero, 1.0f);
  EXPECT_EQ(quantize_code(3.0f, pw, 0, 3), 3.0f);   // 4.5 → 4 (+1 = 5) clamps to 3
  EXPECT_EQ(quantize_code(-1.0f, pw, 0, 3), 0.0f);  // ≈ -1.5 → -1 or -2, +1 → 0 or -1, clamped to 0
}

TEST(QGrid, ZeroRangeFallsBackToScaleOne) {
  const std::vector<float> z(5, 0.0f);
  for (bool sym : {true, false}) {
    QParams p = find_params(z.data(), 5, spec(4, sym));
    EXPECT_EQ(p.scale, 1.0f);
    EXPECT_EQ(p.zero, 0.0f);
    EXPECT_EQ(dequantize_code(quantize_code(0.0f, p, spec(4, sym).qmin(), spec(4, sym).qmax()), p), 0.0f);
  }
}

// Every width, both grids, random data against the f64 formulas. Tolerance: scale to 1e-6
// relative (f32 arithmetic, ~6e-8 per op); codes exactly, except values within 1e-4 of a
// rounding tie where f32 and f64 may legitimately disagree (none expected in practice).
TEST(QGrid, FindParamsMatchesFormulasAllWidths) {
  auto x = randn(257, 11, 0.7f);
  x[3] = 2.5f;  // an outlier on one side
  for (int b = 2; b <= 8; ++b)
    for (bool sym : {true, false})
      for (float clip : {1.0f, 0.9f}) {
        QuantSpec s = spec(b, sym);
        QParams p = find_params(x.data(), int64_t(x.size()), s, clip);
        RefGrid g = ref_grid(x.data(), int64_t(x.size()), b, sym, clip);
        EXPECT_NEAR(p.scale, g.scale, 1e-6 * g.scale) << b << sym << clip;
        EXPECT_EQ(p.zero, float(g.zero)) << b << sym << clip;
        int skipped = 0;
        for (float v : x) {
          if (near_tie(v, g)) {
            ++skipped;
            continue;
          }
          EXPECT_EQ(quantize_code(v, p, s.qmin(), s.qmax()), float(ref_code(v, g))) << b << sym << clip << " x=" << v;
        }
        EXPECT_LE(skipped, 1);
      }
}

// ---- RTN: per tensor row / per channel / per group --------------------------------------

TEST(Rtn, PerChannelAndPerGroupByHand) {
  // 2 x 8, 4-bit symmetric.
  const std::vector<float> W = {0.3f, -1.75f, 0.9f, 1.1f,   // row 0, group 0: absmax 1.75 → scale 0.25
                                0.1f, 0.2f, -0.35f, 0.05f,  //        group 1: absmax 0.35 → scale 0.05
                                7.0f, 1.0f, -2.0f, 3.5f,    // row 1, group 0: absmax 7 → scale 1
                                0.0f, 0.0f, 0.0f, 0.0f};    //        group 1: all zero → scale 1
  // Per tensor (one grid for all 16 values): absmax 7 → scale 1, 1.75 → 2, 0.3 → 0.
  QParams pt = find_params(W.data(), int64_t(W.size()), spec(4, true));
  EXPECT_EQ(pt.scale, 1.0f);
  EXPECT_EQ(quantize_code(-1.75f, pt, -8, 7), -2.0f);
  EXPECT_EQ(quantize_code(0.3f, pt, -8, 7), 0.0f);
  // Per channel: row 0 absmax 1.75 → scale 0.25, row 1 absmax 7 → scale 1.
  QuantizedWeight pc = quantize_rtn(W.data(), 2, 8, spec(4, true));
  ASSERT_EQ(pc.ngroups, 1);
  EXPECT_EQ(pc.scales, (std::vector<float>{0.25f, 1.0f}));
  EXPECT_EQ(pc.zeros, (std::vector<float>{0.0f, 0.0f}));
  // row 0: 1.2, -7, 3.6, 4.4, 0.4, 0.8, -1.4, 0.2 → 1, -7, 4, 4, 0, 1, -1, 0
  // row 1: 7, 1, -2, 3.5 (tie → 4), 0... → 7, 1, -2, 4, 0, 0, 0, 0
  EXPECT_EQ(pc.codes, (std::vector<int32_t>{1, -7, 4, 4, 0, 1, -1, 0, 7, 1, -2, 4, 0, 0, 0, 0}));
  EXPECT_EQ(pc.g_idx, (std::vector<int32_t>(8, 0)));

  QuantizedWeight pg = quantize_rtn(W.data(), 2, 8, spec(4, true, 4));
  ASSERT_EQ(pg.ngroups, 2);
  ASSERT_EQ(pg.scales.size(), 4u);
  EXPECT_EQ(pg.scales[0], 0.25f);
  EXPECT_FLOAT_EQ(pg.scales[1], 0.05f);
  EXPECT_EQ(pg.scales[2], 1.0f);
  EXPECT_EQ(pg.scales[3], 1.0f);
  // group 1 of row 0: 0.1/0.05 = 2, 4, -7, 1
  EXPECT_EQ(pg.codes, (std::vector<int32_t>{1, -7, 4, 4, 2, 4, -7, 1, 7, 1, -2, 4, 0, 0, 0, 0}));
  EXPECT_EQ(pg.g_idx, (std::vector<int32_t>{0, 0, 0, 0, 1, 1, 1, 1}));
  std::vector<float> dq = pg.dequant();
  const float want_dq[] = {0.25f, -1.75f, 1.0f, 1.0f, 0.1f, 0.2f, -0.35f, 0.05f,
                           7.0f,  1.0f,   -2.0f, 4.0f, 0.0f, 0.0f, 0.0f, 0.0f};
  for (size_t i = 0; i < dq.size(); ++i) EXPECT_NEAR(dq[i], want_dq[i], 1e-6) << i;

  // Asymmetric per group, 2 bits: row 0 group 0 min -1.75, max 1.1 → scale 2.85/3 = 0.95,
  // zero round(1.75/0.95) = round(1.842) = 2; codes: 0.3/0.95 = 0.32 → 0+2 = 2, -1.84 → -2+2 = 0,
  // 0.95 → 1+2 = 3, 1.16 → 1+2 = 3.
  QuantizedWeight pa = quantize_rtn(W.data(), 2, 8, spec(2, false, 4));
  EXPECT_NEAR(pa.scales[0], 0.95, 1e-6);
  EXPECT_EQ(pa.zeros[0], 2.0f);
  EXPECT_EQ(std::vector<int32_t>(pa.codes.begin(), pa.codes.begin() + 4), (std::vector<int32_t>{2, 0, 3, 3}));
}

// GPTQ's convention for a groupsize that does not divide the row: group k holds columns
// [k·g, min((k+1)·g, in)), the last one shorter and fitted on its own values only; a
// groupsize of at least `in` is one group (the per-channel grid).
TEST(Rtn, ShorterLastGroup) {
  // 1 x 6, groupsize 4, 4-bit sym: group 0 {0.3, -1.75, 0.9, 1.1} → scale 0.25,
  // group 1 {0.2, -0.35} (2 columns) → scale 0.05: codes 4, -7.
  const std::vector<float> W = {0.3f, -1.75f, 0.9f, 1.1f, 0.2f, -0.35f};
  QuantizedWeight q = quantize_rtn(W.data(), 1, 6, spec(4, true, 4));
  ASSERT_EQ(q.ngroups, 2);
  EXPECT_EQ(q.g_idx, (std::vector<int32_t>{0, 0, 0, 0, 1, 1}));
  EXPECT_EQ(q.scales[0], 0.25f);
  EXPECT_FLOAT_EQ(q.scales[1], 0.05f);
  EXPECT_EQ(q.codes, (std::vector<int32_t>{1, -7, 4, 4, 4, -7}));
  // groupsize 100 > 6: one group, identical to per channel.
  QuantizedWeight big = quantize_rtn(W.data(), 1, 6, spec(4, true, 100));
  QuantizedWeight pc = quantize_rtn(W.data(), 1, 6, spec(4, true));
  EXPECT_EQ(big.ngroups, 1);
  EXPECT_EQ(big.codes, pc.codes);
  EXPECT_EQ(big.scales, pc.scales);
  EXPECT_EQ(big.g_idx, (std::vector<int32_t>(6, 0)));
}

// Random matrices at every width, per channel and per group, against the f64 formulas.
// Also checks the dequantization bound |w - ŵ| ≤ scale/2 (no value leaves the grid
// range by more than half a step: absmax maps to qmax, and for asym the rounded zero
// moves each end by at most half a step). Slack on the bound: 1e-4·scale + 1e-6 for the
// f32 arithmetic (scale·(q - zero) and x/scale each round to ~6e-8 relative).
TEST(Rtn, MatchesFormulasAndErrorBound) {
  const int64_t out = 6, in = 48;
  auto W = randn(size_t(out * in), 5);
  for (int b = 2; b <= 8; ++b)
    for (bool sym : {true, false})
      for (int64_t g : {int64_t(-1), int64_t(8), int64_t(16), int64_t(20)}) {  // 20: groups of 20, 20, 8
        QuantizedWeight q = quantize_rtn(W.data(), out, in, spec(b, sym, g));
        const int64_t gs = g > 0 ? g : in;
        ASSERT_EQ(q.ngroups, (in + gs - 1) / gs);
        std::vector<float> dq = q.dequant();
        for (int64_t r = 0; r < out; ++r)
          for (int64_t k = 0; k < q.ngroups; ++k) {
            const float* w = W.data() + r * in + k * gs;
            const int64_t len = std::min(gs, in - k * gs);
            RefGrid rg = ref_grid(w, len, b, sym, 1.0);
            EXPECT_NEAR(q.scales[size_t(r * q.ngroups + k)], rg.scale, 1e-6 * rg.scale);
            EXPECT_EQ(q.zeros[size_t(r * q.ngroups + k)], float(rg.zero));
            for (int64_t i = 0; i < len; ++i) {
              const int64_t c = k * gs + i;
              EXPECT_EQ(q.g_idx[size_t(c)], k);
              const int32_t code = q.codes[size_t(r * in + c)];
              EXPECT_GE(code, spec(b, sym).qmin());
              EXPECT_LE(code, spec(b, sym).qmax());
              if (!near_tie(w[i], rg)) EXPECT_EQ(code, int32_t(ref_code(w[i], rg))) << b << sym << g;
              EXPECT_LE(std::fabs(dq[size_t(r * in + c)] - w[i]), 0.5 * rg.scale * (1 + 1e-4) + 1e-6) << b << sym << g;
            }
          }
      }
}

// ---- the --w_clip search -------------------------------------------------------------

// find_params_mse against the brute force above. The chosen grid must be one of the 80
// candidates (scale·qmax/absmax = 1 - i/100 for an integer i < 80) and its error, measured
// in f64, must equal the brute-force minimum to 1e-5 relative (the library sums f32
// dequantization errors, noisy to ~1e-6 relative, so it may pick a different candidate only
// when two candidates' errors are that close; a wrong exponent, range or candidate set moves
// the error by percents). We also require the very same candidate in >= 90% of rows.
TEST(Rtn, ClipSearchMatchesBruteForce) {
  const int64_t rows = 40, n = 64;
  auto X = randn(size_t(rows * n), 21);
  std::mt19937_64 rng(3);
  for (int64_t r = 0; r < rows; ++r) X[size_t(r * n + int64_t(rng() % n))] *= 6.0f;  // one outlier per row
  for (int b : {2, 3, 4, 8})
    for (bool sym : {true, false}) {
      int same = 0;
      for (int64_t r = 0; r < rows; ++r) {
        const float* x = X.data() + r * n;
        QuantSpec s = spec(b, sym);
        s.mse_clip = true;
        QParams p = weight_params(x, n, s);
        QParams pm = find_params_mse(x, n, s);
        EXPECT_EQ(p.scale, pm.scale);
        auto [best, best_err] = brute_force_clip(x, n, b, sym);
        RefGrid got;
        got.scale = p.scale;
        got.zero = p.zero;
        got.qmin = s.qmin();
        got.qmax = s.qmax();
        const double err = clip_error(x, n, got);
        EXPECT_NEAR(err, best_err, 1e-5 * best_err + 1e-30) << "bits " << b << " sym " << sym << " row " << r;
        if (std::fabs(p.scale - best.scale) <= 1e-6 * best.scale && p.zero == float(best.zero)) ++same;
        if (sym) {  // scale·qmax/absmax must be one of the candidate ratios 1 - i/100
          double amax = 0;
          for (int64_t k = 0; k < n; ++k) amax = std::max(amax, std::fabs(double(x[k])));
          const double ratio = p.scale * s.qmax() / amax;
          const double i = (1.0 - ratio) * 100.0;
          EXPECT_NEAR(i, std::round(i), 1e-4);
          EXPECT_GE(std::round(i), 0.0);
          EXPECT_LT(std::round(i), 80.0);
        }
      }
      EXPECT_GE(same, rows * 9 / 10) << "bits " << b << " sym " << sym;
    }
}

// Clipping must help where it should: 63 N(0,1) values and one outlier at 10 get a clipped
// grid at 3 bits (full range: step 3.3, nearly every value rounds to 0, Σ|err|^2.4 ≈ 75; at
// p = 0.6 the outlier costs 4^2.4 ≈ 28 and the rest ≈ 19), while a row of ±1 keeps the full
// range (it is exact there; any clipping only adds error).
TEST(Rtn, ClipSearchClipsOutliersOnly) {
  std::vector<float> x = randn(64, 99);
  x[10] = 10.0f;
  QuantSpec s = spec(3, true);
  s.mse_clip = true;
  QParams p = weight_params(x.data(), 64, s);
  EXPECT_LT(p.scale, 10.0f / 3.0f * 0.9f);
  std::vector<float> flat(64);
  for (size_t i = 0; i < flat.size(); ++i) flat[i] = (i % 2) ? 1.0f : -1.0f;
  QParams pf = weight_params(flat.data(), 64, s);
  EXPECT_FLOAT_EQ(pf.scale, 1.0f / 3.0f);
  // quantize_rtn uses the same search per (row, group).
  std::vector<float> W = x;
  W.insert(W.end(), flat.begin(), flat.end());
  s.groupsize = 32;
  QuantizedWeight q = quantize_rtn(W.data(), 2, 64, s);
  for (int64_t r = 0; r < 2; ++r)
    for (int64_t k = 0; k < 2; ++k) {
      auto [best, e] = brute_force_clip(W.data() + r * 64 + k * 32, 32, 3, true);
      EXPECT_NEAR(q.scales[size_t(r * 2 + k)], best.scale, 1e-6 * best.scale) << r << k;
    }
  // clip_ratio without the search scales absmax directly.
  QuantSpec c = spec(4, true);
  c.clip_ratio = 0.5f;
  QParams pc = weight_params(flat.data(), 64, c);
  EXPECT_FLOAT_EQ(pc.scale, 0.5f / 7.0f);
}

// ---- activations -----------------------------------------------------------------------

TEST(ActQuant, PerTokenByHand) {
  // 2 tokens x 4, 4-bit symmetric per token: row 0 absmax 1.75 → scale 0.25, row 1 absmax 3.5 → 0.5.
  std::vector<float> x = {0.3f, -1.75f, 0.9f, 1.1f, 3.5f, 0.2f, -0.8f, 1.3f};
  fake_quant_act(x.data(), 2, 4, 4, -1, false, 1.0f);
  // row 1: 7, 0.4 → 0, -1.6 → -2, 2.6 → 3
  const std::vector<float> want = {0.25f, -1.75f, 1.0f, 1.0f, 3.5f, 0.0f, -1.0f, 1.5f};
  EXPECT_EQ(x, want);

  // groups of 2: (0.3, -1.75) scale 0.25; (0.9, 1.1) scale 1.1/7; (3.5, 0.2) scale 0.5; (-0.8, 1.3) scale 1.3/7.
  std::vector<float> y = {0.3f, -1.75f, 0.9f, 1.1f, 3.5f, 0.2f, -0.8f, 1.3f};
  fake_quant_act(y.data(), 2, 4, 4, 2, false, 1.0f);
  const double s1 = 1.1 / 7, s3 = 1.3 / 7;
  EXPECT_EQ(y[0], 0.25f);
  EXPECT_EQ(y[1], -1.75f);
  EXPECT_NEAR(y[2], s1 * 6, 1e-6);  // 0.9/s1 = 5.73 → 6
  EXPECT_NEAR(y[3], 1.1, 1e-6);
  EXPECT_EQ(y[4], 3.5f);
  EXPECT_EQ(y[5], 0.0f);            // 0.2/0.5 = 0.4 → 0
  EXPECT_NEAR(y[6], -s3 * 4, 1e-6);  // -0.8/s3 = -4.31 → -4
  EXPECT_NEAR(y[7], 1.3, 1e-6);

  // clip ratio 0.5 on row 0: absmax 0.875 → scale 0.125: 0.3 → 2 (0.25), -1.75 → -14 → -8 (-1.0),
  // 0.9 → 7.2 → 7 (0.875), 1.1 → 8.8 → 9 → 7 (0.875).
  std::vector<float> z = {0.3f, -1.75f, 0.9f, 1.1f};
  fake_quant_act(z.data(), 1, 4, 4, -1, false, 0.5f);
  EXPECT_EQ(z, (std::vector<float>{0.25f, -1.0f, 0.875f, 0.875f}));

  // asym 2 bits, row {-0.3, 1.2, 0.45, 0.9}: scale 1.5/3 = 0.5, zero round(0.6) = 1 → codes
  // 0 (-0.6 → -1, +1), 3 (2.4 → 2, +1), 2 (0.9 → 1, +1), 3 (1.8 → 2, +1) → dequant -0.5, 1.0, 0.5, 1.0
  // (to 1e-6: 1.2f + 0.3f is not exactly 1.5 in f32).
  std::vector<float> a = {-0.3f, 1.2f, 0.45f, 0.9f};
  fake_quant_act(a.data(), 1, 4, 2, -1, true, 1.0f);
  const float want_a[] = {-0.5f, 1.0f, 0.5f, 1.0f};
  for (int i = 0; i < 4; ++i) EXPECT_NEAR(a[size_t(i)], want_a[i], 1e-6) << i;

  // 16 bits: untouched.
  std::vector<float> u = {0.123f, -4.56f};
  fake_quant_act(u.data(), 1, 2, 16, -1, false, 1.0f);
  EXPECT_EQ(u, (std::vector<float>{0.123f, -4.56f}));
}

// Random tokens against the f64 formulas: every width, sym/asym, per token and per group,
// clip 1 and 0.9. Tolerance 1e-6·max(|x̂|, scale) per element (f32 scale and product round
// to ~1.2e-7 relative);
// values within 1e-4 of a tie are skipped. Large enough (rows·cols > 2^15) to take the
// OpenMP path too.
TEST(ActQuant, MatchesFormulas) {
  const int64_t rows = 300, cols = 128;
  auto x0 = randn(size_t(rows * cols), 9);
  for (int64_t r = 0; r < rows; ++r) x0[size_t(r * cols + (r * 7) % cols)] *= 5.0f;  // outliers
  for (int b : {2, 3, 4, 6, 8})
    for (bool asym : {false, true})
      for (int64_t g : {int64_t(-1), int64_t(32)})
        for (float clip : {1.0f, 0.9f}) {
          std::vector<float> x = x0;
          fake_quant_act(x.data(), rows, cols, b, g, asym, clip);
          const int64_t gs = g > 0 ? g : cols;
          int64_t bad = 0;
          for (int64_t r = 0; r < rows; ++r)
            for (int64_t c0 = 0; c0 < cols; c0 += gs) {
              const float* v = x0.data() + r * cols + c0;
              RefGrid rg = ref_grid(v, gs, b, !asym, clip);
              for (int64_t i = 0; i < gs; ++i) {
                if (near_tie(v[i], rg)) continue;
                const double want = ref_fq(v[i], rg);
                if (std::fabs(x[size_t(r * cols + c0 + i)] - want) > 1e-6 * std::max(std::fabs(want), rg.scale)) ++bad;
              }
            }
          EXPECT_EQ(bad, 0) << "bits " << b << " asym " << asym << " g " << g << " clip " << clip;
        }
}

// ---- auto-asym (ActStats) --------------------------------------------------------------

TEST(ActStats, MomentsAndDecisionByHand) {
  // {-3, -1, 1, 3}: mean 0, std sqrt(5), skew 0 → symmetric.
  ActStats s;
  const std::vector<float> sym = {-3, -1, 1, 3};
  for (int k = 0; k < 10; ++k) s.add(sym.data(), 4);
  EXPECT_NEAR(s.mean(), 0.0, 1e-12);
  EXPECT_NEAR(s.stddev(), std::sqrt(5.0), 1e-12);
  EXPECT_NEAR(s.skewness(), 0.0, 1e-12);
  EXPECT_FALSE(s.choose_asym(0.1, 0.5));

  // Shifted by +1: mean 1, |mean|/std = 1/sqrt(5) = 0.447 > 0.1, skew still 0 → asymmetric.
  ActStats sh;
  const std::vector<float> shifted = {-2, 0, 2, 4};
  sh.add(shifted.data(), 4);
  EXPECT_NEAR(sh.mean(), 1.0, 1e-12);
  EXPECT_NEAR(sh.stddev(), std::sqrt(5.0), 1e-12);
  EXPECT_NEAR(sh.skewness(), 0.0, 1e-12);
  EXPECT_TRUE(sh.choose_asym(0.1, 0.5));
  EXPECT_FALSE(sh.choose_asym(0.5, 0.5));  // 0.447 is not above 0.5

  // Skewed, zero mean: {-1, -1, -1, 3}: mean 0, var 3, E[x³] = 24/4 = 6, skew = 6/3^1.5 = 1.155 → asymmetric
  // through t2 alone.
  ActStats sk;
  const std::vector<float> skewed = {-1, -1, -1, 3};
  sk.add(skewed.data(), 4);
  EXPECT_NEAR(sk.mean(), 0.0, 1e-12);
  EXPECT_NEAR(sk.stddev(), std::sqrt(3.0), 1e-12);
  EXPECT_NEAR(sk.skewness(), 6.0 / std::pow(3.0, 1.5), 1e-12);
  EXPECT_TRUE(sk.choose_asym(0.1, 0.5));
  EXPECT_FALSE(sk.choose_asym(0.1, 1.2));  // 1.155 is not above 1.2
  // Mirrored → negative skew, same decision.
  ActStats nsk;
  const std::vector<float> mirrored = {1, 1, 1, -3};
  nsk.add(mirrored.data(), 4);
  EXPECT_NEAR(nsk.skewness(), -6.0 / std::pow(3.0, 1.5), 1e-12);
  EXPECT_TRUE(nsk.choose_asym(0.1, 0.5));

  // Degenerate: nothing seen, or constant data (std 0) → symmetric, no NaN.
  ActStats empty;
  EXPECT_FALSE(empty.choose_asym(0.1, 0.5));
  EXPECT_EQ(empty.mean(), 0.0);
  ActStats cst;
  const std::vector<float> c = {2, 2, 2};
  cst.add(c.data(), 3);
  EXPECT_FALSE(cst.choose_asym(0.1, 0.5));
  EXPECT_EQ(cst.skewness(), 0.0);
}

// Realistic inputs where the decision is obvious: Gaussian → sym; Gaussian + 0.5σ → asym
// (|mean|/std ≈ 0.5); post-SiLU-like (max(x,0) + small noise) → asym; streamed in chunks
// equals one pass to 1e-12 relative.
TEST(ActStats, DecisionOnDistributions) {
  auto g = randn(20000, 31);
  ActStats a, chunks;
  a.add(g.data(), int64_t(g.size()));
  for (size_t i = 0; i < g.size(); i += 777) chunks.add(g.data() + i, int64_t(std::min<size_t>(777, g.size() - i)));
  EXPECT_NEAR(chunks.mean(), a.mean(), 1e-12);
  EXPECT_NEAR(chunks.stddev(), a.stddev(), 1e-12 * a.stddev());
  EXPECT_NEAR(chunks.skewness(), a.skewness(), 1e-9);
  EXPECT_LT(std::fabs(a.mean()) / a.stddev(), 0.05);  // 20000 samples: |mean|/std ~ 0.007
  EXPECT_LT(std::fabs(a.skewness()), 0.1);            // sampling sd of the skewness ~ 0.017
  EXPECT_FALSE(a.choose_asym(0.1, 0.5));

  std::vector<float> shifted = g;
  for (auto& v : shifted) v += 0.5f;
  ActStats b;
  b.add(shifted.data(), int64_t(shifted.size()));
  EXPECT_TRUE(b.choose_asym(0.1, 0.5));

  std::vector<float> relu = g;
  for (auto& v : relu) v = std::max(v, 0.0f) - 0.4f;  // mean ≈ 0 (E[max(z,0)] = 0.399), strongly skewed
  ActStats c;
  c.add(relu.data(), int64_t(relu.size()));
  EXPECT_LT(std::fabs(c.mean()) / c.stddev(), 0.1);
  EXPECT_GT(c.skewness(), 0.5);  // skewness of max(z, 0) ≈ 1.64
  EXPECT_TRUE(c.choose_asym(0.1, 0.5));
}

// ---- packing and dequant round trip -----------------------------------------------------

TEST(Packing, ByHandAndRoundTrip) {
  // 2 bits LSB first: 1 | 2<<2 | 3<<4 | 0<<6 = 1 + 8 + 48 = 57.
  EXPECT_EQ(pack_codes({1, 2, 3, 0}, 2), (std::vector<uint8_t>{57}));
  // 3 bits: 5 = 101 (bits 0-2), 6 = 110 (bits 3-5), 1 (bit 6) → 1+4+16+32+64 = 117, then a zero byte.
  EXPECT_EQ(pack_codes({5, 6, 1}, 3), (std::vector<uint8_t>{117, 0}));
  // 8 bits: bytes as is.
  EXPECT_EQ(pack_codes({255, 0, 17}, 8), (std::vector<uint8_t>{255, 0, 17}));
  std::mt19937_64 rng(1);
  for (int b = 2; b <= 8; ++b)
    for (size_t n : {size_t(1), size_t(7), size_t(64), size_t(173)}) {
      std::vector<int32_t> c(n);
      for (auto& v : c) v = int32_t(rng() % (1u << b));
      auto p = pack_codes(c, b);
      EXPECT_EQ(p.size(), (n * size_t(b) + 7) / 8);
      EXPECT_EQ(unpack_codes(p.data(), n, b), c) << b << " " << n;
    }
  // Out-of-range codes are a programming error, not silently wrapped.
  EXPECT_THROW(pack_codes({4}, 2), Error);
  EXPECT_THROW(pack_codes({-1}, 3), Error);
}

// A QuantizedWeight stored the checkpoint way (symmetric codes offset by 2^(b-1), packed per row)
// unpacks and dequantizes to exactly QuantizedWeight::dequant().
TEST(Packing, QuantizedWeightRoundTrip) {
  const int64_t out = 5, in = 40;
  auto W = randn(size_t(out * in), 77);
  for (int b : {2, 3, 4, 5, 8})
    for (bool sym : {true, false}) {
      QuantizedWeight q = quantize_rtn(W.data(), out, in, spec(b, sym, 8));
      const int off = sym ? 1 << (b - 1) : 0;
      std::vector<float> want = q.dequant();
      for (int64_t r = 0; r < out; ++r) {
        std::vector<int32_t> u(static_cast<size_t>(in));
        for (int64_t c = 0; c < in; ++c) u[size_t(c)] = q.codes[size_t(r * in + c)] + off;
        auto p = pack_codes(u, b);
        auto back = unpack_codes(p.data(), size_t(in), b);
        for (int64_t c = 0; c < in; ++c) {
          const int64_t k = r * q.ngroups + q.g_idx[size_t(c)];
          const float v = dequantize_code(float(back[size_t(c)] - off), QParams{q.scales[size_t(k)], q.zeros[size_t(k)]});
          EXPECT_EQ(v, want[size_t(r * in + c)]);
        }
      }
    }
}

// ---- bad inputs ----------------------------------------------------------------------------

TEST(QGrid, BadInputsThrow) {
  for (int b : {0, 1, 9, 15, 17}) {
    EXPECT_THROW(spec(b, true).validate(64), ArgError) << b;
    std::vector<float> W(64, 1.0f);
    EXPECT_THROW(quantize_rtn(W.data(), 1, 64, spec(b, true)), ArgError) << b;
  }
  for (int b = 2; b <= 8; ++b) EXPECT_NO_THROW(spec(b, false).validate(64));
  EXPECT_NO_THROW(spec(16, true).validate(64));
  // Weight groupsize: positive or -1. One that does not divide the columns is allowed
  // (GPTQ's shorter last group, see Rtn.ShorterLastGroup), so only 0 and negatives other
  // than -1 are errors.
  EXPECT_THROW(spec(4, true, 0).validate(64), ArgError);
  EXPECT_THROW(spec(4, true, -2).validate(64), ArgError);
  EXPECT_NO_THROW(spec(4, true, 48).validate(64));
  EXPECT_NO_THROW(spec(4, true, 64).validate(64));
  EXPECT_NO_THROW(spec(4, true, 100).validate(64));
  std::vector<float> W(2 * 64, 1.0f);
  EXPECT_THROW(quantize_rtn(W.data(), 2, 64, spec(4, true, 0)), ArgError);
  try {
    quantize_rtn(W.data(), 2, 64, spec(4, true, -7));
    ADD_FAILURE() << "groupsize -7 accepted";
  } catch (const ArgError& e) {
    EXPECT_NE(std::string(e.what()).find("-7"), std::string::npos) << e.what();  // names the groupsize
  }
  // clip ratio in (0, 1]
  QuantSpec c = spec(4, true);
  c.clip_ratio = 0.0f;
  EXPECT_THROW(c.validate(64), ArgError);
  c.clip_ratio = 1.5f;
  EXPECT_THROW(c.validate(64), ArgError);
  // activation groups (dynamic, per token) must still divide the dimension
  std::vector<float> x(2 * 10, 1.0f);
  EXPECT_THROW(fake_quant_act(x.data(), 2, 10, 4, 4, false, 1.0f), ShapeError);
}

TEST(QuantConfig, ValidateRejectsBadBitsAndGroups) {
  for (int b : {1, 9}) {
    QuantConfig c;
    c.w_bits = b;
    EXPECT_THROW(c.validate(), ArgError) << "w_bits " << b;
    QuantConfig a;
    a.a_bits = b;
    EXPECT_THROW(a.validate(), ArgError) << "a_bits " << b;
    QuantConfig k;
    k.k_bits = b;
    EXPECT_THROW(k.validate(), ArgError) << "k_bits " << b;
  }
  QuantConfig g;
  g.w_groupsize = 0;
  EXPECT_THROW(g.validate(), ArgError);
  g.w_groupsize = -3;
  EXPECT_THROW(g.validate(), ArgError);
  QuantConfig ok;
  ok.w_bits = 3;
  ok.w_groupsize = 128;  // divisibility needs the layer shapes: checked when quantizing (QuantSpec::validate)
  EXPECT_NO_THROW(ok.validate());
  QuantConfig sg;
  sg.static_groups = true;  // without groups
  EXPECT_THROW(sg.validate(), ArgError);
  QuantConfig clip;
  clip.a_clip_ratio = 1.2;
  EXPECT_THROW(clip.validate(), ArgError);
}

// lowbit_quant.json as untrusted text (fuzz/fuzz_checkpoint_meta): every malformed field is a
// FormatError naming the file; numbers are never cast from floats or wrapped to a smaller type.
TEST(QuantCheckpointMeta, ParsesAndRejectsHostileMetadata) {
  QuantConfig qc;
  qc.w_bits = 4;
  qc.w_groupsize = 128;
  const nlohmann::json good = {{"format", "lowbit-fakequant"},
                               {"format_version", 1},
                               {"quant_config", qc.to_json()},
                               {"rotated", false},
                               {"asym_decisions", nlohmann::json::object()},
                               {"quantized_linears", {{"model.layers.0.mlp.up_proj", {{"bits", 4}, {"sym", true}}}}}};
  QuantCheckpointMeta m = parse_quant_meta(good.dump(), "q.json");
  EXPECT_EQ(m.cfg.w_bits, 4);
  EXPECT_EQ(m.cfg.w_groupsize, 128);
  ASSERT_EQ(m.qlin.size(), 1u);
  EXPECT_EQ(m.qlin.begin()->second, std::make_pair(4, true));

  auto bad = [](const nlohmann::json& j) {
    try {
      parse_quant_meta(j.dump(), "x/lowbit_quant.json");
      ADD_FAILURE() << "accepted " << j.dump();
    } catch (const FormatError& e) {
      EXPECT_NE(std::string(e.what()).find("lowbit_quant.json"), std::string::npos) << e.what();
    }
  };
  nlohmann::json j = good;
  j["format"] = 3;  // was a json::type_error out of load_quantized
  bad(j);
  j = good;
  j["format_version"] = "1";
  bad(j);
  j = good;
  j["format_version"] = 1e300;  // was cast to int
  bad(j);
  j = good;
  j["quant_config"]["weights"]["w_bits"] = 1e300;  // was cast to int (undefined behaviour)
  bad(j);
  j = good;
  j["quant_config"]["weights"]["w_bits"] = int64_t(4) + (int64_t(1) << 32);  // was wrapped to 4
  bad(j);
  j = good;
  j["quant_config"]["calibration"]["seed"] = -1;  // was wrapped to 2^64 - 1
  bad(j);
  j = good;
  j["quantized_linears"]["model.layers.0.mlp.up_proj"]["bits"] = 16;
  bad(j);
  j = good;
  j["quantized_linears"]["model.layers.0.mlp.up_proj"]["bits"] = 4.5;
  bad(j);
  j = good;
  j["quantized_linears"] = nlohmann::json::array();
  bad(j);
  j = good;
  j["rotated"] = true;  // contradicts rotate = false
  bad(j);
  EXPECT_THROW(parse_quant_meta("[[[", "q.json"), FormatError);
}
