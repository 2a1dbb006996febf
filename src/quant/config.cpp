#include "quant/config.h"

#include <cmath>
#include <limits>
#include <type_traits>

#include "core/error.h"
#include "io/json_util.h"

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
void check_kv_group(int64_t g, const char* flag) {
  LOWBIT_CHECK(g >= -1, ArgError, "{} {} must be -1 (per token, all heads), 0 (per head) or positive", flag, g);
}

// One field of a saved config, of exactly its C++ type: integers must be JSON integers
// in the type's range (a float or a too-large value is refused, never cast or wrapped),
// doubles any finite number, bools and strings their JSON types.
template <class T>
void read(const nlohmann::json& o, const char* key, T& out) {
  const nlohmann::json& v = o.at(key);  // json::out_of_range / type_error when missing
  if constexpr (std::is_same_v<T, bool> || std::is_same_v<T, std::string>) {
    out = v.get<T>();
  } else if constexpr (std::is_floating_point_v<T>) {
    LOWBIT_CHECK(v.is_number() && std::isfinite(v.get<double>()), FormatError,
                 "quantization config: '{}' must be a finite number, got {}", key, json_excerpt(v));
    out = T(v.get<double>());
  } else {
    static_assert(std::is_integral_v<T>);
    bool ok = v.is_number_integer();
    if (ok && v.is_number_unsigned()) {
      ok = v.get<uint64_t>() <= uint64_t(std::numeric_limits<T>::max());
    } else if (ok) {
      const int64_t x = v.get<int64_t>();
      ok = x >= 0 ? uint64_t(x) <= uint64_t(std::numeric_limits<T>::max())
                  : std::is_signed_v<T> && x >= int64_t(std::numeric_limits<T>::min());
    }
    LOWBIT_CHECK(ok, FormatError, "quantization config: '{}' must be an integer in [{}, {}], got {}", key,
                 std::numeric_limits<T>::min(), std::numeric_limits<T>::max(), json_excerpt(v));
    out = v.is_number_unsigned() ? T(v.get<uint64_t>()) : T(v.get<int64_t>());
  }
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
  check_kv_group(k_groupsize, "--k_groupsize");
  check_kv_group(v_groupsize, "--v_groupsize");
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
  if (w_bits_vision >= 0) check_bits(w_bits_vision, "--wbits (vision)");
  if (w_bits_projector >= 0) check_bits(w_bits_projector, "--wbits (projector)");
  LOWBIT_CHECK(w_bits_vision >= -1 && w_bits_projector >= -1, ArgError, "per-tower weight bits must be -1 or a width");
  check_clip(vita_clip_ratio, "--vita_clip_ratio");
  check_clip(lma_clip_ratio, "--lma_clip_ratio");
  LOWBIT_CHECK(auto_asym_rule == "seed" || auto_asym_rule == "lowbit", ArgError,
               "auto-asym rule '{}' is not supported: seed (--a_auto_asym) or lowbit (--a_auto_asym_lowbit)",
               auto_asym_rule);
  // The seed's rule decides after weight quantization, so the activation quantizers cannot be
  // on while GPTQ calibrates (the skew-based QuaRot has no --enable_aq_calibration).
  LOWBIT_CHECK(!(a_auto_asym && auto_asym_rule == "seed" && enable_aq_calibration), ArgError,
               "--a_auto_asym decides sym/asym after weight quantization (the skew-based QuaRot's order) and cannot "
               "be combined with --enable_aq_calibration; use --a_auto_asym_lowbit");
}

