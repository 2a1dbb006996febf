#include "models/loader.h"

#include "models/llava.h"
#include "quant/checkpoint.h"

namespace lowbit {

LlamaModel load_model(const std::string& dir) {
  if (is_quantized_checkpoint(dir)) return load_quantized(dir);
  if (is_llava_dir(dir)) return LlavaModel::load_language(dir);
  return LlamaModel::load(dir);
}

bool is_vlm_dir(const std::string& dir) { return is_llava_dir(dir); }

}  // namespace lowbit
