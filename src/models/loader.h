// Opens any model directory lowbit reads: a Hugging Face LLaMA-family model, a lowbit
// quantized checkpoint (recognized by its lowbit_quant.json), or a vision-language model's
// directory, whose language model it returns (LLaVA-1.5 in either layout — no vision tower
// needed —, LLaVA-NeXT, Idefics3 / SmolVLM: eval ppl and generate on text alone).
#pragma once
#include <string>

#include "models/llama.h"

namespace lowbit {

LlamaModel load_model(const std::string& dir);

// Whether dir holds a vision-language model lowbit can run with images (is_llava_dir,
// is_llava_next_dir or is_idefics3_dir; models/vlm.h loads any of them).
bool is_vlm_dir(const std::string& dir);

}  // namespace lowbit
