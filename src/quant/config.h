// The quantization config: every knob of a run, versioned, saved with every
// output and printed in every report. Field names follow the seed codebases'
// flags (w_bits, a_clip_ratio, rotate, use_v2, ...).
#pragma once
#include <cstdint>
#include <map>
#include <string>

#include <nlohmann/json.hpp>

namespace lowbit {

struct QuantConfig {
  // 2: rotate_mode; fp32_had is real (v1 files read as fp32_had).
  // 3: k/v_groupsize -1 = the token's whole K/V vector (QuaRot), 0 = per head (what -1 meant
  //    in v1/v2, read as 0); auto_asym_rule (v1/v2 files read as "lowbit"); the "vlm" section
  //    of per-tower settings (absent: the defaults).
  static constexpr int kVersion = 3;

  // ---- weights
  int w_bits = 16;              // 16: keep (a VLM: the language model's, and the default of every tower)
  int64_t w_groupsize = -1;     // -1: per output channel
  bool w_asym = false;
  bool w_rtn = false;           // round-to-nearest instead of GPTQ
  bool w_clip = false;          // MSE clipping search (p = 1 - i/100, i < 80, |err|^2.4)
  double percdamp = 0.01;
  bool act_order = false;
  bool static_groups = false;
  bool use_v2 = false;          // GPTAQ asymmetric calibration
  double v2_alpha = 0.25;
  int64_t blocksize = 128;
  int lm_head_w_bits = 16;      // lm_head weights stay 16-bit unless asked
  // QuaRot's --int8_down_proj: down_proj's weights (when weights are quantized) and its input
  // (when --a_bits or --v_bits < 16, the seed's condition) at 8 bits.
  bool int8_down_proj = false;

  // ---- activations (inputs of every linear, dynamic per token)
  int a_bits = 16;
  int64_t a_groupsize = -1;
  bool a_asym = false;
  double a_clip_ratio = 1.0;
  bool a_auto_asym = false;     // skew-based per-layer sym/asym choice
  // "seed": the skew-based QuaRot's rule (quant/auto_asym.h): statistics of each linear's
  // output on the first calibration window after weight quantization, per linear;
  // "lowbit": lowbit's own (statistics of each shared input over all calibration windows
  // before weight quantization, per input site, K cache included).
  std::string auto_asym_rule = "seed";
  double auto_asym_t1 = 0.1;    // |mean|/std threshold
  double auto_asym_t2 = 0.2;    // |skewness| threshold (the seed's 0.2; lowbit's rule defaults to 0.5)
  int lm_head_a_bits = 16;

  // ---- KV cache. groupsize -1: one scale per token over its whole K (or V) vector, all
  // KV heads together (QuaRot's -1); 0: one scale per token and head (groups of head_dim);
  // g > 0: groups of g channels (g divides head_dim).
  int k_bits = 16, v_bits = 16;
  int64_t k_groupsize = -1, v_groupsize = -1;
  bool k_asym = false, v_asym = false;
  // R3 (the online Hadamard on Q and K after RoPE) whenever K is quantized, --rotate or not,
  // as QuaRot's QKRotationWrapper does. v1/v2 files read as false: R3 only when rotating.
  bool k_had = true;
  double k_clip_ratio = 1.0, v_clip_ratio = 1.0;

  // ---- rotation
  bool rotate = false;
  uint64_t rotate_seed = 0;     // defaults to `seed`
  std::string rotate_mode = "hadamard";  // R1: "hadamard" (diag(signs)·H) | "random" (random orthogonal), QuaRot's --rotate_mode
  // Online Hadamards in f32 (lowbit's default: its activations are f32). false = QuaRot
  // without --fp32_had: the transform's input and output are rounded to f16.
  bool fp32_had = true;

  // ---- calibration
  std::string cal_dataset;
  int64_t cal_begin = 0, cal_end = -1;  // character range of cal_dataset
  int64_t nsamples = 128;
  int64_t cal_seqlen = 2048;
  uint64_t seed = 0;
  bool enable_aq_calibration = false;

  // ---- vision-language models, per tower (no effect on a LLaMA model). Weight widths:
  // vision encoder layers w_bits_vision, projector w_bits_projector, language model w_bits
  // (-1: follow w_bits). `--wbits V,P,L` sets all three (and lm_head_w_bits = L, see quant_flags).
  int w_bits_vision = -1;
  int w_bits_projector = -1;
  bool vit_module = false;        // a_bits on the vision tower's and the projector's linears (QSVD --vit_module)
  double vita_clip_ratio = 1.0;   // their clip ratio: min(a_clip_ratio, vita_clip_ratio) (QSVD)
  double lma_clip_ratio = 1.0;    // the language model's: min(a_clip_ratio, lma_clip_ratio) (QSVD)
  bool skip_last_vision = false;  // the last used vision layer's fc2 stays full precision
  bool skip_last_proj = false;    // the projector's last linear (linear_2; Idefics3: proj) stays full precision
  bool skip_last_language = false;  // lm_head stays full precision
  bool quant_patch_embed = false; // the patch-embedding convolution (as a linear over unfolded patches)
  std::string cal_image_folder;   // images of a conversation-JSON --cal_dataset

  std::string recipe;           // name of the recipe it started from, if any

  int vision_w_bits() const { return w_bits_vision >= 0 ? w_bits_vision : w_bits; }
  int projector_w_bits() const { return w_bits_projector >= 0 ? w_bits_projector : w_bits; }
  bool quantizes_weights() const { return w_bits < 16 || vision_w_bits() < 16 || projector_w_bits() < 16; }
  bool quantizes_acts() const { return a_bits < 16; }
  bool quantizes_kv() const { return k_bits < 16 || v_bits < 16; }
  bool any() const { return quantizes_weights() || quantizes_acts() || quantizes_kv() || rotate; }
  // Auto-asym statistics: the seed's rule decides activation inputs and V; lowbit's, inputs and K.
  bool auto_asym_used() const {
    return a_auto_asym && (auto_asym_rule == "seed" ? quantizes_acts() || v_bits < 16 : quantizes_acts() || k_bits < 16);
  }
  bool needs_calibration() const { return (quantizes_weights() && !w_rtn) || auto_asym_used(); }

  // Throws ArgError naming the flag for impossible settings.
  void validate() const;
  nlohmann::json to_json() const;
  static QuantConfig from_json(const nlohmann::json& j);  // ArgError/FormatError on bad input
  std::string summary() const;  // one line, e.g. "W4A4KV4 rotate gptq g-1 ..."
};

// Named recipes, applied before explicit flags (flags override).
// quarot-w4a4kv4, quarot-gptq-w4a4kv4, gptq-w4a16-g128, gptq-w4a16, rtn-w4a16,
// gptaq-w4a4, quarot-gptaq-w4a4kv4, w8a8, rtn-w4a4kv4.
void apply_recipe(const std::string& name, QuantConfig& c);
std::string recipe_list();

}  // namespace lowbit
