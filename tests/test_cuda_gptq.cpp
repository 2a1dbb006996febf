// Device GPTQ / GPTAQ (lowbit::cuda::gptq_quantize, backend/cuda/gptq_cuda.*) against the CPU
// solver (lowbit::gptq_quantize) on the same random weights and calibration statistics.
//
// Tolerances, and why they are not "bit-identical": both sides compute in f64 with the same
// per-element operations (the kernel mirrors the CPU's fused multiply-adds), but U, P and the
// lazy-block GEMMs come from cuSOLVER / cuBLAS instead of LAPACK / OpenBLAS, with a different
// summation order. The updated weights then differ in the last bits (~1e-14 relative), so a
// value lying within that distance of a rounding boundary (of a code, or of the f32 conversion
// feeding a group's min/max) may round the other way. That is rare (probability ~1e-7 per
// value, see the counts printed per case), and a flipped code moves by one step. Hence:
//   codes:  at most 0.1% differ (at least one allowed), each by exactly 1;
//   scales: at most 0.1% not bit-identical (at least one allowed), normalized error < 1e-7.
//           (A systematic one-ulp error — e.g. the grid's (mx - mn)·clip not fused as the CPU
//           build fuses it — shows up in ~20% of the groups at ~5e-8: the count catches it.)
//   zeros:  at most 0.1% of the groups differ (at least one allowed), each by 1;
//   loss:   relative difference < 1e-6;  g_idx and percdamp_used: equal.
// The MSE clip search adds pow(): CUDA's is within 2 ulp, glibc's correctly rounded, so two
// clip candidates with errors equal to ~1e-15 could be ranked differently (rare; counted above).
// The kernel mirrors the fusions g++ (-std=gnu++20 → -ffp-contract=fast, FMA targets) makes in
// qgrid.cpp; a CPU build without them (clang, -ffp-contract=off) would fail the clip / MSE
// cases by one-ulp scale differences — that is the CPU build's arithmetic changing, not the GPU's.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "backend/cuda_api.h"
#include "core/error.h"
#include "quant/gptq_solver.h"
#include "quant/rtn_quant.h"
#include "quant/qgrid.h"
#include "testing.h"

using namespace lowbit;

#ifdef LOWBIT_HAVE_CUDA

namespace {

#define REQUIRE_DEVICE()                                                                                 \
  if (!lowbit::cuda::available()) GTEST_SKIP() << "no CUDA device: " << lowbit::cuda::unavailable_reason(); \
  (void)0

struct Data {
  int64_t out = 0, in = 0;
  std::vector<float> W;  // [out, in]
  HessianAccumulator acc;
};

// Random W ~ N(0, 1) and statistics from X [rows, in]: correlated columns (a shared component
// over column classes) with log-normal column scales, so diag H varies (act_order matters).
// dead: a column of X that is all zero (a dead input). v2: add_v2 with x̃ = x + noise.
Data make_data(int64_t out, int64_t in, int64_t rows, uint64_t seed, bool v2, int64_t dead = -1) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  Data d;
  d.out = out;
  d.in = in;
  d.W.resize(size_t(out * in));
  for (auto& v : d.W) v = nd(rng);
  std::vector<float> colscale(static_cast<size_t>(in));
  for (auto& s : colscale) s = std::exp(0.5f * nd(rng));
  std::vector<float> X(size_t(rows * in)), Xfp(size_t(rows * in));
  for (int64_t t = 0; t < rows; ++t) {
    float shared[8];
    for (float& s : shared) s = nd(rng);
    for (int64_t c = 0; c < in; ++c) {
      const float x = c == dead ? 0.0f : colscale[size_t(c)] * (nd(rng) + 0.7f * shared[c % 8]);
      X[size_t(t * in + c)] = x;
      Xfp[size_t(t * in + c)] = c == dead ? 0.0f : x + 0.1f * colscale[size_t(c)] * nd(rng);
    }
  }
  d.acc = HessianAccumulator(in);
  const int64_t half = rows / 2;  // two batches: the running mean is exercised too
  if (v2) {
    d.acc.add_v2(X.data(), Xfp.data(), half);
    d.acc.add_v2(X.data() + half * in, Xfp.data() + half * in, rows - half);
  } else {
    d.acc.add(X.data(), half);
    d.acc.add(X.data() + half * in, rows - half);
  }
  return d;
}