nlohmann::json QuantConfig::to_json() const {
  return {{"lowbit_quant_config_version", kVersion},
          {"recipe", recipe},
          {"weights", {{"w_bits", w_bits}, {"w_groupsize", w_groupsize}, {"w_asym", w_asym}, {"w_rtn", w_rtn},
                       {"w_clip", w_clip}, {"percdamp", percdamp}, {"act_order", act_order},
                       {"static_groups", static_groups}, {"use_v2", use_v2}, {"v2_alpha", v2_alpha},
                       {"blocksize", blocksize}, {"lm_head_w_bits", lm_head_w_bits}, {"int8_down_proj", int8_down_proj}}},
          {"activations", {{"a_bits", a_bits}, {"a_groupsize", a_groupsize}, {"a_asym", a_asym},
                           {"a_clip_ratio", a_clip_ratio}, {"a_auto_asym", a_auto_asym},
                           {"auto_asym_rule", auto_asym_rule}, {"auto_asym_t1", auto_asym_t1}, {"auto_asym_t2", auto_asym_t2},
                           {"lm_head_a_bits", lm_head_a_bits}}},
          {"kv_cache", {{"k_bits", k_bits}, {"v_bits", v_bits}, {"k_groupsize", k_groupsize},
                        {"v_groupsize", v_groupsize}, {"k_asym", k_asym}, {"v_asym", v_asym},
                        {"k_clip_ratio", k_clip_ratio}, {"v_clip_ratio", v_clip_ratio}, {"k_had", k_had}}},
          {"rotation", {{"rotate", rotate}, {"rotate_seed", rotate_seed}, {"rotate_mode", rotate_mode},
                        {"fp32_had", fp32_had}}},
          {"vlm", {{"w_bits_vision", w_bits_vision}, {"w_bits_projector", w_bits_projector},
                   {"vit_module", vit_module}, {"vita_clip_ratio", vita_clip_ratio},
                   {"lma_clip_ratio", lma_clip_ratio}, {"skip_last_vision", skip_last_vision},
                   {"skip_last_proj", skip_last_proj}, {"skip_last_language", skip_last_language},
                   {"quant_patch_embed", quant_patch_embed}, {"cal_image_folder", cal_image_folder}}},
          {"calibration", {{"cal_dataset", cal_dataset}, {"cal_begin", cal_begin}, {"cal_end", cal_end},
                           {"nsamples", nsamples}, {"cal_seqlen", cal_seqlen}, {"seed", seed},
                           {"enable_aq_calibration", enable_aq_calibration}}}};
}

