// Quantization flags shared by `lowbit quantize` and `lowbit eval ppl`: the seed
// codebases' spellings (--w_bits, --a_clip_ratio, --rotate, --use_v2, ...) with
// dash aliases, plus named recipes. A recipe sets defaults; explicit flags win.
#pragma once
#include <CLI/CLI.hpp>
#include <functional>
#include <memory>
#include <vector>

#include "quant/config.h"

namespace lowbit::cli {

class QuantFlags {
 public:
  void add(CLI::App* app);
  // The final config (recipe, then every flag given on the command line). Validated.
  // max_context > 0: a --cal_seqlen left at its default (2048) shrinks to the model's
  // context, as `eval ppl --seqlen` does; an explicit one is checked later instead.
  QuantConfig resolve(int64_t max_context = -1) const;
  // Warns about every flag given on the command line that `c` does not use.
  void warn_without_effect(const QuantConfig& c) const;

 private:
  void apply_wbits(QuantConfig& c) const;
  QuantConfig given_;  // values as parsed
  std::string wbits_;  // --wbits N | V,P,L
  CLI::Option* wbits_opt_ = nullptr;
  CLI::Option* exclude_conv_ = nullptr;
  std::string recipe_;
  CLI::Option* auto_asym_lowbit_ = nullptr;  // --a_auto_asym_lowbit: lowbit's rule (auto_asym_rule "lowbit")
  std::vector<std::pair<CLI::Option*, std::function<void(QuantConfig&, const QuantConfig&)>>> opts_;
};

}  // namespace lowbit::cli
