// `lowbit inspect`: architecture, parameter count, dtypes and per-linear weight
// statistics — absmax, std and kurtosis tell whether outliers will hurt quantization
// (Gaussian kurtosis is 3; LLM weights with outlier channels run far higher).
#pragma once
#include <nlohmann/json.hpp>

#include "models/llama.h"

namespace lowbit {

struct WeightStats {
  double absmax = 0, mean = 0, std = 0, kurtosis = 0;  // Pearson kurtosis E[(x-μ)^4]/σ^4
};
WeightStats weight_stats(const Tensor& W);

nlohmann::json inspect_model(const LlamaModel& m);
std::string format_inspect(const nlohmann::json& report);  // human-readable table

}  // namespace lowbit
