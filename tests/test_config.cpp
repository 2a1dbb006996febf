// config.json parsing: spellings, rope forms and types, and rejected configs.
#include <gtest/gtest.h>

#include <cmath>

#include "core/error.h"
#include "models/config.h"
#include "testing.h"

using namespace lowbit;
using json = nlohmann::json;

namespace {
json base() {
  return json{{"architectures", {"LlamaForCausalLM"}}, {"model_type", "llama"}, {"hidden_size", 64},
              {"intermediate_size", 172}, {"num_hidden_layers", 2}, {"num_attention_heads", 8},
              {"num_key_value_heads", 4}, {"vocab_size", 100}, {"max_position_embeddings", 128},
              {"rms_norm_eps", 1e-5}, {"rope_theta", 10000.0}};
}
}  // namespace

TEST(Config, ClassicLlama) {
  LlamaConfig c = LlamaConfig::from_json(base(), "config.json");
  EXPECT_EQ(c.head_dim, 8);
  EXPECT_EQ(c.num_kv_heads, 4);
  EXPECT_EQ(c.rope.type, "default");
  auto f = c.inv_freq();
  ASSERT_EQ(f.size(), 4u);
  for (int j = 0; j < 4; ++j) EXPECT_NEAR(f[size_t(j)], 1.0 / std::pow(10000.0, 2.0 * j / 8), 1e-7);
}

TEST(Config, ExplicitHeadDimAndMistralQwen2) {
  json j = base();
  j["head_dim"] = 16;
  j["architectures"] = {"MistralForCausalLM"};
  j["model_type"] = "mistral";
  j["sliding_window"] = nullptr;
  EXPECT_EQ(LlamaConfig::from_json(j, "c").head_dim, 16);
  j["architectures"] = {"Qwen2ForCausalLM"};
  j["model_type"] = "qwen2";
  LlamaConfig q = LlamaConfig::from_json(j, "c");
  EXPECT_TRUE(q.attention_bias);  // qwen2 has q/k/v biases by default
  EXPECT_FALSE(q.o_bias);
}

TEST(Config, LinearAndLlama3Rope) {
  json j = base();
  j["rope_scaling"] = {{"type", "linear"}, {"factor", 4.0}};
  LlamaConfig c = LlamaConfig::from_json(j, "c");
  EXPECT_EQ(c.rope.type, "linear");
  EXPECT_NEAR(c.inv_freq()[1], 1.0 / std::pow(10000.0, 0.25) / 4.0, 1e-7);

  // Newer rope_parameters form with llama3 scaling; check against the rule in double.
  json k = base();
  k.erase("rope_theta");
  k["head_dim"] = 64;
  k["hidden_size"] = 512;
  k["rope_parameters"] = {{"rope_type", "llama3"}, {"rope_theta", 500000.0}, {"factor", 8.0},
                          {"low_freq_factor", 1.0}, {"high_freq_factor", 4.0},
                          {"original_max_position_embeddings", 8192}};
  LlamaConfig l3 = LlamaConfig::from_json(k, "c");
  EXPECT_EQ(l3.rope.theta, 500000.0);
  auto f = l3.inv_freq();
  int scaled = 0, kept = 0, smoothed = 0;
  for (int j2 = 0; j2 < 32; ++j2) {
    double v = 1.0 / std::pow(500000.0, 2.0 * j2 / 64), wl = 2 * M_PI / v, want;
    if (wl < 8192 / 4.0) { want = v; ++kept; }
    else if (wl > 8192 / 1.0) { want = v / 8; ++scaled; }
    else {
      double s = (8192 / wl - 1.0) / 3.0;
      want = (1 - s) * v / 8 + s * v;
      ++smoothed;
    }
    EXPECT_NEAR(f[size_t(j2)], want, 2e-6 * want) << j2;
  }
  EXPECT_GT(scaled, 0);
  EXPECT_GT(kept, 0);
  EXPECT_GT(smoothed, 0);
}

