// The quantized model in memory is the model that was quantized, and the checkpoint
// reproduces it bit for bit — for every method and option, on every model in ../shared
// with quantizable weights:
//   1. in-memory logits == logits of the saved-and-reloaded checkpoint (memcmp: same f32 arithmetic);
//   2. every quantized linear's in-memory weight == a plain dequantization of the codes
//      read back from model.safetensors (written here, not with the code under test);
//   3. the driver's propagated calibration states after block b == the final model's
//      hidden states at the input of block b+1 on the same samples (a layer left in full
//      precision, or quantizers left switched off, while later blocks calibrate fails this);
//   4. the state budget (keep vs recompute) changes nothing.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>

#include "io/safetensors.h"
#include "models/loader.h"
#include "quant/checkpoint.h"
#include "quant/driver.h"
#include "testing.h"

using namespace lowbit;

namespace {

struct Case {
  std::string name;
  std::function<void(QuantConfig&)> set;
};

std::vector<Case> cases() {
  auto w4a4kv4 = [](QuantConfig& c) {
    c.w_bits = 4;
    c.a_bits = 4;
    c.k_bits = 4;
    c.v_bits = 4;
    c.k_asym = c.v_asym = true;
    c.a_clip_ratio = 0.9;
  };
  return {
      {"rtn w4 per-channel", [](QuantConfig& c) { c.w_bits = 4; c.w_rtn = true; }},
      {"rtn w3 asym g16 w_clip a8", [](QuantConfig& c) { c.w_bits = 3; c.w_rtn = true; c.w_asym = true; c.w_groupsize = 16; c.w_clip = true; c.a_bits = 8; }},
      {"gptq w4", [](QuantConfig& c) { c.w_bits = 4; }},
      {"gptq w4 act_order g24 asym", [](QuantConfig& c) { c.w_bits = 4; c.act_order = true; c.w_groupsize = 24; c.w_asym = true; }},
      {"gptq w4 static_groups g16 act_order", [](QuantConfig& c) { c.w_bits = 4; c.static_groups = true; c.w_groupsize = 16; c.act_order = true; }},
      {"gptq w4a4kv4 no rotation", [=](QuantConfig& c) { w4a4kv4(c); }},
      {"quarot gptq w4a4kv4", [=](QuantConfig& c) { w4a4kv4(c); c.rotate = true; c.w_clip = true; }},
      {"quarot gptq w4a4 kv off", [](QuantConfig& c) { c.w_bits = 4; c.a_bits = 4; c.rotate = true; }},
      {"quarot gptaq w4a4kv4", [=](QuantConfig& c) { w4a4kv4(c); c.rotate = true; c.use_v2 = true; }},
      {"quarot gptaq w4a4kv4 enable_aq_calibration", [=](QuantConfig& c) { w4a4kv4(c); c.rotate = true; c.use_v2 = true; c.enable_aq_calibration = true; }},
      {"gptaq w4a4 no rotation", [](QuantConfig& c) { c.w_bits = 4; c.a_bits = 4; c.use_v2 = true; }},
      {"quarot gptq w4a4kv4 auto-asym (seed rule, per linear)", [=](QuantConfig& c) { w4a4kv4(c); c.rotate = true; c.a_auto_asym = true; c.auto_asym_t1 = 0.02; }},
      {"quarot gptq w4a4kv4 auto-asym (lowbit rule), per-head KV", [=](QuantConfig& c) { w4a4kv4(c); c.rotate = true; c.a_auto_asym = true; c.auto_asym_rule = "lowbit"; c.auto_asym_t1 = 0.02; c.k_groupsize = c.v_groupsize = 0; }},
      {"quarot random R1 fp16 hadamards gptq w4a8kv4 lm_head w8", [=](QuantConfig& c) { w4a4kv4(c); c.a_bits = 8; c.rotate = true; c.rotate_mode = "random"; c.fp32_had = false; c.lm_head_w_bits = 8; }},
  };
}

// Calibration samples of different lengths (the driver must not assume one T).
std::vector<std::vector<int32_t>> calib_ids(const LlamaModel& m) {
  std::vector<std::vector<int32_t>> out;
  const int64_t lens[] = {40, 24, 40, 17};
  for (int s = 0; s < 4; ++s) {
    std::vector<int32_t> ids = {int32_t(std::max(0, m.cfg.bos_token_id))};
    for (int64_t i = 1; i < lens[s]; ++i) ids.push_back(int32_t((i * 131 + 7 + s * 977) % m.cfg.vocab_size));
    out.push_back(ids);
  }
  return out;
}

std::vector<float> logits(LlamaModel& m, const std::vector<int32_t>& ids) {
  return m.forward(ids.data(), int64_t(ids.size())).to_vector();
}

bool bit_equal(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// Plain reference dequantization of X.qweight/scales/qzeros/g_idx as the file stores them.
std::vector<float> reference_dequant(const WeightStore& st, const std::string& name, int bits, bool sym, int64_t in) {
  Tensor pk = st.get(name + ".qweight"), sc = st.get(name + ".scales"), zr = st.get(name + ".qzeros"),
         gi = st.get(name + ".g_idx");
  const int64_t out = pk.size(0), ng = sc.size(1), rb = pk.size(1);
  const int off = sym ? 1 << (bits - 1) : 0;
  std::vector<float> W(size_t(out * in));
  for (int64_t r = 0; r < out; ++r) {
    std::vector<int32_t> u = unpack_codes(pk.data<uint8_t>() + r * rb, size_t(in), bits);
    for (int64_t c = 0; c < in; ++c) {
      const int64_t k = r * ng + gi.data<int32_t>()[c];
      const float q = float(u[size_t(c)] - off), z = float(zr.data<int32_t>()[k] - off);
      W[size_t(r * in + c)] = sc.data<float>()[k] * (q - z);
    }
  }
  return W;
}

void check_model(const std::string& rel) {
  LOWBIT_REQUIRE_SHARED(dir, rel);
  for (const Case& k : cases()) {
    SCOPED_TRACE(rel + ": " + k.name);
    LlamaModel m = LlamaModel::load(dir);
    QuantConfig c;
    c.nsamples = 4;
    c.cal_seqlen = 40;
    k.set(c);
    const auto calib = calib_ids(m);
    std::vector<std::vector<BlockState>> propagated;  // [block][sample]
    DriverOptions opt;
    opt.after_block = [&](int64_t, const std::vector<BlockState>& st) { propagated.push_back(st); };
    QuantizedModel q = quantize_model(m, c, calib, opt);

    // 3. propagated states == the quantized model's hidden states (quantizers as while calibrating)
    if (!c.w_rtn && c.w_bits < 16) {
      ASSERT_EQ(propagated.size(), m.layers.size());
      for (size_t s = 0; s < calib.size(); ++s) {
        ForwardOptions fo;
        fo.act_quant = c.enable_aq_calibration;
        int64_t mismatched = -1;
        fo.hidden_hook = [&](int64_t l, const float* h, int64_t T, int64_t d) {
          if (l == 0) return;
          std::vector<float> x = propagated[size_t(l - 1)][s].x;
          if (l == int64_t(m.layers.size())) {  // the hook shows the final norm's output there
            std::vector<float> n(x.size());
            m.final_hidden(x.data(), T, n.data());
            x = n;
          }
          if (mismatched < 0 && (int64_t(x.size()) != T * d || std::memcmp(x.data(), h, x.size() * 4) != 0))
            mismatched = l;
        };
        m.forward(calib[s].data(), int64_t(calib[s].size()), nullptr, fo);
        EXPECT_EQ(mismatched, -1) << "sample " << s << ": calibration input of layer " << mismatched
                                  << " differs from the quantized model's";
      }
    }

    // 1. in-memory logits == checkpoint logits, exactly
    const std::vector<int32_t> ids = calib[0];
    const std::vector<float> want = logits(m, ids);
    const std::string out = test::temp_dir("equiv") + "/q";
    save_quantized(m, q, dir, out);
    LlamaModel back = load_model(out);
    EXPECT_TRUE(bit_equal(logits(back, ids), want)) << "checkpoint logits differ from the in-memory model's";

    // 2. every quantized linear's in-memory weight == the stored codes, dequantized independently
    WeightStore st = WeightStore::open_dir(out);
    int nq = 0;
    for (Linear* lin : m.all_linears()) {
      const bool expect_q = lin->name == "lm_head" ? c.lm_head_w_bits < 16 : c.w_bits < 16;
      ASSERT_EQ(lin->quantized(), expect_q) << lin->name;
      if (!expect_q) continue;
      ++nq;
      ASSERT_TRUE(st.has(lin->name + ".qweight")) << lin->name;
      const std::vector<float> ref = reference_dequant(st, lin->name, lin->qw->bits, lin->qw->sym, lin->in());
      EXPECT_TRUE(bit_equal(lin->weight_f32().to_vector(), ref)) << lin->name;
      EXPECT_EQ(lin->qw->bits, lin->name == "lm_head" ? c.lm_head_w_bits : c.w_bits);
    }
    if (c.w_bits < 16) EXPECT_EQ(nq, int(7 * m.layers.size()) + (c.lm_head_w_bits < 16));
    std::filesystem::remove_all(std::filesystem::path(out).parent_path());
  }
}

}  // namespace

TEST(Equivalence, Stories260K) { check_model("models/stories260K"); }
TEST(Equivalence, TinyLlama3) { check_model("models/tiny-llama3"); }

// Keeping calibration states vs recomputing them from an earlier boundary: same codes, same logits.
TEST(Equivalence, StateBudgetDoesNotChangeResults) {
  LOWBIT_REQUIRE_SHARED(dir, "models/stories260K");
  bool any_partial = false, any_kept = false;
  auto run = [&](int64_t budget) {
    LlamaModel m = LlamaModel::load(dir);
    QuantConfig c;
    c.w_bits = 4;
    c.a_bits = 4;
    c.k_bits = 4;
    c.rotate = true;
    c.use_v2 = true;
    DriverOptions opt;
    opt.state_budget_bytes = budget;
    QuantizedModel q = quantize_model(m, c, calib_ids(m), opt);
    for (auto& L : q.report["layers"]) {
      const auto kept = L["states_kept_at_boundary"].get<std::vector<int64_t>>();  // boundaries 1, 2, 3
      for (int64_t k : kept) any_partial |= k > 0 && k < 4;
      any_kept |= kept.at(0) > 0 || kept.at(2) > 0;  // the boundaries where a state grows
    }
    std::vector<uint8_t> codes;
    for (Linear* l : m.all_linears())
      if (l->quantized())
        codes.insert(codes.end(), l->qw->qweight.data<uint8_t>(), l->qw->qweight.data<uint8_t>() + l->qw->qweight.numel());
    return std::pair{codes, logits(m, calib_ids(m)[1])};
  };
  auto [c_re, l_re] = run(1);  // no state may grow: the inputs of o and down recomputed
  EXPECT_FALSE(any_kept);
  auto [c_part, l_part] = run(430'000);  // some samples kept at boundary 1 (arithmetic: 2 of 4 fit)
  EXPECT_TRUE(any_partial);
  auto [c_keep, l_keep] = run(int64_t(1) << 40);  // every boundary kept
  EXPECT_EQ(c_keep, c_re);
  EXPECT_EQ(c_part, c_re);
  EXPECT_TRUE(bit_equal(l_keep, l_re));
  EXPECT_TRUE(bit_equal(l_part, l_re));
}
