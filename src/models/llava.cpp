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
#include "models/vlm_common.h"

namespace lowbit {

using json = nlohmann::json;

// ---- config -------------------------------------------------------------------------------------

namespace {

LlavaConfig parse_llava(const json& j, const std::string& path, const LlavaFamily& family) {
  LOWBIT_CHECK(j.is_object(), ConfigError, "{}: config must be a JSON object", path);
  LlavaConfig c;
  if (j.contains("architectures") && j["architectures"].is_array() && !j["architectures"].empty())
    c.architecture = j["architectures"][0].get<std::string>();
  const std::string type = j.value("model_type", std::string());
  LOWBIT_CHECK(c.architecture == family.architecture || (c.architecture.empty() && type == family.model_type),
               ConfigError, "{}: architecture '{}' (model_type '{}') is not {}", path, c.architecture, type,
               family.architecture);
  if (c.architecture.empty()) c.architecture = family.architecture;
  check_text_and_vision_configs(j, path);
  // HF LlamaConfig's defaults for the keys llava-hf configs leave out of text_config
  // (llava-1.5-7b-hf lists only vocab_size, max_position_embeddings, rms_norm_eps, ...).
  json text = llama_text_config(j["text_config"]);
  inherit_top_level_dtype(text, j);
  c.text = LlamaConfig::from_json(text, path + " (text_config)");
  c.vision = ClipVisionConfig::from_json(j["vision_config"], path);
  if (const auto tok = image_token_from_json(j, "image_token_index", "image_token_id", c.text.vocab_size, path))
    c.image_token_index = *tok;
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

LlavaConfig LlavaConfig::from_json(const json& j, const std::string& path, const LlavaFamily& family) {
  return json_errors_as_config(path, [&] { return parse_llava(j, path, family); });
}

LlavaConfig LlavaConfig::from_original_json(const json& j, const std::string& path, const ClipVisionConfig& vision) {
  try {
    LOWBIT_CHECK(j.is_object(), ConfigError, "{}: config must be a JSON object", path);
    LlavaConfig c;
    c.original_layout = true;
    c.architecture = "LlavaLlamaForCausalLM";
    c.mm_vision_tower = j.value("mm_vision_tower", std::string());
    // The decoder's keys are at the top level (a LlamaConfig with mm_* keys added).
    json text = j;
    text.erase("architectures");
    text["model_type"] = "llama";
    c.text = LlamaConfig::from_json(text, path);
    c.vision = vision;
    c.image_token_index = kOriginalImageTokenIndex;
    const std::string ptype = j.value("mm_projector_type", std::string("linear"));  // LLaVA's default
    LOWBIT_CHECK(ptype == "mlp2x_gelu", ConfigError,
                 "{}: unsupported mm_projector_type '{}' (supported: mlp2x_gelu, LLaVA-1.5's projector)", path, ptype);
    c.projector_act = Activation::gelu;
    c.projector_bias = true;
    if (j.contains("mm_hidden_size")) {
      LOWBIT_CHECK(j["mm_hidden_size"].is_number_integer() && j["mm_hidden_size"].get<int64_t>() == vision.hidden_size,
                   ConfigError, "{}: mm_hidden_size {} does not match the vision tower's hidden_size {}", path,
                   json_excerpt(j["mm_hidden_size"]), vision.hidden_size);
    }
    const json layer = j.contains("mm_vision_select_layer") ? j["mm_vision_select_layer"] : json(-2);
    LOWBIT_CHECK(layer.is_number_integer(), ConfigError, "{}: 'mm_vision_select_layer' must be an integer, got {}",
                 path, json_excerpt(layer));
    c.vision_feature_layers = {layer.get<int64_t>()};
    const std::string feature = j.value("mm_vision_select_feature", std::string("patch"));
    LOWBIT_CHECK(feature == "patch" || feature == "cls_patch", ConfigError,
                 "{}: unsupported mm_vision_select_feature '{}' (supported: patch, cls_patch)", path, feature);
    c.keep_cls = feature == "cls_patch";
    LOWBIT_CHECK(!j.value("mm_use_im_start_end", false), ConfigError,
                 "{}: mm_use_im_start_end true (image start/end tokens) is not supported", path);
    const json ar = j.contains("image_aspect_ratio") && !j["image_aspect_ratio"].is_null() ? j["image_aspect_ratio"]
                                                                                           : json("square");
    LOWBIT_CHECK(ar.is_string() && (ar == "pad" || ar == "square"), ConfigError,
                 "{}: unsupported image_aspect_ratio {} (supported: pad, square)", path, json_excerpt(ar));
    c.pad_to_square = ar == "pad";
    c.feature_states();
    return c;
  } catch (const json::exception& e) {
    throw ConfigError(fmt::format("{}: {}", path, e.what()));
  }
}

LlavaConfig LlavaConfig::load(const std::string& dir) {
  const ModelConfigJson f = read_model_config(dir);
  return from_json(f.json, f.path);
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

namespace {

bool original_config(const json& j) {
  const std::string arch = first_architecture(j);
  if (arch == "LlavaLlamaForCausalLM") return true;
  return arch.empty() && j.value("model_type", std::string()) == "llava" && j.contains("mm_vision_tower") &&
         !j.contains("text_config");
}

}  // namespace

bool is_llava_dir(const std::string& dir) {
  const json j = read_config_or_null(dir);
  if (!j.is_object()) return false;
  if (j.value("model_type", std::string()) == "llava") return true;
  const std::string arch = first_architecture(j);
  return arch == "LlavaForConditionalGeneration" || arch == "LlavaLlamaForCausalLM";
}

bool is_llava_original_dir(const std::string& dir) {
  const json j = read_config_or_null(dir);
  return j.is_object() && original_config(j);
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

namespace {

bool has_processor_config(const std::string& dir) {
  const std::filesystem::path d(dir);
  return std::ifstream(d / "preprocessor_config.json").good() || std::ifstream(d / "processor_config.json").good();
}

// A CLIPVisionModel (vision config at the top level) or CLIPModel (under vision_config) directory.
ClipVisionConfig load_clip_vision_config(const std::string& tower_dir) {
  const std::string path = (std::filesystem::path(tower_dir) / "config.json").string();
  LOWBIT_CHECK(std::filesystem::is_directory(tower_dir), IoError, "--vision-tower: directory '{}' does not exist",
               tower_dir);
  LOWBIT_CHECK(std::ifstream(path).good(), IoError, "--vision-tower: cannot open {}", path);
  const json j = parse_json(read_text_file(path), path);
  LOWBIT_CHECK(j.is_object(), ConfigError, "{}: config must be a JSON object", path);
  const std::string type = j.value("model_type", std::string());
  if (type == "clip" || (j.contains("vision_config") && j["vision_config"].is_object())) {
    LOWBIT_CHECK(j.contains("vision_config") && j["vision_config"].is_object(), ConfigError,
                 "{}: a CLIPModel config needs an object 'vision_config'", path);
    return ClipVisionConfig::from_json(j["vision_config"], path);
  }
  LOWBIT_CHECK(type == "clip_vision_model" || first_architecture(j) == "CLIPVisionModel", ConfigError,
               "{}: not a CLIP vision model (model_type '{}'; expected clip_vision_model or clip)", path, type);
  return ClipVisionConfig::from_json(j, path);
}

void check_processor_fits(const ClipProcessorConfig& p, const ClipVisionConfig& v, const std::string& dir) {
  LOWBIT_CHECK(p.do_center_crop && p.crop_height == v.image_size && p.crop_width == v.image_size, ConfigError,
               "{}: the image processor's crop {}x{} does not give the vision tower's {}x{} input", dir,
               p.do_center_crop ? p.crop_width : 0, p.do_center_crop ? p.crop_height : 0, v.image_size,
               v.image_size);
}

LlavaModel load_original(const std::string& dir, const std::string& tower_dir, const PackedSource& packed) {
  const std::string path = (std::filesystem::path(dir) / "config.json").string();
  const json j = parse_json(read_text_file(path), path);
  LOWBIT_CHECK(!tower_dir.empty(), ArgError,
               "{}: the original LLaVA layout (LlavaLlamaForCausalLM) keeps its CLIP vision tower outside the "
               "checkpoint (mm_vision_tower '{}'); pass --vision-tower DIR, a local CLIPVisionModel directory "
               "(config.json, model.safetensors, preprocessor_config.json)",
               path, j.value("mm_vision_tower", std::string()));
  const ClipVisionConfig vcfg = load_clip_vision_config(tower_dir);
  LlavaModel m;
  m.cfg = LlavaConfig::from_original_json(j, path, vcfg);
  m.dir = dir;
  m.vision_dir = tower_dir;
  const WeightStore store = WeightStore::open_dir(dir);
  const WeightStore vstore = WeightStore::open_dir(tower_dir);
  const PackedSource& codes = packed;  // a quantized checkpoint's codes; file names are the linears' names
  TensorSource vget = store_tensors(vstore);
  const std::string vroot = llava_names::kClipVisionModelRoot;
  LOWBIT_CHECK(vstore.has(vroot + clip_names::kClassEmbedding), ShapeError, "{}: no CLIP vision tower found (looked for '{}{}')",
               vstore.source(), vroot, clip_names::kClassEmbedding);
  m.vision = ClipVisionTower::from_source(vcfg, WeightSource{vget, codes, vstore.source()}, vroot);

  TensorSource get = store_tensors(store);
  const std::string proot = llava_names::kOriginalProjectorRoot;
  LOWBIT_CHECK(store.has(proot + llava_names::kOriginalLinear1 + ".weight") ||
                   store.has(proot + llava_names::kOriginalLinear1 + ".qweight"),  // a quantized checkpoint's codes
               ShapeError,
               "{}: no projector found (looked for '{}{}.weight')", store.source(), proot, llava_names::kOriginalLinear1);
  LlavaProjector& p = m.projector;
  p.d_in = vcfg.hidden_size;
  p.d = m.cfg.text.hidden_size;
  p.act = m.cfg.projector_act;
  p.linear_1 = load_linear(WeightSource{get, codes, store.source()}, proot + llava_names::kOriginalLinear1, p.d, p.d_in, true);
  p.linear_2 = load_linear(WeightSource{get, codes, store.source()}, proot + llava_names::kOriginalLinear2, p.d, p.d, true);
  m.language = LlamaModel::from_source(m.cfg.text, get, packed, store.source() + " (language model)", dir);
  m.language_root = "model.";  // the decoder under LLaMA's own names (for saving)
  m.head_root = "";

  LOWBIT_CHECK(has_processor_config(tower_dir), IoError,
               "--vision-tower: {} has no preprocessor_config.json (the CLIP image processor's settings)", tower_dir);
  ClipProcessorConfig pc = ClipProcessorConfig::load(tower_dir);
  pc.flavor = ProcessorFlavor::Slow;  // original LLaVA preprocesses with PIL
  check_processor_fits(pc, vcfg, tower_dir);
  m.processor = pc;
  return m;
}

}  // namespace

LlavaModel LlavaModel::load(const std::string& dir, const std::string& vision_tower_dir, const PackedSource& packed) {
  if (is_llava_original_dir(dir)) return load_original(dir, vision_tower_dir, packed);
  LlavaConfig cfg = LlavaConfig::load(dir);
  LOWBIT_CHECK(vision_tower_dir.empty(), ArgError,
               "--vision-tower is only for the original LLaVA layout (LlavaLlamaForCausalLM); {} ({}) has its "
               "vision tower inside",
               dir, cfg.architecture);
  WeightStore st = WeightStore::open_dir(dir);
  LlavaModel m = from_store(cfg, st, dir, packed);
  if (has_processor_config(dir)) {
    ClipProcessorConfig pc = ClipProcessorConfig::load(dir);  // Fast: transformers' default
    check_processor_fits(pc, cfg.vision, dir);
    m.processor = pc;
  }
  return m;
}

LlamaModel LlavaModel::load_language(const std::string& dir) {
  if (!is_llava_original_dir(dir)) return load(dir).language;
  const std::string path = (std::filesystem::path(dir) / "config.json").string();
  json text = parse_json(read_text_file(path), path);
  LOWBIT_CHECK(text.is_object(), ConfigError, "{}: config must be a JSON object", path);
  text.erase("architectures");
  text["model_type"] = "llama";
  const LlamaConfig cfg = LlamaConfig::from_json(text, path);
  const WeightStore store = WeightStore::open_dir(dir);
  TensorSource get = store_tensors(store);
  return LlamaModel::from_source(cfg, get, {}, store.source() + " (language model)", dir);
}

LlavaModel LlavaModel::from_store(const LlavaConfig& cfg, const WeightStore& store, const std::string& dir,
                                  const PackedSource& packed) {
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
  std::string proot;  // a quantized checkpoint may hold linear_1 as packed codes
  for (const char* r : llava_names::kProjectorRoots)
    if (proot.empty() && store.has(std::string(r) + llava_names::kLinear1 + ".qweight")) proot = r;
  if (proot.empty())
    proot = probe(llava_names::kProjectorRoots, std::string(llava_names::kLinear1) + ".weight", "multi_modal_projector");
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
  m.language_root = dec_root;
  m.head_root = head_root;
  TensorSource get = store_tensors(store);
  const PackedSource& none = packed;  // vision and projector: file names are the linears' names
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
  TensorSource lm_get = language_model_tensors(store, dec_root, head_root);
  m.language = LlamaModel::from_source(cfg.text, lm_get, language_model_packed(packed, dec_root, head_root),
                                       source + " (language model)", dir);
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
    vo.tower_hook = opt.tower_hook;
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
  if (opt.tower_hook) opt.tower_hook("projector", st.x.data(), st.T, projector.d_in);
  BlockCtx ctx;
  ctx.act_quant = opt.act_quant;
  ctx.observer = opt.observer ? &opt.observer : nullptr;
  projector.forward(st, ctx);
  return Tensor::from_vector(st.x, {n * F, projector.d});
}

void LlavaModel::embed_multimodal(const int32_t* ids, int64_t T, const Tensor& features, float* x,
                                  const std::vector<int64_t>* tokens_per_image) const {
  const int64_t d = cfg.text.hidden_size, F = cfg.features_per_image();
  const int64_t n = features.defined() ? features.size(0) : 0;
  LOWBIT_ASSERT(!features.defined() || (features.dim() == 2 && features.size(1) == d && features.dtype() == DType::F32));
  const int64_t n_tok = std::count(ids, ids + T, cfg.image_token_index);
  if (n_tok != n) {
    std::string why;
    if (tokens_per_image) {
      std::string per;
      for (int64_t k : *tokens_per_image) per += fmt::format("{}{}", per.empty() ? "" : ", ", k);
      why = tokens_per_image->empty() ? "no image"
                                      : fmt::format("{} image(s) needing {} image tokens", tokens_per_image->size(), per);
    } else if (cfg.architecture == kLlavaNextFamily.architecture) {
      why = "LLaVA-NeXT: each image's count depends on its size, see LlavaNextModel::image_tokens";
    } else {
      why = fmt::format("{} image(s) x {}; each image needs {} image tokens", n / F, F, F);
    }
    throw ArgError(fmt::format("the prompt has {} image tokens (id {}) but the images give {} features ({})", n_tok,
                               cfg.image_token_index, n, why));
  }
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

Tensor LlavaModel::pixel_values(const std::vector<Image>& images) const {
  LOWBIT_CHECK(processor.has_value(), IoError,
               "{}: no preprocessor_config.json or processor_config.json (the image processor's settings)",
               vision_dir.empty() ? dir : vision_dir);
  const ClipVisionConfig& vc = cfg.vision;
  const int64_t n = int64_t(images.size()), img = vc.num_channels * vc.image_size * vc.image_size;
  Tensor out = Tensor::zeros({n, vc.num_channels, vc.image_size, vc.image_size});
  for (int64_t i = 0; i < n; ++i) {
    const Tensor px = cfg.pad_to_square
                          ? clip_preprocess(expand_to_square(images[size_t(i)], llava_pad_color(processor->image_mean)),
                                            *processor)
                          : clip_preprocess(images[size_t(i)], *processor);
    LOWBIT_CHECK(px.numel() == img, ShapeError, "image processor gave {} values per image; the vision tower takes {}",
                 px.numel(), img);
    std::memcpy(out.data<float>() + i * img, px.data<float>(), size_t(img) * sizeof(float));
  }
  return out;
}

std::vector<int32_t> LlavaModel::prompt_ids(const Tokenizer& tok, const std::string& text, int64_t n_images) const {
  return prompt_ids(tok, text, std::vector<int64_t>(size_t(std::max<int64_t>(n_images, 0)), cfg.features_per_image()));
}

std::vector<int32_t> LlavaModel::prompt_ids(const Tokenizer& tok, const std::string& text,
                                            const std::vector<int64_t>& tokens_per_image) const {
  static const std::string kImage = "<image>";
  const int64_t n_images = int64_t(tokens_per_image.size());
  int64_t total = 0;
  for (int64_t k : tokens_per_image) total += k;
  std::vector<std::string> pieces;  // text split at each <image>
  for (size_t at = 0;;) {
    const size_t p = text.find(kImage, at);
    pieces.push_back(text.substr(at, p == std::string::npos ? std::string::npos : p - at));
    if (p == std::string::npos) break;
    at = p + kImage.size();
  }
  const int64_t n_placeholders = int64_t(pieces.size()) - 1;
  LOWBIT_CHECK(n_placeholders == n_images, ArgError,
               "the prompt has {} <image> placeholder(s) but {} image(s) were given", n_placeholders, n_images);
  std::vector<int32_t> ids;
  if (tok.bos_id() >= 0 && tok.add_bos()) ids.push_back(tok.bos_id());
  if (cfg.original_layout) {
    // tokenizer_image_token: each piece on its own, the image's tokens between them.
    for (size_t k = 0; k < pieces.size(); ++k) {
      if (k > 0) ids.insert(ids.end(), size_t(tokens_per_image[k - 1]), cfg.image_token_index);
      const std::vector<int32_t> e = tok.encode(pieces[k]);
      ids.insert(ids.end(), e.begin(), e.end());
    }
    return ids;
  }
  // LlavaProcessor / LlavaNextProcessor: the k-th "<image>" repeated tokens_per_image[k] times in the
  // text, then the text encoded.
  std::string expanded = pieces[0];
  for (size_t k = 1; k < pieces.size(); ++k) {
    for (int64_t f = 0; f < tokens_per_image[k - 1]; ++f) expanded += kImage;
    expanded += pieces[k];
  }
  const std::vector<int32_t> e = tok.encode(expanded);
  ids.insert(ids.end(), e.begin(), e.end());
  const int64_t got = std::count(ids.begin(), ids.end(), cfg.image_token_index);
  LOWBIT_CHECK(got == total, ConfigError,
               "{}: the tokenizer does not encode <image> as the image token {} ({} image tokens where the {} image(s) "
               "need {})",
               dir, cfg.image_token_index, got, n_images, total);
  return ids;
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