TEST(Config, RejectsBadConfigs) {
  json j = base();
  j["architectures"] = {"GPT2LMHeadModel"};
  j["model_type"] = "gpt2";
  try {
    LlamaConfig::from_json(j, "x/config.json");
    FAIL();
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("GPT2LMHeadModel"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("x/config.json"), std::string::npos);
  }
  j = base();
  j["num_key_value_heads"] = 3;  // 8 % 3 != 0
  EXPECT_THROW(LlamaConfig::from_json(j, "c"), ConfigError);
  j = base();
  j.erase("hidden_size");
  EXPECT_THROW(LlamaConfig::from_json(j, "c"), ConfigError);
  j = base();
  j["hidden_size"] = "64";
  EXPECT_THROW(LlamaConfig::from_json(j, "c"), ConfigError);
  j = base();
  j["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 4.0}};
  EXPECT_THROW(LlamaConfig::from_json(j, "c"), ConfigError);
  j = base();
  j["hidden_act"] = "gelu";
  EXPECT_THROW(LlamaConfig::from_json(j, "c"), ConfigError);
  EXPECT_THROW(LlamaConfig::load("/nonexistent/model"), IoError);
}

TEST(Config, SharedModels) {
  LOWBIT_REQUIRE_SHARED(s, "models/stories260K");
  LlamaConfig c = LlamaConfig::load(s);
  EXPECT_EQ(c.num_kv_heads, 4);
  EXPECT_EQ(c.intermediate_size, 172);
  EXPECT_FALSE(c.tie_word_embeddings);
  LOWBIT_REQUIRE_SHARED(t, "models/tiny-llama3");
  LlamaConfig l3 = LlamaConfig::load(t);
  EXPECT_EQ(l3.rope.type, "llama3");
  EXPECT_EQ(l3.rope.theta, 500000.0);
  EXPECT_EQ(l3.rope.original_max_position, 256);
  EXPECT_TRUE(l3.tie_word_embeddings);
  EXPECT_EQ(l3.torch_dtype, "bfloat16");
}

// Hostile config.json values found by fuzz/fuzz_config_json: each is a ConfigError, not
// another exception type, undefined behaviour (a double cast to int64) or a huge table.
TEST(Config, RejectsHostileValues) {
  auto bad = [](json j) {
    EXPECT_THROW(LlamaConfig::from_json(j, "c"), ConfigError) << j.dump();
  };
  json j = base();
  j["architectures"] = {1};  // was a json::type_error out of from_json
  bad(j);
  j = base();
  j["eos_token_id"] = {"</s>"};
  bad(j);
  j = base();
  j["eos_token_id"] = {1e300};  // was cast to int32
  bad(j);
  j = base();
  j["bos_token_id"] = int64_t(1) << 40;  // was truncated to int32
  bad(j);
  j = base();
  j["rope_scaling"] = {{"rope_type", "llama3"}, {"factor", 8.0}, {"original_max_position_embeddings", 1e300}};
  bad(j);
  j = base();
  j["head_dim"] = int64_t(1) << 40;  // inv_freq() would allocate 2^41 bytes
  bad(j);
  j = base();
  j["num_attention_heads"] = int64_t(1) << 21;
  j["num_key_value_heads"] = int64_t(1) << 21;
  j["head_dim"] = 2;
  bad(j);
  j = base();
  j["vocab_size"] = int64_t(1) << 40;
  bad(j);
  j = base();
  j["hidden_act"] = 3;
  bad(j);
  // Real-model sizes stay accepted (LLaMA-3.1-405B-like).
  j = base();
  j["hidden_size"] = 16384, j["intermediate_size"] = 53248, j["num_attention_heads"] = 128,
  j["num_key_value_heads"] = 8, j["num_hidden_layers"] = 126, j["vocab_size"] = 128256,
  j["max_position_embeddings"] = 131072, j["eos_token_id"] = {128001, 128008, 128009};
  LlamaConfig c = LlamaConfig::from_json(j, "c");
  EXPECT_EQ(c.head_dim, 128);
  EXPECT_EQ(c.eos_token_id, 128001);
  EXPECT_EQ(LlamaConfig::parse(j.dump(), "c").vocab_size, 128256);
  EXPECT_THROW(LlamaConfig::parse("{\"hidden_size\": ", "c"), FormatError);
}
