// CLIPImageProcessor and PIL's resampler (algorithms described in clip_processor.h).
#include "vision/clip_processor.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <vector>

#include "core/error.h"
#include "io/files.h"
#include "io/json_util.h"
#include "vision/processor_config.h"

namespace lowbit {
namespace {

using json = nlohmann::json;

// ------------------------------------------------------------------ config reading

// An image side from JSON: an integer in [1, 65536].
int64_t get_side(const json& v, const std::string& what, const std::string& source) {
  LOWBIT_CHECK(v.is_number_integer() && v.get<int64_t>() >= 1 && v.get<int64_t>() <= 65536, ConfigError,
               "{}: '{}' must be an integer in [1, 65536], got {}", source, what, json_excerpt(v));
  return v.get<int64_t>();
}

// ------------------------------------------------------------------ PIL resampling

// Keys' cubic, a = -0.5, as Pillow writes it; torch's antialiased kernel writes the outer piece as
// ((a x - 5a) x + 8a) x - 4a, which can differ in the last bit, so each side gets its own form.
double bicubic_filter(double x, ResizeArithmetic arith) {
  const double a = -0.5;
  x = std::fabs(x);
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0;
  if (x < 2.0) {
    return arith == ResizeArithmetic::Pil ? (((x - 5.0) * x + 8.0) * x - 4.0) * a
                                          : ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a;
  }
  return 0.0;
}

double bilinear_filter(double x) {
  x = std::fabs(x);
  return x < 1.0 ? 1.0 - x : 0.0;
}

// Taps of every output sample along one axis: first input index, count, and fixed-point weights
// (ksize per output sample, unused ones zero) with `precision` fractional bits.
struct AxisTaps {
  int64_t ksize = 0;
  int precision = 0;
  std::vector<int64_t> first, count;
  std::vector<int32_t> weights;
};

AxisTaps axis_taps(int64_t in_size, int64_t out_size, int resample, ResizeArithmetic arith) {
  const double filter_support = resample == 3 ? 2.0 : 1.0;
  const double scale = double(in_size) / double(out_size);
  const double filterscale = std::max(scale, 1.0);
  const double inv = 1.0 / filterscale;  // both multiply by the reciprocal
  const double support = filter_support * filterscale;
  AxisTaps t;
  t.ksize = int64_t(std::ceil(support)) * 2 + 1;
  t.first.resize(size_t(out_size));
  t.count.resize(size_t(out_size));
  std::vector<double> w(size_t(out_size * t.ksize), 0.0);
  double w_max = 0.0;
  for (int64_t i = 0; i < out_size; ++i) {
    const double center = (double(i) + 0.5) * scale;
    // C-style truncation toward zero, then clamping to the image.
    const int64_t lo = std::max<int64_t>(int64_t(center - support + 0.5), 0);
    const int64_t hi = std::min<int64_t>(int64_t(center + support + 0.5), in_size);
    const int64_t n = std::clamp<int64_t>(hi - lo, 0, t.ksize);
    double* wi = w.data() + i * t.ksize;
    double total = 0.0;
    for (int64_t j = 0; j < n; ++j) {
      const double x = (double(j + lo) - center + 0.5) * inv;
      wi[j] = resample == 3 ? bicubic_filter(x, arith) : bilinear_filter(x);
      total += wi[j];
    }
    if (total != 0.0) {
      for (int64_t j = 0; j < n; ++j) {
        wi[j] /= total;
        w_max = std::max(w_max, wi[j]);
      }
    }
    t.first[size_t(i)] = lo;
    t.count[size_t(i)] = n;
  }
  if (arith == ResizeArithmetic::Pil) {
    t.precision = 32 - 8 - 2;  // Pillow's PRECISION_BITS
  } else {
    // torch: the most bits (at most 22) for which the largest weight still fits an int16.
    t.precision = 0;
    while (t.precision < 22 && int64_t(0.5 + w_max * double(int64_t(1) << (t.precision + 1))) < (1 << 15))
      ++t.precision;
  }
  t.weights.resize(w.size());
  const double one = double(int64_t(1) << t.precision);
  for (size_t k = 0; k < w.size(); ++k) {
    const double f = w[k] * one;
    t.weights[k] = int32_t(f < 0 ? f - 0.5 : f + 0.5);  // half away from zero
  }
  return t;
}

uint8_t clip8(int64_t acc, int precision) {
  const int64_t v = acc >> precision;  // arithmetic shift: floor
  return uint8_t(std::clamp<int64_t>(v, 0, 255));
}

// One pass along x: in [h, in_w, 3] -> [h, out_w, 3].
Image resample_horizontal(const Image& in, int64_t out_w, int resample, ResizeArithmetic arith) {
  const AxisTaps t = axis_taps(in.width, out_w, resample, arith);
  Image out;
  out.width = out_w;
  out.height = in.height;
  out.pixels.resize(size_t(out.width * out.height * 3));
  for (int64_t y = 0; y < in.height; ++y) {
    for (int64_t x = 0; x < out_w; ++x) {
      const int32_t* k = t.weights.data() + x * t.ksize;
      const uint8_t* src = in.at(y, t.first[size_t(x)]);
      for (int c = 0; c < 3; ++c) {
        int64_t acc = int64_t(1) << (t.precision - 1);
        for (int64_t j = 0; j < t.count[size_t(x)]; ++j) acc += int64_t(src[j * 3 + c]) * k[j];
        out.at(y, x)[c] = clip8(acc, t.precision);
      }
    }
  }
  return out;
}

// One pass along y: in [in_h, w, 3] -> [out_h, w, 3].
Image resample_vertical(const Image& in, int64_t out_h, int resample, ResizeArithmetic arith) {
  const AxisTaps t = axis_taps(in.height, out_h, resample, arith);
  Image out;
  out.width = in.width;
  out.height = out_h;
  out.pixels.resize(size_t(out.width * out.height * 3));
  const int64_t row = in.width * 3;
  for (int64_t y = 0; y < out_h; ++y) {
    const int32_t* k = t.weights.data() + y * t.ksize;
    const uint8_t* src = in.at(t.first[size_t(y)], 0);
    uint8_t* dst = out.at(y, 0);
    for (int64_t i = 0; i < row; ++i) {
      int64_t acc = int64_t(1) << (t.precision - 1);
      for (int64_t j = 0; j < t.count[size_t(y)]; ++j) acc += int64_t(src[j * row + i]) * k[j];
      dst[i] = clip8(acc, t.precision);
    }
  }
  return out;
}

}  // namespace

ClipProcessorConfig ClipProcessorConfig::from_json(const json& root, const std::string& source) {
  const json& j = image_processor_section(root, source);
  ClipProcessorConfig c;
  c.do_resize = processor_bool(j, "do_resize", c.do_resize, source);
  if (auto it = j.find("size"); it != j.end() && !it->is_null()) {
    if (it->is_number()) {  // old configs: a bare int is the shortest edge
      c.shortest_edge = get_side(*it, "size", source);
    } else {
      LOWBIT_CHECK(it->is_object(), ConfigError, "{}: 'size' must be an object, got {}", source,
                   json_excerpt(*it));
      if (it->contains("shortest_edge")) {
        c.shortest_edge = get_side((*it)["shortest_edge"], "size.shortest_edge", source);
      } else {
        LOWBIT_CHECK(it->contains("height") && it->contains("width"), ConfigError,
                     "{}: 'size' needs shortest_edge or height and width, got {}", source, json_excerpt(*it));
        c.shortest_edge = 0;
        c.size_height = get_side((*it)["height"], "size.height", source);
        c.size_width = get_side((*it)["width"], "size.width", source);
      }
    }
  }
  if (auto it = j.find("resample"); it != j.end() && !it->is_null()) {
    LOWBIT_CHECK(it->is_number_integer(), ConfigError, "{}: 'resample' must be an integer, got {}", source,
                 json_excerpt(*it));
    const int64_t r = it->get<int64_t>();
    LOWBIT_CHECK(r == 2 || r == 3, ConfigError,
                 "{}: unsupported resample {} (supported: 2 = bilinear, 3 = bicubic; PIL's 0 nearest, "
                 "1 lanczos, 4 box, 5 hamming are not implemented)",
                 source, r);
    c.resample = int(r);
  }
  c.do_center_crop = processor_bool(j, "do_center_crop", c.do_center_crop, source);
  if (auto it = j.find("crop_size"); it != j.end() && !it->is_null()) {
    if (it->is_number()) {
      c.crop_height = c.crop_width = get_side(*it, "crop_size", source);
    } else {
      LOWBIT_CHECK(it->is_object() && it->contains("height") && it->contains("width"), ConfigError,
                   "{}: 'crop_size' must be {{height, width}}, got {}", source, json_excerpt(*it));
      c.crop_height = get_side((*it)["height"], "crop_size.height", source);
      c.crop_width = get_side((*it)["width"], "crop_size.width", source);
    }
  }
  c.do_rescale = processor_bool(j, "do_rescale", c.do_rescale, source);
  c.rescale_factor = processor_double(j, "rescale_factor", c.rescale_factor, source);
  LOWBIT_CHECK(std::isfinite(c.rescale_factor), ConfigError, "{}: 'rescale_factor' must be finite", source);
  c.do_normalize = processor_bool(j, "do_normalize", c.do_normalize, source);
  c.image_mean = processor_triple(j, "image_mean", c.image_mean, source, false);
  c.image_std = processor_triple(j, "image_std", c.image_std, source, true);
  c.do_convert_rgb = processor_bool(j, "do_convert_rgb", c.do_convert_rgb, source);
  return c;
}

ClipProcessorConfig ClipProcessorConfig::load(const std::string& model_dir) {
  const ProcessorJson f = read_processor_json(model_dir, "preprocessor_config.json", "processor_config.json");
  return from_json(f.json, f.path);
}

Image resize_antialias(const Image& in, int64_t out_width, int64_t out_height, int resample,
                       ResizeArithmetic arith) {
  LOWBIT_CHECK(resample == 2 || resample == 3, ArgError, "resize: unsupported resample {}", resample);
  LOWBIT_CHECK(out_width > 0 && out_height > 0 && in.width > 0 && in.height > 0, ShapeError,
               "resize: cannot resize {}x{} to {}x{}", in.width, in.height, out_width, out_height);
  const bool horizontal = out_width != in.width;
  const bool vertical = out_height != in.height;
  if (horizontal && vertical)
    return resample_vertical(resample_horizontal(in, out_width, resample, arith), out_height, resample, arith);
  if (horizontal) return resample_horizontal(in, out_width, resample, arith);
  if (vertical) return resample_vertical(in, out_height, resample, arith);
  return in;
}

std::pair<int64_t, int64_t> shortest_edge_output_size(int64_t height, int64_t width, int64_t shortest_edge) {
  const bool portrait = width <= height;
  const int64_t short_side = portrait ? width : height;
  const int64_t long_side = portrait ? height : width;
  // Python: int(size * long / short), the quotient of two ints correctly rounded to double.
  const int64_t new_long = int64_t(double(shortest_edge * long_side) / double(short_side));
  return portrait ? std::pair{new_long, shortest_edge} : std::pair{shortest_edge, new_long};
}

Image center_crop(const Image& in, int64_t crop_height, int64_t crop_width, ProcessorFlavor flavor) {
  LOWBIT_CHECK(crop_height > 0 && crop_width > 0 && in.width > 0 && in.height > 0, ShapeError,
               "center_crop: cannot crop {}x{} to {}x{}", in.width, in.height, crop_width, crop_height);
  // A side shorter than the crop is zero-padded to the crop first: the slow processor puts
  // ceil(pad / 2) before the image, the fast one floor(pad / 2).
  const auto before = [&](int64_t pad) { return flavor == ProcessorFlavor::Slow ? (pad + 1) / 2 : pad / 2; };
  const int64_t new_h = std::max(crop_height, in.height), new_w = std::max(crop_width, in.width);
  const int64_t pad_top = before(new_h - in.height), pad_left = before(new_w - in.width);
  // Offsets into the (padded) image: floor((H - h) / 2), (H - h) >= 0 here.
  const int64_t top = (new_h - crop_height) / 2, left = (new_w - crop_width) / 2;
  Image out;
  out.width = crop_width;
  out.height = crop_height;
  out.pixels.assign(size_t(crop_width * crop_height * 3), 0);
  for (int64_t y = 0; y < crop_height; ++y) {
    const int64_t sy = y + top - pad_top;  // source row
    if (sy < 0 || sy >= in.height) continue;
    for (int64_t x = 0; x < crop_width; ++x) {
      const int64_t sx = x + left - pad_left;
      if (sx >= 0 && sx < in.width) std::copy_n(in.at(sy, sx), 3, out.at(y, x));
    }
  }
  return out;
}

std::array<uint8_t, 3> llava_pad_color(const std::array<double, 3>& image_mean) {
  std::array<uint8_t, 3> fill{};
  for (size_t c = 0; c < 3; ++c) {
    // int(x * 255) truncates; PIL clamps a fill colour outside [0, 255] to the byte range.
    fill[c] = uint8_t(std::clamp<int64_t>(int64_t(image_mean[c] * 255.0), 0, 255));
  }
  return fill;
}

Image expand_to_square(const Image& in, const std::array<uint8_t, 3>& fill) {
  if (in.width == in.height) return in;
  const int64_t side = std::max(in.width, in.height);
  Image out;
  out.width = out.height = side;
  out.pixels.resize(size_t(side * side * 3));
  for (int64_t i = 0; i < side * side; ++i) std::copy_n(fill.data(), 3, out.pixels.data() + i * 3);
  const int64_t left = in.width < side ? (side - in.width) / 2 : 0;
  const int64_t top = in.height < side ? (side - in.height) / 2 : 0;
  for (int64_t y = 0; y < in.height; ++y) std::copy_n(in.at(y, 0), in.width * 3, out.at(y + top, left));
  return out;
}

Tensor clip_preprocess(const Image& image, const ClipProcessorConfig& cfg) {
  LOWBIT_CHECK(image.width > 0 && image.height > 0, ShapeError, "clip_preprocess: empty image");
  const bool fast = cfg.flavor == ProcessorFlavor::Fast;
  Image img = image;
  if (cfg.do_resize) {
    auto [h, w] = cfg.shortest_edge > 0 ? shortest_edge_output_size(img.height, img.width, cfg.shortest_edge)
                                        : std::pair{cfg.size_height, cfg.size_width};
    LOWBIT_CHECK(h > 0 && w > 0, ShapeError, "clip_preprocess: a {}x{} image resizes to {}x{}", image.width,
                 image.height, w, h);
    img = resize_antialias(img, w, h, cfg.resample, fast ? ResizeArithmetic::TorchUint8 : ResizeArithmetic::Pil);
  }
  if (cfg.do_center_crop) img = center_crop(img, cfg.crop_height, cfg.crop_width, cfg.flavor);

  // Rescale and normalize, in float32, in the order each processor applies them.
  // Slow: x = f32(v * rescale_factor) (product in double), then (x - mean) / std.
  // Fast with both: mean and std are first multiplied by 1 / rescale_factor (in float32), then
  // (v - mean') / std' — one rounding fewer; only rescale: f32(v) * f32(rescale_factor).
  std::array<float, 3> mean{}, stdev{};
  for (size_t c = 0; c < 3; ++c) {
    mean[c] = float(cfg.image_mean[c]);
    stdev[c] = float(cfg.image_std[c]);
    if (fast && cfg.do_rescale && cfg.do_normalize) {
      const float inv = float(1.0 / cfg.rescale_factor);
      mean[c] *= inv;
      stdev[c] *= inv;
    }
  }
  const int64_t h = img.height, w = img.width;
  Tensor out = Tensor::empty({3, h, w});
  float* o = out.f32();
  for (int64_t y = 0; y < h; ++y) {
    for (int64_t x = 0; x < w; ++x) {
      const uint8_t* p = img.at(y, x);
      for (size_t c = 0; c < 3; ++c) {
        float v = float(p[c]);
        if (fast && cfg.do_rescale && cfg.do_normalize) {
          v = (v - mean[c]) / stdev[c];
        } else {
          if (cfg.do_rescale) v = fast ? v * float(cfg.rescale_factor) : float(double(p[c]) * cfg.rescale_factor);
          if (cfg.do_normalize) v = (v - mean[c]) / stdev[c];
        }
        o[(int64_t(c) * h + y) * w + x] = v;
      }
    }
  }
  return out;
}

}  // namespace lowbit
