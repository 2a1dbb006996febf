// Quantized inference numerics installed on a LlamaModel: online Hadamards
// (QuaRot R3/R4 and the cross-head part of R2), dynamic per-token activation
// fake-quantization on every linear's input, and K/V-cache fake-quantization
// after RoPE. Weights are handled elsewhere (they are replaced by their
// dequantized values), so the model computes exactly what a W/A/KV-quantized
// kernel would, in f32.
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
  // Skew-based choice per activation site (linear name, or "model.layers.N.self_attn.k_cache"): true = asym.
  std::map<std::string, bool> asym;
  // Run the online Q/K Hadamard (R3) even without K quantization (tests of invariance).
  bool force_qk_rotation = false;
  // Quantizers can be switched off while calibrating (see --enable_aq_calibration).
  std::shared_ptr<bool> act_enabled = std::make_shared<bool>(true);
};

// Sets `pre` on every linear and `post_rope` on every layer of `m` from `rt`.
void install_runtime(LlamaModel& m, std::shared_ptr<const QuantRuntime> rt);

// Name of the K-cache activation site of layer l (used by auto-asym).
std::string k_cache_site(int64_t layer);

}  // namespace lowbit
