// LLaVA-1.5 multimodal forward (HF LlavaForConditionalGeneration semantics):
//   v = concat_l h_l(pixels)[1:] (strategy default) → feat = linear_2(GELU(linear_1(v)))
//   x = embed(ids) with image-token rows ← feat (in order) → LLaMA decoder → logits
#include "models/llava.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "io/files.h"
#include "io/json_util.h"
#include "models/clip_names.h"
#include "models/llama_names.h"
#include "models/llava_names.h"

namespace lowbit {

using json = nlohmann::json;

// ---- config -------------------------------------------------------------------------------------

namespace {

// HF LlamaConfig's defaults for the keys llava-hf configs leave out of text_config
// (llava-1.5-7b-hf lists only vocab_size, max_position_embeddings, rms_norm_eps, ...).
json text_config_with_defaults(json t) {
  static const std::pair<const char*, json> kDefaults[] = {
      {"hidden_size", 4096}, {"intermediate_size", 11008}, {"num_hidden_layers", 32},
      {"num_attention_heads", 32}, {"vocab_size", 32000}, {"max_position_embeddings", 2048},
      {"rms_norm_eps", 1e-6}};
  if (t.value("model_type", std::string("llama")) == "llama")
    for (const auto& [k, v] : kDefaults)
      if (!t.contains(k) || t[k].is_null()) t[k] = v;
  t.erase("architectures");  // the text model's own class name is not what we load
  return t;
}

LlavaConfig parse_llava(const json& j, const std::string& path) {
  LOWBIT_CHECK(j.is_object(), ConfigError, "{}: config must be a JSON object", path);
  LlavaConfig c;
  if (j.contains("architectures") && j["architectures"].is_array() && !j["architectures"].empty())
    c.architecture = j["architectures"][0].get<std::string>();
  const std::string type = j.value("model_type", std::string());
  LOWBIT_CHECK(c.architecture == "LlavaForConditionalGeneration" || (c.architecture.empty() && type == "llava"),
               ConfigError, "{}: architecture '{}' (model_type '{}') is not LlavaForConditionalGeneration", path,
               c.architecture, type);
  LOWBIT_CHECK(j.contains("text_config") && j["text_config"].is_object(), ConfigError,
               "{}: missing object 'text_config'", path);
  LOWBIT_CHECK(j.contains("vision_config") && j["vision_config"].is_object(), ConfigError,
               "{}: missing object 'vision_config'", path);
  json text = text_config_with_defaults(j["text_config"]);
  // The checkpoint's dtype is stated at the top level; the decoder's RoPE frequencies follow
  // it (LlamaConfig::inv_freq rounds them as HF's buffers are when the model loads in f16/bf16).
  for (const char* key : {"dtype", "torch_dtype"})
    if (!text.contains("dtype") && !text.contains("torch_dtype") && j.contains(key) && j[key].is_string())
      text["dtype"] = j[key];
  c.text = LlamaConfig::from_json(text, path + " (text_config)");
  c.vision = ClipVisionConfig::from_json(j["vision_config"], path);
  const char* tok_key = j.contains("image_token_index") ? "image_token_index" : "image_token_id";
  if (j.contains(tok_key)) {
    LOWBIT_CHECK(j[tok_key].is_number_integer() && j[tok_key].get<int64_t>() >= 0 &&
                     j[tok_key].get<int64_t>() < c.text.vocab_size,
                 ConfigError, "{}: '{}' must be a token id in [0, {}), got {}", path, tok_key, c.text.vocab_size,
                 json_excerpt(j[tok_key]));
    c.image_token_index = j[tok_key].get<int32_t>();
  }
  c.projector_act = parse_activation(j.value("projector_hidden_act", std::string("gelu")), "projector_hidden_act", path);
  c.projector_bias = j.value("multimodal_projector_bias", true);
  if (j.contains("vision_feature_layer")) {
    const json& v = j["vision_feature_layer"];
    c.vision_feature_layers.clear();
    if (v.is_number_integer()) {
      c.vision_feature_layers.push_back(v.get<int64_t>());
    } else {
      LOWBIT_CHECK(v.is_array() && !v.empty(), ConfigError,
                   "{}: 'vision_feature_layer' must be an integer or a non-empty list, got {}", path, json_excerpt(v));
      for (const json& e : v) {
        LOWBIT_CHECK(e.is_number_integer(), ConfigError, "{}: 'vision_feature_layer' entries must be integers, got {}",
                     path, json_excerpt(v));
        c.vision_feature_layers.push_back(e.get<int64_t>());
      }
    }
  }
  const std::string strategy = j.value("vision_feature_select_strategy", std::string("default"));
  LOWBIT_CHECK(strategy == "default" || strategy == "full", ConfigError,
               "{}: unsupported vision_feature_select_strategy '{}' (supported: default, full)", path, strategy);
  c.keep_cls = strategy == "full";
  c.feature_states();  // validates the layer indices
  return c;
}

}  // namespace

LlavaConfig LlavaConfig::from_json(const json& j, const std::string& path) {
  try {
    return parse_llava(j, path);
  } catch (const json::exception& e) {
    throw ConfigError(fmt::format("{}: {}", path, e.what()));
  }
}

LlavaConfig LlavaConfig::load(const std::string& dir) {
  const std::string path = (std::filesystem::path(dir) / "config.json").string();
  LOWBIT_CHECK(std::filesystem::is_directory(dir), IoError, "model directory '{}' does not exist", dir);
  LOWBIT_CHECK(std::ifstream(path).good(), IoError, "cannot open {}", path);
  return from_json(parse_json(read_text_file(path), path), path);
}

std::vector<int64_t> LlavaConfig::feature_states() const {
  const int64_t n = vision.num_layers + 1;  // hidden_states[0..L]
  std::vector<int64_t> k;
  for (int64_t l : vision_feature_layers) {
    LOWBIT_CHECK(l >= -n && l < n, ConfigError,
                 "vision_feature_layer {} is out of range for a vision tower of {} layers ({} hidden states)", l,
                 vision.num_layers, n);
    k.push_back(l < 0 ? l + n : l);
  }
  return k;
}

bool is_llava_dir(const std::string& dir) {
  const std::string path = (std::filesystem::path(dir) / "config.json").string();
  if (!std::ifstream(path).good()) return false;
  const json j = parse_json(read_text_file(path), path);
  if (!j.is_object()) return false;
  if (j.value("model_type", std::string()) == "llava") return true;
  return j.contains("architectures") && j["architectures"].is_array() && !j["architectures"].empty() &&
         j["architectures"][0] == "LlavaForConditionalGeneration";
}

// ---- projector ----------------------------------------------------------------------------------

int64_t LlavaProjector::state_floats(int boundary, int64_t T) const {
  switch (boundary) {
    case 0: return T * d_in;
    case 1: return T * (d_in + d);
    default: return T * d;
  }
}

const float* LlavaProjector::group_input(int g, const BlockState& st, std::vector<float>&) const {
  LOWBIT_ASSERT(g == 0 || g == 1);
  LOWBIT_ASSERT(int64_t(g == 0 ? st.x.size() : st.a.size()) == st.T * (g == 0 ? d_in : d));
  return g == 0 ? st.x.data() : st.a.data();
}

void LlavaProjector::advance(int g, BlockState& st, const BlockCtx& ctx) const {
  const int64_t T = st.T;
  std::vector<float> nbuf, pbuf;
  const Linear& lin = g == 0 ? linear_1 : linear_2;
  const float* in = linear_input(lin, group_input(g, st, nbuf), T, ctx.act_quant, pbuf);
  if (ctx.observer && *ctx.observer) (*ctx.observer)(lin.name, in, T, lin.in());
  if (g == 0) {  // a = act(linear_1(v)) [T, d]
    st.a.resize(size_t(T * d));
    linear_product(*backend, linear_1, in, T, st.a.data());
    apply_activation(act, st.a.data(), T * d);
    return;
  }
  std::vector<float> y(static_cast<size_t>(T * d));  // x = linear_2(a) [T, d]
  linear_product(*backend, linear_2, in, T, y.data());
  st.x = std::move(y);
  st.a.clear();
  st.a.shrink_to_fit();
}

// ---- loading --------------------------------------------------------------------------------------

LlavaModel LlavaModel::load(const std::string& dir) {
  LlavaConfig cfg = LlavaConfig::load(dir);
  WeightStore st = WeightStore::open_dir(dir);
  return from_store(cfg, st, dir);
}

LlavaModel LlavaModel::from_store(const LlavaConfig& cfg, const WeightStore& store, const std::string& dir) {
  const std::string& source = store.source();
  auto probe = [&](const auto& roots, const std::string& suffix, const char* what) -> std::string {
    for (const auto& r : roots)
      if (store.has(std::string(r) + suffix)) return r;
    std::string tried;
    for (const auto& r : roots) tried += fmt::format("{}'{}{}'", tried.empty() ? "" : ", ", r, suffix);
    throw ShapeError(fmt::format("{}: no {} found (looked for {})", source, what, tried));
  };
  const std::string vroot =
      probe(llava_names::kVisionRoots, clip_names::kClassEmbedding, "CLIP vision tower");
  const std::string proot =
      probe(llava_names::kProjectorRoots, std::string(llava_names::kLinear1) + ".weight", "multi_modal_projector");
  std::string dec_root, head_root;
  for (const auto& r : llava_names::kLanguageRoots)
    if (dec_root.empty() && store.has(std::string(r.decoder) + "embed_tokens.weight")) {
      dec_root = r.decoder;
      head_root = r.head;
    }
  LOWBIT_CHECK(!dec_root.empty(), ShapeError,
               "{}: no language model found (looked for 'language_model.model.embed_tokens.weight', "
               "'model.language_model.embed_tokens.weight')",
               source);

  LlavaModel m;
  m.cfg = cfg;
  m.dir = dir;
  TensorSource get = [&store](const std::string& name) { return store.has(name) ? store.get(name) : Tensor(); };
  PackedSource none;
  m.vision = ClipVisionTower::from_source(cfg.vision, WeightSource{get, none, source}, vroot);

  // The projector: linear_1 [d, d_v·|layers|], linear_2 [d, d].
  const int64_t d = cfg.text.hidden_size;
  LlavaProjector& p = m.projector;
  p.d_in = cfg.vision.hidden_size * int64_t(cfg.vision_feature_layers.size());
  p.d = d;
  p.act = cfg.projector_act;
  p.linear_1 = load_linear(WeightSource{get, none, source}, proot + llava_names::kLinear1, d, p.d_in, cfg.projector_bias);
  p.linear_2 = load_linear(WeightSource{get, none, source}, proot + llava_names::kLinear2, d, d, cfg.projector_bias);

  // The language model under LLaMA's own names: "model.X" ↔ dec_root + "X", "lm_head.*" ↔ head_root + "lm_head.*".
  const std::string model_prefix = "model.";
  TensorSource lm_get = [&store, dec_root, head_root, model_prefix](const std::string& name) {
    const std::string mapped = name.compare(0, model_prefix.size(), model_prefix) == 0
                                   ? dec_root + name.substr(model_prefix.size())
                                   : head_root + name;
    return store.has(mapped) ? store.get(mapped) : Tensor();
  };
  m.language = LlamaModel::from_source(cfg.text, lm_get, {}, source + " (language model)", dir);
  return m;
}

// ---- forward ------------------------------------------------------------------------------------

Tensor LlavaModel::image_features(const Tensor& pixel_values, const ForwardOptions& opt) const {
  const ClipVisionConfig& vc = cfg.vision;
  const Shape want{pixel_values.defined() && pixel_values.dim() == 4 ? pixel_values.size(0) : -1, vc.num_channels,
                   vc.image_size, vc.image_size};
  LOWBIT_CHECK(pixel_values.defined() && pixel_values.dim() == 4 && pixel_values.shape() == want &&
                   want[0] > 0 && dtype_is_float(pixel_values.dtype()),
               ShapeError, "pixel_values: expected float [n_images, {}, {}, {}], got {} {}", vc.num_channels,
               vc.image_size, vc.image_size, pixel_values.defined() ? dtype_name(pixel_values.dtype()) : "undefined",
               pixel_values.defined() ? shape_str(pixel_values.shape()) : "");
  const Tensor px = pixel_values.dtype() == DType::F32 ? pixel_values : pixel_values.to(DType::F32);
  const int64_t n = want[0], F = cfg.features_per_image(), dv = vc.hidden_size, T = vc.num_positions();
  const std::vector<int64_t> states = cfg.feature_states();
  const int64_t upto = *std::max_element(states.begin(), states.end());
  const int64_t nl = int64_t(states.size()), img = vc.num_channels * vc.image_size * vc.image_size;
  const int64_t skip = cfg.keep_cls ? 0 : 1;  // strategy default drops the class token

  BlockState st;  // the projector's input v [n·F, d_v·|layers|], then its output
  st.T = n * F;
  st.x.resize(static_cast<size_t>(n * F * projector.d_in));
  for (int64_t i = 0; i < n; ++i) {
    ForwardOptions vo;
    vo.act_quant = opt.act_quant;
    vo.observer = opt.observer;
    vo.hidden_hook = [&](int64_t k, const float* h, int64_t rows, int64_t cols) {
      LOWBIT_ASSERT(rows == T && cols == dv);
      for (int64_t s = 0; s < nl; ++s) {
        if (states[size_t(s)] != k) continue;
        for (int64_t r = 0; r < F; ++r)  // [F, d_v] block s of v's columns
          std::memcpy(st.x.data() + ((i * F + r) * nl + s) * dv, h + (r + skip) * dv, size_t(dv) * sizeof(float));
      }
    };
    vision.forward(px.data<float>() + i * img, upto, vo);
  }
  BlockCtx ctx;
  ctx.act_quant = opt.act_quant;
  ctx.observer = opt.observer ? &opt.observer : nullptr;
  projector.forward(st, ctx);
  return Tensor::from_vector(st.x, {n * F, projector.d});
}

void LlavaModel::embed_multimodal(const int32_t* ids, int64_t T, const Tensor& features, float* x) const {
  const int64_t d = cfg.text.hidden_size, F = cfg.features_per_image();
  const int64_t n = features.defined() ? features.size(0) : 0;
  LOWBIT_ASSERT(!features.defined() || (features.dim() == 2 && features.size(1) == d && features.dtype() == DType::F32));
  const int64_t n_tok = std::count(ids, ids + T, cfg.image_token_index);
  LOWBIT_CHECK(n_tok == n, ArgError,
               "the prompt has {} image tokens (id {}) but the images give {} features ({} image(s) x {}); "
               "each image needs {} image tokens",
               n_tok, cfg.image_token_index, n, n / F, F, F);
  const float* feat = n ? features.data<float>() : nullptr;
  int64_t j = 0;
  for (int64_t t = 0; t < T; ++t) {
    if (ids[t] == cfg.image_token_index)
      std::memcpy(x + t * d, feat + (j++) * d, size_t(d) * sizeof(float));
    else
      language.embed_tokens(ids + t, 1, x + t * d);
  }
}

Tensor LlavaModel::forward(const int32_t* ids, int64_t T, const Tensor& pixel_values, KVCache* cache,
                           const ForwardOptions& opt) {
  LOWBIT_CHECK(T > 0, ArgError, "forward: empty token sequence");
  const Tensor feat = pixel_values.defined() ? image_features(pixel_values, opt) : Tensor();
  std::vector<float> x(static_cast<size_t>(T * cfg.text.hidden_size));  // [T, d]
  embed_multimodal(ids, T, feat, x.data());
  return language.forward_embeds(x.data(), T, cache, opt);
}

std::vector<Block*> LlavaModel::blocks() {
  const std::vector<int64_t> states = cfg.feature_states();
  const int64_t upto = *std::max_element(states.begin(), states.end());
  std::vector<Block*> b;
  for (int64_t l = 0; l < upto; ++l) b.push_back(&vision.layers[size_t(l)]);  // layers past the features never run
  b.push_back(&projector);
  for (Block* l : language.blocks()) b.push_back(l);
  return b;
}

}  // namespace lowbit
