#include "models/config.h"
#include "io/files.h"
#include "io/json_util.h"

#include <climits>
#include <cmath>
#include <filesystem>
#include <fstream>

#include "core/dtype.h"
#include "core/error.h"

namespace lowbit {
namespace {

using json = nlohmann::json;

int64_t get_int(const json& j, const char* key, const std::string& path, int64_t dflt = -1, bool required = true) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) {
    LOWBIT_CHECK(!required, ConfigError, "{}: missing required key '{}'", path, key);
    return dflt;
  }
  LOWBIT_CHECK(it->is_number_integer(), ConfigError, "{}: '{}' must be an integer, got {}", path, key, json_excerpt(*it));
  return it->get<int64_t>();
}

double get_num(const json& j, const char* key, double dflt) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null() || !it->is_number()) return dflt;
  return it->get<double>();
}

// eos_token_id may be a list (LLaMA-3 instruct): take the first. A listed id must be a
// 32-bit integer (a float or a larger integer must not be cast or wrap).
int32_t get_token_id(const json& j, const char* key, const std::string& path) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return -1;
  const json* v = &*it;
  if (v->is_array()) {
    if (v->empty()) return -1;
    v = &(*v)[0];
  } else if (!v->is_number_integer()) {
    return -1;
  }
  LOWBIT_CHECK(v->is_number_integer() && !(v->is_number_unsigned() && v->get<uint64_t>() > uint64_t(INT32_MAX)) &&
                   v->get<int64_t>() >= INT32_MIN && v->get<int64_t>() <= INT32_MAX,
               ConfigError, "{}: '{}' must be a 32-bit integer token id, got {}", path, key,
               json_excerpt(*it));
  return int32_t(v->get<int64_t>());
}

// A double from JSON converted to int64 without undefined behaviour (NaN/inf/out of range refused).
int64_t to_int64(double v, const char* key, const std::string& path) {
  LOWBIT_CHECK(std::isfinite(v) && v >= -9.2e18 && v <= 9.2e18, ConfigError, "{}: '{}' = {} is out of range", path,
               key, v);
  return int64_t(v);
}

// Upper bounds on sizes from config.json: far above any real LLaMA-family model
// (hidden 16384, vocab 256k, 126 layers), small enough that products of them and
// the tables sized by them (RoPE frequencies, caches) cannot overflow or exhaust memory.
constexpr int64_t kMaxDim = int64_t(1) << 20;        // hidden, intermediate, head_dim, heads
constexpr int64_t kMaxVocab = int64_t(1) << 24;
constexpr int64_t kMaxLayers = int64_t(1) << 12;
constexpr int64_t kMaxPosition = int64_t(1) << 32;

