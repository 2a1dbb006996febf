// The quantization driver shared by every method and model family:
//
//   prepare   rotate (QuaRot), install the runtime quantizers
//   [auto-asym statistics]  one forward with activation quantizers off, per-site sym/asym
//   for each block:
//     for each true-sequential group g:
//       collect   H = 2/N Σ x xᵀ of the group's shared input (GPTAQ: also dXXᵀ against the
//                 full-precision block's input), from per-sample states advanced to boundary g
//       solve     every linear of the group (GPTQ / GPTAQ; RTN needs no statistics)
//     propagate   advance the states through the quantized block: the next block's inputs
//     report      the block's relative output error against its FP version, timings
//
// Per-sample states are kept at the furthest group boundary while they fit a memory
// budget (sample by sample); a sample whose state was not kept is recomputed from its
// stored boundary (so each sublayer runs once per group pass when memory allows, and at
// most twice when not).
// Only one block's statistics live at a time.
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "models/llama.h"
#include "quant/config.h"
#include "quant/qgrid.h"
#include "quant/runtime.h"

namespace lowbit {

struct QuantizedModel {
  std::shared_ptr<QuantRuntime> runtime;
  nlohmann::json report;  // config, per-layer timings and errors, auto-asym decisions
};

struct DriverOptions {
  // Bytes the per-sample calibration states (Q and, for GPTAQ, FP states) plus the current
  // group's Hessian and solver matrices may take; <= 0: 36 % of physical memory.
  // Results do not depend on it, only time.
  int64_t state_budget_bytes = 0;
  // Called after block b's states were propagated through it: states[s].x = the next
  // block's input for calibration sample s (tests compare it with the model's forward).
  std::function<void(int64_t block, const std::vector<BlockState>& states)> after_block;
};

// Quantizes `m` in place: quantized linears hold their packed codes (Linear::qw), the
// runtime quantizers are installed. `calib` holds the calibration samples (token ids;
// lengths may differ), empty when the config needs no calibration.
QuantizedModel quantize_model(LlamaModel& m, const QuantConfig& cfg, const std::vector<std::vector<int32_t>>& calib,
                              const DriverOptions& opt = {});

}  // namespace lowbit
