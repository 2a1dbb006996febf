#include "cli/quant_flags.h"

#include <map>

#include <fmt/format.h>

#include "core/error.h"
#include "core/progress.h"

namespace lowbit::cli {

void QuantFlags::add(CLI::App* app) {
  auto& g = given_;
#define LB_OPT(field, names, help)                                                               \
  opts_.push_back({app->add_option(names, g.field, help)->group("Quantization"),                 \
                   [](QuantConfig& d, const QuantConfig& s) { d.field = s.field; }})
#define LB_FLAG(field, names, help)                                                              \
  opts_.push_back({app->add_flag(names, g.field, help)->group("Quantization"),                   \
                   [](QuantConfig& d, const QuantConfig& s) { d.field = s.field; }})
  app->add_option("--recipe", recipe_, "named recipe: " + recipe_list())->group("Quantization");
  LB_OPT(w_bits, "--w_bits,--w-bits", "weight bits (2..8; 16 = keep); a VLM: every tower");
  wbits_opt_ = app->add_option("--wbits", wbits_,
                               "weight bits: N (every tower) or V,P,L (vision, projector, language; L also sets "
                               "lm_head unless --skip_last_language / --lm_head_w_bits)")
                   ->group("Quantization");
  LB_OPT(w_groupsize, "--w_groupsize,--w-groupsize,--groupsize", "weight group size (-1: per channel)");
  LB_FLAG(w_asym, "--w_asym,--w-asym,!--no-w_asym", "asymmetric weight grid");
  LB_FLAG(w_rtn, "--w_rtn,--w-rtn,!--no-w_rtn", "round-to-nearest weights instead of GPTQ");
  LB_FLAG(w_clip, "--w_clip,--w-clip,!--no-w_clip", "MSE search for the weight clipping ratio");
  LB_OPT(percdamp, "--percdamp", "GPTQ damping, fraction of mean(diag H)");
  LB_FLAG(act_order, "--act_order,--act-order,!--no-act_order", "GPTQ: columns in descending diag(H) order");
  LB_FLAG(static_groups, "--static_groups,--static-groups,!--no-static_groups", "GPTQ: fit group grids up front");
  LB_FLAG(use_v2, "--use_v2,--use-v2,--asym_calibrate,--gptaq,!--no-use_v2,!--no-asym_calibrate", "GPTAQ asymmetric calibration");
  LB_OPT(v2_alpha, "--v2_alpha,--alpha", "GPTAQ alpha");
  LB_OPT(blocksize, "--blocksize", "GPTQ lazy-batch block size");
  LB_OPT(lm_head_w_bits, "--lm_head_w_bits", "lm_head weight bits (16 = keep)");
  LB_FLAG(int8_down_proj, "--int8_down_proj,!--no-int8_down_proj",
          "QuaRot: down_proj weights and input at 8 bits (the input when --a_bits or --v_bits < 16)");
  LB_OPT(a_bits, "--a_bits,--a-bits,--abits", "activation bits (16 = off)");
  LB_OPT(a_groupsize, "--a_groupsize,--a-groupsize", "activation group size (-1: per token)");
  LB_FLAG(a_asym, "--a_asym,--a-asym,!--no-a_asym", "asymmetric activations");
  LB_OPT(a_clip_ratio, "--a_clip_ratio,--a-clip-ratio", "activation clip ratio");
  LB_FLAG(a_auto_asym, "--a_auto_asym,--a-auto-asym,!--no-a_auto_asym",
          "the skew-based QuaRot's per-linear sym/asym choice (its statistics; thresholds 0.1 / 0.2)");
  auto_asym_lowbit_ = app->add_flag(std::string("--a_auto_asym_lowbit,--a-auto-asym-lowbit"))
                          ->description("lowbit's own auto-asym rule (per input site, all calibration windows, "
                                        "before weight quantization, K included; thresholds 0.1 / 0.5)")
                          ->group("Quantization");
  LB_OPT(auto_asym_t1, "--auto_asym_t1", "auto-asym: asym when |mean|/std exceeds this (default 0.1)");
  LB_OPT(auto_asym_t2, "--auto_asym_t2", "auto-asym: asym when |skewness| exceeds this (default 0.2; 0.5 with --a_auto_asym_lowbit)");
  LB_OPT(lm_head_a_bits, "--lm_head_a_bits", "lm_head input bits (16 = keep)");
  LB_OPT(k_bits, "--k_bits,--k-bits", "K-cache bits");
  LB_OPT(v_bits, "--v_bits,--v-bits", "V-cache bits");
  LB_OPT(k_groupsize, "--k_groupsize,--k-groupsize", "K-cache group size (-1: the token's whole K vector, all heads, as QuaRot; 0: per head; g: g channels)");
  LB_OPT(v_groupsize, "--v_groupsize,--v-groupsize", "V-cache group size (-1: the token's whole V vector, all heads, as QuaRot; 0: per head; g: g channels)");
  LB_FLAG(k_asym, "--k_asym,--k-asym,!--no-k_asym", "asymmetric K cache");
  LB_FLAG(v_asym, "--v_asym,--v-asym,!--no-v_asym", "asymmetric V cache");
  LB_OPT(k_clip_ratio, "--k_clip_ratio,--k-clip-ratio", "K-cache clip ratio");
  LB_OPT(v_clip_ratio, "--v_clip_ratio,--v-clip-ratio", "V-cache clip ratio");
  LB_FLAG(rotate, "--rotate,!--no-rotate", "QuaRot Hadamard rotations");
  LB_OPT(rotate_seed, "--rotate_seed", "seed of R1's random signs (default: --seed)");
  LB_FLAG(fp32_had, "--fp32_had{true},!--no-fp32_had", "online Hadamards in f32 (lowbit's default; --fp32_had=false rounds their "
                                        "input and output to f16 like QuaRot without --fp32_had)");
  LB_OPT(rotate_mode, "--rotate_mode", "QuaRot R1: hadamard (random signs x Hadamard) | random (random orthogonal)");
  LB_OPT(cal_dataset, "--cal_dataset,--cal-dataset", "calibration text file");
  LB_OPT(cal_begin, "--cal_begin,--cal-begin", "first character of the calibration text");
  LB_OPT(cal_end, "--cal_end,--cal-end", "end character of the calibration text (-1: end)");
  LB_OPT(nsamples, "--nsamples", "calibration windows");
  LB_OPT(cal_seqlen, "--cal_seqlen,--cal-seqlen", "calibration window length");
  LB_OPT(seed, "--seed", "calibration sampling seed");
  LB_FLAG(enable_aq_calibration, "--enable_aq_calibration,!--no-enable_aq_calibration", "activation quantizers on while calibrating");
  LB_FLAG(vit_module, "--vit_module,--vit-module", "VLM: activation quantization (--a_bits) in the vision tower and projector");
  LB_OPT(vita_clip_ratio, "--vita_clip_ratio,--vita-clip-ratio", "VLM: vision/projector activation clip (min with --a_clip_ratio)");
  LB_OPT(lma_clip_ratio, "--lma_clip_ratio,--lma-clip-ratio", "VLM: language-model activation clip (min with --a_clip_ratio)");
  LB_FLAG(skip_last_vision, "--skip_last_vision,--skip-last-vision", "VLM: keep the last used vision layer's fc2 in full precision");
  LB_FLAG(skip_last_proj, "--skip_last_proj,--skip-last-proj", "VLM: keep the projector's last linear in full precision");
  LB_FLAG(skip_last_language, "--skip_last_language,--skip-last-language", "VLM: keep lm_head in full precision");
  LB_FLAG(quant_patch_embed, "--quant_patch_embed,--include-conv,--include_conv",
          "VLM: quantize the patch-embedding convolution (RTN; default: kept)");
  exclude_conv_ = app->add_flag(std::string("--exclude-conv,--exclude_conv"))
                      ->description("VLM: keep the patch-embedding convolution in full precision (the default; see "
                                    "README for the seed's store_false behaviour)")
                      ->group("Quantization");
  LB_OPT(cal_image_folder, "--image_folder,--image-folder,--cal_image_folder", "VLM: image folder of a conversation-JSON --cal_dataset");
#undef LB_OPT
#undef LB_FLAG
}

QuantConfig QuantFlags::resolve(int64_t max_context) const {
  QuantConfig c;
  if (!recipe_.empty()) apply_recipe(recipe_, c);
  for (auto& [opt, copy] : opts_)
    if (opt->count() > 0) copy(c, given_);
  if (wbits_opt_ && wbits_opt_->count() > 0) apply_wbits(c);
  if (exclude_conv_ && exclude_conv_->count() > 0) {
    for (auto& [opt, copy] : opts_)
      LOWBIT_CHECK(!(opt->get_name() == "--quant_patch_embed" && opt->count() > 0), ArgError,
                   "--exclude-conv and --quant_patch_embed/--include-conv contradict each other");
    c.quant_patch_embed = false;
  }
  bool seed_given = false, cal_seqlen_given = false, t2_given = false, seed_asym_given = false;
  for (auto& [opt, copy] : opts_) {
    if (opt->get_name() == "--rotate_seed" && opt->count() > 0) seed_given = true;
    if (opt->get_name() == "--cal_seqlen" && opt->count() > 0) cal_seqlen_given = true;
    if (opt->get_name() == "--auto_asym_t2" && opt->count() > 0) t2_given = true;
    if (opt->get_name() == "--a_auto_asym" && opt->count() > 0 && given_.a_auto_asym) seed_asym_given = true;
  }
  if (auto_asym_lowbit_ && auto_asym_lowbit_->count() > 0) {
    LOWBIT_CHECK(!seed_asym_given, ArgError,
                 "--a_auto_asym (the seed's rule) and --a_auto_asym_lowbit (lowbit's) exclude each other");
    c.a_auto_asym = true;
    c.auto_asym_rule = "lowbit";
    if (!t2_given) c.auto_asym_t2 = 0.5;
  } else if (seed_asym_given) {
    c.auto_asym_rule = "seed";
  }
  if (!cal_seqlen_given && max_context > 0 && c.cal_seqlen > max_context) c.cal_seqlen = max_context;
  if (!seed_given) c.rotate_seed = c.seed;
  c.validate();
  warn_without_effect(c);
  return c;
}

// --wbits N: every tower (as --w_bits); --wbits V,P,L: vision, projector, language, and lm_head
// at L as the GPTQ/QuIP-for-VLMs tool quantizes it with the language model (unless
// --skip_last_language or an explicit --lm_head_w_bits says otherwise).
void QuantFlags::apply_wbits(QuantConfig& c) const {
  std::vector<std::string> f;
  for (size_t at = 0;;) {
    const size_t p = wbits_.find(',', at);
    f.push_back(wbits_.substr(at, p == std::string::npos ? std::string::npos : p - at));
    if (p == std::string::npos) break;
    at = p + 1;
  }
  LOWBIT_CHECK(f.size() == 1 || f.size() == 3, ArgError,
               "--wbits '{}': give one width (every tower) or three, V,P,L (vision, projector, language); got {} fields",
               wbits_, f.size());
  std::vector<int> b;
  for (const std::string& x : f) {
    size_t used = 0;
    int v = 0;
    try {
      v = std::stoi(x, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    LOWBIT_CHECK(used == x.size() && !x.empty(), ArgError, "--wbits '{}': '{}' is not an integer", wbits_, x);
    static const char* const kTower[] = {"vision", "projector", "language"};
    LOWBIT_CHECK((v >= 2 && v <= 8) || v == 16, ArgError, "--wbits '{}': {} width {} is not supported: use 2..8, or 16 to keep",
                 wbits_, f.size() == 1 ? "the" : kTower[b.size()], v);
    b.push_back(v);
  }
  for (auto& [opt, copy] : opts_)
    LOWBIT_CHECK(!(opt->get_name() == "--w_bits" && opt->count() > 0), ArgError,
                 "--wbits and --w_bits both given; use one");
  if (b.size() == 1) {
    c.w_bits = b[0];
    return;
  }
  c.w_bits_vision = b[0];
  c.w_bits_projector = b[1];
  c.w_bits = b[2];
  bool head_given = false;
  for (auto& [opt, copy] : opts_)
    if (opt->get_name() == "--lm_head_w_bits" && opt->count() > 0) head_given = true;
  if (!head_given && !c.skip_last_language) c.lm_head_w_bits = b[2];
}

namespace {
// RTN with a conversation JSON: a vision-language model reads it to measure per-layer errors.
bool vlm_rtn_measured(const QuantConfig& c) { return c.w_rtn && c.quantizes_weights() && !c.cal_image_folder.empty(); }
}  // namespace

// A flag given on the command line that the final configuration does not use says so
// (the seed tools accept such combinations silently; lowbit never ignores a flag quietly).
void QuantFlags::warn_without_effect(const QuantConfig& c) const {
  const bool gptq = c.w_bits < 16 && !c.w_rtn;
  const bool acts = c.a_bits < 16 || c.lm_head_a_bits < 16;
  using Why = std::function<const char*(const QuantConfig&)>;
  const std::map<std::string, Why> unused = {
      {"--w_groupsize", [](auto& c) { return c.w_bits < 16 || c.lm_head_w_bits < 16 ? nullptr : "weights stay 16-bit"; }},
      {"--w_asym", [](auto& c) { return c.w_bits < 16 || c.lm_head_w_bits < 16 ? nullptr : "weights stay 16-bit"; }},
      {"--w_clip", [](auto& c) { return c.w_bits < 16 || c.lm_head_w_bits < 16 ? nullptr : "weights stay 16-bit"; }},
      {"--w_rtn", [](auto& c) { return c.w_bits < 16 ? nullptr : "weights stay 16-bit"; }},
      {"--percdamp", [=](auto&) { return gptq ? nullptr : "it is a GPTQ setting (no GPTQ in this run)"; }},
      {"--act_order", [=](auto&) { return gptq ? nullptr : "it is a GPTQ setting (no GPTQ in this run)"; }},
      {"--static_groups", [=](auto&) { return gptq ? nullptr : "it is a GPTQ setting (no GPTQ in this run)"; }},
      {"--blocksize", [=](auto&) { return gptq ? nullptr : "it is a GPTQ setting (no GPTQ in this run)"; }},
      {"--use_v2", [=](auto&) { return gptq ? nullptr : "GPTAQ needs GPTQ weights (no GPTQ in this run)"; }},
      {"--v2_alpha", [](auto& c) { return c.use_v2 && c.w_bits < 16 ? nullptr : "it is GPTAQ's alpha (no --use_v2)"; }},
      {"--int8_down_proj", [](auto& c) {
         return c.w_bits < 16 || c.a_bits < 16 || c.v_bits < 16 ? nullptr : "weights, activations and V stay 16-bit"; }},
      {"--a_groupsize", [=](auto&) { return acts ? nullptr : "activations stay 16-bit"; }},
      {"--a_asym", [=](auto& c) {
         return !acts ? "activations stay 16-bit" : c.auto_asym_used() ? "auto-asym decides every linear's input" : nullptr; }},
      {"--a_clip_ratio", [=](auto&) { return acts ? nullptr : "activations stay 16-bit"; }},
      {"--a_auto_asym", [](auto& c) { return c.auto_asym_used() ? nullptr : "activations and V stay 16-bit"; }},
      {"--a_auto_asym_lowbit", [](auto& c) { return c.auto_asym_used() ? nullptr : "activations and K stay 16-bit"; }},
      {"--auto_asym_t1", [](auto& c) { return c.auto_asym_used() ? nullptr : "it is an auto-asym threshold (no auto-asym in this run)"; }},
      {"--auto_asym_t2", [](auto& c) { return c.auto_asym_used() ? nullptr : "it is an auto-asym threshold (no auto-asym in this run)"; }},
      {"--k_groupsize", [](auto& c) { return c.k_bits < 16 ? nullptr : "the K cache stays 16-bit"; }},
      {"--k_asym", [](auto& c) {
         return c.k_bits >= 16 ? "the K cache stays 16-bit"
                : c.a_auto_asym && c.auto_asym_rule == "seed" ? "--a_auto_asym keeps K symmetric (the seed's rule)"
                                                                : nullptr; }},
      {"--k_clip_ratio", [](auto& c) { return c.k_bits < 16 ? nullptr : "the K cache stays 16-bit"; }},
      {"--v_groupsize", [](auto& c) { return c.v_bits < 16 ? nullptr : "the V cache stays 16-bit"; }},
      {"--v_asym", [](auto& c) {
         return c.v_bits >= 16 ? "the V cache stays 16-bit"
                : c.a_auto_asym && c.auto_asym_rule == "seed" ? "--a_auto_asym decides V from v_proj (the seed's rule)"
                                                                : nullptr; }},
      {"--v_clip_ratio", [](auto& c) { return c.v_bits < 16 ? nullptr : "the V cache stays 16-bit"; }},
      {"--rotate_seed", [](auto& c) { return c.rotate ? nullptr : "there is no --rotate"; }},
      {"--rotate_mode", [](auto& c) { return c.rotate ? nullptr : "there is no --rotate"; }},
      {"--fp32_had", [](auto& c) { return c.rotate ? nullptr : "there is no --rotate"; }},
      {"--enable_aq_calibration",
       [=](auto& c) { return gptq && (acts || c.k_bits < 16 || c.v_bits < 16) ? nullptr : "it needs GPTQ with activation or KV quantization"; }},
      {"--cal_dataset", [](auto& c) {
         return c.needs_calibration() || vlm_rtn_measured(c)
                    ? nullptr
                    : "this configuration reads no calibration data (RTN on a vision-language model reads it only "
                      "to measure per-layer errors)"; }},
      {"--cal_begin", [](auto& c) { return c.needs_calibration() ? nullptr : "this configuration reads no calibration data"; }},
      {"--cal_end", [](auto& c) { return c.needs_calibration() ? nullptr : "this configuration reads no calibration data"; }},
      {"--nsamples", [](auto& c) { return c.needs_calibration() || vlm_rtn_measured(c) ? nullptr : "this configuration reads no calibration data"; }},
      {"--cal_seqlen", [](auto& c) { return c.needs_calibration() || vlm_rtn_measured(c) ? nullptr : "this configuration reads no calibration data"; }},
      {"--seed", [](auto& c) { return c.needs_calibration() || c.rotate || vlm_rtn_measured(c) ? nullptr : "nothing is sampled or rotated"; }},
      {"--vita_clip_ratio", [](auto& c) { return c.vit_module && c.a_bits < 16 ? nullptr : "vision activations stay 16-bit (--vit_module with --a_bits)"; }},
      {"--lma_clip_ratio", [](auto& c) { return c.a_bits < 16 ? nullptr : "activations stay 16-bit"; }},
      {"--vit_module", [](auto& c) { return c.a_bits < 16 ? nullptr : "activations stay 16-bit (no --a_bits)"; }},
      {"--image_folder", [](auto& c) { return c.needs_calibration() || vlm_rtn_measured(c) ? nullptr : "this configuration reads no calibration data"; }},
      {"--skip_last_vision", [](auto& c) { return c.vision_w_bits() < 16 ? nullptr : "the vision tower's weights stay 16-bit"; }},
      {"--skip_last_proj", [](auto& c) { return c.projector_w_bits() < 16 ? nullptr : "the projector's weights stay 16-bit"; }},
      {"--quant_patch_embed", [](auto& c) { return c.vision_w_bits() < 16 ? nullptr : "the vision tower's weights stay 16-bit"; }},
  };
  auto opts = opts_;
  if (auto_asym_lowbit_) opts.push_back({auto_asym_lowbit_, nullptr});
  for (auto& [opt, copy] : opts) {
    if (opt->count() == 0) continue;
    auto it = unused.find(opt->get_name());
    if (it == unused.end()) continue;
    if (const char* why = it->second(c)) log_warn(fmt::format("{} has no effect: {}", opt->get_name(), why));
  }
}

}  // namespace lowbit::cli
