// Shared by `quantize` and `eval ppl`: calibration data from the flags, and the
// in-memory quantization with its printed report.
#pragma once
#include <string>
#include <vector>

#include <memory>

#include <nlohmann/json.hpp>

#include "cli/quant_flags.h"
#include "io/tokenizer.h"
#include "quant/driver.h"

namespace lowbit::cli {

// Tokenizes cfg.cal_dataset (character range cal_begin/cal_end) and samples the windows.
std::vector<std::vector<int32_t>> load_calibration(const QuantConfig& cfg, const Tokenizer& tok, int32_t bos);
// Quantizes `m` per `cfg` (calibration read when needed) and prints the config.
QuantizedModel quantize_in_memory(LlamaModel& m, const QuantConfig& cfg, const Tokenizer& tok);
// ArgError naming the first vision-language setting (per-tower --wbits, --vit_module,
// --skip_last_*, --lma_clip_ratio, ...) in a configuration for the text-only model `model`
// (`why`, when given, replaces "<model> is a text-only model" in the message).
void check_no_vlm_settings(const QuantConfig& cfg, const std::string& model, const std::string& why = "");
// In-memory quantization for the text evaluations (eval ppl, eval zeroshot, quarot) of the model
// loaded from `dir` into `model`: a VLM directory is quantized whole, tower by tower, and `model`
// becomes its quantized language model; a text-only model refuses VLM settings. ArgError for an
// already-quantized checkpoint. vision_tower: the original LLaVA layout's CLIP directory.
QuantizedModel quantize_for_text_eval(LlamaModel& model, const QuantConfig& cfg, const Tokenizer& tok,
                                      const std::string& dir, const std::string& vision_tower = "");

// The model a text evaluation (eval ppl, eval zeroshot) reads: the language model of `dir` (a
// VLM's too), its tokenizer, and with quantization flags that model quantized in memory
// (quantize_for_text_eval). --vision-tower without quantization flags is an ArgError.
struct TextEvalModel {
  LlamaModel model;
  std::unique_ptr<Tokenizer> tok;
  QuantConfig qc;
  nlohmann::json qreport;  // the driver's report; null without quantization
};
TextEvalModel load_text_eval_model(const std::string& dir, const std::string& tokenizer, const std::string& vision_tower,
                                   const QuantFlags& flags);

}  // namespace lowbit::cli
