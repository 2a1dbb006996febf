// `lowbit quarot` (the QuaRot-family main.py) and the seed-fidelity points of issue 11:
// K/V groupsize -1 = one scale per token over all KV heads (QuaRot) vs 0 / head_dim = per
// head; the seed's auto-asym statistics and thresholds vs lowbit's rule; old configs keep
// their meaning; the command runs end to end and equals `eval ppl` with the same settings;
// seed flags lowbit does not implement, and unknown flags, are refused by name.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <vector>

#include "models/llama.h"
#include "quant/auto_asym.h"
#include "quant/config.h"
#include "quant/driver.h"
#include "quant/qgrid.h"
#include "quant/runtime.h"
#include "testing.h"

namespace lowbit {
namespace {

namespace fs = std::filesystem;
using test::expect_error_line;
using test::run_lowbit;

// ---- K/V scales: per token vs per head, by hand -------------------------------------------

// Two tokens, Hkv = 2 heads of D = 2: each token's K row is [h0c0, h0c1, h1c0, h1c1].
// 4-bit symmetric: q ∈ [-8, 7], scale = absmax / 7, x̂ = scale · round(x / scale).
TEST(KvGroups, PerTokenVersusPerHeadByHand) {
  const std::vector<float> k = {0.4f, 1.0f, 3.0f, 7.0f,     // token 0
                                -2.0f, 0.5f, 0.25f, -1.1f};  // token 1
  // Per token (QuaRot's --k_groupsize -1): one scale over all 4 values of the row.
  //   token 0: absmax 7 → scale 1:   0.4 → 0, 1 → 1, 3 → 3, 7 → 7
  //   token 1: absmax 2 → scale 2/7: -2 → -7·2/7 = -2; 0.5/(2/7) = 1.75 → 2 → 4/7;
  //            0.25/(2/7) = 0.875 → 1 → 2/7; -1.1/(2/7) = -3.85 → -4 → -8/7
  std::vector<float> tok = k;
  fake_quant_act(tok.data(), 2, 4, 4, -1, false, 1.0f);
  const std::vector<float> want_tok = {0.0f, 1.0f, 3.0f, 7.0f, -2.0f, 4.0f / 7, 2.0f / 7, -8.0f / 7};
  // Per head (groups of head_dim = 2): one scale per (token, head).
  //   t0 h0 [0.4, 1]: scale 1/7: 0.4·7 = 2.8 → 3 → 3/7; 1 → 7 → 1.   t0 h1 [3, 7]: scale 1 → 3, 7
  //   t1 h0 [-2, 0.5]: scale 2/7 → -2, 4/7 (as above)
  //   t1 h1 [0.25, -1.1]: scale 1.1/7: 0.25·7/1.1 = 1.59 → 2 → 2.2/7; -1.1 → -7 → -1.1
  std::vector<float> head = k;
  fake_quant_act(head.data(), 2, 4, 4, 2, false, 1.0f);
  const std::vector<float> want_head = {3.0f / 7, 1.0f, 3.0f, 7.0f, -2.0f, 4.0f / 7, 2.2f / 7, -1.1f};
  for (size_t i = 0; i < k.size(); ++i) {
    EXPECT_NEAR(tok[i], want_tok[i], 1e-6) << "per token, element " << i;
    EXPECT_NEAR(head[i], want_head[i], 1e-6) << "per head, element " << i;
  }
}

// The layer quantizes each token's [Hkv·D] K/V vector with the configured groups: what lands
// in the KV cache equals the unquantized layer-0 K/V quantized by hand-checked
// fake_quant_act (above) per token for -1, per head for 0 and head_dim.
TEST(KvGroups, LayerUsesTokenVectors) {
  LOWBIT_REQUIRE_SHARED(dir, "models/stories260K");
  LlamaModel m = LlamaModel::load(dir);
  const int64_t T = 12, W = m.cfg.num_kv_heads * m.cfg.head_dim;  // W = 4 · 8 = 32
  std::vector<int32_t> ids(static_cast<size_t>(T));
  for (int64_t t = 0; t < T; ++t) ids[size_t(t)] = int32_t(1 + 37 * t % 500);
  auto cache_of = [&](const QuantConfig& c) {
    QuantRuntime rt;
    rt.cfg = c;
    install_runtime(m, rt);
    KVCache kv = m.make_cache(T);
    m.forward(ids.data(), T, &kv);
    return std::pair{kv.k[0], kv.v[0]};  // layer 0: its K/V depend on nothing quantized before
  };
  QuantConfig fp;
  const auto [k_ref, v_ref] = cache_of(fp);  // K after RoPE, V, unquantized
  for (int64_t g : {int64_t(-1), int64_t(0), m.cfg.head_dim, int64_t(4)}) {
    QuantConfig c;
    c.k_bits = c.v_bits = 4;
    c.k_had = false;  // no R3 here: the cached K is RoPE(k_proj x) quantized
    c.k_groupsize = c.v_groupsize = g;
    c.v_asym = true;
    const auto [kq, vq] = cache_of(c);
    const int64_t gs = g == 0 ? m.cfg.head_dim : g;  // fake_quant_act's groups within a [W] row
    std::vector<float> k_want = k_ref, v_want = v_ref;
    fake_quant_act(k_want.data(), T, W, 4, gs, false, 1.0f);
    fake_quant_act(v_want.data(), T, W, 4, gs, true, 1.0f);
    ASSERT_EQ(kq.size(), size_t(T * W));
    for (size_t i = 0; i < kq.size(); ++i) {
      ASSERT_EQ(kq[i], k_want[i]) << "K groupsize " << g << " element " << i;
      ASSERT_EQ(vq[i], v_want[i]) << "V groupsize " << g << " element " << i;
    }
  }
  // and the two layouts really differ on this model
  QuantConfig a, b;
  a.v_bits = b.v_bits = 4;
  a.v_groupsize = -1;
  b.v_groupsize = 0;
  EXPECT_NE(cache_of(a).second, cache_of(b).second);
}

// Configs written before version 3 meant "per head" by -1, had only lowbit's auto-asym rule
// and no R3 without rotation: they read back with those meanings.
TEST(KvGroups, OldConfigsKeepTheirMeaning) {
  QuantConfig c;
  c.k_bits = c.v_bits = 4;
  c.a_bits = 4;
  c.a_auto_asym = true;
  nlohmann::json j = c.to_json();
  EXPECT_EQ(j["lowbit_quant_config_version"], 3);
  QuantConfig back = QuantConfig::from_json(j);
  EXPECT_EQ(back.k_groupsize, -1);
  EXPECT_EQ(back.auto_asym_rule, "seed");
  EXPECT_TRUE(back.k_had);
  for (int v : {1, 2}) {
    nlohmann::json old = j;
    old["lowbit_quant_config_version"] = v;
    old["activations"].erase("auto_asym_rule");
    old["kv_cache"].erase("k_had");
    QuantConfig o = QuantConfig::from_json(old);
    EXPECT_EQ(o.k_groupsize, 0) << "v" << v << ": -1 was per head";
    EXPECT_EQ(o.v_groupsize, 0) << "v" << v;
    EXPECT_EQ(o.auto_asym_rule, "lowbit") << "v" << v;
    EXPECT_FALSE(o.k_had) << "v" << v;
  }
  // the recipes that document per-head KV keep it
  QuantConfig r;
  apply_recipe("quarot-gptq-w4a4kv4", r);
  EXPECT_EQ(r.k_groupsize, 0);
  EXPECT_EQ(r.v_groupsize, 0);
}

// ---- auto-asym: the seed's statistics and thresholds ---------------------------------------

TEST(SeedAutoAsym, StatisticsByHand) {
  // x = [0, 0, 0, 4]: μ = 1; deviations -1, -1, -1, 3; Σd² = 12 → unbiased σ² = 12/3 = 4, σ = 2;
  // Σd³ = -3 + 27 = 24 → mean 6; skew = 6 / (2³ + 1e-6) = 0.74999990625
  const std::vector<float> x = {0, 0, 0, 4};
  const SeedSkewStats s = seed_skew_stats(x.data(), 4);
  EXPECT_DOUBLE_EQ(s.mean, 1.0);
  EXPECT_DOUBLE_EQ(s.std, 2.0);
  EXPECT_NEAR(s.skew, 6.0 / (8.0 + 1e-6), 1e-15);
  // |μ|/(σ + 1e-6) = 0.49999975: asym at t1 0.1, not at 0.5 with skew 0.75 under t2 1
  EXPECT_TRUE(seed_choose_asym(s, 0.1, 0.2));
  EXPECT_FALSE(seed_choose_asym(s, 0.5, 1.0));
}

TEST(SeedAutoAsym, ThresholdsJustAboveAndBelow) {
  // The seed: asym iff |μ|/(σ + 1e-6) > 0.1 or |skew| > 0.2 (strict).
  SeedSkewStats s;
  s.std = 1.0;
  s.mean = 0.1001;  // 0.1001 / 1.000001 = 0.1000999 > 0.1
  EXPECT_TRUE(seed_choose_asym(s, 0.1, 0.2));
  s.mean = -0.1001;  // |μ|
  EXPECT_TRUE(seed_choose_asym(s, 0.1, 0.2));
  s.mean = 0.0999;
  EXPECT_FALSE(seed_choose_asym(s, 0.1, 0.2));
  s.mean = 0.1;  // 0.1 / 1.000001 < 0.1: the +1e-6 keeps exactly-0.1 symmetric
  EXPECT_FALSE(seed_choose_asym(s, 0.1, 0.2));
  s.mean = 0;
  s.skew = 0.2001;
  EXPECT_TRUE(seed_choose_asym(s, 0.1, 0.2));
  s.skew = -0.2001;
  EXPECT_TRUE(seed_choose_asym(s, 0.1, 0.2));
  s.skew = 0.1999;
  EXPECT_FALSE(seed_choose_asym(s, 0.1, 0.2));
  s.skew = 0.2;  // not above
  EXPECT_FALSE(seed_choose_asym(s, 0.1, 0.2));
  // lowbit's rule (ActStats, population σ, t2 = 0.5) on [0, 0, 0, 4]: μ = 1, σ = √3,
  // |μ|/σ = 0.577; skew = 6 / 3^1.5 = 1.1547: asym at (0.6, 1.15), sym at (0.6, 1.16)
  ActStats a;
  const std::vector<float> x = {0, 0, 0, 4};
  a.add(x.data(), 4);
  EXPECT_TRUE(a.choose_asym(0.6, 1.15));
  EXPECT_FALSE(a.choose_asym(0.6, 1.16));
  EXPECT_TRUE(a.choose_asym(0.57, 5.0));
  EXPECT_FALSE(a.choose_asym(0.58, 5.0));
}

// --a_auto_asym is the seed's rule with its thresholds; --a_auto_asym_lowbit lowbit's (0.5).
// The seed's decisions are per linear (q, k and v each their own), from the output statistics.
// Here the decisions are checked only against the statistics the report gives; WHAT is measured
// (each linear's output, first window, after weight quantization, unbiased σ) is checked against
// an independent float64 layer 0 in test_auto_asym_seed.cpp.
TEST(SeedAutoAsym, FlagsSelectTheRule) {
  LOWBIT_REQUIRE_SHARED(m, "models/stories260K");
  LOWBIT_REQUIRE_SHARED(ts, "data/text/tinystories_val.txt");
  const std::string tmp = test::temp_dir("autoasym");
  auto run = [&](const std::string& flags) {
    auto r = run_lowbit("eval ppl --model " + m + " --data " + ts + " --data-begin 396696 --seqlen 64 --max-windows 1" +
                        " --a_bits 4 --v_bits 4 --cal_dataset " + ts + " --cal_end 396694 --nsamples 2 --cal_seqlen 64 " +
                        flags + " --output-json " + tmp + "/r.json");
    EXPECT_EQ(r.exit_code, 0) << r.out;
    return nlohmann::json::parse(test::read_file(tmp + "/r.json"))["quantization"];
  };
  auto s = run("--a_auto_asym");
  EXPECT_EQ(s["config"]["activations"]["auto_asym_rule"], "seed");
  EXPECT_EQ(s["config"]["activations"]["auto_asym_t1"], 0.1);
  EXPECT_EQ(s["config"]["activations"]["auto_asym_t2"], 0.2);
  const auto& d = s["report"]["auto_asym"];
  for (const char* lin : {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}) {
    const std::string name = std::string("model.layers.0.") + (lin[0] == 'g' || lin[0] == 'u' || lin[0] == 'd' ? "mlp." : "self_attn.") + lin;
    ASSERT_TRUE(d.contains(name)) << name << " has no decision: " << d.dump();
    const double mean = d[name]["mean"], sd = d[name]["std"], sk = d[name]["skewness"];
    EXPECT_EQ(d[name]["asym"].get<bool>(), std::fabs(mean) / (sd + 1e-6) > 0.1 || std::fabs(sk) > 0.2) << name;
  }
  EXPECT_FALSE(d.contains("model.layers.0.self_attn.k_cache")) << "the seed never decides K";
  auto l = run("--a_auto_asym_lowbit");
  EXPECT_EQ(l["config"]["activations"]["auto_asym_rule"], "lowbit");
  EXPECT_EQ(l["config"]["activations"]["auto_asym_t2"], 0.5);
  auto l2 = run("--a_auto_asym_lowbit --auto_asym_t2 0.7");
  EXPECT_EQ(l2["config"]["activations"]["auto_asym_t2"], 0.7);
  expect_error_line(run_lowbit("eval ppl --model " + m + " --data " + ts + " --a_bits 4 --a_auto_asym --a_auto_asym_lowbit"),
                    "--a_auto_asym_lowbit", 2);
}

// QuaRot's --int8_down_proj: down_proj's weights and input at 8 bits, everything else at 4.
TEST(Int8DownProj, WeightsAndInputAt8Bits) {
  LOWBIT_REQUIRE_SHARED(dir, "models/stories260K");
  LlamaModel m = LlamaModel::load(dir);
  QuantConfig c;
  c.w_bits = 4;
  c.w_rtn = true;
  c.a_bits = 4;
  c.int8_down_proj = true;
  quantize_model(m, c, {});
  for (const LlamaLayer& L : m.layers) {
    ASSERT_TRUE(L.down_proj.qw && L.q_proj.qw && L.up_proj.qw);
    EXPECT_EQ(L.down_proj.qw->bits, 8);
    EXPECT_EQ(L.down_proj.aq.bits, 8);
    EXPECT_EQ(L.q_proj.qw->bits, 4);
    EXPECT_EQ(L.up_proj.qw->bits, 4);
    EXPECT_EQ(L.o_proj.aq.bits, 4);
  }
  EXPECT_EQ(m.lm_head.aq.bits, 16);
  // the seed's condition: the input quantizers exist when --a_bits or --v_bits < 16
  LlamaModel m2 = LlamaModel::load(dir);
  QuantConfig v;
  v.v_bits = 4;
  v.int8_down_proj = true;
  quantize_model(m2, v, {});
  EXPECT_EQ(m2.layers[0].down_proj.aq.bits, 8);
  EXPECT_EQ(m2.layers[0].q_proj.aq.bits, 16);
}

// ---- the command --------------------------------------------------------------------------

double json_ppl(const std::string& path) { return nlohmann::json::parse(test::read_file(path)).at("ppl"); }

// The command line on a small setting: 4 calibration windows and 8 evaluation windows of
// 128 tokens. Its perplexity equals `eval ppl` with the same quantization flags (stories260K is
// f32, so QuaRot's default Hadamards are f32: --fp32_had there, lowbit's default).
TEST(QuarotCli, EndToEndEqualsEvalPpl) {
  LOWBIT_REQUIRE_SHARED(m, "models/stories260K");
  LOWBIT_REQUIRE_SHARED(ts, "data/text/tinystories_val.txt");
  const std::string tmp = test::temp_dir("quarot");
  const std::string quant = " --rotate --a_bits 4 --v_bits 4 --k_bits 4 --w_bits 4 --w_clip --nsamples 4";
  auto r = run_lowbit("quarot --model " + m + quant + " --cal_dataset " + ts + " --cal_end 396694 --eval_dataset " +
                      ts + " --eval_begin 396696 --seqlen 128 --max_windows 8 --bsz 4 --save_qmodel_path " + tmp +
                      "/q --output-json " + tmp + "/quarot.json");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  auto q = nlohmann::json::parse(test::read_file(tmp + "/quarot.json"));
  EXPECT_EQ(q["windows"], 8);
  EXPECT_EQ(q["quantization"]["config"]["kv_cache"]["k_groupsize"], -1);
  auto e = run_lowbit("eval ppl --model " + m + " --data " + ts + " --data-begin 396696 --seqlen 128 --max-windows 8" +
                      quant + " --cal_dataset " + ts + " --cal_end 396694 --cal_seqlen 128 --fp32_had --output-json " +
                      tmp + "/eval.json");
  ASSERT_EQ(e.exit_code, 0) << e.out;
  const double p = json_ppl(tmp + "/quarot.json");
  EXPECT_TRUE(std::isfinite(p) && p > 1) << p;
  EXPECT_EQ(p, json_ppl(tmp + "/eval.json")) << "quarot and eval ppl disagree";
  // --load_qmodel_path evaluates the saved checkpoint to the same number
  auto l = run_lowbit("quarot --model " + m + " --load_qmodel_path " + tmp + "/q --eval_dataset " + ts +
                      " --eval_begin 396696 --seqlen 128 --max_windows 8 --output-json " + tmp + "/load.json");
  ASSERT_EQ(l.exit_code, 0) << l.out;
  EXPECT_EQ(p, json_ppl(tmp + "/load.json"));
  // ... and refuses flags that contradict it
  expect_error_line(run_lowbit("quarot --model " + m + " --load_qmodel_path " + tmp + "/q --a_bits 8 --eval_dataset " +
                               ts + " --max_windows 1"),
                    "--a_bits", 2);
}

// Dataset names resolve to the split files in --data_dir; a missing one names the file.
TEST(QuarotCli, DatasetNames) {
  LOWBIT_REQUIRE_SHARED(m, "models/stories260K");
  LOWBIT_REQUIRE_SHARED(ts, "data/text/tinystories_val.txt");
  const std::string tmp = test::temp_dir("quarotdata");
  fs::copy_file(ts, tmp + "/wikitext2_test.txt");
  auto r = run_lowbit("quarot --model " + m + " --data_dir " + tmp + " --eval_dataset wikitext2 --eval_begin 396696" +
                      " --seqlen 128 --max_windows 4 --output-json " + tmp + "/a.json");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  auto e = run_lowbit("eval ppl --model " + m + " --data " + ts + " --data-begin 396696 --seqlen 128 --max-windows 4" +
                      " --output-json " + tmp + "/b.json");
  ASSERT_EQ(e.exit_code, 0) << e.out;
  EXPECT_EQ(json_ppl(tmp + "/a.json"), json_ppl(tmp + "/b.json"));
  expect_error_line(run_lowbit("quarot --model " + m + " --data_dir " + tmp + " --eval_dataset ptb"), "ptb.test.txt", 1);
  // GPTQ calibrates on the train split, which is not there
  expect_error_line(run_lowbit("quarot --model " + m + " --data_dir " + tmp + " --eval_dataset wikitext2 --w_bits 4"),
                    "wikitext2_train.txt", 1);
}

// --lm_eval scores the tasks as `eval zeroshot` does and adds the seed's dict (acc_norm, else acc,
// rounded to 4 places, and their mean).
TEST(QuarotCli, LmEvalMatchesEvalZeroshot) {
  LOWBIT_REQUIRE_SHARED(m, "models/stories260K");
  LOWBIT_REQUIRE_SHARED(ts, "data/text/tinystories_val.txt");
  LOWBIT_REQUIRE_SHARED(tasks, "data/tasks/piqa.jsonl");
  const std::string tmp = test::temp_dir("quarotlm");
  const std::string tdir = fs::path(tasks).parent_path().string();
  auto r = run_lowbit("quarot --model " + m + " --eval_dataset " + ts + " --eval_begin 396696 --seqlen 64 --max_windows 1" +
                      " --lm_eval --tasks piqa lambada_openai --limit 8 --tasks_dir " + tdir + " --output-json " + tmp +
                      "/q.json");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  auto z = run_lowbit("eval zeroshot --model " + m + " --tasks piqa,lambada_openai --limit 8 --tasks-dir " + tdir +
                      " --output-json " + tmp + "/z.json");
  ASSERT_EQ(z.exit_code, 0) << z.out;
  auto q = nlohmann::json::parse(test::read_file(tmp + "/q.json"));
  auto e = nlohmann::json::parse(test::read_file(tmp + "/z.json"));
  EXPECT_EQ(q["lm_eval"]["results"], e["results"]);
  const double piqa = std::round(e["results"]["piqa"]["acc_norm"].get<double>() * 1e4) / 1e4;
  const double lam = std::round(e["results"]["lambada_openai"]["acc"].get<double>() * 1e4) / 1e4;
  EXPECT_EQ(q["metric_vals"]["piqa"], piqa);
  EXPECT_EQ(q["metric_vals"]["lambada_openai"], lam);
  EXPECT_EQ(q["metric_vals"]["acc_avg"], std::round((piqa + lam) / 2 * 1e4) / 1e4);
  EXPECT_NE(r.out.find("'acc_avg': "), std::string::npos) << r.out;
  // the seed's default list names tasks lowbit does not have: refused before any work
  expect_error_line(run_lowbit("quarot --model " + m + " --lm_eval"), "hellaswag", 2);
}

TEST(QuarotCli, RefusedFlags) {
  LOWBIT_REQUIRE_SHARED(m, "models/stories260K");
  // unknown to every seed script
  expect_error_line(run_lowbit("quarot --model " + m + " --frobnicate 3"), "--frobnicate", 2);
  // seed flags lowbit does not implement: refused by name before any work
  expect_error_line(run_lowbit("quarot --model " + m + " --capture_layer_io"), "--capture_layer_io", 2);
  expect_error_line(run_lowbit("quarot --model " + m + " --layer_idx 3"), "--layer_idx", 2);
  expect_error_line(run_lowbit("quarot --model " + m + " --wandb"), "--wandb", 2);
  expect_error_line(run_lowbit("quarot --model " + m + " --hf_token abc"), "--hf_token", 2);
  expect_error_line(run_lowbit("quarot --model " + m + " --rotation_seed 3"), "--rotation_seed", 2);
  expect_error_line(run_lowbit("quarot --model " + m + " --k_pre_rope"), "--k_pre_rope", 2);
}

}  // namespace
}  // namespace lowbit
