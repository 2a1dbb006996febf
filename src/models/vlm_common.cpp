#include "models/vlm_common.h"

#include <filesystem>
#include <fstream>
#include <utility>

#include "io/files.h"
#include "io/json_util.h"

namespace lowbit {

using json = nlohmann::json;

json llama_text_config(json t) {
  static const std::pair<const char*, json> kDefaults[] = {
      {"hidden_size", 4096}, {"intermediate_size", 11008}, {"num_hidden_layers", 32},
      {"num_attention_heads", 32}, {"vocab_size", 32000}, {"max_position_embeddings", 2048},
      {"rms_norm_eps", 1e-6}};
  if (t.value("model_type", std::string("llama")) == "llama")
    for (const auto& [k, v] : kDefaults)
      if (!t.contains(k) || t[k].is_null()) t[k] = v;
  t.erase("architectures");
  return t;
}

void check_text_and_vision_configs(const json& j, const std::string& path) {
  LOWBIT_CHECK(j.contains("text_config") && j["text_config"].is_object(), ConfigError,
               "{}: missing object 'text_config'", path);
  LOWBIT_CHECK(j.contains("vision_config") && j["vision_config"].is_object(), ConfigError,
               "{}: missing object 'vision_config'", path);
}

void inherit_top_level_dtype(json& text, const json& top) {
  for (const char* key : {"dtype", "torch_dtype"})
    if (!text.contains("dtype") && !text.contains("torch_dtype") && top.contains(key) && top[key].is_string())
      text["dtype"] = top[key];
}

std::optional<int32_t> image_token_from_json(const json& j, const char* key, const char* alt, int64_t vocab_size,
                                             const std::string& path) {
  const char* tok_key = j.contains(key) ? key : alt;
  if (!j.contains(tok_key)) return std::nullopt;
  LOWBIT_CHECK(j[tok_key].is_number_integer() && j[tok_key].get<int64_t>() >= 0 &&
                   j[tok_key].get<int64_t>() < vocab_size,
               ConfigError, "{}: '{}' must be a token id in [0, {}), got {}", path, tok_key, vocab_size,
               json_excerpt(j[tok_key]));
  return j[tok_key].get<int32_t>();
}

std::string first_architecture(const json& j) {
  if (j.contains("architectures") && j["architectures"].is_array() && !j["architectures"].empty() &&
      j["architectures"][0].is_string())
    return j["architectures"][0].get<std::string>();
  return {};
}

json read_config_or_null(const std::string& dir) {
  const std::string path = (std::filesystem::path(dir) / "config.json").string();
  if (!std::ifstream(path).good()) return json();
  return parse_json(read_text_file(path), path);
}

ModelConfigJson read_model_config(const std::string& dir) {
  const std::string path = (std::filesystem::path(dir) / "config.json").string();
  LOWBIT_CHECK(std::filesystem::is_directory(dir), IoError, "model directory '{}' does not exist", dir);
  LOWBIT_CHECK(std::ifstream(path).good(), IoError, "cannot open {}", path);
  return {parse_json(read_text_file(path), path), path};
}

TensorSource store_tensors(const WeightStore& store) {
  return [&store](const std::string& name) { return store.has(name) ? store.get(name) : Tensor(); };
}

TensorSource language_model_tensors(const WeightStore& store, const std::string& decoder_root,
                                    const std::string& head_root) {
  static const std::string kModelPrefix = "model.";
  return [&store, decoder_root, head_root](const std::string& name) {
    const std::string mapped = name.compare(0, kModelPrefix.size(), kModelPrefix) == 0
                                   ? decoder_root + name.substr(kModelPrefix.size())
                                   : head_root + name;
    return store.has(mapped) ? store.get(mapped) : Tensor();
  };
}

PackedSource language_model_packed(const PackedSource& packed, const std::string& decoder_root,
                                   const std::string& head_root) {
  if (!packed) return {};
  static const std::string kModelPrefix = "model.";
  return [packed, decoder_root, head_root](const std::string& name, int64_t out, int64_t in) {
    const std::string mapped = name.compare(0, kModelPrefix.size(), kModelPrefix) == 0
                                   ? decoder_root + name.substr(kModelPrefix.size())
                                   : head_root + name;
    return packed(mapped, out, in);
  };
}

}  // namespace lowbit
