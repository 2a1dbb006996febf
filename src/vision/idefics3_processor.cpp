// Idefics3 image processor and prompt expansion (algorithms described in idefics3_processor.h).
#include "vision/idefics3_processor.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>

#include "core/error.h"
#include "io/files.h"
#include "io/json_util.h"
#include "vision/clip_processor.h"
#include "vision/processor_config.h"

namespace lowbit {
namespace {

using json = nlohmann::json;

// An image side: an integer in [1, 65536], either bare or as {"longest_edge": n}.
int64_t get_longest_edge(const json& j, const char* key, int64_t dflt, const std::string& source) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return dflt;
  const json* v = &*it;
  if (it->is_object()) {
    LOWBIT_CHECK(it->contains("longest_edge"), ConfigError,
                 "{}: '{}' must have 'longest_edge' (Idefics3 sizes), got {}", source, key, json_excerpt(*it));
    v = &(*it)["longest_edge"];
  }
  LOWBIT_CHECK(v->is_number_integer() && v->get<int64_t>() >= 1 && v->get<int64_t>() <= 65536, ConfigError,
               "{}: '{}' longest_edge must be an integer in [1, 65536], got {}", source, key, json_excerpt(*v));
  return v->get<int64_t>();
}

// Python's int(a / b) for positive ints: the correctly rounded double quotient, truncated.
int64_t py_int(double x) { return int64_t(x); }
int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

Image crop(const Image& in, int64_t top, int64_t left, int64_t h, int64_t w) {
  Image out;
  out.width = w;
  out.height = h;
  out.pixels.resize(size_t(w * h * 3));
  for (int64_t y = 0; y < h; ++y) std::memcpy(out.at(y, 0), in.at(top + y, left), size_t(w * 3));
  return out;
}

}  // namespace

Idefics3ProcessorConfig Idefics3ProcessorConfig::from_json(const json& root, const std::string& source) {
  const json& j = image_processor_section(root, source);
  if (auto t = j.find("image_processor_type"); t != j.end() && t->is_string()) {
    const std::string type = t->get<std::string>();
    LOWBIT_CHECK(type.rfind("Idefics3ImageProcessor", 0) == 0 || type.rfind("SmolVLMImageProcessor", 0) == 0,
                 ConfigError, "{}: image_processor_type '{}' is not an Idefics3 image processor", source, type);
  }
  Idefics3ProcessorConfig c;
  c.do_resize = processor_bool(j, "do_resize", c.do_resize, source);
  c.longest_edge = get_longest_edge(j, "size", c.longest_edge, source);
  if (auto it = j.find("resample"); it != j.end() && !it->is_null()) {
    LOWBIT_CHECK(it->is_number_integer(), ConfigError, "{}: 'resample' must be an integer, got {}", source,
                 json_excerpt(*it));
    const int64_t r = it->get<int64_t>();
    LOWBIT_CHECK(r == 1 || r == 2 || r == 3, ConfigError,
                 "{}: unsupported resample {} (supported: 2 = bilinear, 3 = bicubic, 1 = lanczos, which "
                 "transformers' fast processor replaces by bicubic; 0 nearest, 4 box, 5 hamming are not implemented)",
                 source, r);
    c.resample = r == 1 ? 3 : int(r);
  }
  c.do_image_splitting = processor_bool(j, "do_image_splitting", c.do_image_splitting, source);
  c.max_image_size = get_longest_edge(j, "max_image_size", c.max_image_size, source);
  c.do_rescale = processor_bool(j, "do_rescale", c.do_rescale, source);
  if (auto it = j.find("rescale_factor"); it != j.end() && !it->is_null()) {
    LOWBIT_CHECK(it->is_number() && std::isfinite(it->get<double>()) && it->get<double>() > 0, ConfigError,
                 "{}: 'rescale_factor' must be a positive number, got {}", source, json_excerpt(*it));
    c.rescale_factor = it->get<double>();
  }
  c.do_normalize = processor_bool(j, "do_normalize", c.do_normalize, source);
  c.image_mean = processor_triple(j, "image_mean", c.image_mean, source, false);
  c.image_std = processor_triple(j, "image_std", c.image_std, source, true);
  if (auto it = root.find("image_seq_len"); it != root.end() && !it->is_null()) {
    LOWBIT_CHECK(it->is_number_integer() && it->get<int64_t>() >= 1 && it->get<int64_t>() <= (1 << 20), ConfigError,
                 "{}: 'image_seq_len' must be a positive integer, got {}", source, json_excerpt(*it));
    c.image_seq_len = it->get<int64_t>();
  }
  return c;
}

Idefics3ProcessorConfig Idefics3ProcessorConfig::load(const std::string& model_dir) {
  const ProcessorJson f = read_processor_json(model_dir, "processor_config.json", "preprocessor_config.json");
  return from_json(f.json, f.path);
}

std::pair<int64_t, int64_t> idefics3_resize_size(int64_t height, int64_t width, int64_t longest_edge) {
  LOWBIT_CHECK(height > 0 && width > 0 && longest_edge > 0, ShapeError, "idefics3 resize: {}x{} to longest edge {}",
               width, height, longest_edge);
  // _resize_output_size_rescale_to_max_len (min_len 1).
  double aspect = double(width) / double(height);
  int64_t h, w;
  if (width >= height) {
    w = longest_edge;
    h = py_int(double(w) / aspect);
    if (h % 2 != 0) ++h;
  } else {
    h = longest_edge;
    w = py_int(double(h) * aspect);
    if (w % 2 != 0) ++w;
  }
  h = std::max<int64_t>(h, 1);
  w = std::max<int64_t>(w, 1);
  // _resize_output_size_scale_below_upper_bound(max_len = MAX_IMAGE_SIZE = 4096).
  constexpr int64_t kMax = 4096;
  aspect = double(w) / double(h);
  if (w >= h && w > kMax) {
    w = kMax;
    h = py_int(double(w) / aspect);
  } else if (h > w && h > kMax) {
    h = kMax;
    w = py_int(double(h) * aspect);
  }
  return {std::max<int64_t>(h, 1), std::max<int64_t>(w, 1)};
}

