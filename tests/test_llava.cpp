// LLaVA-1.5 (CLIP tower, projector, multimodal forward) against Hugging Face transformers
// on ../shared/models/tiny-llava-1.5 and its golden (fed the golden pixel_values).
//
// Tolerance: normalized error ||ours - hf|| / ||hf|| < 2e-6 (the issue asks < 1e-5) for the
// projector output, the decoder's last hidden state and the last four positions' logits.
// Both sides hold fp16 weights and compute in f32; the differences are summation order
// (GEMMs, f64 sums in our LayerNorm/attention vs f32 in PyTorch) and libm ulps, ~1e-7
// per op over 2 vision layers, the projector and 2 decoder layers: measured 6.0e-7,
// 4.7e-7, 4.2e-7. 2e-6 also catches RoPE frequencies left in f32 when HF's are rounded
// to the checkpoint's f16 (the error then grows with position to 6.5e-6 / 8.9e-6);
// a wrong layer choice, a CLS off by one or a tanh-GELU for erf-GELU shows up at 1e-3 or more.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <filesystem>

#include "core/error.h"
#include "io/safetensors.h"
#include "models/llama.h"
#include "models/llava.h"
#include "testing.h"

using namespace lowbit;
using lowbit::test::golden_ids;
using lowbit::test::normalized_error;

TEST(LlavaConfig, FeatureLayersAndStrategy) {
  nlohmann::json j = nlohmann::json::parse(R"({
    "architectures": ["LlavaForConditionalGeneration"], "model_type": "llava", "image_token_index": 5,
    "text_config": {"model_type": "llama", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                    "num_attention_heads": 2, "vocab_size": 16},
    "vision_config": {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 3, "num_attention_heads": 2,
                      "image_size": 28, "patch_size": 14, "hidden_act": "quick_gelu"},
    "vision_feature_layer": -2, "vision_feature_select_strategy": "default"})");
  LlavaConfig c = LlavaConfig::from_json(j, "cfg");
  // hidden_states[0] = embeddings, [k] = output of layer k: -2 of 4 states is layer 2's output.
  EXPECT_EQ(c.feature_states(), std::vector<int64_t>{2});
  EXPECT_EQ(c.features_per_image(), 4);
  j["vision_feature_select_strategy"] = "full";
  j["vision_feature_layer"] = {-1, 0};
  c = LlavaConfig::from_json(j, "cfg");
  EXPECT_EQ(c.feature_states(), (std::vector<int64_t>{3, 0}));
  EXPECT_EQ(c.features_per_image(), 5);
  j["vision_feature_layer"] = -5;
  EXPECT_THROW(LlavaConfig::from_json(j, "cfg"), ConfigError);
  j["vision_feature_layer"] = -2;
  j["vision_feature_select_strategy"] = "cls_patch";
  EXPECT_THROW(LlavaConfig::from_json(j, "cfg"), ConfigError);
  j["vision_feature_select_strategy"] = "default";
  j["vision_config"]["hidden_act"] = "relu";
  EXPECT_THROW(LlavaConfig::from_json(j, "cfg"), ConfigError);
}

TEST(LlavaGolden, TinyLlava15FeaturesHiddenLogits) {
  LOWBIT_REQUIRE_SHARED(model_dir, "models/tiny-llava-1.5");
  LOWBIT_REQUIRE_SHARED(golden, "golden/tiny-llava-1.5_forward.safetensors");
  LlavaModel m = LlavaModel::load(model_dir);
  auto g = SafetensorsFile::open(golden);
  const std::vector<int32_t> ids = golden_ids(*g);
  const int64_t T = int64_t(ids.size()), V = m.cfg.text.vocab_size;
  ASSERT_EQ(std::count(ids.begin(), ids.end(), m.cfg.image_token_index), m.cfg.features_per_image());

  Tensor px = g->get("pixel_values");  // [1, 3, 336, 336] (f32 or f16)
  Tensor feat = m.image_features(px);
  const double e_feat = normalized_error(feat.to_vector(), g->get("image_features").to_vector());
  std::printf("  image_features     normalized error %.3g\n", e_feat);
  EXPECT_LT(e_feat, 2e-6);

  std::vector<float> last;  // the decoder's final-norm output (HF LlamaModel's last_hidden_state)
  ForwardOptions fo;
  fo.hidden_hook = [&](int64_t l, const float* h, int64_t rows, int64_t cols) {
    if (l == m.cfg.text.num_layers) last.assign(h, h + rows * cols);
  };
  Tensor logits = m.forward(ids.data(), T, px, nullptr, fo);  // [T, V]
  ASSERT_EQ(logits.shape(), (Shape{T, V}));
  const double e_hidden = normalized_error(last, g->get("last_hidden_state").to_vector());
  std::printf("  last_hidden_state  normalized error %.3g\n", e_hidden);
  EXPECT_LT(e_hidden, 2e-6);
  const std::vector<float> all = logits.to_vector();
  const std::vector<float> last4(all.end() - 4 * V, all.end());
  const double e_logits = normalized_error(last4, g->get("logits_last4").to_vector());
  std::printf("  logits_last4       normalized error %.3g\n", e_logits);
  EXPECT_LT(e_logits, 2e-6);

  // The same prompt through the KV cache: prefill with the image, then the last tokens one by one.
  KVCache cache = m.language.make_cache(T);
  m.forward(ids.data(), T - 2, px, &cache);
  std::vector<float> step;
  for (int64_t t = T - 2; t < T; ++t) {
    Tensor s = m.forward(&ids[size_t(t)], 1, Tensor(), &cache);
    auto v = s.to_vector();
    step.insert(step.end(), v.begin(), v.end());
  }
  EXPECT_LT(normalized_error(step, std::vector<float>(all.end() - 2 * V, all.end())), 1e-6);
}

