// LLaVA-NeXT anyres processing; the rules are spelled out in anyres.h.
#include "vision/anyres.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>

#include "core/error.h"
#include "io/files.h"
#include "io/json_util.h"
#include "vision/processor_config.h"

namespace lowbit {

using json = nlohmann::json;

namespace {

// Python's int(round(x, 7)) for x >= 0: x correctly rounded to 7 decimals (glibc's printf rounds
// the exact binary value, ties to even, as CPython's dtoa does), read back, truncated.
int64_t int_round7(double x) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.7f", x);
  return static_cast<int64_t>(std::strtod(buf, nullptr));
}

int64_t floor_div(int64_t a, int64_t b) {  // Python's //, b > 0
  int64_t q = a / b;
  if ((a % b != 0) && (a < 0)) --q;
  return q;
}

}  // namespace

std::vector<Resolution> default_llava_next_pinpoints() {
  return {{336, 672}, {672, 336}, {672, 672}, {1008, 336}, {336, 1008}};
}

std::vector<Resolution> parse_grid_pinpoints(const json& v, const std::string& key, const std::string& source) {
  LOWBIT_CHECK(v.is_array() && !v.empty(), ConfigError, "{}: '{}' must be a non-empty list of [height, width], got {}",
               source, key, json_excerpt(v));
  std::vector<Resolution> out;
  for (const json& e : v) {
    LOWBIT_CHECK(e.is_array() && e.size() == 2 && e[0].is_number_integer() && e[1].is_number_integer() &&
                     e[0].get<int64_t>() > 0 && e[1].get<int64_t>() > 0 && e[0].get<int64_t>() <= (1 << 16) &&
                     e[1].get<int64_t>() <= (1 << 16),
                 ConfigError, "{}: '{}' entries must be [height, width] with positive integers (<= 65536), got {}",
                 source, key, json_excerpt(e));
    out.emplace_back(e[0].get<int64_t>(), e[1].get<int64_t>());
  }
  return out;
}

Resolution AnyresProcessorConfig::base_size() const {
  return clip.shortest_edge > 0 ? Resolution{clip.shortest_edge, clip.shortest_edge}
                                : Resolution{clip.size_height, clip.size_width};
}

AnyresProcessorConfig AnyresProcessorConfig::from_json(const json& root, const std::string& source) {
  AnyresProcessorConfig c;
  c.clip = ClipProcessorConfig::from_json(root, source);
  const json& j = image_processor_section(root, source);
  if (auto it = j.find("image_grid_pinpoints"); it != j.end() && !it->is_null())
    c.grid_pinpoints = parse_grid_pinpoints(*it, "image_grid_pinpoints", source);
  LOWBIT_CHECK(c.clip.crop_height == c.clip.crop_width, ConfigError,
               "{}: LLaVA-NeXT tiles are square; crop_size {}x{} is not", source, c.clip.crop_width,
               c.clip.crop_height);
  const int64_t s = c.tile_size();
  for (const auto& [h, w] : c.grid_pinpoints)
    LOWBIT_CHECK(h % s == 0 && w % s == 0, ConfigError,
                 "{}: image_grid_pinpoints entry [{}, {}] is not a multiple of the tile size {} (crop_size)", source,
                 h, w, s);
  return c;
}

AnyresProcessorConfig AnyresProcessorConfig::load(const std::string& model_dir) {
  const ProcessorJson f = read_processor_json(model_dir, "preprocessor_config.json", "processor_config.json");
  return from_json(f.json, f.path);
}

Resolution select_best_resolution(Resolution original, const std::vector<Resolution>& candidates) {
  const auto [oh, ow] = original;
  LOWBIT_CHECK(oh > 0 && ow > 0, ArgError, "select_best_resolution: image size {}x{} is empty", ow, oh);
  LOWBIT_CHECK(!candidates.empty(), ArgError, "select_best_resolution: no candidate resolutions");
  Resolution best{0, 0};
  int64_t max_effective = 0, min_wasted = INT64_MAX;
  for (const auto& [h, w] : candidates) {
    const double scale = std::min(double(w) / double(ow), double(h) / double(oh));
    const int64_t dw = static_cast<int64_t>(double(ow) * scale), dh = static_cast<int64_t>(double(oh) * scale);
    const int64_t effective = std::min(dw * dh, ow * oh);
    const int64_t wasted = h * w - effective;
    if (effective > max_effective || (effective == max_effective && wasted < min_wasted)) {
      max_effective = effective;
      min_wasted = wasted;
      best = {h, w};
    }
  }
  // Every candidate downscales to nothing (an extreme aspect ratio): transformers returns None
  // and fails later; say so here.
  LOWBIT_CHECK(best.first > 0, ArgError,
               "select_best_resolution: a {}x{} image fits none of the grid resolutions (aspect ratio too extreme)",
               ow, oh);
  return best;
}

Resolution patch_output_size(Resolution original, Resolution target) {
  const auto [oh, ow] = original;
  const auto [th, tw] = target;
  const double scale_w = double(tw) / double(ow), scale_h = double(th) / double(oh);
  if (scale_w < scale_h) return {std::min<int64_t>(static_cast<int64_t>(std::ceil(double(oh) * scale_w)), th), tw};
  return {th, std::min<int64_t>(static_cast<int64_t>(std::ceil(double(ow) * scale_h)), tw)};
}

