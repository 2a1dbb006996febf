#include "models/loader.h"

#include "quant/checkpoint.h"

namespace lowbit {

LlamaModel load_model(const std::string& dir) {
  return is_quantized_checkpoint(dir) ? load_quantized(dir) : LlamaModel::load(dir);
}

}  // namespace lowbit
