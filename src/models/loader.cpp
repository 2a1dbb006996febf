#include "models/loader.h"

#include "models/idefics3.h"
#include "models/llava.h"
#include "models/llava_next.h"
#include "quant/checkpoint.h"
#include "quant/vlm_quant.h"

namespace lowbit {

LlamaModel load_model(const std::string& dir) {
  if (is_quantized_checkpoint(dir) && is_vlm_dir(dir)) {  // a quantized VLM: its language model
    std::unique_ptr<Vlm> v = load_quantized_vlm(dir);
    return std::move(v->language());
  }
  if (is_quantized_checkpoint(dir)) return load_quantized(dir);
  if (is_llava_dir(dir)) return LlavaModel::load_language(dir);
  if (is_llava_next_dir(dir)) return std::move(LlavaNextModel::load(dir).llava.language);
  if (is_idefics3_dir(dir)) return std::move(Idefics3Model::load(dir).language);
  return LlamaModel::load(dir);
}

bool is_vlm_dir(const std::string& dir) { return is_llava_dir(dir) || is_llava_next_dir(dir) || is_idefics3_dir(dir); }

}  // namespace lowbit
