// LLaVA-NeXT: the anyres processor (vision/anyres.h) and the model (models/llava_next.h) against
// Hugging Face transformers 5.17 on ../shared/models/tiny-llava-next and its golden
// (waterview.jpg, 1000x667 -> best resolution 672x672, 2x2 tiles + the whole image, 2144 image
// tokens).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/dtype.h"
#include "core/error.h"
#include "io/safetensors.h"
#include "models/llava_next.h"
#include "testing.h"
#include "vision/anyres.h"

using namespace lowbit;
using lowbit::test::golden_ids;
using lowbit::test::normalized_error;

namespace {

Resolution golden_image_size(const SafetensorsFile& g) {
  Tensor t = g.get("image_sizes");  // [1, 2] i32: (height, width)
  return {t.data<int32_t>()[0], t.data<int32_t>()[1]};
}

nlohmann::json tiny_config() {
  return nlohmann::json::parse(R"({
    "architectures": ["LlavaNextForConditionalGeneration"], "model_type": "llava_next", "image_token_index": 5,
    "image_grid_pinpoints": [[28, 56], [56, 28], [56, 56]],
    "text_config": {"model_type": "llama", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                    "num_attention_heads": 2, "vocab_size": 16},
    "vision_config": {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 3, "num_attention_heads": 2,
                      "image_size": 28, "patch_size": 14, "hidden_act": "quick_gelu"},
    "vision_feature_layer": -2, "vision_feature_select_strategy": "default"})");
}

}  // namespace

// ---- geometry -------------------------------------------------------------------------------------

TEST(Anyres, SelectBestResolution) {
  const std::vector<Resolution> pins = default_llava_next_pinpoints();
  // 1000x667 (h 667): 672x672 keeps 672x448 = 301056 pixels; 336x672 only 503x336.
  EXPECT_EQ(select_best_resolution({667, 1000}, pins), (Resolution{672, 672}));
  // A tall image goes to [1008, 336]... only when that keeps more pixels than 672x672:
  // 300x1000 (h 1000, w 300): [1008, 336] scale 1.008 -> 302x1008 = 304416 > original 300000,
  // effective = 300000; [672, 672] scale 0.672 -> 201x672 = 135072.
  EXPECT_EQ(select_best_resolution({1000, 300}, pins), (Resolution{1008, 336}));
  // Small image: every candidate holds all of it (effective = 100·100); least waste wins, first
  // on ties: [336, 672] and [672, 336] waste the same, the first is kept.
  EXPECT_EQ(select_best_resolution({100, 100}, pins), (Resolution{336, 672}));
  EXPECT_THROW(select_best_resolution({0, 5}, pins), ArgError);
  EXPECT_THROW(select_best_resolution({5, 5}, {}), ArgError);

  // Resize inside the target keeping aspect: width 672, height ceil(667·0.672) = ceil(448.224).
  EXPECT_EQ(patch_output_size({667, 1000}, {672, 672}), (Resolution{449, 672}));
  EXPECT_EQ(patch_output_size({1000, 300}, {1008, 336}), (Resolution{1008, 303}));  // ceil(302.4)
  EXPECT_EQ(anyres_grid_shape({667, 1000}, pins, 336), (std::pair<int64_t, int64_t>{2, 2}));
  EXPECT_EQ(anyres_num_tiles({667, 1000}, pins, 336), 5);
  EXPECT_EQ(anyres_num_tiles({1000, 300}, pins, 336), 4);
}

