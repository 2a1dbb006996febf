// CLIPImageProcessor: config reading, the PIL and torch resize arithmetics against reference
// hashes, crop/pad geometry, and lowbit's pixel_values for the golden's photo against the golden.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>

#include "core/error.h"
#include "io/image.h"
#include "io/safetensors.h"
#include "testing.h"
#include "vision/clip_processor.h"

using namespace lowbit;
using lowbit::test::fnv1a;
using json = nlohmann::json;

namespace {

// The deterministic test image the reference hashes were made from (same LCG in Python).
Image lcg_image(int64_t w, int64_t h, uint32_t seed) {
  Image img;
  img.width = w;
  img.height = h;
  uint32_t s = seed;
  for (int64_t i = 0; i < w * h * 3; ++i) {
    s = (s * 1103515245u + 12345u) & 0x7fffffffu;
    img.pixels.push_back(uint8_t((s >> 16) & 0xff));
  }
  return img;
}

}  // namespace

TEST(ClipProcessor, ReadsTinyLlavaProcessorConfig) {
  LOWBIT_REQUIRE_SHARED(dir, "models/tiny-llava-1.5");
  ClipProcessorConfig c = ClipProcessorConfig::load(dir);
  EXPECT_TRUE(c.do_resize);
  EXPECT_EQ(c.shortest_edge, 336);
  EXPECT_EQ(c.resample, 3);
  EXPECT_TRUE(c.do_center_crop);
  EXPECT_EQ(c.crop_height, 336);
  EXPECT_EQ(c.crop_width, 336);
  EXPECT_DOUBLE_EQ(c.rescale_factor, 0.00392156862745098);
  EXPECT_DOUBLE_EQ(c.image_mean[0], 0.48145466);
  EXPECT_DOUBLE_EQ(c.image_std[2], 0.27577711);
}

TEST(ClipProcessor, RefusesBadConfigs) {
  const json base = {{"size", {{"shortest_edge", 336}}}, {"crop_size", {{"height", 336}, {"width", 336}}},
                     {"resample", 3}};
  EXPECT_NO_THROW(ClipProcessorConfig::from_json(base, "p.json"));
  // Flat (preprocessor_config.json) and nested (processor_config.json) forms read the same.
  EXPECT_EQ(ClipProcessorConfig::from_json(json{{"image_processor", base}}, "p.json").shortest_edge, 336);
  auto expect_config_error = [](const json& j, const std::string& needle) {
    try {
      ClipProcessorConfig::from_json(j, "dir/preprocessor_config.json");
      ADD_FAILURE() << "accepted " << j.dump();
    } catch (const ConfigError& e) {
      const std::string what = e.what();
      EXPECT_NE(what.find("dir/preprocessor_config.json"), std::string::npos) << what;
      EXPECT_NE(what.find(needle), std::string::npos) << what;
    }
  };
  json j = base;
  j["resample"] = 1;  // lanczos: not implemented
  expect_config_error(j, "unsupported resample 1");
  j["resample"] = 7;
  expect_config_error(j, "unsupported resample 7");
  j = base;
  j["size"] = {{"shortest_edge", 0}};
  expect_config_error(j, "size.shortest_edge");
  j = base;
  j["image_std"] = {0.2, 0.0, 0.3};
  expect_config_error(j, "image_std");
  j = base;
  j["image_mean"] = {0.5, 0.5};
  expect_config_error(j, "image_mean");
  j = base;
  j["do_resize"] = "yes";
  expect_config_error(j, "do_resize");
}

// transformers' get_resize_output_image_size(default_to_square=False): int() truncation.
TEST(ClipProcessor, ShortestEdgeOutputSize) {
  EXPECT_EQ(shortest_edge_output_size(380, 570, 336), (std::pair<int64_t, int64_t>{336, 504}));
  EXPECT_EQ(shortest_edge_output_size(667, 1000, 336), (std::pair<int64_t, int64_t>{336, 503}));  // 503.7
  EXPECT_EQ(shortest_edge_output_size(1000, 667, 336), (std::pair<int64_t, int64_t>{503, 336}));
  EXPECT_EQ(shortest_edge_output_size(100, 100, 336), (std::pair<int64_t, int64_t>{336, 336}));
}

