// config.json of LlamaForCausalLM-style models (llama, mistral, qwen2 spellings).
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace lowbit {

struct RopeConfig {
  std::string type = "default";  // default | linear | llama3
  double theta = 10000.0;
  double factor = 1.0;               // linear, llama3
  double low_freq_factor = 1.0;      // llama3
  double high_freq_factor = 4.0;     // llama3
  int64_t original_max_position = 8192;  // llama3
};

struct LlamaConfig {
  std::string architecture;   // e.g. LlamaForCausalLM
  std::string model_type;     // llama | mistral | qwen2
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_layers = 0;
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;
  int64_t vocab_size = 0;
  int64_t max_position = 0;
  double rms_eps = 1e-6;
  bool tie_word_embeddings = false;
  bool attention_bias = false;  // q/k/v (and o for llama's flag) biases; qwen2 has q/k/v biases
  bool o_bias = false;
  bool mlp_bias = false;
  int32_t bos_token_id = -1, eos_token_id = -1;
  std::string torch_dtype;
  RopeConfig rope;

  // Parses and validates; `path` names the file in errors (ConfigError).
  static LlamaConfig from_json(const nlohmann::json& j, const std::string& path);
  // from_json of config.json text (FormatError for invalid JSON).
  static LlamaConfig parse(std::string_view text, const std::string& path);
  static LlamaConfig load(const std::string& model_dir);
  nlohmann::json to_json() const;  // the same keys HF uses (rope_parameters form)

  // RoPE inverse frequencies, head_dim/2 values, with the scaling type applied.
  std::vector<float> inv_freq() const;
};

}  // namespace lowbit