GptqConfig config(int bits, bool sym, int64_t groupsize, int64_t blocksize) {
  GptqConfig c;
  c.spec.bits = bits;
  c.spec.sym = sym;
  c.spec.groupsize = groupsize;
  c.blocksize = blocksize;
  return c;
}

int64_t allowed(int64_t total) { return std::max<int64_t>(1, total / 1000); }

// Runs both solvers and checks the tolerances in the header comment.
void compare(const Data& d, const GptqConfig& cfg, const std::string& label) {
  const GptqResult c = gptq_quantize(d.W.data(), d.out, d.in, d.acc, cfg, label);
  const GptqResult g = cuda::gptq_quantize(d.W.data(), d.out, d.in, d.acc, cfg, label);
  const QuantizedWeight &a = g.weight, &b = c.weight;
  ASSERT_EQ(a.bits, b.bits);
  ASSERT_EQ(a.sym, b.sym);
  ASSERT_EQ(a.groupsize, b.groupsize);
  ASSERT_EQ(a.out, b.out);
  ASSERT_EQ(a.in, b.in);
  ASSERT_EQ(a.ngroups, b.ngroups);
  ASSERT_EQ(a.codes.size(), b.codes.size());
  ASSERT_EQ(a.scales.size(), b.scales.size());
  ASSERT_EQ(a.zeros.size(), b.zeros.size());
  EXPECT_EQ(a.g_idx, b.g_idx) << label;
  EXPECT_EQ(g.percdamp_used, c.percdamp_used) << label;

  const int qmin = cfg.spec.qmin(), qmax = cfg.spec.qmax();
  int64_t code_diff = 0, code_maxd = 0, out_of_range = 0;
  for (size_t i = 0; i < a.codes.size(); ++i) {
    const int64_t dd = std::abs(int64_t(a.codes[i]) - int64_t(b.codes[i]));
    code_diff += dd != 0;
    code_maxd = std::max(code_maxd, dd);
    out_of_range += a.codes[i] < qmin || a.codes[i] > qmax;
  }
  int64_t scale_bits_diff = 0, zero_diff = 0;
  double zero_maxd = 0;
  for (size_t i = 0; i < a.scales.size(); ++i) {
    scale_bits_diff += a.scales[i] != b.scales[i];
    zero_diff += a.zeros[i] != b.zeros[i];
    zero_maxd = std::max(zero_maxd, double(std::fabs(a.zeros[i] - b.zeros[i])));
  }
  const double scale_err = test::normalized_error(a.scales, b.scales);
  const double loss_rel = std::fabs(g.loss - c.loss) / std::max(std::fabs(c.loss), 1e-300);
  std::printf(
      "[cuda gptq] %-28s codes differing %lld/%zu (max |d| %lld), scales differing %lld/%zu (norm err %.3g), "
      "zeros differing %lld, loss cpu %.10g cuda %.10g (rel %.3g), percdamp %g\n",
      label.c_str(), (long long)code_diff, a.codes.size(), (long long)code_maxd, (long long)scale_bits_diff,
      a.scales.size(), scale_err, (long long)zero_diff, c.loss, g.loss, loss_rel, g.percdamp_used);

  EXPECT_EQ(out_of_range, 0) << label;
  EXPECT_LE(code_diff, allowed(int64_t(a.codes.size()))) << label;
  EXPECT_LE(code_maxd, 1) << label;
  EXPECT_LE(scale_bits_diff, allowed(int64_t(a.scales.size()))) << label;
  EXPECT_LT(scale_err, 1e-7) << label;
  EXPECT_LE(zero_diff, allowed(int64_t(a.zeros.size()))) << label;
  EXPECT_LE(zero_maxd, 1.0) << label;
  EXPECT_LT(loss_rel, 1e-6) << label;
  EXPECT_GT(c.loss, 0.0) << label;
}

}  // namespace

