// Config and weight-loading pieces shared by the vision-language models (LLaVA, LLaVA-NeXT,
// Idefics3): HF's LLaMA text_config defaults, the top-level dtype, the image token id,
// config.json reading, and the language model's tensors under LLaMA's own names.
#pragma once
#include <cstdint>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/safetensors.h"
#include "models/weights.h"

namespace lowbit {

// parse(), with nlohmann's exceptions (a wrong type the parser did not check) as ConfigError
// naming path.
template <class F>
auto json_errors_as_config(const std::string& path, F&& parse) -> decltype(parse()) {
  try {
    return parse();
  } catch (const nlohmann::json::exception& e) {
    throw ConfigError(fmt::format("{}: {}", path, e.what()));
  }
}

// ConfigError unless j has the objects "text_config" and "vision_config".
void check_text_and_vision_configs(const nlohmann::json& j, const std::string& path);

// A VLM's text_config with HF LlamaConfig's defaults for the keys it leaves out (when its
// model_type is llama or absent), and without "architectures" (the text model's own class name
// is not what we load).
nlohmann::json llama_text_config(nlohmann::json text);

// The checkpoint's dtype is stated at the top level; the decoder's RoPE frequencies follow it
// (LlamaConfig::inv_freq rounds them as HF's buffers are when the model loads in f16/bf16).
// Copies top's "dtype" (else "torch_dtype") into text as "dtype" unless text states one.
void inherit_top_level_dtype(nlohmann::json& text, const nlohmann::json& top);

// The image token id under `key` (else under `alt`), checked to be in [0, vocab_size);
// nullopt when neither key is present.
std::optional<int32_t> image_token_from_json(const nlohmann::json& j, const char* key, const char* alt,
                                             int64_t vocab_size, const std::string& path);

// architectures[0] when it is a string, else "".
std::string first_architecture(const nlohmann::json& j);

// <dir>/config.json parsed, or null when there is none.
nlohmann::json read_config_or_null(const std::string& dir);

// <dir>/config.json parsed, with its path; IoError when dir or the file is missing.
struct ModelConfigJson {
  nlohmann::json json;
  std::string path;
};
ModelConfigJson read_model_config(const std::string& dir);

// The store's tensors by name (undefined when absent).
TensorSource store_tensors(const WeightStore& store);

// The language model's tensors under LLaMA's own names: "model.X" ↔ decoder_root + "X",
// anything else (lm_head.*) ↔ head_root + name.
TensorSource language_model_tensors(const WeightStore& store, const std::string& decoder_root,
                                    const std::string& head_root);

// The same mapping for a quantized checkpoint's packed codes: the language model's linear
// "model.X" is looked up as decoder_root + "X" (lm_head as head_root + "lm_head"). Empty
// when `packed` is.
PackedSource language_model_packed(const PackedSource& packed, const std::string& decoder_root,
                                   const std::string& head_root);

}  // namespace lowbit