// Pil arithmetic against Pillow 13.0: FNV-1a of Image.frombytes(...).resize((w, h), resample,
// reducing_gap=None).tobytes() for the 37x23 LCG image, down, up, one axis only, both filters.
TEST(ClipProcessor, PilResizeEqualsPillow) {
  const Image img = lcg_image(37, 23, 1);
  struct Case {
    int64_t w, h;
    int resample;
    uint64_t hash;
  };
  const Case cases[] = {{11, 7, 3, 0xcd5f55e707f8c82eull},  {50, 61, 3, 0xcf661297e1852579ull},
                        {11, 7, 2, 0xe8932aedfbc4101bull},  {50, 61, 2, 0xc8d4cb97e9a604dbull},
                        {37, 10, 3, 0x0e11de46386bd8c9ull}, {20, 23, 3, 0x13c51c0cad51a407ull},
                        {336, 336, 3, 0x5c78702c44814331ull}};
  for (const Case& c : cases) {
    Image out = resize_antialias(img, c.w, c.h, c.resample, ResizeArithmetic::Pil);
    EXPECT_EQ(out.width, c.w);
    EXPECT_EQ(out.height, c.h);
    EXPECT_EQ(fnv1a(out.pixels), c.hash) << c.w << "x" << c.h << " resample " << c.resample;
  }
}

TEST(ClipProcessor, PilResizeOfSharedPhotosEqualsPillow) {
  LOWBIT_REQUIRE_SHARED(ironing, "data/images/extreme_ironing.jpg");
  LOWBIT_REQUIRE_SHARED(water, "data/images/waterview.jpg");
  EXPECT_EQ(fnv1a(resize_antialias(decode_image(ironing), 504, 336, 3, ResizeArithmetic::Pil).pixels),
            0xe36eb04468d86388ull);
  EXPECT_EQ(fnv1a(resize_antialias(decode_image(water), 503, 336, 3, ResizeArithmetic::Pil).pixels),
            0x4ed37177dbaba637ull);
}

TEST(ClipProcessor, CenterCropAndPadGeometry) {
  Image img = lcg_image(7, 4, 3);
  // Odd difference: floor offsets (7 - 4) // 2 = 1, (4 - 3) // 2 = 0.
  Image c = center_crop(img, 3, 4, ProcessorFlavor::Slow);
  ASSERT_EQ(c.width, 4);
  ASSERT_EQ(c.height, 3);
  for (int64_t y = 0; y < 3; ++y)
    for (int64_t x = 0; x < 4; ++x)
      for (int k = 0; k < 3; ++k) EXPECT_EQ(c.at(y, x)[k], img.at(y, x + 1)[k]);
  EXPECT_EQ(center_crop(img, 3, 4, ProcessorFlavor::Fast).pixels, c.pixels);
  // Crop taller than the image: zero rows around it, 3 padding rows split 2/1 (slow) or 1/2 (fast).
  Image slow = center_crop(img, 7, 7, ProcessorFlavor::Slow);
  Image fast = center_crop(img, 7, 7, ProcessorFlavor::Fast);
  EXPECT_EQ(slow.at(1, 0)[0], 0);
  EXPECT_EQ(slow.at(2, 3)[1], img.at(0, 3)[1]);
  EXPECT_EQ(fast.at(1, 3)[1], img.at(0, 3)[1]);
  EXPECT_EQ(fast.at(5, 0)[0], 0);

  // LLaVA's expand2square with the CLIP mean: (122, 116, 104), image centered with floor offsets.
  const auto fill = llava_pad_color({0.48145466, 0.4578275, 0.40821073});
  EXPECT_EQ(fill, (std::array<uint8_t, 3>{122, 116, 104}));
  Image sq = expand_to_square(img, fill);  // 7x4 -> 7x7, pasted at (0, (7 - 4) // 2 = 1)
  ASSERT_EQ(sq.width, 7);
  ASSERT_EQ(sq.height, 7);
  EXPECT_EQ(sq.at(0, 2)[0], 122);
  EXPECT_EQ(sq.at(5, 2)[2], 104);
  EXPECT_EQ(sq.at(6, 6)[1], 116);
  EXPECT_EQ(sq.at(1, 2)[0], img.at(0, 2)[0]);
  EXPECT_EQ(sq.at(4, 6)[2], img.at(3, 6)[2]);
  Image tall = expand_to_square(lcg_image(3, 6, 5), fill);  // pasted at ((6 - 3) // 2 = 1, 0)
  EXPECT_EQ(tall.at(0, 0)[0], 122);
  EXPECT_EQ(tall.at(0, 1)[0], lcg_image(3, 6, 5).at(0, 0)[0]);
  EXPECT_EQ(tall.at(5, 4)[0], 122);
}

