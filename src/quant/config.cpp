#include "quant/config.h"

#include "core/error.h"

namespace lowbit {

namespace {
void check_bits(int b, const char* flag) {
  LOWBIT_CHECK((b >= 2 && b <= 8) || b == 16, ArgError, "{} {} is not supported: use 2..8, or 16 to disable", flag,
               b);
}
void check_clip(double r, const char* flag) {
  LOWBIT_CHECK(r > 0.0 && r <= 1.0, ArgError, "{} {} must be in (0, 1]", flag, r);
}
void check_group(int64_t g, const char* flag) {
  LOWBIT_CHECK(g == -1 || g > 0, ArgError, "{} {} must be -1 (per channel/token) or positive", flag, g);
}
}  // namespace

void QuantConfig::validate() const {
  check_bits(w_bits, "--w_bits");
  check_bits(a_bits, "--a_bits");
  check_bits(k_bits, "--k_bits");
  check_bits(v_bits, "--v_bits");
  check_bits(lm_head_w_bits, "--lm_head_w_bits");
  check_bits(lm_head_a_bits, "--lm_head_a_bits");
  check_group(w_groupsize, "--w_groupsize");
  check_group(a_groupsize, "--a_groupsize");
  check_group(k_groupsize, "--k_groupsize");
  check_group(v_groupsize, "--v_groupsize");
  check_clip(a_clip_ratio, "--a_clip_ratio");
  check_clip(k_clip_ratio, "--k_clip_ratio");
  check_clip(v_clip_ratio, "--v_clip_ratio");
  LOWBIT_CHECK(percdamp > 0.0 && percdamp < 10.0, ArgError, "--percdamp {} must be in (0, 10)", percdamp);
  LOWBIT_CHECK(nsamples > 0 && nsamples <= (1 << 20), ArgError, "--nsamples {} must be in [1, 1048576]", nsamples);
  LOWBIT_CHECK(cal_seqlen >= 2 && cal_seqlen <= (1 << 24), ArgError, "--cal_seqlen {} must be in [2, 16777216]",
               cal_seqlen);
  LOWBIT_CHECK(nsamples * cal_seqlen <= (int64_t(1) << 32), ArgError,
               "--nsamples {} x --cal_seqlen {} calibration tokens is more than lowbit will hold (2^32)", nsamples,
               cal_seqlen);
  LOWBIT_CHECK(cal_begin >= 0, ArgError, "--cal_begin {} must be >= 0", cal_begin);
  LOWBIT_CHECK(cal_end == -1 || cal_end > cal_begin, ArgError, "--cal_end {} must be -1 or greater than --cal_begin {}",
               cal_end, cal_begin);
  LOWBIT_CHECK(blocksize > 0, ArgError, "--blocksize {} must be positive", blocksize);
  LOWBIT_CHECK(v2_alpha >= 0.0, ArgError, "--v2_alpha {} must be >= 0", v2_alpha);
  LOWBIT_CHECK(!(use_v2 && w_rtn), ArgError, "--use_v2 (GPTAQ) and --w_rtn exclude each other");
  LOWBIT_CHECK(!(static_groups && w_groupsize < 0), ArgError, "--static_groups needs --w_groupsize");
  LOWBIT_CHECK(rotate_mode == "hadamard" || rotate_mode == "random", ArgError,
               "--rotate_mode '{}' is not supported: use hadamard or random", rotate_mode);
  LOWBIT_CHECK(auto_asym_t1 >= 0 && auto_asym_t2 >= 0, ArgError, "--auto_asym thresholds must be >= 0");
}

nlohmann::json QuantConfig::to_json() const {
  return {{"lowbit_quant_config_version", kVersion},
          {"recipe", recipe},
          {"weights", {{"w_bits", w_bits}, {"w_groupsize", w_groupsize}, {"w_asym", w_asym}, {"w_rtn", w_rtn},
                       {"w_clip", w_clip}, {"percdamp", percdamp}, {"act_order", act_order},
                       {"static_groups", static_groups}, {"use_v2", use_v2}, {"v2_alpha", v2_alpha},
                       {"blocksize", blocksize}, {"lm_head_w_bits", lm_head_w_bits}}},
          {"activations", {{"a_bits", a_bits}, {"a_groupsize", a_groupsize}, {"a_asym", a_asym},
                           {"a_clip_ratio", a_clip_ratio}, {"a_auto_asym", a_auto_asym},
                           {"auto_asym_t1", auto_asym_t1}, {"auto_asym_t2", auto_asym_t2},
                           {"lm_head_a_bits", lm_head_a_bits}}},
          {"kv_cache", {{"k_bits", k_bits}, {"v_bits", v_bits}, {"k_groupsize", k_groupsize},
                        {"v_groupsize", v_groupsize}, {"k_asym", k_asym}, {"v_asym", v_asym},
                        {"k_clip_ratio", k_clip_ratio}, {"v_clip_ratio", v_clip_ratio}}},
          {"rotation", {{"rotate", rotate}, {"rotate_seed", rotate_seed}, {"rotate_mode", rotate_mode},
                        {"fp32_had", fp32_had}}},
          {"calibration", {{"cal_dataset", cal_dataset}, {"cal_begin", cal_begin}, {"cal_end", cal_end},
                           {"nsamples", nsamples}, {"cal_seqlen", cal_seqlen}, {"seed", seed},
                           {"enable_aq_calibration", enable_aq_calibration}}}};
}

QuantConfig QuantConfig::from_json(const nlohmann::json& j) {
  QuantConfig c;
  try {
    int v = j.at("lowbit_quant_config_version").get<int>();
    LOWBIT_CHECK(v == 1 || v == kVersion, FormatError, "quantization config version {} is not supported (this lowbit reads {})",
                 v, kVersion);
    c.recipe = j.value("recipe", "");
    auto& w = j.at("weights");
    c.w_bits = w.at("w_bits");
    c.w_groupsize = w.at("w_groupsize");
    c.w_asym = w.at("w_asym");
    c.w_rtn = w.at("w_rtn");
    c.w_clip = w.at("w_clip");
    c.percdamp = w.at("percdamp");
    c.act_order = w.at("act_order");
    c.static_groups = w.at("static_groups");
    c.use_v2 = w.at("use_v2");
    c.v2_alpha = w.at("v2_alpha");
    c.blocksize = w.at("blocksize");
    c.lm_head_w_bits = w.at("lm_head_w_bits");
    auto& a = j.at("activations");
    c.a_bits = a.at("a_bits");
    c.a_groupsize = a.at("a_groupsize");
    c.a_asym = a.at("a_asym");
    c.a_clip_ratio = a.at("a_clip_ratio");
    c.a_auto_asym = a.at("a_auto_asym");
    c.auto_asym_t1 = a.at("auto_asym_t1");
    c.auto_asym_t2 = a.at("auto_asym_t2");
    c.lm_head_a_bits = a.at("lm_head_a_bits");
    auto& k = j.at("kv_cache");
    c.k_bits = k.at("k_bits");
    c.v_bits = k.at("v_bits");
    c.k_groupsize = k.at("k_groupsize");
    c.v_groupsize = k.at("v_groupsize");
    c.k_asym = k.at("k_asym");
    c.v_asym = k.at("v_asym");
    c.k_clip_ratio = k.at("k_clip_ratio");
    c.v_clip_ratio = k.at("v_clip_ratio");
    auto& r = j.at("rotation");
    c.rotate = r.at("rotate");
    c.rotate_seed = r.at("rotate_seed");
    // v1 accepted fp32_had but always ran the transforms in f32.
    c.fp32_had = v == 1 ? true : r.at("fp32_had").get<bool>();
    c.rotate_mode = v == 1 ? "hadamard" : r.at("rotate_mode").get<std::string>();
    auto& cal = j.at("calibration");
    c.cal_dataset = cal.at("cal_dataset");
    c.cal_begin = cal.at("cal_begin");
    c.cal_end = cal.at("cal_end");
    c.nsamples = cal.at("nsamples");
    c.cal_seqlen = cal.at("cal_seqlen");
    c.seed = cal.at("seed");
    c.enable_aq_calibration = cal.at("enable_aq_calibration");
  } catch (const nlohmann::json::exception& e) {
    throw FormatError(fmt::format("quantization config: {}", e.what()));
  }
  c.validate();
  return c;
}

std::string QuantConfig::summary() const {
  std::string s = fmt::format("W{}A{}KV{}", w_bits, a_bits, std::min(k_bits, v_bits) == std::max(k_bits, v_bits)
                                                             ? std::to_string(k_bits)
                                                             : fmt::format("{}/{}", k_bits, v_bits));
  if (rotate) s += rotate_mode == "random" ? " rotate(random)" : " rotate";
  if (rotate && !fp32_had) s += " fp16_had";
  if (w_bits < 16) {
    s += w_rtn ? " rtn" : (use_v2 ? " gptaq" : " gptq");
    s += fmt::format(" w:{}{}", w_asym ? "asym" : "sym", w_groupsize > 0 ? fmt::format(" g{}", w_groupsize) : "");
    if (w_clip) s += " w_clip";
    if (act_order) s += " act_order";
    if (static_groups) s += " static_groups";
  }
  if (a_bits < 16)
    s += fmt::format(" a:{}{} clip{}", a_auto_asym ? "auto" : (a_asym ? "asym" : "sym"),
                     a_groupsize > 0 ? fmt::format(" g{}", a_groupsize) : "", a_clip_ratio);
  if (k_bits < 16) s += fmt::format(" k:{}", a_auto_asym ? "auto" : (k_asym ? "asym" : "sym"));
  if (v_bits < 16) s += fmt::format(" v:{}", v_asym ? "asym" : "sym");
  return s;
}

void apply_recipe(const std::string& name, QuantConfig& c) {
  c.recipe = name;
  auto w4a4kv4 = [&] {
    c.w_bits = 4; c.a_bits = 4; c.k_bits = 4; c.v_bits = 4;
    c.k_asym = c.v_asym = true;  // QuaRot's KV defaults: asymmetric, per head
    c.a_clip_ratio = 0.9; c.k_clip_ratio = c.v_clip_ratio = 0.95;
  };
  if (name == "quarot-w4a4kv4" || name == "quarot-rtn-w4a4kv4") {
    w4a4kv4(); c.rotate = true; c.w_rtn = true; c.w_clip = true;
  } else if (name == "quarot-gptq-w4a4kv4") {
    w4a4kv4(); c.rotate = true; c.w_clip = true;
  } else if (name == "quarot-gptaq-w4a4kv4") {
    w4a4kv4(); c.rotate = true; c.w_clip = true; c.use_v2 = true;
  } else if (name == "gptaq-w4a4") {
    c.w_bits = 4; c.a_bits = 4; c.a_clip_ratio = 0.9; c.rotate = true; c.w_clip = true; c.use_v2 = true;
  } else if (name == "rtn-w4a4kv4") {
    w4a4kv4(); c.w_rtn = true;
  } else if (name == "gptq-w4a16-g128") {
    c.w_bits = 4; c.w_groupsize = 128;
  } else if (name == "gptq-w4a16") {
    c.w_bits = 4;
  } else if (name == "rtn-w4a16") {
    c.w_bits = 4; c.w_rtn = true;
  } else if (name == "w8a8") {
    c.w_bits = 8; c.a_bits = 8; c.w_rtn = true;
  } else {
    throw ArgError(fmt::format("unknown --recipe '{}'; known: {}", name, recipe_list()));
  }
}

std::string recipe_list() {
  return "quarot-w4a4kv4 (= quarot-rtn-w4a4kv4), quarot-gptq-w4a4kv4, quarot-gptaq-w4a4kv4, gptaq-w4a4, "
         "rtn-w4a4kv4, gptq-w4a16-g128, gptq-w4a16, rtn-w4a16, w8a8";
}

}  // namespace lowbit
