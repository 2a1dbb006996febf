// lowbit_quant.json of a quantized checkpoint (quant/checkpoint.h), parsed and checked
// on its own: untrusted text in, a typed FormatError out for anything malformed.
#pragma once
#include <map>
#include <string>
#include <string_view>
#include <utility>

#include "quant/config.h"

namespace lowbit {

struct QuantCheckpointMeta {
  QuantConfig cfg;                                  // validated
  bool rotated = false;                             // equals cfg.rotate
  std::map<std::string, bool> asym;                 // per-site auto-asym decisions
  std::map<std::string, std::pair<int, bool>> qlin;  // quantized linear -> (bits in 2..8, sym)
};

// Parses the text of lowbit_quant.json (`qpath` names it in errors). FormatError for
// invalid JSON, another format or version, missing or mistyped fields, impossible
// quantization settings (QuantConfig::validate), bits outside 2..8 and a "rotated"
// flag that contradicts the config.
QuantCheckpointMeta parse_quant_meta(std::string_view text, const std::string& qpath);

}  // namespace lowbit
