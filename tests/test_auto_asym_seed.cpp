// What the seed's auto-asym rule measures (--a_auto_asym, quant/auto_asym.h,
// ../shared/docs/seed-protocols.md §5), checked against statistics computed here, outside the
// code under test: per linear, the OUTPUT y = x·Ŵᵀ of that linear on the FIRST calibration
// window, Ŵ the weights AFTER weight quantization, activation quantizers off, and
//   μ = Σy/n,  σ = sqrt(Σ(y−μ)²/(n−1)) (unbiased),  skew = (Σ(y−μ)³/n)/(σ³ + 1e-6),
//   asym ⇔ |μ|/(σ + 1e-6) > 0.1 or |skew| > 0.2.
// The reference runs layer 0 of stories260K in double from the checkpoint's embedding and norm
// weights and the quantized linears' dequantized weights (weight_f32()): q_proj's input is
// RMSNorm(embedding)·w1; down_proj's input is silu(gate)⊙up after the whole attention half
// (RoPE, GQA, causal softmax) written out below. No rotation (--rotate off), so nothing is
// fused into the linears and no online transform runs on their inputs (the K cache's online
// Q/K Hadamard, which lowbit runs when K is quantized, leaves q·k and so o_proj's input
// unchanged; it is not reproduced here).
//
// Also checked: each decision sets that linear's own input quantizer, v_proj's also the V
// cache, K stays symmetric, lm_head gets no decision.
//
// Negative controls: the same statistics with the population σ, with the unquantized weights,
// of the linear's input instead of its output, and of the second calibration window, each
// differ from the reported ones by far more than the tolerance, so the test fails on those bugs.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "models/llama.h"
#include "quant/config.h"
#include "quant/driver.h"
#include "testing.h"

