// `lowbit inspect`: architecture, parameter count, dtypes and per-linear weight
// statistics — absmax, std and kurtosis tell whether outliers will hurt quantization
// (Gaussian kurtosis is 3; LLM weights with outlier channels run far higher).
#pragma once
#include <nlohmann/json.hpp>

#include "models/llama.h"
#include "models/llava.h"

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
nlohmann::json inspect_llava(const LlavaModel& m);

}  // namespace lowbit