TEST(CudaGptq, PerChannelSym4) {
  REQUIRE_DEVICE();
  const Data d = make_data(64, 96, 256, 1, false);
  compare(d, config(4, true, -1, 32), "per-channel sym4");
}

TEST(CudaGptq, Groups32Asym) {
  REQUIRE_DEVICE();
  const Data d = make_data(64, 128, 320, 2, false);
  compare(d, config(4, false, 32, 48), "g32 asym4 bs48");  // blocks end at group starts
  compare(d, config(4, false, 32, 16), "g32 asym4 bs16");  // groups span blocks
  compare(d, config(3, false, 32, 128), "g32 asym3 bs128");
}

TEST(CudaGptq, ActOrderGroupsNonDividing) {
  REQUIRE_DEVICE();
  const Data d = make_data(48, 72, 256, 3, false, /*dead=*/5);  // 72 = 2·32 + 8, one dead input
  GptqConfig c = config(4, false, 32, 16);
  c.act_order = true;
  compare(d, c, "act_order g32 asym in72");
  c.spec.sym = true;
  c.blocksize = 128;
  compare(d, c, "act_order g32 sym in72 bs128");
}

TEST(CudaGptq, StaticGroups) {
  REQUIRE_DEVICE();
  const Data d = make_data(48, 72, 256, 4, false);
  GptqConfig c = config(4, false, 32, 24);
  c.act_order = true;
  c.static_groups = true;
  compare(d, c, "static g32 act_order");
  c.act_order = false;
  compare(d, c, "static g32");
}

TEST(CudaGptq, ClipRatioAndMseSearch) {
  REQUIRE_DEVICE();
  const Data d = make_data(48, 96, 256, 5, false);
  GptqConfig c = config(4, false, 32, 32);
  c.spec.clip_ratio = 0.9f;  // the asym grid's fused (mx - mn)·clip on the CPU
  compare(d, c, "g32 asym clip0.9");
  c.spec.clip_ratio = 1.0f;
  c.spec.mse_clip = true;  // dynamic groups: the MSE search runs in the kernel
  compare(d, c, "g32 asym mse");
  c.spec.sym = true;
  c.act_order = true;
  compare(d, c, "g32 sym mse act_order");
  c.spec.groupsize = -1;  // per channel: the search runs on the host
  compare(d, c, "per-channel sym mse");
}

TEST(CudaGptq, Gptaq) {
  REQUIRE_DEVICE();
  const Data d = make_data(64, 72, 256, 6, true, /*dead=*/9);
  GptqConfig c = config(4, true, -1, 16);
  c.use_v2 = true;
  compare(d, c, "gptaq per-channel sym4");
  c = config(4, false, 32, 32);
  c.use_v2 = true;
  c.act_order = true;
  compare(d, c, "gptaq g32 asym act_order");
  c.alpha = 0.5;
  c.static_groups = true;
  compare(d, c, "gptaq static g32 alpha0.5");
}

TEST(CudaGptq, IndefiniteHessianRaisesDamping) {
  REQUIRE_DEVICE();
  Data d = make_data(32, 64, 256, 7, false);
  // Make the leading 2x2 minor indefinite (H01 = 3·sqrt(H00·H11)): the smallest eigenvalue is
  // about -2·H00, so λ = percdamp·mean(diag) must pass ~2·mean — both sides end at the same
  // percdamp (0.01 → 0.1 → 1 → 10) with a wide margin either way.
  const int64_t n = d.in;
  double mean = 0;
  for (int64_t j = 0; j < n; ++j) mean += d.acc.H[size_t(j * n + j)];
  mean /= double(n);
  d.acc.H[0] = d.acc.H[size_t(n + 1)] = mean;
  d.acc.H[1] = d.acc.H[size_t(n)] = 3.0 * mean;
  compare(d, config(4, true, 32, 16), "indefinite H");
}