std::pair<int64_t, int64_t> anyres_grid_shape(Resolution original, const std::vector<Resolution>& pinpoints,
                                              int64_t tile_size) {
  const auto [h, w] = select_best_resolution(original, pinpoints);
  return {h / tile_size, w / tile_size};
}

int64_t anyres_num_tiles(Resolution original, const std::vector<Resolution>& pinpoints, int64_t tile_size) {
  const auto [h, w] = select_best_resolution(original, pinpoints);
  // range(0, h, tile) × range(0, w, tile), plus the whole image.
  return ((h + tile_size - 1) / tile_size) * ((w + tile_size - 1) / tile_size) + 1;
}

UnpadExtent unpad_extent(Resolution original, int64_t cur_h, int64_t cur_w) {
  const auto [oh, ow] = original;
  LOWBIT_CHECK(oh > 0 && ow > 0 && cur_h > 0 && cur_w > 0, ArgError, "unpad: empty size {}x{} / {}x{}", ow, oh, cur_w,
               cur_h);
  const double original_aspect = double(ow) / double(oh), current_aspect = double(cur_w) / double(cur_h);
  if (original_aspect > current_aspect) {
    const int64_t new_h = int_round7(double(oh) * (double(cur_w) / double(ow)));
    const int64_t pad = floor_div(cur_h - new_h, 2);
    return {pad, cur_h - pad, 0, cur_w};
  }
  const int64_t new_w = int_round7(double(ow) * (double(cur_h) / double(oh)));
  const int64_t pad = floor_div(cur_w - new_w, 2);
  return {0, cur_h, pad, cur_w - pad};
}

int64_t llava_next_image_tokens(Resolution original, const std::vector<Resolution>& pinpoints, int64_t tile_size,
                                int64_t patch_size, int64_t num_additional_image_tokens, bool strategy_default) {
  LOWBIT_CHECK(tile_size > 0 && patch_size > 0 && tile_size % patch_size == 0, ArgError,
               "image token count: tile size {} is not a multiple of the patch size {}", tile_size, patch_size);
  const auto [bh, bw] = select_best_resolution(original, pinpoints);
  const int64_t scale_h = bh / tile_size, scale_w = bw / tile_size;
  const int64_t ph = tile_size / patch_size, pw = tile_size / patch_size;
  const UnpadExtent u = unpad_extent(original, ph * scale_h, pw * scale_w);
  const int64_t base = ph * pw + num_additional_image_tokens;
  return u.rows() * u.cols() + u.rows() + base - (strategy_default ? 1 : 0);
}

Image anyres_resize_and_pad(const Image& image, Resolution target, const AnyresProcessorConfig& cfg) {
  const auto [th, tw] = target;
  const auto [nh, nw] = patch_output_size({image.height, image.width}, target);
  const ResizeArithmetic arith =
      cfg.clip.flavor == ProcessorFlavor::Fast ? ResizeArithmetic::TorchUint8 : ResizeArithmetic::Pil;
  const Image resized = resize_antialias(image, nw, nh, cfg.clip.resample, arith);
  const int64_t px = (tw - nw) / 2, py = (th - nh) / 2;  // left / top: divmod's quotient
  Image out;
  out.width = tw;
  out.height = th;
  out.pixels.assign(size_t(tw * th * 3), 0);
  for (int64_t y = 0; y < nh; ++y)
    std::memcpy(out.at(py + y, px), resized.at(y, 0), size_t(nw * 3));
  return out;
}

Tensor anyres_preprocess(const Image& image, const AnyresProcessorConfig& cfg) {
  LOWBIT_CHECK(image.width > 0 && image.height > 0, ShapeError, "anyres_preprocess: empty image");
  const int64_t S = cfg.tile_size();
  const Resolution best = select_best_resolution({image.height, image.width}, cfg.grid_pinpoints);
  LOWBIT_CHECK(best.first % S == 0 && best.second % S == 0, ConfigError,
               "anyres_preprocess: grid resolution {}x{} is not a multiple of the tile size {}", best.second,
               best.first, S);
  const Image padded = anyres_resize_and_pad(image, best, cfg);
  const ResizeArithmetic arith =
      cfg.clip.flavor == ProcessorFlavor::Fast ? ResizeArithmetic::TorchUint8 : ResizeArithmetic::Pil;
  const auto [bh, bw] = cfg.base_size();

  std::vector<Image> tiles;
  tiles.push_back(resize_antialias(image, bw, bh, cfg.clip.resample, arith));
  for (int64_t y0 = 0; y0 < best.first; y0 += S)
    for (int64_t x0 = 0; x0 < best.second; x0 += S) {
      Image t;
      t.width = t.height = S;
      t.pixels.resize(size_t(S * S * 3));
      for (int64_t y = 0; y < S; ++y) std::memcpy(t.at(y, 0), padded.at(y0 + y, x0), size_t(S * 3));
      tiles.push_back(std::move(t));
    }

  const int64_t n = int64_t(tiles.size()), plane = 3 * S * S;
  Tensor out = Tensor::empty({n, 3, S, S});
  for (int64_t i = 0; i < n; ++i) {
    const Tensor t = clip_preprocess(tiles[size_t(i)], cfg.clip);
    LOWBIT_CHECK(t.shape() == (Shape{3, S, S}), ShapeError,
                 "anyres_preprocess: tile {} came out {} (expected [3, {}, {}]; check size and crop_size)", i,
                 shape_str(t.shape()), S, S);
    std::memcpy(out.f32() + i * plane, t.f32(), size_t(plane) * sizeof(float));
  }
  return out;
}

}  // namespace lowbit
