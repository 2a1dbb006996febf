// CLIPImageProcessor (LLaVA-1.5's image processor), reproducing transformers' pixel_values for an
// RGB image decoded as PIL decodes it (io/image.h). transformers has two implementations that
// differ in the last uint8 level of ~0.2% of the pixels, so both are here (ProcessorFlavor):
//   Fast — the torchvision-backed image processor, transformers 5's default (AutoProcessor /
//          AutoImageProcessor without use_fast=False). The golden pixel_values in
//          ../shared/golden/tiny-llava-1.5_forward.safetensors were made by it (equal to 0 here).
//   Slow — the PIL/numpy one (use_fast=False; what the original LLaVA repository ran).
//
//   1. resize (do_resize): size {shortest_edge: S} -> the short side becomes S and the long side
//      int(S * long / short) (get_resize_output_image_size: truncation of the correctly rounded
//      double quotient, as Python's int / int); size {height, width} -> exactly that size.
//   2. center crop (do_center_crop) to crop_size {height, width}: offsets floor((H - h) / 2),
//      floor((W - w) / 2); a side shorter than the crop is zero-padded first (slow: ceil(pad/2)
//      before the image, fast: floor(pad/2)).
//   3./4. rescale (do_rescale) and normalize (do_normalize), float32:
//      slow: x = f32(v * rescale_factor) (product in double, as numpy upcasts), (x - mean) / std;
//      fast: both on -> (v - mean * (1/rescale_factor)) / (std * (1/rescale_factor)), the scaled
//      mean/std rounded to float32 first; rescale only -> v * f32(rescale_factor).
//   Output pixel_values: f32 [3, H, W] (channels first).
//
// resize_antialias: the antialiasing convolution resampler that Pillow uses for every filter since
// 2.7 and that torch's uint8 antialiased interpolate (torchvision's resize of a uint8 tensor)
// reimplements. Separable: horizontal pass first (only when the width changes), then vertical (only
// when the height changes); each pass rounds to uint8 before the next one reads it. For output
// index i along an axis of input length n and output length m: scale = n / m, filterscale =
// max(scale, 1), support = filter_support * filterscale; center = (i + 0.5) * scale; taps j in
// [trunc(center - support + 0.5) clamped to >= 0, trunc(center + support + 0.5) clamped to <= n);
// weight_j = filter((j - center + 0.5) * (1 / filterscale)), normalized to sum 1 in double, then
// rounded half away from zero to fixed point with P fractional bits; an output sample is
// (2^(P-1) + sum v_j * w_j) >> P clamped to [0, 255]. The two arithmetics differ only in P:
//   Pil:        P = 22 (Pillow's PRECISION_BITS = 32 - 8 - 2), weights as int32;
//   TorchUint8: weights as int16, P per axis = the largest P <= 22 with
//               int(0.5 + max_weight * 2^(P+1)) < 2^15 (typically 14-15 bits).
// Filters: bicubic (resample 3) is Keys' cubic with a = -0.5, support 2; bilinear (2) the triangle,
// support 1. Other PIL filters (nearest 0, lanczos 1, box 4, hamming 5) are refused.
//
// expand_to_square is LLaVA's `image_aspect_ratio: pad` (expand2square): a square of the long
// side filled with tuple(int(x * 255) for x in image_mean), the image pasted at ((S - w) // 2, 0)
// or (0, (S - h) // 2); the CLIP steps follow on the square.
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <utility>

#include <nlohmann/json.hpp>

#include "core/tensor.h"
#include "io/image.h"

namespace lowbit {

enum class ProcessorFlavor { Fast, Slow };
enum class ResizeArithmetic { TorchUint8, Pil };

struct ClipProcessorConfig {
  // Not in the JSON: which transformers implementation to reproduce (see above).
  ProcessorFlavor flavor = ProcessorFlavor::Fast;
  bool do_resize = true;
  int64_t shortest_edge = 224;            // used when size has shortest_edge
  int64_t size_height = 0, size_width = 0;  // used instead when size is {height, width}
  int resample = 3;                       // PIL: 2 bilinear, 3 bicubic
  bool do_center_crop = true;
  int64_t crop_height = 224, crop_width = 224;
  bool do_rescale = true;
  double rescale_factor = 1.0 / 255.0;
  bool do_normalize = true;
  std::array<double, 3> image_mean = {0.48145466, 0.4578275, 0.40821073};  // OPENAI_CLIP_MEAN
  std::array<double, 3> image_std = {0.26862954, 0.26130258, 0.27577711};  // OPENAI_CLIP_STD
  bool do_convert_rgb = true;  // decode_image always yields RGB, so this is a no-op here

  // From a preprocessor_config.json object (flat), or a processor_config.json object holding
  // it under "image_processor". Missing keys keep CLIPImageProcessor's defaults. ConfigError
  // naming `source` and the key for a wrong type, a non-positive size, or an unsupported resample.
  static ClipProcessorConfig from_json(const nlohmann::json& j, const std::string& source);
  // <dir>/preprocessor_config.json, else <dir>/processor_config.json; IoError when neither exists.
  static ClipProcessorConfig load(const std::string& model_dir);
};

// Antialiased resize for resample 2 or 3 (see above). Pil: PIL's Image.resize((w, h), resample).
// TorchUint8: torchvision's resize(antialias=True) of a uint8 tensor on the CPU.
Image resize_antialias(const Image& in, int64_t out_width, int64_t out_height, int resample,
                       ResizeArithmetic arith);

// transformers' get_resize_output_image_size(default_to_square=False) for an int size:
// returns {height, width}.
std::pair<int64_t, int64_t> shortest_edge_output_size(int64_t height, int64_t width, int64_t shortest_edge);

// transformers' center_crop: floor offsets, zero padding when smaller (placed by flavor).
Image center_crop(const Image& in, int64_t crop_height, int64_t crop_width, ProcessorFlavor flavor);

// LLaVA's expand2square and its background colour tuple(int(x * 255) for x in image_mean).
Image expand_to_square(const Image& in, const std::array<uint8_t, 3>& fill);
std::array<uint8_t, 3> llava_pad_color(const std::array<double, 3>& image_mean);

// The whole CLIPImageProcessor: pixel_values f32 [3, H, W].
Tensor clip_preprocess(const Image& image, const ClipProcessorConfig& cfg);

}  // namespace lowbit