TEST(Anyres, UnpadRoundingAndTokenCount) {
  // 1000x667 on a 48x48 grid: new_h = int(round(667·0.048, 7)) = 32, pad 8 -> rows [8, 40).
  UnpadExtent u = unpad_extent({667, 1000}, 48, 48);
  EXPECT_EQ(u.r0, 8);
  EXPECT_EQ(u.r1, 40);
  EXPECT_EQ(u.c0, 0);
  EXPECT_EQ(u.c1, 48);
  // 55 · (48 / 176) = 14.999999999999998 in doubles: Python's round(x, 7) makes it 15 (pad 16);
  // a plain truncation would give 14 (pad 17).
  u = unpad_extent({55, 176}, 48, 48);
  EXPECT_EQ(u.r0, 16);
  EXPECT_EQ(u.r1, 32);
  // Taller than the grid: columns are cut. 300x1000 on [72, 24]: new_w = int(300 · 72/1000) = 21,
  // pad (24 - 21) // 2 = 1 -> columns [1, 23).
  u = unpad_extent({1000, 300}, 72, 24);
  EXPECT_EQ(u.r0, 0);
  EXPECT_EQ(u.r1, 72);
  EXPECT_EQ(u.c0, 1);
  EXPECT_EQ(u.c1, 23);
  // The processor's count: 576 base + 32 rows x (48 + 1) = 2144.
  EXPECT_EQ(llava_next_image_tokens({667, 1000}, default_llava_next_pinpoints(), 336, 14), 2144);
  EXPECT_EQ(llava_next_image_tokens({667, 1000}, default_llava_next_pinpoints(), 336, 14, 1, false), 2145);
  EXPECT_EQ(llava_next_image_tokens({1000, 300}, default_llava_next_pinpoints(), 336, 14), 576 + 72 * 23);
}

TEST(Anyres, ResizeAndPadIsCenteredOnBlack) {
  Image img;
  img.width = 10;
  img.height = 4;
  img.pixels.assign(size_t(10 * 4 * 3), 200);
  AnyresProcessorConfig cfg;
  // Target 11x20 (h 11, w 20): scale_w = 2 < scale_h = 2.75 -> 8x20 (h 8), pad 3 rows: 1 on top, 2 below.
  const Image p = anyres_resize_and_pad(img, {11, 20}, cfg);
  ASSERT_EQ(p.width, 20);
  ASSERT_EQ(p.height, 11);
  for (int64_t y = 0; y < 11; ++y) {
    const bool inside = y >= 1 && y < 9;
    EXPECT_EQ(p.at(y, 0)[0], inside ? 200 : 0) << y;
    EXPECT_EQ(p.at(y, 19)[2], inside ? 200 : 0) << y;
  }
}

TEST(Anyres, ConfigRefusals) {
  nlohmann::json j = {{"crop_size", {{"height", 336}, {"width", 336}}},
                      {"size", {{"shortest_edge", 336}}},
                      {"image_grid_pinpoints", {{336, 672}, {672, 336}}}};
  AnyresProcessorConfig c = AnyresProcessorConfig::from_json(j, "p");
  EXPECT_EQ(c.grid_pinpoints.size(), 2u);
  EXPECT_EQ(c.tile_size(), 336);
  j["image_grid_pinpoints"] = {{336, 600}};
  EXPECT_THROW(AnyresProcessorConfig::from_json(j, "p"), ConfigError);
  j["image_grid_pinpoints"] = {{336}};
  EXPECT_THROW(AnyresProcessorConfig::from_json(j, "p"), ConfigError);
  j["image_grid_pinpoints"] = {{336, 672}};
  j["crop_size"] = {{"height", 336}, {"width", 224}};
  EXPECT_THROW(AnyresProcessorConfig::from_json(j, "p"), ConfigError);
}

// ---- processor vs golden --------------------------------------------------------------------------

