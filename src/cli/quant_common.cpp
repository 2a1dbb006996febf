#include "cli/quant_common.h"

#include "core/error.h"
#include "core/progress.h"
#include "eval/perplexity.h"
#include "io/files.h"
#include "models/llava.h"
#include "models/loader.h"
#include "models/vlm.h"
#include "quant/calibration.h"
#include "quant/checkpoint.h"
#include "quant/vlm_quant.h"

namespace lowbit::cli {

std::vector<std::vector<int32_t>> load_calibration(const QuantConfig& c, const Tokenizer& tok, int32_t bos) {
  LOWBIT_CHECK(!c.cal_dataset.empty(), ArgError, "this configuration needs calibration data: pass --cal_dataset FILE");
  std::string text = read_text_file(c.cal_dataset);
  if (c.cal_begin != 0 || c.cal_end >= 0) text = utf8_slice(text, c.cal_begin, c.cal_end);
  LOWBIT_CHECK(!text.empty(), ArgError, "--cal_dataset {} (selected range) is empty", c.cal_dataset);
  std::vector<int32_t> ids = tokenize_stream(tok, text, bos);
  return sample_calibration(ids, c.nsamples, c.cal_seqlen, c.seed);
}

void check_no_vlm_settings(const QuantConfig& c, const std::string& model, const std::string& why) {
  const char* flag = c.w_bits_vision >= 0 || c.w_bits_projector >= 0 ? "--wbits V,P,L"
                     : c.vit_module                                 ? "--vit_module"
                     : c.vita_clip_ratio != 1.0                     ? "--vita_clip_ratio"
                     : c.skip_last_vision                           ? "--skip_last_vision"
                     : c.skip_last_proj                             ? "--skip_last_proj"
                     : c.quant_patch_embed                          ? "--quant_patch_embed"
                     : !c.cal_image_folder.empty()                  ? "--image_folder"
                     : c.lma_clip_ratio != 1.0                      ? "--lma_clip_ratio"
                     : c.skip_last_language                         ? "--skip_last_language"
                                                                    : nullptr;
  LOWBIT_CHECK(flag == nullptr, ArgError, "{} is for vision-language models; {}", flag,
               why.empty() ? model + " is a text-only model" : why);
}

QuantizedModel quantize_for_text_eval(LlamaModel& model, const QuantConfig& c, const Tokenizer& tok,
                                      const std::string& dir, const std::string& vision_tower) {
  LOWBIT_CHECK(!is_quantized_checkpoint(dir), ArgError,
               "{} is already quantized; quantization flags apply to full-precision models", dir);
  LOWBIT_CHECK(vision_tower.empty() || is_llava_original_dir(dir), ArgError,
               "--vision-tower is only for the original LLaVA layout (LlavaLlamaForCausalLM); {} is not one", dir);
  if (!is_vlm_dir(dir)) {
    check_no_vlm_settings(c, dir);
    return quantize_in_memory(model, c, tok);
  }
  // The whole VLM, tower by tower (its calibration may hold images); the caller evaluates
  // its language model.
  std::unique_ptr<Vlm> v = load_vlm(dir, vision_tower);
  QuantizedModel q = quantize_vlm_in_memory(*v, c, tok, dir);
  model = std::move(v->language());
  return q;
}

QuantizedModel quantize_in_memory(LlamaModel& m, const QuantConfig& c, const Tokenizer& tok) {
  log_info("quantization config: " + c.summary());
  std::vector<std::vector<int32_t>> calib;
  if (c.needs_calibration()) {  // RTN without auto-asym reads no calibration data and checks none of its flags
    LOWBIT_CHECK(c.cal_seqlen <= m.cfg.max_position, ArgError,
                 "--cal_seqlen {} is larger than the model's context ({})", c.cal_seqlen, m.cfg.max_position);
    calib = load_calibration(c, tok, m.cfg.bos_token_id);
  }
  QuantizedModel q = quantize_model(m, c, calib);
  log_info(fmt::format("quantized in {:.2f}s, peak RSS {:.0f} MB", q.report["seconds"].get<double>(),
                       q.report["peak_rss_mb"].get<double>()));
  return q;
}

TextEvalModel load_text_eval_model(const std::string& dir, const std::string& tokenizer, const std::string& vision_tower,
                                   const QuantFlags& flags) {
  TextEvalModel t{load_model(dir), nullptr, {}, nullptr};
  t.qc = flags.resolve(t.model.cfg.max_position);
  LOWBIT_CHECK(vision_tower.empty() || t.qc.any(), ArgError,
               "--vision-tower is read only with quantization flags (the evaluation itself reads the language "
               "model alone)");
  t.tok = load_tokenizer(dir, tokenizer);
  if (t.qc.any()) t.qreport = quantize_for_text_eval(t.model, t.qc, *t.tok, dir, vision_tower).report;
  return t;
}

}  // namespace lowbit::cli