LlamaConfig parse_config(const json& j, const std::string& path) {
  LOWBIT_CHECK(j.is_object(), ConfigError, "{}: config must be a JSON object", path);
  LlamaConfig c;
  if (j.contains("architectures") && j["architectures"].is_array() && !j["architectures"].empty())
    c.architecture = j["architectures"][0].get<std::string>();  // json type_error -> ConfigError
  c.model_type = j.value("model_type", std::string());
  static const char* kArch[] = {"LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM"};
  static const char* kType[] = {"llama", "mistral", "qwen2"};
  bool arch_ok = false, type_ok = false;
  for (auto a : kArch) arch_ok |= c.architecture == a;
  for (auto t : kType) type_ok |= c.model_type == t;
  LOWBIT_CHECK(arch_ok || (c.architecture.empty() && type_ok), ConfigError,
               "{}: unsupported architecture '{}' (model_type '{}'); supported: LlamaForCausalLM, "
               "MistralForCausalLM, Qwen2ForCausalLM",
               path, c.architecture, c.model_type);

  c.hidden_size = get_int(j, "hidden_size", path);
  c.intermediate_size = get_int(j, "intermediate_size", path);
  c.num_layers = get_int(j, "num_hidden_layers", path);
  c.num_heads = get_int(j, "num_attention_heads", path);
  c.num_kv_heads = get_int(j, "num_key_value_heads", path, c.num_heads, false);
  c.vocab_size = get_int(j, "vocab_size", path);
  c.max_position = get_int(j, "max_position_embeddings", path, 2048, false);
  c.head_dim = get_int(j, "head_dim", path, -1, false);
  if (c.head_dim <= 0 && c.num_heads > 0) c.head_dim = c.hidden_size / c.num_heads;
  c.rms_eps = get_num(j, "rms_norm_eps", 1e-6);
  c.tie_word_embeddings = j.value("tie_word_embeddings", false);
  c.attention_bias = j.value("attention_bias", c.model_type == "qwen2");
  // HF llama's attention_bias also puts a bias on o_proj; qwen2 has q/k/v biases only.
  c.o_bias = c.model_type == "qwen2" ? false : c.attention_bias;
  c.mlp_bias = j.value("mlp_bias", false);
  c.bos_token_id = get_token_id(j, "bos_token_id", path);
  c.eos_token_id = get_token_id(j, "eos_token_id", path);
  c.torch_dtype = j.contains("dtype") && j["dtype"].is_string() ? j["dtype"].get<std::string>()
                                                                 : j.value("torch_dtype", std::string("float32"));

  LOWBIT_CHECK(c.hidden_size > 0 && c.intermediate_size > 0 && c.num_layers > 0 && c.num_heads > 0 &&
                   c.num_kv_heads > 0 && c.vocab_size > 0 && c.head_dim > 0 && c.max_position > 0,
               ConfigError, "{}: sizes must be positive (hidden {}, intermediate {}, layers {}, heads {}, kv heads {}, "
               "head_dim {}, vocab {})", path, c.hidden_size, c.intermediate_size, c.num_layers, c.num_heads,
               c.num_kv_heads, c.head_dim, c.vocab_size);
  LOWBIT_CHECK(c.hidden_size <= kMaxDim && c.intermediate_size <= kMaxDim && c.num_heads <= kMaxDim &&
                   c.num_kv_heads <= kMaxDim && c.head_dim <= kMaxDim && c.num_heads * c.head_dim <= kMaxDim &&
                   c.vocab_size <= kMaxVocab && c.num_layers <= kMaxLayers && c.max_position <= kMaxPosition,
               ConfigError, "{}: sizes beyond what lowbit supports (hidden {}, intermediate {}, layers {}, heads {}, "
               "kv heads {}, head_dim {}, vocab {}, max_position_embeddings {}; limits: dims and heads x head_dim "
               "{}, vocab {}, layers {}, positions {})", path, c.hidden_size, c.intermediate_size, c.num_layers,
               c.num_heads, c.num_kv_heads, c.head_dim, c.vocab_size, c.max_position, kMaxDim, kMaxVocab, kMaxLayers,
               kMaxPosition);
  LOWBIT_CHECK(c.num_heads % c.num_kv_heads == 0, ConfigError,
               "{}: num_attention_heads {} is not a multiple of num_key_value_heads {}", path, c.num_heads,
               c.num_kv_heads);
  LOWBIT_CHECK(c.head_dim % 2 == 0, ConfigError, "{}: head_dim {} must be even for RoPE", path, c.head_dim);
  if (j.value("hidden_act", std::string("silu")) != "silu")
    throw ConfigError(fmt::format("{}: unsupported hidden_act '{}' (only silu)", path, json_excerpt(j["hidden_act"])));
  if (j.contains("sliding_window") && j["sliding_window"].is_number_integer() &&
      j.value("use_sliding_window", c.model_type == "mistral")) {
    int64_t w = j["sliding_window"].get<int64_t>();
    LOWBIT_CHECK(w >= c.max_position, ConfigError,
                 "{}: sliding_window {} < max_position_embeddings {} is not supported", path, w, c.max_position);
  }

  // RoPE: newer configs use rope_parameters (holding rope_theta); older ones rope_theta + rope_scaling.
  const json* rp = nullptr;
  if (j.contains("rope_parameters") && j["rope_parameters"].is_object()) rp = &j["rope_parameters"];
  else if (j.contains("rope_scaling") && j["rope_scaling"].is_object()) rp = &j["rope_scaling"];
  c.rope.theta = get_num(j, "rope_theta", 10000.0);
  if (rp) {
    c.rope.theta = get_num(*rp, "rope_theta", c.rope.theta);
    std::string t = rp->value("rope_type", rp->value("type", std::string("default")));
    c.rope.type = t;
    c.rope.factor = get_num(*rp, "factor", 1.0);
    c.rope.low_freq_factor = get_num(*rp, "low_freq_factor", 1.0);
    c.rope.high_freq_factor = get_num(*rp, "high_freq_factor", 4.0);
    c.rope.original_max_position =
        to_int64(get_num(*rp, "original_max_position_embeddings", 8192), "original_max_position_embeddings", path);
    LOWBIT_CHECK(t == "default" || t == "linear" || t == "llama3", ConfigError,
                 "{}: unsupported rope type '{}' (supported: default, linear, llama3)", path, t);
    LOWBIT_CHECK(c.rope.factor > 0, ConfigError, "{}: rope factor must be positive", path);
  }
  LOWBIT_CHECK(c.rope.theta > 0, ConfigError, "{}: rope_theta must be positive", path);
  LOWBIT_CHECK(c.rms_eps > 0 && c.rms_eps < 1, ConfigError, "{}: rms_norm_eps {} must be in (0, 1)", path, c.rms_eps);
  return c;
}

}  // namespace