TEST(CudaGptq, BadInputsThrowLikeCpu) {
  REQUIRE_DEVICE();
  const Data d = make_data(8, 16, 64, 8, false);
  GptqConfig c = config(4, true, -1, 8);
  EXPECT_THROW(cuda::gptq_quantize(d.W.data(), d.out, 32, d.acc, c), ShapeError);
  c.use_v2 = true;  // no dXXᵀ
  EXPECT_THROW(cuda::gptq_quantize(d.W.data(), d.out, d.in, d.acc, c), ArgError);
  HessianAccumulator empty(16);
  c.use_v2 = false;
  EXPECT_THROW(cuda::gptq_quantize(d.W.data(), d.out, d.in, empty, c), ArgError);
}

TEST(CudaGptq, LargerMultiBlock) {
  REQUIRE_DEVICE();
  const Data d = make_data(512, 1024, 2048, 9, true);
  GptqConfig c = config(4, true, 128, 128);
  c.act_order = true;
  compare(d, c, "512x1024 g128 act_order");
  c = config(4, false, -1, 128);
  c.use_v2 = true;
  compare(d, c, "512x1024 gptaq per-channel");
}

// RTN on the device (the same grid fit as the static GPTQ grids, then rounding) against
// lowbit::quantize_rtn: codes, scales and zeros under the same bounds as compare() (the grid
// fit is the same IEEE arithmetic; only CUDA's pow in the MSE search can differ in an ulp).
TEST(CudaGptq, RtnEqualsCpu) {
  REQUIRE_DEVICE();
  const Data d = make_data(96, 200, 8, 21, false);
  struct Case { int bits; bool sym; int64_t gs; float clip; bool mse; };
  for (Case k : {Case{4, true, -1, 1.0f, false}, Case{4, false, 32, 0.9f, false}, Case{3, true, -1, 1.0f, true},
                 Case{4, false, 64, 1.0f, true}}) {  // 200 = 3·64 + 8: a short last group
    QuantSpec s;
    s.bits = k.bits;
    s.sym = k.sym;
    s.groupsize = k.gs;
    s.clip_ratio = k.clip;
    s.mse_clip = k.mse;
    const QuantizedWeight c = quantize_rtn(d.W.data(), d.out, d.in, s);
    const QuantizedWeight g = lowbit::cuda::quantize_rtn(d.W.data(), d.out, d.in, s);
    ASSERT_EQ(g.codes.size(), c.codes.size());
    ASSERT_EQ(g.g_idx, c.g_idx);
    int64_t codes = 0, scales = 0;
    for (size_t i = 0; i < c.codes.size(); ++i) codes += g.codes[i] != c.codes[i];
    for (size_t i = 0; i < c.scales.size(); ++i) scales += g.scales[i] != c.scales[i] || g.zeros[i] != c.zeros[i];
    std::printf("[cuda rtn] bits %d sym %d gs %lld clip %.2f mse %d: codes differing %lld/%zu, grids %lld/%zu\n",
                k.bits, int(k.sym), (long long)k.gs, double(k.clip), int(k.mse), (long long)codes, c.codes.size(),
                (long long)scales, c.scales.size());
    EXPECT_LE(codes, allowed(int64_t(c.codes.size())));
    EXPECT_LE(scales, allowed(int64_t(c.scales.size())));
  }
}

#else  // built without the CUDA backend

TEST(CudaGptq, SkippedWithoutCuda) { GTEST_SKIP() << "lowbit was built without the CUDA backend"; }

#endif
