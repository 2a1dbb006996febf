// LLaVA-NeXT (HF LlavaNextForConditionalGeneration): LLaVA-1.5's CLIP tower, projector and
// LLaMA decoder (reused through LlavaModel), with anyres images (vision/anyres.h) whose tile
// features are packed as transformers' LlavaNextModel.pack_image_features does:
//
//   per image of original size (h, w) with pixel_values [1 + R·C, 3, S, S] (base tile first,
//   then the R × C grid row by row; R, C from select_best_resolution over image_grid_pinpoints):
//     f_i     = projector(tower(tile_i))                   [G², d], G = S / patch (24), CLS dropped
//     grid    = [R·G, C·G, d], grid[r·G + y, c·G + x] = f_{1 + r·C + c}[y·G + x]
//     grid'   = grid rows/cols cut back to the original aspect (unpad_extent, anyres.h)
//     packed  = f_0 (G² rows), then for each row of grid': its C' features, then image_newline
//   → G² + R'·(C' + 1) features, which is the number of image tokens the processor expands
//   `<image>` to (llava_next_image_tokens). Several images: their packed features in order.
//
// Supported: vision_feature_select_strategy "default" (HF's packing cannot reshape the tiles'
// G² + 1 features under "full"; refused), vision_feature_layer int or list, HF LLaVA-NeXT's
// only merge ("spatial_unpad" with image_newline — the original repository's "flat" /
// "spatial" merges and LLaVA-OneVision's "anyres_max_N" are not LlavaNext, and configs naming
// them are refused).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "models/llava.h"
#include "vision/anyres.h"

namespace lowbit {

struct LlavaNextConfig {
  std::string architecture;  // LlavaNextForConditionalGeneration
  // Text, vision, projector, image token, feature layers and strategy, parsed by
  // LlavaConfig::from_json(j, path, kLlavaNextFamily) (so the top-level "dtype" reaches the text
  // model's RoPE as for LLaVA-1.5).
  LlavaConfig llava;
  std::vector<Resolution> image_grid_pinpoints = default_llava_next_pinpoints();

  static LlavaNextConfig from_json(const nlohmann::json& j, const std::string& path);
  static LlavaNextConfig load(const std::string& model_dir);

  int64_t tile_size() const { return llava.vision.image_size; }
  int64_t tile_grid() const { return llava.vision.grid(); }  // G: patch features per tile side
  // 1 + R·C: the tiles an image of (height, width) is cut into.
  int64_t num_tiles(Resolution image_size) const;
  // The number of packed features (= image tokens) of an image of (height, width).
  int64_t image_tokens(Resolution image_size) const;
};

// True when `model_dir`'s config.json names LlavaNextForConditionalGeneration (or model_type
// "llava_next").
bool is_llava_next_dir(const std::string& model_dir);

class LlavaNextModel {
 public:
  LlavaNextConfig cfg;
  LlavaModel llava;     // vision tower, projector, language model (llava.cfg == cfg.llava)
  Tensor image_newline;  // [d] f32
  std::string image_newline_name;  // its name in the file

  static LlavaNextModel load(const std::string& dir);
  static LlavaNextModel from_store(const LlavaNextConfig& cfg, const WeightStore& store, const std::string& dir,
                                   const PackedSource& packed = {});

  // Packed features of one image: tiles = pixel_values [n, 3, S, S] with n >= num_tiles(size)
  // (extra tiles — HF's batch padding — are ignored), image_size = (height, width) of the
  // original → [image_tokens(size), d] f32. ShapeError when the tiles are too few or misshapen.
  Tensor single_image_features(const Tensor& tiles, Resolution image_size, const ForwardOptions& opt = {}) const;
  // Several images: pixel_values [n_images, max_tiles, 3, S, S] (HF's batch layout) or, for one
  // image, [tiles, 3, S, S]; image_sizes one (height, width) per image → the packed features of
  // every image, concatenated [Σ tokens, d].
  Tensor image_features(const Tensor& pixel_values, const std::vector<Resolution>& image_sizes,
                        const ForwardOptions& opt = {}) const;

  // The image tokens (packed features) of each image of image_sizes (height, width).
  std::vector<int64_t> image_tokens_per_image(const std::vector<Resolution>& image_sizes) const;
  // The prompt's ids as LlavaNextProcessor makes them: the k-th `<image>` of text repeated
  // cfg.image_tokens(image_sizes[k]) times, then encoded (BOS first when the tokenizer adds one).
  // ArgError when the placeholders are not image_sizes.size().
  std::vector<int32_t> prompt_ids(const Tokenizer& tok, const std::string& text,
                                  const std::vector<Resolution>& image_sizes) const;

  // x [T, d]: the embeddings of ids with the image tokens' rows replaced, in order, by the rows of
  // features [n, d] (the packed features of images of image_sizes). ArgError when the prompt's
  // image tokens are not n, naming each image's size and token count.
  void embed_multimodal(const int32_t* ids, int64_t T, const Tensor& features,
                        const std::vector<Resolution>& image_sizes, float* x) const;

  // Logits [T, vocab] (or [1, vocab] with last_only) of ids whose image tokens are already
  // expanded (one per packed feature); an undefined pixel_values means text only. ArgError
  // when the image tokens and features differ in number. Advances the cache.
  Tensor forward(const int32_t* ids, int64_t T, const Tensor& pixel_values, const std::vector<Resolution>& image_sizes,
                 KVCache* cache = nullptr, const ForwardOptions& opt = {});

  // Vision layers, the projector, then the decoder layers (what the quantization driver walks).
  std::vector<Block*> blocks() { return llava.blocks(); }
};

}  // namespace lowbit