std::pair<int64_t, int64_t> idefics3_vision_encoder_size(int64_t height, int64_t width, int64_t max_size) {
  LOWBIT_CHECK(height > 0 && width > 0 && max_size > 0, ShapeError, "idefics3 resize: {}x{} to multiples of {}",
               width, height, max_size);
  const double aspect = double(width) / double(height);
  int64_t h, w;
  if (width >= height) {
    w = ceil_div(width, max_size) * max_size;
    h = py_int(double(w) / aspect);
    h = ceil_div(h, max_size) * max_size;
  } else {
    h = ceil_div(height, max_size) * max_size;
    w = py_int(double(h) * aspect);
    w = ceil_div(w, max_size) * max_size;
  }
  // A degenerate aspect can truncate a side to 0; ceil keeps 0, which no resize accepts.
  LOWBIT_CHECK(h > 0 && w > 0, ShapeError, "idefics3: a {}x{} image is too thin to tile into {}-pixel squares", width,
               height, max_size);
  return {h, w};
}

Idefics3Pixels idefics3_preprocess(const Image& image, const Idefics3ProcessorConfig& cfg) {
  LOWBIT_CHECK(image.width > 0 && image.height > 0, ShapeError, "idefics3_preprocess: empty image");
  const auto resize = [&](const Image& in, int64_t h, int64_t w) {
    return resize_antialias(in, w, h, cfg.resample, ResizeArithmetic::TorchUint8);
  };
  Image img = image;
  if (cfg.do_resize) {
    auto [h, w] = idefics3_resize_size(img.height, img.width, cfg.longest_edge);
    img = resize(img, h, w);
  }
  const int64_t M = cfg.max_image_size;
  std::vector<Image> frames;
  Idefics3Pixels out;
  if (cfg.do_image_splitting) {
    auto [h, w] = idefics3_vision_encoder_size(img.height, img.width, M);
    img = resize(img, h, w);
    if (h > M || w > M) {
      out.rows = h / M;
      out.cols = w / M;
      for (int64_t r = 0; r < out.rows; ++r)
        for (int64_t c = 0; c < out.cols; ++c) frames.push_back(crop(img, r * M, c * M, M, M));
      frames.push_back(resize(img, M, M));  // the global image
    } else {
      frames.push_back(std::move(img));  // exactly M x M already
    }
  } else {
    frames.push_back(resize(img, M, M));
  }

  // Rescale + normalize: the fast CLIP path's arithmetic, no resize or crop.
  ClipProcessorConfig norm;
  norm.flavor = ProcessorFlavor::Fast;
  norm.do_resize = false;
  norm.do_center_crop = false;
  norm.do_rescale = cfg.do_rescale;
  norm.rescale_factor = cfg.rescale_factor;
  norm.do_normalize = cfg.do_normalize;
  norm.image_mean = cfg.image_mean;
  norm.image_std = cfg.image_std;
  const int64_t n = int64_t(frames.size()), frame = 3 * M * M;
  out.pixel_values = Tensor::empty({n, 3, M, M});
  for (int64_t i = 0; i < n; ++i) {
    LOWBIT_ASSERT(frames[size_t(i)].width == M && frames[size_t(i)].height == M);
    Tensor px = clip_preprocess(frames[size_t(i)], norm);
    std::memcpy(out.pixel_values.f32() + i * frame, px.f32(), size_t(frame) * sizeof(float));
  }
  return out;
}

std::string idefics3_image_prompt(int64_t rows, int64_t cols, int64_t image_seq_len) {
  static const std::string kFake = "<fake_token_around_image>", kImage = "<image>", kGlobal = "<global-img>";
  std::string image_tokens;
  image_tokens.reserve(size_t(image_seq_len) * kImage.size());
  for (int64_t i = 0; i < image_seq_len; ++i) image_tokens += kImage;
  std::string s;
  if (rows == 0 && cols == 0) return kFake + kGlobal + image_tokens + kFake;
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) s += kFake + fmt::format("<row_{}_col_{}>", r + 1, c + 1) + image_tokens;
    s += "\n";
  }
  s += "\n" + kFake + kGlobal + image_tokens + kFake;
  return s;
}

std::string idefics3_expand_prompt(const std::string& text, const std::vector<std::pair<int64_t, int64_t>>& grids,
                                   int64_t image_seq_len) {
  static const std::string kImage = "<image>";
  std::string out;
  size_t pos = 0, k = 0;
  for (size_t hit; (hit = text.find(kImage, pos)) != std::string::npos; pos = hit + kImage.size(), ++k) {
    LOWBIT_CHECK(k < grids.size(), ArgError, "the prompt has more <image> placeholders than the {} image(s) given",
                 grids.size());
    out.append(text, pos, hit - pos);
    out += idefics3_image_prompt(grids[k].first, grids[k].second, image_seq_len);
  }
  LOWBIT_CHECK(k == grids.size(), ArgError, "the prompt has {} <image> placeholder(s) but {} image(s) were given", k,
               grids.size());
  out.append(text, pos, std::string::npos);
  return out;
}

}  // namespace lowbit
