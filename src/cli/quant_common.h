// Shared by `quantize` and `eval ppl`: calibration data from the flags, and the
// in-memory quantization with its printed report.
#pragma once
#include <string>
#include <vector>

#include "io/tokenizer.h"
#include "quant/driver.h"

namespace lowbit::cli {

// Tokenizes cfg.cal_dataset (character range cal_begin/cal_end) and samples the windows.
std::vector<std::vector<int32_t>> load_calibration(const QuantConfig& cfg, const Tokenizer& tok, int32_t bos);
// Quantizes `m` per `cfg` (calibration read when needed) and prints the config.
QuantizedModel quantize_in_memory(LlamaModel& m, const QuantConfig& cfg, const Tokenizer& tok);
// ArgError naming the first vision-language setting (per-tower --wbits, --vit_module,
// --skip_last_*, ...) in a configuration for the text-only model `model`.
void check_no_vlm_settings(const QuantConfig& cfg, const std::string& model);

}  // namespace lowbit::cli
