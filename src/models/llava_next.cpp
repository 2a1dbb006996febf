// LLaVA-NeXT: anyres tiles through LLaVA's tower and projector, packed as HF's
// LlavaNextModel.pack_image_features (see llava_next.h).
#include "models/llava_next.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "io/files.h"
#include "io/json_util.h"
#include "models/vlm_common.h"

namespace lowbit {

using json = nlohmann::json;

namespace {

LlavaNextConfig parse_llava_next(const json& j, const std::string& path) {
  LOWBIT_CHECK(j.is_object(), ConfigError, "{}: config must be a JSON object", path);
  LlavaNextConfig c;
  c.architecture = first_architecture(j);
  const std::string type = j.value("model_type", std::string());
  LOWBIT_CHECK(c.architecture == "LlavaNextForConditionalGeneration" || (c.architecture.empty() && type == "llava_next"),
               ConfigError, "{}: architecture '{}' (model_type '{}') is not LlavaNextForConditionalGeneration", path,
               c.architecture, type);
  // Merges other than HF LLaVA-NeXT's (unpad + image_newline) are other architectures.
  if (j.contains("mm_patch_merge_type") && j["mm_patch_merge_type"].is_string()) {
    const std::string m = j["mm_patch_merge_type"].get<std::string>();
    LOWBIT_CHECK(m == "spatial_unpad", ConfigError,
                 "{}: unsupported mm_patch_merge_type '{}' (LlavaNext packs tiles as 'spatial_unpad' only)", path, m);
  }
  for (const char* key : {"image_aspect_ratio", "vision_aspect_ratio"})
    if (j.contains(key) && j[key].is_string()) {
      const std::string a = j[key].get<std::string>();
      LOWBIT_CHECK(a == "anyres", ConfigError,
                   "{}: unsupported {} '{}' (LlavaNext supports 'anyres'; 'anyres_max_N' is LLaVA-OneVision)", path,
                   key, a);
    }
  const std::string strategy = j.value("vision_feature_select_strategy", std::string("default"));
  LOWBIT_CHECK(strategy == "default", ConfigError,
               "{}: vision_feature_select_strategy '{}' is not supported for LLaVA-NeXT (supported: default; "
               "transformers' anyres packing cannot reshape tiles that keep the CLS feature)",
               path, strategy);
  if (j.contains("image_grid_pinpoints") && !j["image_grid_pinpoints"].is_null())
    c.image_grid_pinpoints = parse_grid_pinpoints(j["image_grid_pinpoints"], "image_grid_pinpoints", path);

  // Everything else (text, vision, projector, image token, feature layers) is LLaVA's.
  c.llava = LlavaConfig::from_json(j, path, kLlavaNextFamily);
  LOWBIT_CHECK(c.llava.vision.class_token, ConfigError, "{}: LLaVA-NeXT needs a CLIP tower with a class token", path);
  const int64_t s = c.tile_size();
  LOWBIT_CHECK(s > 0 && s % c.llava.vision.patch_size == 0, ConfigError,
               "{}: vision image_size {} is not a multiple of patch_size {}", path, s, c.llava.vision.patch_size);
  for (const auto& [h, w] : c.image_grid_pinpoints)
    LOWBIT_CHECK(h % s == 0 && w % s == 0, ConfigError,
                 "{}: image_grid_pinpoints entry [{}, {}] is not a multiple of the vision image_size {}", path, h, w,
                 s);
  return c;
}

}  // namespace

LlavaNextConfig LlavaNextConfig::from_json(const json& j, const std::string& path) {
  return json_errors_as_config(path, [&] { return parse_llava_next(j, path); });
}

LlavaNextConfig LlavaNextConfig::load(const std::string& dir) {
  const ModelConfigJson f = read_model_config(dir);
  return from_json(f.json, f.path);
}

int64_t LlavaNextConfig::num_tiles(Resolution image_size) const {
  return anyres_num_tiles(image_size, image_grid_pinpoints, tile_size());
}

int64_t LlavaNextConfig::image_tokens(Resolution image_size) const {
  const auto [rows, cols] = anyres_grid_shape(image_size, image_grid_pinpoints, tile_size());
  const int64_t G = tile_grid();
  const UnpadExtent u = unpad_extent(image_size, rows * G, cols * G);
  return G * G + u.rows() * (u.cols() + 1);
}

std::vector<int64_t> LlavaNextModel::image_tokens_per_image(const std::vector<Resolution>& image_sizes) const {
  std::vector<int64_t> k;
  for (const Resolution& s : image_sizes) k.push_back(cfg.image_tokens(s));
  return k;
}

std::vector<int32_t> LlavaNextModel::prompt_ids(const Tokenizer& tok, const std::string& text,
                                                const std::vector<Resolution>& image_sizes) const {
  return llava.prompt_ids(tok, text, image_tokens_per_image(image_sizes));
}

void LlavaNextModel::embed_multimodal(const int32_t* ids, int64_t T, const Tensor& features,
                                      const std::vector<Resolution>& image_sizes, float* x) const {
  const int64_t n_feat = features.defined() ? features.size(0) : 0;
  const int32_t tok = cfg.llava.image_token_index;
  const int64_t n_tok = std::count(ids, ids + T, tok);
  if (n_tok != n_feat) {
    std::string per;
    for (const auto& [h, w] : image_sizes)
      per += fmt::format("{}{}x{}: {}", per.empty() ? "" : ", ", w, h, cfg.image_tokens({h, w}));
    throw ArgError(fmt::format("the prompt has {} image tokens (id {}) but the images give {} features ({})", n_tok,
                               tok, n_feat,
                               per.empty() ? std::string("no image") : "image tokens per image, width x height: " + per));
  }
  const std::vector<int64_t> per_image = image_tokens_per_image(image_sizes);
  llava.embed_multimodal(ids, T, features, x, &per_image);
}

bool is_llava_next_dir(const std::string& dir) {
  const json j = read_config_or_null(dir);
  if (!j.is_object()) return false;
  if (j.value("model_type", std::string()) == "llava_next") return true;
  return first_architecture(j) == "LlavaNextForConditionalGeneration";
}

// ---- loading --------------------------------------------------------------------------------------

LlavaNextModel LlavaNextModel::load(const std::string& dir) {
  LlavaNextConfig cfg = LlavaNextConfig::load(dir);
  WeightStore st = WeightStore::open_dir(dir);
  return from_store(cfg, st, dir);
}

LlavaNextModel LlavaNextModel::from_store(const LlavaNextConfig& cfg, const WeightStore& store,
                                          const std::string& dir, const PackedSource& packed) {
  LlavaNextModel m;
  m.cfg = cfg;
  m.llava = LlavaModel::from_store(cfg.llava, store, dir, packed);
  // transformers 4.4x / 5 saves: "image_newline"; ≥ 4.52 inner-model layout: "model.image_newline".
  std::string name;
  for (const char* n : {"image_newline", "model.image_newline"})
    if (name.empty() && store.has(n)) name = n;
  LOWBIT_CHECK(!name.empty(), ShapeError, "{}: no image_newline tensor (looked for 'image_newline', "
               "'model.image_newline')", store.source());
  const Tensor nl = store.get(name);
  const int64_t d = cfg.llava.text.hidden_size;
  LOWBIT_CHECK(nl.dim() == 1 && nl.size(0) == d && dtype_is_float(nl.dtype()), ShapeError,
               "{}: tensor '{}' is {} {}, expected a float vector [{}]", store.source(), name, dtype_name(nl.dtype()),
               shape_str(nl.shape()), d);
  m.image_newline = nl.to(DType::F32);
  m.image_newline_name = name;
  for (int64_t i = 0; i < d; ++i)
    LOWBIT_CHECK(std::isfinite(m.image_newline.f32()[i]), NumericError, "{}: tensor '{}' holds NaN or Inf",
                 store.source(), name);
  return m;
}

// ---- features -------------------------------------------------------------------------------------

Tensor LlavaNextModel::single_image_features(const Tensor& tiles, Resolution image_size, const ForwardOptions& opt) const {
  const int64_t S = cfg.tile_size(), G = cfg.tile_grid(), d = cfg.llava.text.hidden_size;
  const int64_t need = cfg.num_tiles(image_size);
  LOWBIT_CHECK(tiles.defined() && tiles.dim() == 4 && tiles.size(0) >= need, ShapeError,
               "pixel_values: an image of {}x{} (width x height) needs {} tiles [{}, 3, {}, {}], got {}",
               image_size.second, image_size.first, need, need, S, S,
               tiles.defined() ? shape_str(tiles.shape()) : "none");
  const Tensor feat = llava.image_features(tiles.rows(0, need), opt);  // [need·G², d]
  LOWBIT_ASSERT(feat.size(0) == need * G * G && feat.size(1) == d);
  const float* f = feat.f32();

  const auto [R, C] = anyres_grid_shape(image_size, cfg.image_grid_pinpoints, S);
  const int64_t G2 = G * G;
  std::vector<float> out;
  out.reserve(size_t(cfg.image_tokens(image_size) * d));
  out.insert(out.end(), f, f + G2 * d);  // the whole image
  const float* nl = image_newline.f32();
  if (need == 1) {  // no grid (HF: image_feature.shape[0] == 1): base + one newline
    out.insert(out.end(), nl, nl + d);
  } else {
    const UnpadExtent u = unpad_extent(image_size, R * G, C * G);
    for (int64_t Y = u.r0; Y < u.r1; ++Y) {
      const int64_t r = Y / G, y = Y % G;
      for (int64_t X = u.c0; X < u.c1; ++X) {
        const int64_t c = X / G, x = X % G;
        const float* row = f + ((1 + r * C + c) * G2 + y * G + x) * d;
        out.insert(out.end(), row, row + d);
      }
      out.insert(out.end(), nl, nl + d);
    }
  }
  const int64_t n = int64_t(out.size()) / d;
  LOWBIT_ASSERT(need == 1 || n == cfg.image_tokens(image_size));
  return Tensor::from_vector(out, {n, d});
}

Tensor LlavaNextModel::image_features(const Tensor& pixel_values, const std::vector<Resolution>& image_sizes,
                                      const ForwardOptions& opt) const {
  LOWBIT_CHECK(pixel_values.defined() && (pixel_values.dim() == 4 || pixel_values.dim() == 5), ShapeError,
               "pixel_values: expected [n_images, tiles, 3, S, S] or [tiles, 3, S, S], got {}",
               pixel_values.defined() ? shape_str(pixel_values.shape()) : "none");
  const int64_t n_images = pixel_values.dim() == 5 ? pixel_values.size(0) : 1;
  LOWBIT_CHECK(int64_t(image_sizes.size()) == n_images, ShapeError,
               "image_sizes: {} sizes for {} image(s) of pixel_values {}", image_sizes.size(), n_images,
               shape_str(pixel_values.shape()));
  if (pixel_values.dim() == 4) return single_image_features(pixel_values, image_sizes[0], opt);
  const Shape& s = pixel_values.shape();
  const Tensor flat = pixel_values.reshape({s[0] * s[1], s[2], s[3], s[4]});
  std::vector<float> all;
  int64_t rows = 0;
  for (int64_t i = 0; i < n_images; ++i) {
    const Tensor t = single_image_features(flat.rows(i * s[1], (i + 1) * s[1]), image_sizes[size_t(i)], opt);
    all.insert(all.end(), t.f32(), t.f32() + t.numel());
    rows += t.size(0);
  }
  return Tensor::from_vector(all, {rows, cfg.llava.text.hidden_size});
}

Tensor LlavaNextModel::forward(const int32_t* ids, int64_t T, const Tensor& pixel_values,
                               const std::vector<Resolution>& image_sizes, KVCache* cache, const ForwardOptions& opt) {
  LOWBIT_CHECK(T > 0, ArgError, "forward: empty token sequence");
  const Tensor feat = pixel_values.defined() ? image_features(pixel_values, image_sizes, opt) : Tensor();
  std::vector<float> x(static_cast<size_t>(T * cfg.llava.text.hidden_size));
  embed_multimodal(ids, T, feat, image_sizes, x.data());
  return llava.language.forward_embeds(x.data(), T, cache, opt);
}

}  // namespace lowbit