// lowbit's own preprocessing of the golden's photo against the golden pixel_values
// (transformers 5.17 AutoProcessor -> LlavaNextImageProcessorFast, stored as f16).
//
// Tolerance: the fast flavor reproduces transformers' uint8 pixels (torch's antialiased uint8
// resize for the 672x449 grid image and the 336x336 whole image, black padding) and its f32
// normalization exactly; the golden then rounded to f16. So our f32 values rounded to f16 must
// equal the golden bit for bit (0 differences), and the f32 values differ from it by at most
// half an f16 ulp (|x| < 2.2 -> <= 2^-10 ~ 9.8e-4). The slow (PIL) flavor differs in a few
// pixels: measured 3718 of 1693440 values (0.22 %), by at most two uint8 levels (2/255/std ~
// 0.030): Pillow's 22-bit weights vs torch's 14/15-bit ones round a few sums of each pass the
// other way, and two passes (1000x667 -> 672x449 and -> 336x336 each horizontal then
// vertical) can add two such level steps. Bounded at 2 levels in < 0.5 % of values; the
// golden comes from the fast processor, so this only guards the slow path from drifting.
TEST(AnyresGolden, PixelValuesMatchGolden) {
  LOWBIT_REQUIRE_SHARED(golden_path, "golden/tiny-llava-next_forward.safetensors");
  LOWBIT_REQUIRE_SHARED(model_dir, "models/tiny-llava-next");
  auto golden = SafetensorsFile::open(golden_path);
  const std::string photo = golden->header().metadata.at("image");
  LOWBIT_REQUIRE_SHARED(image_path, "data/images/" + photo);
  const Tensor want = golden->get("pixel_values");  // [1, 5, 3, 336, 336]
  ASSERT_EQ(want.shape(), (Shape{1, 5, 3, 336, 336}));
  const std::vector<float> ref = want.to_vector();

  AnyresProcessorConfig cfg = AnyresProcessorConfig::load(model_dir);
  const Image img = decode_image(image_path);
  EXPECT_EQ(golden_image_size(*golden), (Resolution{img.height, img.width}));
  for (ProcessorFlavor flavor : {ProcessorFlavor::Fast, ProcessorFlavor::Slow}) {
    cfg.clip.flavor = flavor;
    const Tensor got = anyres_preprocess(img, cfg);
    ASSERT_EQ(got.shape(), (Shape{5, 3, 336, 336}));
    const float* g = got.f32();
    double max_diff = 0, sum_diff = 0;
    int64_t f16_mismatch = 0, off = 0;
    for (size_t i = 0; i < ref.size(); ++i) {
      const double d = std::fabs(double(g[i]) - double(ref[i]));
      max_diff = std::max(max_diff, d);
      sum_diff += d;
      off += d > 2e-3;
      f16_mismatch += f16_to_f32(f32_to_f16(g[i])) != ref[i];
    }
    const bool fast = flavor == ProcessorFlavor::Fast;
    std::printf("pixel_values vs golden (%s, %s flavor): max |diff| %.3g, mean |diff| %.3g, %lld of %zu values "
                "differ after rounding to f16, %lld by > 2e-3\n",
                photo.c_str(), fast ? "fast" : "slow", max_diff, sum_diff / double(ref.size()),
                static_cast<long long>(f16_mismatch), ref.size(), static_cast<long long>(off));
    if (fast) {
      EXPECT_EQ(f16_mismatch, 0);
      EXPECT_LE(max_diff, 9.77e-4);
    } else {
      EXPECT_LE(max_diff, 2 * 0.0151 + 9.77e-4);
      EXPECT_LT(double(off), 0.005 * double(ref.size()));
    }
  }
}

// ---- model ----------------------------------------------------------------------------------------

