// The layer-by-layer quantization driver shared by every method and model:
//   calibration windows → (rotate) → [auto-asym pass] → for each layer:
//     for each true-sequential group (q/k/v → o → gate/up → down):
//       run the layer on the calibration inputs, observers accumulate H (and
//       GPTAQ's dXXᵀ) for the group's linears; quantize them (GPTQ/GPTAQ/RTN);
//     propagate the inputs through the quantized layer.
// Only one layer's calibration state (its Hessians) lives at a time.
#pragma once
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "models/llama.h"
#include "quant/config.h"
#include "quant/qgrid.h"
#include "quant/rtn_quant.h"
#include "quant/runtime.h"

namespace lowbit {

struct QuantizedModel {
  std::shared_ptr<QuantRuntime> runtime;
  std::map<std::string, QuantizedWeight> weights;  // by linear name
  nlohmann::json report;                           // per-layer timings and errors
};

// Quantizes `m` in place (weights replaced by their dequantized f32 values,
// runtime hooks installed). `calib` holds the calibration windows (may be empty
// when the config needs no calibration).
QuantizedModel quantize_model(LlamaModel& m, const QuantConfig& cfg, const std::vector<std::vector<int32_t>>& calib);

}  // namespace lowbit
