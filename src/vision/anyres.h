// LLaVA-NeXT's "anyres" image processing (transformers' LlavaNextImageProcessor and its fast,
// torchvision-backed twin LlavaNextImageProcessorFast, transformers 5's default) and the
// geometry the model and the processor share (grid shape, unpadding, image-token count).
//
// Sizes are (height, width) throughout, as transformers orders them; image_grid_pinpoints
// entries are [height, width].
//
//   1. best resolution (select_best_resolution): for each candidate (H, W) in the listed order,
//      scale = min(W / w, H / h) (double), downscaled = int(w·scale) × int(h·scale) (truncated),
//      effective = min(downscaled area, w·h), wasted = H·W − effective; keep the candidate with
//      the largest effective resolution, ties broken by the smallest waste (first one wins
//      a full tie).
//   2. resize for patching (get_patch_output_size): scale_w = W / w, scale_h = H / h; when
//      scale_w < scale_h the width becomes W and the height min(ceil(h·scale_w), H), else the
//      height becomes H and the width min(ceil(w·scale_h), W). Same antialiased resampler as the
//      CLIP processor (torch's uint8 kernel for Fast, Pillow's for Slow).
//   3. pad (_pad_for_patching) to H × W, centered: paste_x, r_x = divmod(W − w', 2) — left
//      paste_x, right paste_x + r_x (same for top/bottom) — filled with 0 (black; torchvision's
//      F.pad / numpy's np.pad default), not the mean colour.
//   4. tiles (divide_to_patches): crop_size-sized tiles, row by row, left to right.
//   5. the whole image resized straight to (shortest_edge, shortest_edge) (or size {height,
//      width}) — not aspect-preserving, no crop — goes first.
//   6. every one of the 1 + rows·cols images then runs the CLIP steps (resize shortest edge,
//      center crop, rescale + normalize; on 336×336 tiles the resize and crop are identities).
//   Output: pixel_values f32 [1 + rows·cols, 3, S, S] for one image, with image_sizes = (h, w)
//   of the original.
// Pinpoints must be multiples of the tile size (transformers would produce ragged edge tiles
// whose grid shape the model computes inconsistently; refused).
//
// The features of such an image, packed by the model (LlavaNextModel), are the base tile's
// F = (S/p)² patch features, then the grid of tile features [rows·S/p, cols·S/p] cut back to the
// original aspect ratio (unpad_extent) with image_newline after each row.
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/tensor.h"
#include "io/image.h"
#include "vision/clip_processor.h"

namespace lowbit {

using Resolution = std::pair<int64_t, int64_t>;  // (height, width)

// transformers' LlavaNextConfig default when the config has no image_grid_pinpoints.
std::vector<Resolution> default_llava_next_pinpoints();

// Parses an image_grid_pinpoints list [[h, w], ...] (positive integers). ConfigError naming
// `source` and `key` otherwise.
std::vector<Resolution> parse_grid_pinpoints(const nlohmann::json& v, const std::string& key,
                                             const std::string& source);

struct AnyresProcessorConfig {
  ClipProcessorConfig clip;  // resize / crop / rescale / normalize of every tile, and the flavor
  std::vector<Resolution> grid_pinpoints = default_llava_next_pinpoints();

  int64_t tile_size() const { return clip.crop_height; }
  // (height, width) the whole image is resized to (step 5).
  Resolution base_size() const;

  // From preprocessor_config.json (flat) or processor_config.json ({"image_processor": ...}).
  // ConfigError for a non-square crop_size, pinpoints that are not multiples of it, or
  // anything ClipProcessorConfig refuses.
  static AnyresProcessorConfig from_json(const nlohmann::json& j, const std::string& source);
  static AnyresProcessorConfig load(const std::string& model_dir);
};

// Step 1. ArgError for an empty candidate list or a non-positive size.
Resolution select_best_resolution(Resolution original, const std::vector<Resolution>& candidates);
// Step 2: the size the image is resized to inside `target`.
Resolution patch_output_size(Resolution original, Resolution target);
// (rows, cols) of tiles for an image of `original` size (get_anyres_image_grid_shape).
std::pair<int64_t, int64_t> anyres_grid_shape(Resolution original, const std::vector<Resolution>& pinpoints,
                                              int64_t tile_size);
// 1 + rows·cols (image_size_to_num_patches).
int64_t anyres_num_tiles(Resolution original, const std::vector<Resolution>& pinpoints, int64_t tile_size);

// transformers' unpad_image on a [cur_h, cur_w] feature grid of an image of `original` size:
// the kept rows [r0, r1) and columns [c0, c1). When w/h > cur_w/cur_h the rows are cut:
// new_h = int(round(h · (cur_w / w), 7)), pad = (cur_h − new_h) // 2, rows [pad, cur_h − pad);
// otherwise the columns the same way. round(x, 7) is Python's (correctly rounded to 7 decimals).
struct UnpadExtent {
  int64_t r0, r1, c0, c1;
  int64_t rows() const { return r1 - r0; }
  int64_t cols() const { return c1 - c0; }
};
UnpadExtent unpad_extent(Resolution original, int64_t cur_h, int64_t cur_w);

// LlavaNextProcessor's image-token count for one image (_get_number_of_features, minus one for
// strategy default): (S/p)² + num_additional_image_tokens (the CLS) + unpadded rows·cols + rows
// (the newlines), − 1 when the strategy drops the CLS. tile_size = S (pixel_values' side),
// patch_size = p. This is also the number of features LlavaNextModel packs for the image.
int64_t llava_next_image_tokens(Resolution original, const std::vector<Resolution>& pinpoints, int64_t tile_size,
                                int64_t patch_size, int64_t num_additional_image_tokens = 1,
                                bool strategy_default = true);

// Steps 2-4 on uint8 pixels: the padded best-resolution image, before tiling (for tests).
Image anyres_resize_and_pad(const Image& image, Resolution target, const AnyresProcessorConfig& cfg);

// The whole processor for one image: pixel_values f32 [1 + rows·cols, 3, S, S].
Tensor anyres_preprocess(const Image& image, const AnyresProcessorConfig& cfg);

}  // namespace lowbit
