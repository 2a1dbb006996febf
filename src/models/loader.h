// Opens any model directory lowbit reads: a Hugging Face LLaMA-family model, a lowbit
// quantized checkpoint (recognized by its lowbit_quant.json), or a vision-language model's
// directory, whose language model it returns (LLaVA-1.5 in either layout: eval ppl and inspect
// on text need no vision tower).
#pragma once
#include <string>

#include "models/llama.h"

namespace lowbit {

LlamaModel load_model(const std::string& dir);

// Whether dir holds a vision-language model lowbit can run with images (is_llava_dir).
bool is_vlm_dir(const std::string& dir);

}  // namespace lowbit
