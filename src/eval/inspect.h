// `lowbit inspect`: architecture, parameter count, dtypes and per-linear weight
// statistics — absmax, std and kurtosis tell whether outliers will hurt quantization
// (Gaussian kurtosis is 3; LLM weights with outlier channels run far higher).
#pragma once
#include <nlohmann/json.hpp>

#include "models/llama.h"
#include "models/idefics3.h"
#include "models/llava.h"
#include "models/llava_next.h"

namespace lowbit {

struct WeightStats {
  double absmax = 0, mean = 0, std = 0, kurtosis = 0;  // Pearson kurtosis E[(x-μ)^4]/σ^4
};
WeightStats weight_stats(const Tensor& W);

nlohmann::json inspect_model(const LlamaModel& m);
std::string format_inspect(const nlohmann::json& report);  // human-readable table

// A vision-language model as its towers: "towers" lists the vision encoder (its layers'
// linears and the patch embedding), the projector and the decoder (the LLaMA report's
// config), each with per-linear statistics; "linears" holds all of them in that order and
// "parameters" counts all three. format_inspect prints it tower by tower.
// The vision tower's entry says its kind ("clip_vit" or "siglip": no class embedding, no
// pre-layernorm, a post-layernorm) and counts only the tensors it has.
nlohmann::json inspect_llava(const LlavaModel& m);
// LLaVA-NeXT: LLaVA's towers, image_newline counted with the projector, the grid pinpoints.
nlohmann::json inspect_llava_next(const LlavaNextModel& m);
// Idefics3 / SmolVLM: the SigLIP tower, the connector (pixel shuffle + linear), the decoder.
nlohmann::json inspect_idefics3(const Idefics3Model& m);

}  // namespace lowbit
