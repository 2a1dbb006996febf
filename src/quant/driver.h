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
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "models/llama.h"
#include "quant/config.h"
#include "quant/gptq_solver.h"
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

// ---- the tower loop (shared by LLaMA and the vision-language models) -------------------------
//
// A tower is a sequence of blocks quantized with one weight width (vision encoder layers,
// the projector, the decoder layers); `keep` names linears left in full precision.
struct TowerPlan {
  std::string tower;  // "" for a plain LLaMA model (report unchanged), else "vision" | "projector" | "language"
  int w_bits = 16;
  std::set<const Linear*> keep;
};

// Round-to-nearest of one linear (packed codes; the f32 weight dropped).
void rtn_linear(Linear& lin, const QuantConfig& cfg, int bits);
// GPTQ of one linear outside a block (the VLM's patch-embedding convolution) from the statistics
// H of its input, with the solver settings of gptq_blocks (cfg's grid, percdamp, blocksize,
// act_order, static_groups; plain GPTQ: the caller's input has no quantized/FP difference) at
// `bits`; packed codes, the f32 weight dropped. Returns {loss, solve_seconds, percdamp}.
nlohmann::json gptq_linear(Linear& lin, const HessianAccumulator& H, const QuantConfig& cfg, int bits);
// RTN of every linear of the blocks (except plan.keep); appends a per-layer entry to `layers`
// when plan.tower is set.
void rtn_blocks(const std::vector<Block*>& blocks, const QuantConfig& cfg, const TowerPlan& plan,
                nlohmann::json& layers);
// collect → solve → propagate over the blocks in order (GPTQ, GPTAQ with cfg.use_v2).
// Xq (and Xfp for GPTAQ) hold the first block's inputs per sample and end as the last
// block's outputs; plan.w_bits = 16 only propagates. Appends each block's report to
// `layers`; returns the state budget used.
int64_t gptq_blocks(const std::vector<Block*>& blocks, std::vector<BlockState>& Xq, std::vector<BlockState>& Xfp,
                    const QuantConfig& cfg, const TowerPlan& plan, nlohmann::json& layers,
                    const DriverOptions& opt = {});

// The seed auto-asym rule's observer (quant/auto_asym.h): at each group-input site of `group_of`
// (a site is named by its group's first linear), every linear's output y = x·Wᵀ (+ bias) decides
// that linear's input quantizer in rt.asym, and decisions[name] gets {asym, mean, std, skewness}.
// The references must outlive the forward that uses the observer.
Observer seed_auto_asym_observer(const std::map<std::string, std::vector<Linear*>>& group_of, Backend& be,
                                 QuantRuntime& rt, nlohmann::json& decisions);
int count_asym(const nlohmann::json& decisions);  // decisions with "asym": true

// Quantizes `m` in place: quantized linears hold their packed codes (Linear::qw), the
// runtime quantizers are installed. `calib` holds the calibration samples (token ids;
// lengths may differ), empty when the config needs no calibration.
QuantizedModel quantize_model(LlamaModel& m, const QuantConfig& cfg, const std::vector<std::vector<int32_t>>& calib,
                              const DriverOptions& opt = {});

}  // namespace lowbit