LlamaConfig LlamaConfig::from_json(const json& j, const std::string& path) {
  try {
    return parse_config(j, path);
  } catch (const json::exception& e) {
    // A key of the wrong JSON type (e.g. "architectures": [1]).
    throw ConfigError(fmt::format("{}: {}", path, e.what()));
  }
}

LlamaConfig LlamaConfig::parse(std::string_view text, const std::string& path) {
  return from_json(parse_json(text, path), path);
}

LlamaConfig LlamaConfig::load(const std::string& dir) {
  std::string path = (std::filesystem::path(dir) / "config.json").string();
  LOWBIT_CHECK(std::filesystem::is_directory(dir), IoError, "model directory '{}' does not exist", dir);
  LOWBIT_CHECK(std::ifstream(path).good(), IoError, "cannot open {}", path);
  return parse(read_text_file(path), path);
}

json LlamaConfig::to_json() const {
  json rp = {{"rope_type", rope.type}, {"rope_theta", rope.theta}};
  if (rope.type != "default") rp["factor"] = rope.factor;
  if (rope.type == "llama3") {
    rp["low_freq_factor"] = rope.low_freq_factor;
    rp["high_freq_factor"] = rope.high_freq_factor;
    rp["original_max_position_embeddings"] = rope.original_max_position;
  }
  return json{{"architectures", {architecture.empty() ? "LlamaForCausalLM" : architecture}},
              {"model_type", model_type.empty() ? "llama" : model_type},
              {"hidden_size", hidden_size},
              {"intermediate_size", intermediate_size},
              {"num_hidden_layers", num_layers},
              {"num_attention_heads", num_heads},
              {"num_key_value_heads", num_kv_heads},
              {"head_dim", head_dim},
              {"vocab_size", vocab_size},
              {"max_position_embeddings", max_position},
              {"rms_norm_eps", rms_eps},
              {"tie_word_embeddings", tie_word_embeddings},
              {"attention_bias", attention_bias},
              {"mlp_bias", mlp_bias},
              {"bos_token_id", bos_token_id},
              {"eos_token_id", eos_token_id},
              {"hidden_act", "silu"},
              {"dtype", torch_dtype},
              {"rope_parameters", rp}};
}

std::vector<float> LlamaConfig::inv_freq() const {
  const int64_t half = head_dim / 2;
  std::vector<float> f(static_cast<size_t>(half));
  for (int64_t j = 0; j < half; ++j) {
    // Mirrors HF's float32 arithmetic (1 / base^(2j/dim), then the scaling rule) so
    // angles agree to the last bit as far as libm allows.
    float expo = float(2 * j) / float(head_dim);
    float v = 1.0f / std::pow(float(rope.theta), expo);
    if (rope.type == "linear") {
      v = v / float(rope.factor);
    } else if (rope.type == "llama3") {
      const float old_ctx = float(rope.original_max_position);
      const float low_wavelen = old_ctx / float(rope.low_freq_factor);
      const float high_wavelen = old_ctx / float(rope.high_freq_factor);
      const float wavelen = float(2.0 * M_PI) / v;
      if (wavelen > low_wavelen) {
        v = v / float(rope.factor);
      } else if (!(wavelen < high_wavelen)) {
        float smooth = (old_ctx / wavelen - float(rope.low_freq_factor)) /
                       float(rope.high_freq_factor - rope.low_freq_factor);
        v = (1.0f - smooth) * v / float(rope.factor) + smooth * v;
      }
    }
    // HF keeps inv_freq as a floating buffer, so a checkpoint loaded in its own
    // 16-bit dtype carries 16-bit frequencies (the goldens show it); do the same.
    if (torch_dtype == "bfloat16") v = bf16_to_f32(f32_to_bf16(v));
    else if (torch_dtype == "float16") v = f16_to_f32(f32_to_f16(v));
    f[size_t(j)] = v;
  }
  return f;
}

}  // namespace lowbit