namespace lowbit {
namespace {

struct Stats {
  double mean = 0, std = 0, pop_std = 0, skew = 0;
};

// Two-pass moments in double, the seed's definitions (header comment).
Stats stats_of(const std::vector<double>& y) {
  const double n = double(y.size());
  double s = 0;
  for (double v : y) s += v;
  Stats r;
  r.mean = s / n;
  double m2 = 0, m3 = 0;
  for (double v : y) {
    const double d = v - r.mean;
    m2 += d * d;
    m3 += d * d * d;
  }
  r.std = std::sqrt(m2 / (n - 1));
  r.pop_std = std::sqrt(m2 / n);
  r.skew = (m3 / n) / (r.std * r.std * r.std + 1e-6);
  return r;
}

// x [T, in] · Wᵀ, W [out, in] f32 → [T, out] in double.
std::vector<double> matmul_t(const std::vector<double>& x, int64_t T, const Tensor& W32) {
  const int64_t out = W32.shape()[0], in = W32.shape()[1];
  const float* W = W32.data<float>();
  EXPECT_EQ(int64_t(x.size()), T * in);
  std::vector<double> y(size_t(T * out));
  for (int64_t t = 0; t < T; ++t)
    for (int64_t o = 0; o < out; ++o) {
      double acc = 0;
      for (int64_t i = 0; i < in; ++i) acc += x[size_t(t * in + i)] * double(W[o * in + i]);
      y[size_t(t * out + o)] = acc;
    }
  return y;
}

// RMSNorm rows of x [T, d]: x / sqrt(mean(x²) + eps) · w.
std::vector<double> rmsnorm(const std::vector<double>& x, int64_t T, int64_t d, const Tensor& w, double eps) {
  std::vector<double> y(x.size());
  const float* wf = w.data<float>();
  for (int64_t t = 0; t < T; ++t) {
    double ss = 0;
    for (int64_t i = 0; i < d; ++i) ss += x[size_t(t * d + i)] * x[size_t(t * d + i)];
    const double r = 1.0 / std::sqrt(ss / double(d) + eps);
    for (int64_t i = 0; i < d; ++i) y[size_t(t * d + i)] = x[size_t(t * d + i)] * r * double(wf[i]);
  }
  return y;
}

// HF LLaMA RoPE (rotate_half) in place on x [T, H·D], position t = row.
void rope(std::vector<double>& x, int64_t T, int64_t H, int64_t D, double theta) {
  for (int64_t t = 0; t < T; ++t)
    for (int64_t h = 0; h < H; ++h) {
      double* p = &x[size_t((t * H + h) * D)];
      for (int64_t i = 0; i < D / 2; ++i) {
        const double a = double(t) * std::pow(theta, -2.0 * double(i) / double(D));
        const double x0 = p[i], x1 = p[i + D / 2];
        p[i] = x0 * std::cos(a) - x1 * std::sin(a);
        p[i + D / 2] = x1 * std::cos(a) + x0 * std::sin(a);
      }
    }
}

struct Layer0Ref {  // each linear's input [T, in] and output [T, out]
  std::vector<double> q_in, q_out, k_out, v_out, o_in, o_out, n2, gate_out, up_out, down_in, down_out;
};

// Layer 0 in double. `emb` [vocab, d] and the norms come from the unquantized checkpoint;
// the linears' weights from `L` (quantized or not, as the caller passes).
Layer0Ref layer0(const LlamaModel& fp, const LlamaLayer& L, const std::vector<int32_t>& ids) {
  const LlamaConfig& c = fp.cfg;
  const int64_t T = int64_t(ids.size()), d = c.hidden_size, Hq = c.num_heads, Hkv = c.num_kv_heads,
                D = c.head_dim;
  const Tensor E = fp.embed.to(DType::F32);
  std::vector<double> x(size_t(T * d));
  for (int64_t t = 0; t < T; ++t)
    for (int64_t i = 0; i < d; ++i) x[size_t(t * d + i)] = E.data<float>()[ids[size_t(t)] * d + i];
  const LlamaLayer& F = fp.layers[0];
  Layer0Ref r;
  r.q_in = rmsnorm(x, T, d, F.attn_norm, c.rms_eps);
  r.q_out = matmul_t(r.q_in, T, L.q_proj.weight_f32());
  r.k_out = matmul_t(r.q_in, T, L.k_proj.weight_f32());
  r.v_out = matmul_t(r.q_in, T, L.v_proj.weight_f32());
  std::vector<double> q = r.q_out, k = r.k_out;
  const std::vector<double>& v = r.v_out;
  rope(q, T, Hq, D, c.rope.theta);
  rope(k, T, Hkv, D, c.rope.theta);
  // causal attention, query head h reads KV head h / (Hq / Hkv)
  std::vector<double> att(size_t(T * Hq * D), 0.0);
  for (int64_t h = 0; h < Hq; ++h) {
    const int64_t kh = h / (Hq / Hkv);
    for (int64_t t = 0; t < T; ++t) {
      std::vector<double> s(size_t(t + 1));
      double mx = -1e300;
      for (int64_t u = 0; u <= t; ++u) {
        double dot = 0;
        for (int64_t i = 0; i < D; ++i) dot += q[size_t((t * Hq + h) * D + i)] * k[size_t((u * Hkv + kh) * D + i)];
        s[size_t(u)] = dot / std::sqrt(double(D));
        mx = std::max(mx, s[size_t(u)]);
      }
      double z = 0;
      for (double& e : s) z += (e = std::exp(e - mx));
      for (int64_t u = 0; u <= t; ++u)
        for (int64_t i = 0; i < D; ++i)
          att[size_t((t * Hq + h) * D + i)] += s[size_t(u)] / z * v[size_t((u * Hkv + kh) * D + i)];
    }
  }
  r.o_in = att;
  r.o_out = matmul_t(att, T, L.o_proj.weight_f32());
  std::vector<double> hres(x.size());
  for (size_t i = 0; i < x.size(); ++i) hres[i] = x[i] + r.o_out[i];
  r.n2 = rmsnorm(hres, T, d, F.mlp_norm, c.rms_eps);
  r.gate_out = matmul_t(r.n2, T, L.gate_proj.weight_f32());
  r.up_out = matmul_t(r.n2, T, L.up_proj.weight_f32());
  const std::vector<double>&g = r.gate_out, &u = r.up_out;
  r.down_in.resize(g.size());
  for (size_t i = 0; i < g.size(); ++i) r.down_in[i] = g[i] / (1.0 + std::exp(-g[i])) * u[i];
  r.down_out = matmul_t(r.down_in, T, L.down_proj.weight_f32());
  return r;
}

std::vector<int32_t> window(int64_t T, int32_t a, int32_t b) {
  std::vector<int32_t> ids(static_cast<size_t>(T));
  for (int64_t t = 0; t < T; ++t) ids[size_t(t)] = int32_t(1 + (a * t + b) % 500);
  return ids;
}

TEST(SeedAutoAsymMeasures, LinearOutputsOfFirstWindowAfterWeightQuantization) {
  LOWBIT_REQUIRE_SHARED(dir, "models/stories260K");
  const LlamaModel fp = LlamaModel::load(dir);  // reference weights, never quantized
  LlamaModel m = LlamaModel::load(dir);
  // T = 32 tokens: n = 32·64 = 2048 outputs, so unbiased and population σ differ by
  // sqrt(n/(n−1)) − 1 = 2.4e-4 relative, 25× the σ tolerance below.
  const int64_t T = 32;
  const std::vector<std::vector<int32_t>> calib = {window(T, 37, 3), window(T, 101, 250)};
  QuantConfig c;
  c.w_bits = 4;
  c.w_rtn = true;
  c.a_bits = 4;
  c.k_bits = c.v_bits = 4;
  c.a_auto_asym = true;  // auto_asym_rule defaults to "seed" (t1 0.1, t2 0.2)
  ASSERT_EQ(c.auto_asym_rule, "seed");
  const QuantizedModel q = quantize_model(m, c, calib);
  const nlohmann::json& d = q.report.at("auto_asym");
  // one decision per linear of every layer, none for lm_head (the seed hooks only the seven
  // projection names) or the K cache
  EXPECT_EQ(d.size(), size_t(7 * m.cfg.num_layers)) << d.dump();
  EXPECT_FALSE(d.contains(m.lm_head.name));
  ASSERT_TRUE(m.layers[0].q_proj.quantized());

  const Layer0Ref ref = layer0(fp, m.layers[0], calib[0]);
  const Layer0Ref ref_fpw = layer0(fp, fp.layers[0], calib[0]);  // unquantized weights
  const Layer0Ref ref_w1 = layer0(fp, m.layers[0], calib[1]);    // the second window
  const LlamaLayer& L0 = m.layers[0];
  struct Case {
    const char* name;
    const Linear& lin;
    const std::vector<double>& out;
    const std::vector<double>& in;
    const std::vector<double>& out_fpw;
    const std::vector<double>& out_w1;
  };
  const Case cases[] = {
      {"model.layers.0.self_attn.q_proj", L0.q_proj, ref.q_out, ref.q_in, ref_fpw.q_out, ref_w1.q_out},
      {"model.layers.0.self_attn.k_proj", L0.k_proj, ref.k_out, ref.q_in, ref_fpw.k_out, ref_w1.k_out},
      {"model.layers.0.self_attn.v_proj", L0.v_proj, ref.v_out, ref.q_in, ref_fpw.v_out, ref_w1.v_out},
      {"model.layers.0.self_attn.o_proj", L0.o_proj, ref.o_out, ref.o_in, ref_fpw.o_out, ref_w1.o_out},
      {"model.layers.0.mlp.gate_proj", L0.gate_proj, ref.gate_out, ref.n2, ref_fpw.gate_out, ref_w1.gate_out},
      {"model.layers.0.mlp.up_proj", L0.up_proj, ref.up_out, ref.n2, ref_fpw.up_out, ref_w1.up_out},
      {"model.layers.0.mlp.down_proj", L0.down_proj, ref.down_out, ref.down_in, ref_fpw.down_out, ref_w1.down_out}};
  int n_asym = 0;
  for (const Case& k : cases) {
    SCOPED_TRACE(k.name);
    ASSERT_TRUE(d.contains(k.name)) << d.dump();
    const double mean = d[k.name]["mean"], sd = d[k.name]["std"], sk = d[k.name]["skewness"];
    const Stats want = stats_of(k.out);
    // Tolerances: the code under test multiplies in f32 (dot products of 64 or 172 terms,
    // relative rounding ~1e-7·sqrt(in) per output) and sums the statistics in double; over
    // 1024..5504 values the observed agreement is ~1e-7 relative, so 2e-6·σ on μ and σ and
    // 2e-5 on skew leave a wide margin while the controls below stay far outside them.
    const double tol_mu = 2e-6 * want.std, tol_sd = 2e-6 * want.std, tol_sk = 2e-5;
    EXPECT_NEAR(mean, want.mean, tol_mu);
    EXPECT_NEAR(sd, want.std, tol_sd);
    EXPECT_NEAR(sk, want.skew, tol_sk);
    const bool asym = std::fabs(want.mean) / (want.std + 1e-6) > 0.1 || std::fabs(want.skew) > 0.2;
    EXPECT_EQ(d[k.name]["asym"].get<bool>(), asym);
    ASSERT_EQ(k.lin.name, k.name);
    EXPECT_EQ(k.lin.aq.asym, asym) << "the decision sets this linear's own input quantizer";
    if (k.name == std::string("model.layers.0.self_attn.v_proj")) EXPECT_EQ(L0.v_quant.asym, asym) << "V cache";
    n_asym += asym;
    // the decision does not sit on a threshold the tolerance could cross
    EXPECT_GT(std::fabs(std::fabs(want.mean) / want.std - 0.1), 1e-4);
    EXPECT_GT(std::fabs(std::fabs(want.skew) - 0.2), 1e-4);

    // Each control would move the reported statistics by ≥ 10× the tolerance (largest of the
    // three normalized gaps), so the comparisons above fail on those bugs.
    auto gap = [&](const Stats& o, double o_std) {
      return std::max({std::fabs(o.mean - mean) / tol_mu, std::fabs(o_std - sd) / tol_sd,
                       std::fabs(o.skew - sk) / tol_sk});
    };
    Stats pop = want;  // the population σ, and the skew over it
    pop.skew = (want.skew * (want.std * want.std * want.std + 1e-6)) / (std::pow(want.pop_std, 3) + 1e-6);
    const Stats fpw = stats_of(k.out_fpw), in = stats_of(k.in), w1 = stats_of(k.out_w1);
    const double g_pop = gap(pop, want.pop_std), g_fpw = gap(fpw, fpw.std), g_in = gap(in, in.std),
                 g_w1 = gap(w1, w1.std);
    EXPECT_GT(g_pop, 10) << "population σ";
    EXPECT_GT(g_fpw, 10) << "unquantized weights";
    EXPECT_GT(g_in, 10) << "the input instead of the output";
    EXPECT_GT(g_w1, 10) << "the second window";
    std::printf("%s: n %zu reported μ %.6g σ %.6g skew %.6g asym %d | Δ/tol μ %.2g σ %.2g skew %.2g | control gaps "
                "(in tolerances): population σ %.3g, unquantized W %.3g (asym %d), input %.3g, window 2 %.3g\n",
                k.name, k.out.size(), mean, sd, sk, int(d[k.name]["asym"].get<bool>()),
                std::fabs(mean - want.mean) / tol_mu, std::fabs(sd - want.std) / tol_sd,
                std::fabs(sk - want.skew) / tol_sk, g_pop, g_fpw,
                int(std::fabs(fpw.mean) / (fpw.std + 1e-6) > 0.1 || std::fabs(fpw.skew) > 0.2), g_in, g_w1);
  }
  // K stays symmetric in every layer (the seed looks up a key that never exists), even where
  // k_proj's own decision is asymmetric (layer 0's, above); V follows v_proj in every layer.
  for (const LlamaLayer& L : m.layers) {
    EXPECT_TRUE(L.k_quant.on());
    EXPECT_FALSE(L.k_quant.asym) << "layer " << L.index;
    EXPECT_EQ(L.v_quant.asym, d[L.v_proj.name]["asym"].get<bool>()) << "layer " << L.index;
  }
  // both outcomes occur among layer 0's seven decisions on this window
  EXPECT_GT(n_asym, 0);
  EXPECT_LT(n_asym, 7);
}

}  // namespace
}  // namespace lowbit
