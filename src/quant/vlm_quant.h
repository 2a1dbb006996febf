// Quantization of a vision-language model, tower by tower, with the one block driver
// (quant/driver.h):
//
//   prepare   QuaRot of the language model (R1 also folded into the projector's last linear and
//             LLaVA-NeXT's image_newline, so image tokens enter the rotated stream exactly);
//             runtime quantizers: the language model's as for LLaMA (clip min(a_clip, lma_clip)),
//             the vision tower's and projector's linears under --vit_module (clip min(a_clip, vita_clip))
//   vision    encoder layers 0..U−1 (U = the layers the image features read), w_bits_vision
//   projector LLaVA's linear_1 → linear_2 / Idefics3's connector, w_bits_projector
//   language  decoder layers, w_bits; then lm_head (lm_head_w_bits unless --skip_last_language)
// Each tower's calibration inputs come from the model's own forward over the calibration samples
// with the upstream towers already quantized (ForwardOptions::tower_hook): per image frame the
// vision embeddings, per image the projector's input, per sample the decoder's input embeddings
// (image features written into the image tokens) — so errors propagate as at inference. GPTAQ's
// full-precision inputs X̃ are taken the same way before any weight is quantized.
// RTN needs no calibration; a text-only --cal_dataset calibrates the language model alone (the
// vision tower and projector then need RTN or 16 bits).
// Auto-asym covers every tower: --a_auto_asym (the seed's rule: after the weights, each linear's
// output on the first calibration sample decides its input quantizer) and --a_auto_asym_lowbit
// (before the weights, each shared input's statistics over all samples).
// The patch-embedding convolution (--quant_patch_embed), a linear over the unfolded patches, is
// solved with GPTQ under GPTQ/GPTAQ (H from every patch row of the calibration images' frames;
// GPTAQ's dXXᵀ is zero for the pixels) and rounded under --w_rtn; --skip_last_vision keeps the last used vision layer's
// fc2, --skip_last_proj the projector's last linear, --skip_last_language lm_head in full precision.
#pragma once
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "io/tokenizer.h"
#include "models/vlm.h"
#include "quant/driver.h"

namespace lowbit {

// One calibration sample: the images (files) and the rendered prompt text with one `<image>`
// placeholder per image (the family's processor expands them).
struct VlmCalibSample {
  std::string id;
  std::vector<std::string> images;  // image file paths
  std::string text;
};

struct VlmCalibration {
  std::vector<VlmCalibSample> multimodal;
  std::vector<std::vector<int32_t>> text;  // token windows of a text-only --cal_dataset
};

// Installs the runtime quantizers of `rt` on every tower (LLaMA's install_runtime on the language
// model with its clip ratio, the vision tower's and projector's activation quantizers).
void install_vlm_runtime(const VlmParts& parts, const QuantRuntime& rt);

// Quantizes the VLM in place per `cfg` (see above). `calib` as the configuration needs it.
QuantizedModel quantize_vlm(Vlm& vlm, const QuantConfig& cfg, const Tokenizer& tok, const VlmCalibration& calib,
                            const DriverOptions& opt = {});

// The calibration data cfg asks for (a conversation JSON with --image_folder, or a text file),
// read and sampled; empty when the configuration needs none.
VlmCalibration load_vlm_calibration(const QuantConfig& cfg, const Tokenizer& tok, const std::string& model_dir,
                                    int64_t max_context);

// What `eval vqa` / `eval ppl` call: reads the calibration data, quantizes `vlm` in memory, logs.
QuantizedModel quantize_vlm_in_memory(Vlm& vlm, const QuantConfig& cfg, const Tokenizer& tok,
                                      const std::string& model_dir);

// A quantized VLM checkpoint: the source directory's files (config, processor, tokenizer,
// templates) and one model.safetensors under the family's own tensor names, quantized linears
// as packed codes (X.qweight / X.scales / X.qzeros / X.g_idx as in quant/checkpoint.h), plus
// lowbit_quant.json with the per-tower settings and per-layer errors grouped by tower.
// The original LLaVA layout (LlavaLlamaForCausalLM + a separate CLIP directory) is written in
// that layout, self-contained: OUT/ holds the decoder and projector (model.*, lm_head.*) with the
// source's config.json plus "lowbit_vision_tower_dir": "vision_tower", and OUT/vision_tower/ is a
// CLIPVisionModel directory (the tower directory's config.json and preprocessor_config.json, its
// model.safetensors with the tower quantized under its own names, vision_model.*);
// lowbit_quant.json (in OUT) lists the linears of both files.
// Written atomically (write_checkpoint_atomically).
void save_quantized_vlm(Vlm& vlm, const QuantizedModel& q, const std::string& src_dir, const std::string& out_dir);
// The subdirectory of a quantized original-layout LLaVA checkpoint that holds its CLIP tower
// (config.json's "lowbit_vision_tower_dir", relative to dir), or "" when the config names none.
// FormatError for an absolute path, one with "..", or one that is not a directory.
std::string quantized_vision_tower_dir(const std::string& dir);
// The packed codes of a quantized checkpoint by file tensor name (for the family loaders'
// `packed` argument; FormatError for codes the metadata does not list, or the reverse);
// `used`, when given, collects the names handed out.
PackedSource quantized_packed_source(const std::string& dir,
                                     std::shared_ptr<std::set<std::string>> used = nullptr);
// Loads it (packed codes kept, runtime quantizers installed); load_vlm calls this.
std::unique_ptr<Vlm> load_quantized_vlm(const std::string& dir);

}  // namespace lowbit
