// Quantized inference numerics installed on a LlamaModel as data: online Hadamards
// (QuaRot R3/R4 and the cross-head part of R2), dynamic per-token activation
// fake-quantization on every linear's input, and K/V-cache fake-quantization after
// RoPE. Weights are handled elsewhere (packed codes on each Linear), so the model
// computes exactly what a W/A/KV-quantized kernel would, in f32. Whether the
// quantizers run is the caller's BlockCtx / ForwardOptions, never a global switch.
#pragma once
#include <map>
#include <memory>
#include <string>

#include "models/llama.h"
#include "quant/config.h"
#include "quant/rotation.h"

namespace lowbit {

struct QuantRuntime {
  QuantConfig cfg;
  bool rotated = false;
  OnlineRotations rot;
  // Skew-based choice per activation site (every linear's name, or
  // "model.layers.N.self_attn.k_cache"): true = asym. Linears that share an input share a decision.
  std::map<std::string, bool> asym;
  // Run the online Q/K Hadamard (R3) even without K quantization (tests of invariance).
  bool force_qk_rotation = false;
};

// Sets every linear's online transform and activation quantizer and every layer's
// Q/K transform and K/V quantizers from `rt` (replacing whatever was there).
void install_runtime(LlamaModel& m, const QuantRuntime& rt);

}  // namespace lowbit
