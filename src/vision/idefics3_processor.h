// Idefics3ImageProcessor (SmolVLM / Idefics3) and the Idefics3Processor's image-token string,
// reproducing transformers 5's default (fast, torchvision-backed) image processor for one RGB
// image decoded as PIL decodes it (io/image.h). All resizes are torch's antialiased uint8
// interpolation (resize_antialias with ResizeArithmetic::TorchUint8, vision/clip_processor.h);
// images stay uint8 until the final rescale/normalize, as in the fast processor.
//
//   1. resize (do_resize) so the longest edge is size.longest_edge (always, also upwards):
//      W >= H: W' = L, H' = int(L / (W / H)), made even by +1; else symmetric
//      (_resize_output_size_rescale_to_max_len, Python float arithmetic: double quotients,
//      truncation); then, if the longest edge exceeds 4096, scaled below it the same way
//      without the evening (_resize_output_size_scale_below_upper_bound).
//   2. with do_image_splitting: resize_for_vision_encoder — W >= H: W'' = ceil(W'/M)·M,
//      H'' = ceil(int(W'' / (W'/H')) / M)·M (M = max_image_size.longest_edge), else symmetric;
//      then, when either side exceeds M, cut into (H''/M) x (W''/M) tiles of M x M, row-major,
//      followed by the whole image resized to M x M (the "global image"); rows = H''/M,
//      cols = W''/M. Otherwise the image alone (rows = cols = 0).
//      Without splitting: the image resized to M x M (rows = cols = 0).
//   3. rescale + normalize exactly as the fast CLIP path (clip_preprocess with Fast flavor):
//      (v − mean·(1/rescale_factor)) / (std·(1/rescale_factor)) in float32.
//   pixel_values: f32 [n_frames, 3, M, M]; every frame is M x M, so the pixel_attention_mask of
//   a single image is all ones (padding appears only between images of a batch).
// resample: 2 bilinear, 3 bicubic; 1 (LANCZOS, Idefics3's class default) is replaced by bicubic
// as the fast processor does (it warns that torchvision has no Lanczos).
//
// Prompt (Idefics3Processor): each "<image>" in the text becomes, for a split image,
//   for r in 1..rows: for c in 1..cols: "<fake_token_around_image><row_r_col_c>" + "<image>"×n; then "\n"
//   then "\n<fake_token_around_image><global-img>" + "<image>"×n + "<fake_token_around_image>"
// and for an unsplit image "<fake_token_around_image><global-img>" + "<image>"×n +
// "<fake_token_around_image>", n = image_seq_len (processor_config.json; equal to
// (image_size/patch)² / scale_factor² of the model).
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/tensor.h"
#include "io/image.h"

namespace lowbit {

struct Idefics3ProcessorConfig {
  bool do_resize = true;
  int64_t longest_edge = 4 * 364;  // size.longest_edge
  int resample = 3;                // after mapping LANCZOS (1) to bicubic
  bool do_image_splitting = true;
  int64_t max_image_size = 364;    // max_image_size.longest_edge (the vision encoder's input side)
  bool do_rescale = true;
  double rescale_factor = 1.0 / 255.0;
  bool do_normalize = true;
  std::array<double, 3> image_mean = {0.5, 0.5, 0.5};  // IMAGENET_STANDARD_MEAN
  std::array<double, 3> image_std = {0.5, 0.5, 0.5};   // IMAGENET_STANDARD_STD
  int64_t image_seq_len = 169;     // processor_config.json's image_seq_len (Idefics3Processor default)

  // From processor_config.json ({"image_processor": {...}, "image_seq_len": n}) or a flat
  // preprocessor_config.json. ConfigError naming `source` and the key for a wrong type, a
  // non-positive size, or an unsupported resample (0 nearest, 4 box, 5 hamming).
  static Idefics3ProcessorConfig from_json(const nlohmann::json& j, const std::string& source);
  // <dir>/processor_config.json, else <dir>/preprocessor_config.json; IoError when neither exists.
  static Idefics3ProcessorConfig load(const std::string& model_dir);
};

// Step 1's output size {height, width} for an H x W image.
std::pair<int64_t, int64_t> idefics3_resize_size(int64_t height, int64_t width, int64_t longest_edge);
// Step 2's resize_for_vision_encoder size {height, width} (multiples of max_size).
std::pair<int64_t, int64_t> idefics3_vision_encoder_size(int64_t height, int64_t width, int64_t max_size);

struct Idefics3Pixels {
  Tensor pixel_values;  // f32 [n_frames, 3, M, M]: the tiles row-major, then the global image
  int64_t rows = 0, cols = 0;  // tile grid; 0 x 0 when the image was not split
  int64_t frames() const { return pixel_values.size(0); }
};

// The whole image processor on one image.
Idefics3Pixels idefics3_preprocess(const Image& image, const Idefics3ProcessorConfig& cfg);

// The string that replaces one "<image>" (see above).
std::string idefics3_image_prompt(int64_t rows, int64_t cols, int64_t image_seq_len);
// text with its k-th "<image>" replaced by idefics3_image_prompt(grids[k]); ArgError when the
// number of "<image>" differs from the number of images.
std::string idefics3_expand_prompt(const std::string& text, const std::vector<std::pair<int64_t, int64_t>>& grids,
                                   int64_t image_seq_len);

}  // namespace lowbit