QuantConfig QuantConfig::from_json(const nlohmann::json& j) {
  QuantConfig c;
  try {
    int v = 0;
    read(j, "lowbit_quant_config_version", v);
    LOWBIT_CHECK(v >= 1 && v <= kVersion, FormatError, "quantization config version {} is not supported (this lowbit reads {})",
                 v, kVersion);
    c.recipe = j.value("recipe", "");
    auto& w = j.at("weights");
    read(w, "w_bits", c.w_bits);
    read(w, "w_groupsize", c.w_groupsize);
    read(w, "w_asym", c.w_asym);
    read(w, "w_rtn", c.w_rtn);
    read(w, "w_clip", c.w_clip);
    read(w, "percdamp", c.percdamp);
    read(w, "act_order", c.act_order);
    read(w, "static_groups", c.static_groups);
    read(w, "use_v2", c.use_v2);
    read(w, "v2_alpha", c.v2_alpha);
    read(w, "blocksize", c.blocksize);
    read(w, "lm_head_w_bits", c.lm_head_w_bits);
    c.int8_down_proj = false;  // since v3
    if (v >= 3) read(w, "int8_down_proj", c.int8_down_proj);
    auto& a = j.at("activations");
    read(a, "a_bits", c.a_bits);
    read(a, "a_groupsize", c.a_groupsize);
    read(a, "a_asym", c.a_asym);
    read(a, "a_clip_ratio", c.a_clip_ratio);
    read(a, "a_auto_asym", c.a_auto_asym);
    // v1/v2 had only lowbit's rule.
    c.auto_asym_rule = "lowbit";
    if (v >= 3) read(a, "auto_asym_rule", c.auto_asym_rule);
    read(a, "auto_asym_t1", c.auto_asym_t1);
    read(a, "auto_asym_t2", c.auto_asym_t2);
    read(a, "lm_head_a_bits", c.lm_head_a_bits);
    auto& k = j.at("kv_cache");
    read(k, "k_bits", c.k_bits);
    read(k, "v_bits", c.v_bits);
    read(k, "k_groupsize", c.k_groupsize);
    read(k, "v_groupsize", c.v_groupsize);
    read(k, "k_asym", c.k_asym);
    read(k, "v_asym", c.v_asym);
    read(k, "k_clip_ratio", c.k_clip_ratio);
    read(k, "v_clip_ratio", c.v_clip_ratio);
    // v1/v2: -1 meant one scale per head (now 0); -1 is now the whole token's vector.
    if (v < 3) {
      if (c.k_groupsize == -1) c.k_groupsize = 0;
      if (c.v_groupsize == -1) c.v_groupsize = 0;
    }
    c.k_had = false;  // v1/v2: R3 only when rotating
    if (v >= 3) read(k, "k_had", c.k_had);
    auto& r = j.at("rotation");
    read(r, "rotate", c.rotate);
    read(r, "rotate_seed", c.rotate_seed);
    // v1 accepted fp32_had but always ran the transforms in f32.
    c.fp32_had = true;
    if (v != 1) read(r, "fp32_had", c.fp32_had);
    c.rotate_mode = "hadamard";
    if (v != 1) read(r, "rotate_mode", c.rotate_mode);
    if (j.contains("vlm")) {  // per-tower settings (written since v3; absent: LLaMA only, the defaults)
      auto& m = j.at("vlm");
      read(m, "w_bits_vision", c.w_bits_vision);
      read(m, "w_bits_projector", c.w_bits_projector);
      read(m, "vit_module", c.vit_module);
      read(m, "vita_clip_ratio", c.vita_clip_ratio);
      read(m, "lma_clip_ratio", c.lma_clip_ratio);
      read(m, "skip_last_vision", c.skip_last_vision);
      read(m, "skip_last_proj", c.skip_last_proj);
      read(m, "skip_last_language", c.skip_last_language);
      read(m, "quant_patch_embed", c.quant_patch_embed);
      read(m, "cal_image_folder", c.cal_image_folder);
    }
    auto& cal = j.at("calibration");
    read(cal, "cal_dataset", c.cal_dataset);
    read(cal, "cal_begin", c.cal_begin);
    read(cal, "cal_end", c.cal_end);
    read(cal, "nsamples", c.nsamples);
    read(cal, "cal_seqlen", c.cal_seqlen);
    read(cal, "seed", c.seed);
    read(cal, "enable_aq_calibration", c.enable_aq_calibration);
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
  if (w_bits_vision >= 0 || w_bits_projector >= 0)
    s += fmt::format(" towers(V{} P{} L{})", vision_w_bits(), projector_w_bits(), w_bits);
  if (rotate) s += rotate_mode == "random" ? " rotate(random)" : " rotate";
  if (rotate && !fp32_had) s += " fp16_had";
  if (w_bits < 16) {
    s += w_rtn ? " rtn" : (use_v2 ? " gptaq" : " gptq");
    s += fmt::format(" w:{}{}", w_asym ? "asym" : "sym", w_groupsize > 0 ? fmt::format(" g{}", w_groupsize) : "");
    if (w_clip) s += " w_clip";
    if (act_order) s += " act_order";
    if (int8_down_proj) s += " int8_down_proj";
    if (static_groups) s += " static_groups";
  }
  if (a_bits < 16)
    s += fmt::format(" a:{}{} clip{}", a_auto_asym ? "auto" : (a_asym ? "asym" : "sym"),
                     a_groupsize > 0 ? fmt::format(" g{}", a_groupsize) : "", a_clip_ratio);
  auto kv_g = [](int64_t g) { return g < 0 ? std::string(" per-token") : g == 0 ? std::string(" per-head") : fmt::format(" g{}", g); };
  const bool seed_rule = a_auto_asym && auto_asym_rule == "seed";  // K always sym, V follows v_proj
  if (k_bits < 16)
    s += fmt::format(" k:{}{}", seed_rule ? "sym" : a_auto_asym ? "auto" : (k_asym ? "asym" : "sym"), kv_g(k_groupsize));
  if (v_bits < 16) s += fmt::format(" v:{}{}", seed_rule ? "auto" : v_asym ? "asym" : "sym", kv_g(v_groupsize));
  if (a_auto_asym) s += " auto-asym:" + auto_asym_rule;
  return s;
}

void apply_recipe(const std::string& name, QuantConfig& c) {
  c.recipe = name;
  auto w4a4kv4 = [&] {
    c.w_bits = 4; c.a_bits = 4; c.k_bits = 4; c.v_bits = 4;
    c.k_asym = c.v_asym = true;  // asymmetric, one scale per token and head (lowbit's recipes)
    c.k_groupsize = c.v_groupsize = 0;
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
    c.k_had = false;  // "no rotation": not even QuaRot's R3 on Q/K
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