TEST(LlavaForward, ImageTokenCountMustMatchFeatures) {
  LOWBIT_REQUIRE_SHARED(model_dir, "models/tiny-llava-1.5");
  LOWBIT_REQUIRE_SHARED(golden, "golden/tiny-llava-1.5_forward.safetensors");
  LlavaModel m = LlavaModel::load(model_dir);
  auto g = SafetensorsFile::open(golden);
  std::vector<int32_t> ids = golden_ids(*g);
  Tensor px = g->get("pixel_values");
  // One image token too few.
  auto it = std::find(ids.begin(), ids.end(), m.cfg.image_token_index);
  ids.erase(it);
  try {
    m.forward(ids.data(), int64_t(ids.size()), px);
    FAIL() << "expected ArgError";
  } catch (const ArgError& e) {
    EXPECT_NE(std::string(e.what()).find("575 image tokens"), std::string::npos) << e.what();
  }
  // Image tokens but no image.
  EXPECT_THROW(m.forward(ids.data(), int64_t(ids.size()), Tensor()), ArgError);
  // Pixels of the wrong size.
  EXPECT_THROW(m.image_features(Tensor::zeros({1, 3, 224, 224})), ShapeError);
}

// The language model of a VLM evaluates text alone, and equals LlamaModel loaded from a
// plain LLaMA directory holding the same tensors under LLaMA's names.
TEST(LlavaForward, LanguageModelAloneEqualsPlainLlama) {
  LOWBIT_REQUIRE_SHARED(model_dir, "models/tiny-llava-1.5");
  LlavaModel m = LlavaModel::load(model_dir);
  const std::string dir = lowbit::test::temp_dir("llava_text");
  WeightStore store = WeightStore::open_dir(model_dir);
  std::vector<std::pair<std::string, Tensor>> tensors;
  const std::string dec = "language_model.model.", head = "language_model.lm_head.";
  for (const std::string& n : store.names()) {
    if (n.rfind(dec, 0) == 0) tensors.emplace_back("model." + n.substr(dec.size()), store.get(n));
    if (n.rfind(head, 0) == 0) tensors.emplace_back("lm_head." + n.substr(head.size()), store.get(n));
  }
  ASSERT_EQ(tensors.size(), size_t(3 + 9 * m.cfg.text.num_layers));
  save_safetensors(dir + "/model.safetensors", tensors);
  lowbit::test::write_file(dir + "/config.json", m.cfg.text.to_json().dump());
  LlamaModel plain = LlamaModel::load(dir);

  const std::vector<int32_t> ids = {1, 3148, 1001, 29901, 1724, 338, 297, 445, 1967, 29973, 319, 1799};
  const int64_t T = int64_t(ids.size());
  Tensor a = m.language.forward(ids.data(), T);
  Tensor b = plain.forward(ids.data(), T);
  Tensor c = m.forward(ids.data(), T, Tensor());  // the VLM's forward without images
  ASSERT_EQ(a.shape(), b.shape());
  EXPECT_EQ(std::memcmp(a.raw(), b.raw(), a.nbytes()), 0);
  EXPECT_EQ(std::memcmp(a.raw(), c.raw(), a.nbytes()), 0);
}

TEST(LlavaModel, BlocksAndNames) {
  LOWBIT_REQUIRE_SHARED(model_dir, "models/tiny-llava-1.5");
  LlavaModel m = LlavaModel::load(model_dir);
  std::vector<Block*> b = m.blocks();
  // vision_feature_layer -2 of a 3-layer tower: 2 vision layers run, then the projector, then 2 decoder layers.
  ASSERT_EQ(b.size(), size_t(2 + 1 + 2));
  EXPECT_EQ(b[0]->kind(), "clip_encoder");
  EXPECT_EQ(b[2]->kind(), "llava_projector");
  EXPECT_EQ(b[3]->kind(), "llama_decoder");
  EXPECT_EQ(b[0]->groups()[0][0]->name, "vision_tower.encoder.layers.0.self_attn.q_proj");
  EXPECT_EQ(b[0]->groups()[3][0]->name, "vision_tower.encoder.layers.0.mlp.fc2");
  EXPECT_EQ(b[2]->groups()[1][0]->name, "multi_modal_projector.linear_2");
  // Stepping a ViT block group by group is its forward.
  BlockState s1, s2;
  s1.T = s2.T = 7;
  for (int64_t i = 0; i < 7 * 64; ++i) s1.x.push_back(float((i * 37) % 101) / 50.0f - 1.0f);
  s2.x = s1.x;
  b[1]->forward(s1, {});
  for (int gi = 0; gi < 4; ++gi) b[1]->advance(gi, s2, {});
  EXPECT_EQ(s1.x, s2.x);
}