// lowbit's own preprocessing of the golden's photo against the golden pixel_values
// (transformers 5.17, AutoProcessor -> the fast, torchvision-backed CLIP image processor).
//
// Tolerance: the fast flavor reproduces the golden exactly — same uint8 pixels after torch's
// int16-weight resize, same float32 operations — so the only allowed difference is float32
// rounding, 1e-6. (The slow/PIL flavor differs in 767 of 338688 values by exactly one uint8
// level, 1/255/std ~ 0.015: Pillow's 22-bit weights vs torch's 14/15-bit ones round a few sums
// the other way; that flavor is checked to be within 0.0151 and to differ in < 0.5% of values.)
TEST(ClipProcessor, PixelValuesMatchGolden) {
  LOWBIT_REQUIRE_SHARED(golden_path, "golden/tiny-llava-1.5_forward.safetensors");
  LOWBIT_REQUIRE_SHARED(model_dir, "models/tiny-llava-1.5");
  auto golden = SafetensorsFile::open(golden_path);
  const std::string photo = golden->header().metadata.at("image");
  LOWBIT_REQUIRE_SHARED(image_path, "data/images/" + photo);
  const Tensor want = golden->get("pixel_values");
  ASSERT_EQ(want.shape(), (Shape{1, 3, 336, 336}));
  const std::vector<float> ref = want.to_vector();

  ClipProcessorConfig cfg = ClipProcessorConfig::load(model_dir);
  const Image img = decode_image(image_path);
  for (ProcessorFlavor flavor : {ProcessorFlavor::Fast, ProcessorFlavor::Slow}) {
    cfg.flavor = flavor;
    const Tensor got = clip_preprocess(img, cfg);
    ASSERT_EQ(got.shape(), (Shape{3, 336, 336}));
    const float* g = got.f32();
    double max_diff = 0, sum_diff = 0;
    int64_t off = 0;
    for (size_t i = 0; i < ref.size(); ++i) {
      const double d = std::fabs(double(g[i]) - double(ref[i]));
      max_diff = std::max(max_diff, d);
      sum_diff += d;
      off += d > 1e-3;
    }
    const bool fast = flavor == ProcessorFlavor::Fast;
    std::printf("pixel_values vs golden (%s, %s flavor): max |diff| %.3g, mean |diff| %.3g, %lld of %zu values off by > 1e-3\n",
                photo.c_str(), fast ? "fast" : "slow", max_diff, sum_diff / double(ref.size()),
                static_cast<long long>(off), ref.size());
    if (fast) {
      EXPECT_LE(max_diff, 1e-6);
    } else {
      EXPECT_LE(max_diff, 0.0151);
      EXPECT_LT(double(off), 0.005 * double(ref.size()));
    }
  }
}