TEST(LlavaNextConfig, ParsesAndRefuses) {
  nlohmann::json j = tiny_config();
  LlavaNextConfig c = LlavaNextConfig::from_json(j, "cfg");
  EXPECT_EQ(c.architecture, "LlavaNextForConditionalGeneration");
  EXPECT_EQ(c.llava.image_token_index, 5);
  EXPECT_EQ(c.image_grid_pinpoints.size(), 3u);
  EXPECT_EQ(c.tile_grid(), 2);
  // 56x28 (w x h): best [28, 56] -> 1x2 tiles; grid 2x4, exact aspect, 2 rows x (4 + 1) + 4 base.
  EXPECT_EQ(c.num_tiles({28, 56}), 3);
  EXPECT_EQ(c.image_tokens({28, 56}), 4 + 2 * 5);
  EXPECT_EQ(c.image_tokens({28, 56}), llava_next_image_tokens({28, 56}, c.image_grid_pinpoints, 28, 14));
  j.erase("image_grid_pinpoints");
  EXPECT_EQ(LlavaNextConfig::from_json(j, "cfg").image_grid_pinpoints, default_llava_next_pinpoints());

  auto refused = [&](nlohmann::json bad, const std::string& what) {
    try {
      LlavaNextConfig::from_json(bad, "cfg");
      ADD_FAILURE() << "expected ConfigError mentioning " << what;
    } catch (const ConfigError& e) {
      EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << e.what();
    }
  };
  nlohmann::json bad = tiny_config();
  bad["vision_feature_select_strategy"] = "full";
  refused(bad, "vision_feature_select_strategy");
  bad = tiny_config();
  bad["image_grid_pinpoints"] = {{28, 50}};
  refused(bad, "image_grid_pinpoints");
  bad = tiny_config();
  bad["image_aspect_ratio"] = "anyres_max_9";
  refused(bad, "anyres_max");
  bad = tiny_config();
  bad["mm_patch_merge_type"] = "flat";
  refused(bad, "mm_patch_merge_type");
  bad = tiny_config();
  bad["architectures"] = {"LlavaForConditionalGeneration"};
  refused(bad, "LlavaNextForConditionalGeneration");
}

// Fed the golden pixel_values and image_sizes: the packed features are as many as the prompt's
// image tokens (and as the processor's count), and the decoder's last hidden state and the
// last four logits equal transformers'.
//
// The golden stores pixel_values as f16 (its metadata says so), but transformers ran the model
// on the processor's f32 values. lowbit's fast-flavor pixels of the same photo are exactly those
// f32 values (they round to the golden's f16 bit for bit, AnyresGolden.PixelValuesMatchGolden),
// so they are the true input:
//   * own f32 pixels: normalized error < 2e-6 (the issue asks < 1e-5), as for LLaVA-1.5 — fp16
//     weights, f32 compute on both sides, differences from summation order and libm ulps
//     (~1e-7 per op); measured 5e-7 / 5e-7.
//   * the golden's f16 pixels: the input itself is off by up to half an f16 ulp (relative
//     ~2.4e-4 per value, ~1.4e-4 in norm); through the random tiny towers that gives measured
//     9.8e-5 (last_hidden_state) and 2.3e-5 (logits_last4); bounded at 3e-4 / 1e-4 (3-4x the
//     measured value, since f16 input rounding is the only difference from the f32 run).
TEST(LlavaNextGolden, TinyLlavaNextHiddenLogits) {
  LOWBIT_REQUIRE_SHARED(model_dir, "models/tiny-llava-next");
  LOWBIT_REQUIRE_SHARED(golden, "golden/tiny-llava-next_forward.safetensors");
  LlavaNextModel m = LlavaNextModel::load(model_dir);
  auto g = SafetensorsFile::open(golden);
  const std::vector<int32_t> ids = golden_ids(*g);
  const int64_t T = int64_t(ids.size()), V = m.cfg.llava.text.vocab_size;
  const Resolution size = golden_image_size(*g);
  const int64_t n_tok = std::count(ids.begin(), ids.end(), m.cfg.llava.image_token_index);
  EXPECT_EQ(n_tok, 2144);
  EXPECT_EQ(m.cfg.image_tokens(size), n_tok);
  // The processor's count from its own config (tile = pixel_values' side, patch_size 14,
  // num_additional_image_tokens 1, strategy default).
  const AnyresProcessorConfig pcfg = AnyresProcessorConfig::load(model_dir);
  EXPECT_EQ(llava_next_image_tokens(size, pcfg.grid_pinpoints, pcfg.tile_size(), m.cfg.llava.vision.patch_size), n_tok);

  const Tensor golden_px = g->get("pixel_values");  // [1, 5, 3, 336, 336] f16
  const Tensor feat = m.image_features(golden_px, std::vector<Resolution>{size});
  EXPECT_EQ(feat.size(0), n_tok);
  // The 4-D single-image layout gives the same features.
  const Tensor feat4 = m.single_image_features(golden_px.reshape({5, 3, 336, 336}), size);
  ASSERT_EQ(feat4.shape(), feat.shape());
  EXPECT_EQ(std::memcmp(feat4.raw(), feat.raw(), feat.nbytes()), 0);

  const std::vector<float> ref_hidden = g->get("last_hidden_state").to_vector();
  const std::vector<float> ref4 = g->get("logits_last4").to_vector();
  auto check = [&](const Tensor& px, const char* what, double tol_hidden, double tol_logits) {
    std::vector<float> last;
    ForwardOptions fo;
    fo.hidden_hook = [&](int64_t l, const float* h, int64_t rows, int64_t cols) {
      if (l == m.cfg.llava.text.num_layers) last.assign(h, h + rows * cols);
    };
    Tensor logits = m.forward(ids.data(), T, px, {size}, nullptr, fo);
    ASSERT_EQ(logits.shape(), (Shape{T, V}));
    const double e_hidden = normalized_error(last, ref_hidden);
    const std::vector<float> all = logits.to_vector();
    const double e_logits = normalized_error(std::vector<float>(all.end() - 4 * V, all.end()), ref4);
    std::printf("  %s: last_hidden_state normalized error %.3g, logits_last4 %.3g\n", what, e_hidden, e_logits);
    EXPECT_LT(e_hidden, tol_hidden) << what;
    EXPECT_LT(e_logits, tol_logits) << what;
  };
  const std::string photo = g->header().metadata.at("image");
  const std::string image_path = lowbit::test::shared_path("data/images/" + photo);
  ASSERT_FALSE(image_path.empty()) << "../shared/data/images/" << photo << " not found";
  const Tensor own = anyres_preprocess(decode_image(image_path), pcfg);  // fast flavor, f32
  check(own, "lowbit's f32 pixels (= HF's input)", 2e-6, 2e-6);
  check(golden_px, "golden f16 pixel_values", 3e-4, 1e-4);
}

