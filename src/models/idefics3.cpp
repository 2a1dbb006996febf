// Idefics3 / SmolVLM multimodal forward (HF Idefics3ForConditionalGeneration semantics):
//   frames → SigLIP + post_layernorm → pixel shuffle → modality_projection.proj
//   x = embed(ids) with image-token rows ← features (in order) → LLaMA decoder (tied head) → logits
#include "models/idefics3.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "io/files.h"
#include "io/json_util.h"
#include "models/clip_names.h"
#include "models/vlm_common.h"

namespace lowbit {

using json = nlohmann::json;

// ---- config -------------------------------------------------------------------------------------

namespace {

Idefics3Config parse_idefics3(const json& j, const std::string& path) {
  LOWBIT_CHECK(j.is_object(), ConfigError, "{}: config must be a JSON object", path);
  Idefics3Config c;
  if (j.contains("architectures") && j["architectures"].is_array() && !j["architectures"].empty())
    c.architecture = j["architectures"][0].get<std::string>();
  const std::string type = j.value("model_type", std::string());
  LOWBIT_CHECK(c.architecture == "Idefics3ForConditionalGeneration" || (c.architecture.empty() && type == "idefics3"),
               ConfigError, "{}: architecture '{}' (model_type '{}') is not Idefics3ForConditionalGeneration", path,
               c.architecture, type);
  check_text_and_vision_configs(j, path);
  json text = llama_text_config(j["text_config"]);
  // As for LLaVA: the checkpoint's dtype is stated at the top level and the decoder's RoPE
  // frequencies follow it (HF rounds its inv_freq buffer to the load dtype).
  inherit_top_level_dtype(text, j);
  // The head is tied by the top-level flag (the model class ties lm_head to the text model's
  // embed_tokens); text_config's own flag counts only when the top level does not say.
  if (j.contains("tie_word_embeddings") && j["tie_word_embeddings"].is_boolean())
    text["tie_word_embeddings"] = j["tie_word_embeddings"];
  c.text = LlamaConfig::from_json(text, path + " (text_config)");
  json vision = j["vision_config"];
  if (!vision.contains("model_type")) vision["model_type"] = "idefics3_vision";
  c.vision = ClipVisionConfig::from_json(vision, path);
  LOWBIT_CHECK(c.vision.is_siglip(), ConfigError,
               "{}: vision_config model_type '{}' is not a SigLIP-style tower (Idefics3 uses idefics3_vision)", path,
               c.vision.model_type);
  if (j.contains("scale_factor")) {
    LOWBIT_CHECK(j["scale_factor"].is_number_integer() && j["scale_factor"].get<int64_t>() >= 1 &&
                     j["scale_factor"].get<int64_t>() <= 64,
                 ConfigError, "{}: 'scale_factor' must be an integer in [1, 64], got {}", path,
                 json_excerpt(j["scale_factor"]));
    c.scale_factor = j["scale_factor"].get<int64_t>();
  }
  LOWBIT_CHECK(c.vision.grid() % c.scale_factor == 0, ConfigError,
               "{}: the vision grid {}x{} (image_size {} / patch_size {}) is not divisible by scale_factor {}", path,
               c.vision.grid(), c.vision.grid(), c.vision.image_size, c.vision.patch_size, c.scale_factor);
  if (const auto tok = image_token_from_json(j, "image_token_id", "image_token_index", c.text.vocab_size, path))
    c.image_token_id = *tok;
  LOWBIT_CHECK(c.image_token_id < c.text.vocab_size, ConfigError,
               "{}: image_token_id {} (default) is outside the vocabulary of {}; set 'image_token_id'", path,
               c.image_token_id, c.text.vocab_size);
  return c;
}

// Whether element i of a mask tensor (u8/bool/i8/i32/i64) is nonzero.
bool mask_at(const Tensor& m, int64_t i) {
  switch (m.dtype()) {
    case DType::U8:
    case DType::BOOL:
    case DType::I8: return m.data<uint8_t>()[i] != 0;
    case DType::I32: return m.data<int32_t>()[i] != 0;
    case DType::I64: return m.data<int64_t>()[i] != 0;
    case DType::F32: return m.data<float>()[i] != 0;
    default: break;
  }
  LOWBIT_ASSERT(false);
  return false;
}

}  // namespace

Idefics3Config Idefics3Config::from_json(const json& j, const std::string& path) {
  return json_errors_as_config(path, [&] { return parse_idefics3(j, path); });
}

Idefics3Config Idefics3Config::load(const std::string& dir) {
  const ModelConfigJson f = read_model_config(dir);
  return from_json(f.json, f.path);
}

bool is_idefics3_dir(const std::string& dir) {
  const json j = read_config_or_null(dir);
  if (!j.is_object()) return false;
  if (j.value("model_type", std::string()) == "idefics3") return true;
  return first_architecture(j) == "Idefics3ForConditionalGeneration";
}

// ---- connector ----------------------------------------------------------------------------------

void idefics3_pixel_shuffle(const float* x, int64_t G, int64_t E, int64_t r, float* out) {
  const int64_t g = G / r, row = E * r * r;
  for (int64_t y = 0; y < g; ++y)
    for (int64_t xx = 0; xx < g; ++xx) {
      float* o = out + (y * g + xx) * row;
      for (int64_t i = 0; i < r; ++i)
        for (int64_t j = 0; j < r; ++j)
          std::memcpy(o + (i * r + j) * E, x + ((y * r + i) * G + xx * r + j) * E, size_t(E) * sizeof(float));
    }
}

int64_t Idefics3Connector::state_floats(int boundary, int64_t T) const { return T * (boundary == 0 ? d_in : d); }

const float* Idefics3Connector::group_input(int g, const BlockState& st, std::vector<float>&) const {
  LOWBIT_ASSERT(g == 0 && int64_t(st.x.size()) == st.T * d_in);
  return st.x.data();
}

void Idefics3Connector::advance(int g, BlockState& st, const BlockCtx& ctx) const {
  LOWBIT_ASSERT(g == 0);
  const int64_t T = st.T;
  std::vector<float> nbuf, pbuf;
  const float* in = linear_input(proj, group_input(g, st, nbuf), T, ctx.act_quant, pbuf);
  if (ctx.observer && *ctx.observer) (*ctx.observer)(proj.name, in, T, proj.in());
  std::vector<float> y(static_cast<size_t>(T * d));
  linear_product(*backend, proj, in, T, y.data());
  st.x = std::move(y);
}

// ---- loading --------------------------------------------------------------------------------------

Idefics3Model Idefics3Model::load(const std::string& dir) {
  Idefics3Config cfg = Idefics3Config::load(dir);
  WeightStore st = WeightStore::open_dir(dir);
  return from_store(cfg, st, dir);
}

Idefics3Model Idefics3Model::from_store(const Idefics3Config& cfg, const WeightStore& store, const std::string& dir,
                                        const PackedSource& packed) {
  const std::string& source = store.source();
  using namespace idefics3_names;
  LOWBIT_CHECK(store.has(std::string(kVisionRoot) + clip_names::kPatchEmbedding + ".weight") ||
                   store.has(std::string(kVisionRoot) + clip_names::kPatchEmbedding + ".qweight"),
               ShapeError,
               "{}: no Idefics3 vision model found (looked for '{}{}.weight')", source, kVisionRoot,
               clip_names::kPatchEmbedding);
  LOWBIT_CHECK(store.has(std::string(kTextRoot) + "embed_tokens.weight"), ShapeError,
               "{}: no Idefics3 text model found (looked for '{}embed_tokens.weight')", source, kTextRoot);

  Idefics3Model m;
  m.cfg = cfg;
  m.dir = dir;
  TensorSource get = store_tensors(store);
  const PackedSource& none = packed;  // vision and connector: file names are the linears' names
  m.vision = ClipVisionTower::from_source(cfg.vision, WeightSource{get, none, source}, kVisionRoot);

  Idefics3Connector& c = m.connector;
  c.d_in = cfg.connector_in();
  c.d = cfg.text.hidden_size;
  c.proj = load_linear(WeightSource{get, none, source}, kProjection, c.d, c.d_in, false);
  LOWBIT_CHECK(!store.has(std::string(kProjection) + ".bias"), ShapeError,
               "{}: tensor '{}.bias' is not expected (Idefics3's modality projection has no bias)", source,
               kProjection);

  // The language model under LLaMA's own names: "model.X" ↔ "model.text_model.X", "lm_head.*" as is.
  TensorSource lm_get = language_model_tensors(store, kTextRoot, kHeadRoot);
  m.language = LlamaModel::from_source(cfg.text, lm_get, language_model_packed(packed, kTextRoot, kHeadRoot),
                                       source + " (language model)", dir);
  return m;
}

// ---- forward ------------------------------------------------------------------------------------

Tensor Idefics3Model::image_features(const Tensor& pixel_values, const Tensor& pixel_attention_mask,
                                     const ForwardOptions& opt) const {
  const ClipVisionConfig& vc = cfg.vision;
  const int64_t C = vc.num_channels, S = vc.image_size;
  const bool ok5 = pixel_values.defined() && pixel_values.dim() == 5 && pixel_values.size(0) == 1;
  const bool ok4 = pixel_values.defined() && pixel_values.dim() == 4;
  const int64_t n = ok5 ? pixel_values.size(1) : ok4 ? pixel_values.size(0) : -1;
  const Shape tail{C, S, S};
  const bool shape_ok = (ok5 || ok4) && n > 0 && dtype_is_float(pixel_values.dtype()) &&
                        Shape(pixel_values.shape().end() - 3, pixel_values.shape().end()) == tail;
  LOWBIT_CHECK(shape_ok, ShapeError,
               "pixel_values: expected float [n_frames, {}, {}, {}] or [1, n_frames, {}, {}, {}], got {} {}", C, S, S, C,
               S, S, pixel_values.defined() ? dtype_name(pixel_values.dtype()) : "undefined",
               pixel_values.defined() ? shape_str(pixel_values.shape()) : "");
  const Tensor px = pixel_values.dtype() == DType::F32 ? pixel_values : pixel_values.to(DType::F32);
  const int64_t img = C * S * S, HW = S * S;
  if (pixel_attention_mask.defined()) {
    const Shape& ms = pixel_attention_mask.shape();
    const DType md = pixel_attention_mask.dtype();
    const bool dt_ok = md == DType::U8 || md == DType::BOOL || md == DType::I8 || md == DType::I32 ||
                       md == DType::I64 || md == DType::F32;
    LOWBIT_CHECK(dt_ok && ((ms.size() == 3 && ms == Shape{n, S, S}) || (ms.size() == 4 && ms == Shape{1, n, S, S})),
                 ShapeError, "pixel_attention_mask: expected integer/bool [{}, {}, {}] (or with a leading 1), got {} {}",
                 n, S, S, dtype_name(md), shape_str(ms));
  }

  // HF drops frames whose pixel values are all 0.0 (batch padding); if all are, it keeps the first.
  std::vector<int64_t> real;
  for (int64_t i = 0; i < n; ++i) {
    const float* p = px.data<float>() + i * img;
    if (std::any_of(p, p + img, [](float v) { return v != 0.0f; })) real.push_back(i);
  }
  if (real.empty()) real.push_back(0);
  if (pixel_attention_mask.defined()) {
    for (int64_t i : real) {
      int64_t valid = 0;
      for (int64_t k = 0; k < HW; ++k) valid += mask_at(pixel_attention_mask, i * HW + k);
      LOWBIT_CHECK(valid == HW, ArgError,
                   "pixel_attention_mask: frame {} has {} of {} pixels valid; frames with padded pixels (a partial "
                   "mask) are not supported — the Idefics3 processor's frames are always fully valid {}x{} squares",
                   i, valid, HW, S, S);
    }
  }

  const int64_t G = vc.grid(), E = vc.hidden_size, r = cfg.scale_factor, F = cfg.features_per_frame();
  const int64_t nr = int64_t(real.size());
  BlockState st;  // the connector's input [nr·F, E·r²], then its output
  st.T = nr * F;
  st.x.resize(static_cast<size_t>(st.T * connector.d_in));
  for (int64_t k = 0; k < nr; ++k) {
    ForwardOptions vo;
    vo.act_quant = opt.act_quant;
    vo.observer = opt.observer;
    vo.tower_hook = opt.tower_hook;
    const std::vector<float> h = vision.forward_output(px.data<float>() + real[size_t(k)] * img, vo);  // [G², E]
    idefics3_pixel_shuffle(h.data(), G, E, r, st.x.data() + k * F * connector.d_in);
  }
  if (opt.tower_hook) opt.tower_hook("projector", st.x.data(), st.T, connector.d_in);
  BlockCtx ctx;
  ctx.act_quant = opt.act_quant;
  ctx.observer = opt.observer ? &opt.observer : nullptr;
  connector.forward(st, ctx);
  return Tensor::from_vector(st.x, {nr * F, connector.d});
}

void Idefics3Model::embed_multimodal(const int32_t* ids, int64_t T, const Tensor& features, float* x) const {
  const int64_t d = cfg.text.hidden_size, F = cfg.features_per_frame();
  const int64_t n = features.defined() ? features.size(0) : 0;
  LOWBIT_ASSERT(!features.defined() || (features.dim() == 2 && features.size(1) == d && features.dtype() == DType::F32));
  const int64_t n_tok = std::count(ids, ids + T, cfg.image_token_id);
  LOWBIT_CHECK(n_tok == n, ArgError,
               "the prompt has {} image tokens (id {}) but the images give {} features ({} frame(s) x {}); "
               "each frame (tile or global image) needs {} image tokens",
               n_tok, cfg.image_token_id, n, n / F, F, F);
  const float* feat = n ? features.data<float>() : nullptr;
  int64_t j = 0;
  for (int64_t t = 0; t < T; ++t) {
    if (ids[t] == cfg.image_token_id)
      std::memcpy(x + t * d, feat + (j++) * d, size_t(d) * sizeof(float));
    else
      language.embed_tokens(ids + t, 1, x + t * d);
  }
}

Tensor Idefics3Model::forward(const int32_t* ids, int64_t T, const Tensor& pixel_values,
                              const Tensor& pixel_attention_mask, KVCache* cache, const ForwardOptions& opt) {
  LOWBIT_CHECK(T > 0, ArgError, "forward: empty token sequence");
  const Tensor feat = pixel_values.defined() ? image_features(pixel_values, pixel_attention_mask, opt) : Tensor();
  std::vector<float> x(static_cast<size_t>(T * cfg.text.hidden_size));  // [T, d]
  embed_multimodal(ids, T, feat, x.data());
  return language.forward_embeds(x.data(), T, cache, opt);
}

std::vector<Block*> Idefics3Model::blocks() {
  std::vector<Block*> b;
  for (Block* l : vision.blocks()) b.push_back(l);
  b.push_back(&connector);
  for (Block* l : language.blocks()) b.push_back(l);
  return b;
}

}  // namespace lowbit
