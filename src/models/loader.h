// Opens any model directory lowbit reads: a Hugging Face LLaMA-family model, or a
// lowbit quantized checkpoint (recognized by its lowbit_quant.json).
#pragma once
#include <string>

#include "models/llama.h"

namespace lowbit {

LlamaModel load_model(const std::string& dir);

}  // namespace lowbit