TEST(LlavaNextForward, ImageTokenCountMustMatchFeatures) {
  LOWBIT_REQUIRE_SHARED(model_dir, "models/tiny-llava-next");
  LOWBIT_REQUIRE_SHARED(golden, "golden/tiny-llava-next_forward.safetensors");
  LlavaNextModel m = LlavaNextModel::load(model_dir);
  auto g = SafetensorsFile::open(golden);
  std::vector<int32_t> ids = golden_ids(*g);
  const Tensor px = g->get("pixel_values");
  const Resolution size = golden_image_size(*g);
  ids.erase(std::find(ids.begin(), ids.end(), m.cfg.llava.image_token_index));
  try {
    m.forward(ids.data(), int64_t(ids.size()), px, {size});
    FAIL() << "expected ArgError";
  } catch (const ArgError& e) {
    EXPECT_NE(std::string(e.what()).find("2143 image tokens"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("1000x667: 2144"), std::string::npos) << e.what();
  }
  EXPECT_THROW(m.forward(ids.data(), int64_t(ids.size()), Tensor(), {}), ArgError);
  // Too few tiles for the image size; sizes not matching the images.
  EXPECT_THROW(m.single_image_features(px.reshape({5, 3, 336, 336}).rows(0, 4), size), ShapeError);
  EXPECT_THROW(m.image_features(px, std::vector<Resolution>{size, size}), ShapeError);
  // Text alone runs the language model.
  const std::vector<int32_t> text = {1, 518, 25580, 29962, 29871};
  Tensor a = m.forward(text.data(), 5, Tensor(), {});
  Tensor b = m.llava.language.forward(text.data(), 5);
  EXPECT_EQ(std::memcmp(a.raw(), b.raw(), a.nbytes()), 0);
}
