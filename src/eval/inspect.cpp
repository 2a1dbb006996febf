#include "eval/inspect.h"

#include <algorithm>
#include <cmath>
#include <map>

#include <fmt/format.h>

namespace lowbit {

WeightStats weight_stats(const Tensor& W) {
  std::vector<float> v = W.to_vector();
  const double n = double(v.size());
  WeightStats s;
  double sum = 0;
  for (float x : v) { sum += x; s.absmax = std::max(s.absmax, double(std::fabs(x))); }
  s.mean = sum / n;
  double m2 = 0, m4 = 0;
  for (float x : v) {
    double d = double(x) - s.mean, d2 = d * d;
    m2 += d2;
    m4 += d2 * d2;
  }
  m2 /= n;
  m4 /= n;
  s.std = std::sqrt(m2);
  s.kurtosis = m2 > 0 ? m4 / (m2 * m2) : 0.0;
  return s;
}

namespace {

nlohmann::json linear_entry(const Linear& lin, std::map<std::string, int64_t>& dtypes) {
  const WeightStats s = weight_stats(lin.weight_f32());
  const std::string dt = lin.quantized() ? fmt::format("int{}", lin.qw->bits) : dtype_name(lin.W.dtype());
  dtypes[dt] += lin.out() * lin.in();
  if (lin.bias.defined()) dtypes[dtype_name(lin.bias.dtype())] += lin.bias.numel();
  return {{"name", lin.name}, {"shape", Shape{lin.out(), lin.in()}}, {"dtype", dt},
          {"absmax", s.absmax}, {"std", s.std}, {"kurtosis", s.kurtosis}};
}

int64_t linear_params(const Linear& lin) {
  return lin.out() * lin.in() + (lin.bias.defined() ? lin.bias.numel() : 0);
}

}  // namespace

nlohmann::json inspect_model(const LlamaModel& m) {
  using json = nlohmann::json;
  const auto& c = m.cfg;
  json r;
  r["model"] = m.dir;
  r["architecture"] = c.architecture;
  r["config"] = c.to_json();
  r["parameters"] = m.num_parameters();
  std::map<std::string, int64_t> dtypes;
  auto count = [&](const Tensor& t) { if (t.defined()) dtypes[dtype_name(t.dtype())] += t.numel(); };
  count(m.embed);
  const bool tied = m.lm_head.W.defined() && m.lm_head.W.raw() == m.embed.raw();
  json linears = json::array();
  // Quantized linears are described by their dequantized values (one layer at a time).
  auto describe = [&](const Linear& lin) {
    const Tensor W = lin.weight_f32();
    WeightStats s = weight_stats(W);
    std::string dt = lin.quantized() ? fmt::format("int{}", lin.qw->bits) : dtype_name(lin.W.dtype());
    if (lin.quantized()) dtypes[dt] += lin.out() * lin.in();
    else if (!(&lin == &m.lm_head && tied)) count(lin.W);
    json e = {{"name", lin.name}, {"shape", Shape{lin.out(), lin.in()}}, {"dtype", dt},
              {"absmax", s.absmax}, {"std", s.std}, {"kurtosis", s.kurtosis}};
    if (&lin == &m.lm_head) e["tied"] = tied;
    linears.push_back(e);
  };
  for (const LlamaLayer& L : m.layers)
    for (const Linear* lin : L.linears()) describe(*lin);
  describe(m.lm_head);
  r["dtypes"] = dtypes;  // parameters per dtype (linear weights + embeddings)
  r["linears"] = linears;
  return r;
}

namespace {

// The vision encoder as a tower: patch embedding + every layer's linears, the embeddings and
// norms it has (CLIP: class embedding and pre-layernorm; SigLIP: neither, a post-layernorm).
nlohmann::json vision_tower_json(const ClipVisionTower& v, int64_t layers_used, std::map<std::string, int64_t>& dtypes) {
  using json = nlohmann::json;
  const ClipVisionConfig& vc = v.cfg;
  json vlin = json::array();
  int64_t vparams = 0;
  auto vtensor = [&](const Tensor& t) {
    if (!t.defined()) return;  // SigLIP has no class embedding or pre-norm; some files no post-norm
    vparams += t.numel();
    dtypes[dtype_name(t.dtype())] += t.numel();
  };
  vlin.push_back(linear_entry(v.patch_embed, dtypes));
  vparams += linear_params(v.patch_embed);
  for (const Tensor* t : {&v.class_embedding, &v.position_embedding, &v.pre_norm_w, &v.pre_norm_b, &v.post_norm_w,
                          &v.post_norm_b})
    vtensor(*t);
  for (const ClipLayer& L : v.layers) {
    for (const Tensor* t : {&L.ln1_w, &L.ln1_b, &L.ln2_w, &L.ln2_b}) vtensor(*t);
    for (const auto& g : L.groups())
      for (const Linear* lin : g) {
        vlin.push_back(linear_entry(*lin, dtypes));
        vparams += linear_params(*lin);
      }
  }
  return {{"name", "vision"},
          {"kind", vc.is_siglip() ? "siglip" : "clip_vit"},
          {"model_type", vc.model_type},
          {"layers", vc.num_layers},
          {"layers_used", layers_used},
          {"hidden", vc.hidden_size},
          {"ffn", vc.intermediate_size},
          {"heads", vc.num_heads},
          {"image_size", vc.image_size},
          {"patch_size", vc.patch_size},
          {"class_token", vc.class_token},
          {"pre_norm", vc.pre_norm},
          {"post_norm", v.post_norm_w.defined()},
          {"parameters", vparams},
          {"linears", vlin}};
}

nlohmann::json language_tower_json(const nlohmann::json& lang, int64_t layers) {
  return {{"name", "language"}, {"kind", "llama_decoder"}, {"layers", layers},
          {"parameters", lang["parameters"]}, {"linears", lang["linears"]}};
}

// The whole report: the language model's, then the towers in order, their linears concatenated.
nlohmann::json towers_report(const nlohmann::json& lang, std::map<std::string, int64_t>& dtypes,
                             std::vector<nlohmann::json> towers, const std::string& dir, const std::string& arch) {
  using json = nlohmann::json;
  json all = json::array();
  int64_t params = 0;
  for (const json& t : towers) {
    params += t["parameters"].get<int64_t>();
    for (const json& l : t["linears"]) all.push_back(l);
  }
  json r = lang;
  r["model"] = dir;
  r["architecture"] = arch;
  r["parameters"] = params;
  r["dtypes"] = dtypes;
  r["towers"] = towers;
  r["linears"] = all;
  return r;
}

}  // namespace

nlohmann::json inspect_llava(const LlavaModel& m) {
  using json = nlohmann::json;
  const json lang = inspect_model(m.language);
  std::map<std::string, int64_t> dtypes = lang["dtypes"].get<std::map<std::string, int64_t>>();
  std::vector<int64_t> states = m.cfg.feature_states();
  json vision = vision_tower_json(m.vision, *std::max_element(states.begin(), states.end()), dtypes);
  vision["feature_layers"] = m.cfg.vision_feature_layers;
  vision["keep_cls"] = m.cfg.keep_cls;
  vision["features_per_image"] = m.cfg.features_per_image();
  if (!m.vision_dir.empty()) vision["dir"] = m.vision_dir;

  json plin = json::array();
  int64_t pparams = 0;
  for (const Linear* lin : {&m.projector.linear_1, &m.projector.linear_2}) {
    plin.push_back(linear_entry(*lin, dtypes));
    pparams += linear_params(*lin);
  }
  json projector = {{"name", "projector"}, {"kind", "mlp2x_gelu"}, {"in", m.projector.d_in}, {"out", m.projector.d},
                    {"parameters", pparams},  {"linears", plin}};
  json r = towers_report(lang, dtypes, {vision, projector, language_tower_json(lang, m.cfg.text.num_layers)}, m.dir,
                         m.cfg.architecture);
  r["image_token_index"] = m.cfg.image_token_index;
  return r;
}

nlohmann::json inspect_llava_next(const LlavaNextModel& m) {
  using json = nlohmann::json;
  json r = inspect_llava(m.llava);
  // image_newline [d] belongs to the projector's side (it is written between packed tile rows).
  json& projector = r["towers"][1];
  projector["image_newline"] = m.image_newline.numel();
  projector["parameters"] = projector["parameters"].get<int64_t>() + m.image_newline.numel();
  r["parameters"] = r["parameters"].get<int64_t>() + m.image_newline.numel();
  r["dtypes"][dtype_name(m.image_newline.dtype())] =
      r["dtypes"].value(dtype_name(m.image_newline.dtype()), int64_t(0)) + m.image_newline.numel();
  json pins = json::array();
  for (const auto& [h, w] : m.cfg.image_grid_pinpoints) pins.push_back({h, w});
  r["towers"][0]["image_grid_pinpoints"] = pins;
  r["towers"][0]["features_per_tile"] = m.cfg.llava.features_per_image();
  r["architecture"] = m.cfg.architecture.empty() ? m.cfg.llava.architecture : m.cfg.architecture;
  return r;
}

nlohmann::json inspect_idefics3(const Idefics3Model& m) {
  using json = nlohmann::json;
  const json lang = inspect_model(m.language);
  std::map<std::string, int64_t> dtypes = lang["dtypes"].get<std::map<std::string, int64_t>>();
  json vision = vision_tower_json(m.vision, m.cfg.vision.num_layers, dtypes);
  vision["features_per_frame"] = m.cfg.features_per_frame();
  json connector = {{"name", "connector"},
                    {"kind", "pixel_shuffle_linear"},
                    {"scale_factor", m.cfg.scale_factor},
                    {"in", m.connector.d_in},
                    {"out", m.connector.d},
                    {"parameters", linear_params(m.connector.proj)},
                    {"linears", json::array({linear_entry(m.connector.proj, dtypes)})}};
  json r = towers_report(lang, dtypes, {vision, connector, language_tower_json(lang, m.cfg.text.num_layers)}, m.dir,
                         m.cfg.architecture);
  r["image_token_id"] = m.cfg.image_token_id;
  return r;
}

namespace {

std::string linear_table(const nlohmann::json& linears) {
  std::string s = fmt::format("{:<52} {:>13} {:>5} {:>10} {:>10} {:>10}\n", "linear", "shape", "dtype", "absmax",
                              "std", "kurtosis");
  for (auto& l : linears) {
    auto sh = l["shape"];
    s += fmt::format("{:<52} {:>13} {:>5} {:>10.4f} {:>10.5f} {:>10.2f}\n", l["name"].get<std::string>(),
                     fmt::format("{}x{}", sh[0].get<int64_t>(), sh[1].get<int64_t>()), l["dtype"].get<std::string>(),
                     l["absmax"].get<double>(), l["std"].get<double>(), l["kurtosis"].get<double>());
  }
  return s;
}

}  // namespace

std::string format_inspect(const nlohmann::json& r) {
  const auto& c = r["config"];
  std::string s;
  if (r.contains("towers")) {  // a vision-language model, tower by tower
    s += fmt::format("model         {}\n", r["model"].get<std::string>());
    s += fmt::format("architecture  {}\n", r["architecture"].get<std::string>());
    s += fmt::format("parameters    {} ({:.3f} M)\n", r["parameters"].get<int64_t>(),
                     double(r["parameters"].get<int64_t>()) / 1e6);
    s += "dtypes       ";
    for (auto& [k, v] : r["dtypes"].items()) s += fmt::format(" {}: {}", k, v.get<int64_t>());
    s += "\n";
    for (const auto& t : r["towers"]) {
      const std::string name = t["name"].get<std::string>();
      s += "\n";
      if (name == "vision") {
        const bool siglip = t.value("kind", std::string()) == "siglip";
        std::string feat;
        if (t.contains("feature_layers"))
          feat = fmt::format("features from hidden state {}, {} layers run; ", t["feature_layers"].dump(),
                             t["layers_used"].get<int64_t>());
        std::string per;
        if (t.contains("features_per_tile"))
          per = fmt::format("  {} features/tile + unpadded grid rows (anyres {})", t["features_per_tile"].get<int64_t>(),
                            t["image_grid_pinpoints"].dump());
        else if (t.contains("features_per_image"))
          per = fmt::format("  {} features/image{}", t["features_per_image"].get<int64_t>(),
                            t["keep_cls"].get<bool>() ? " (CLS kept)" : "");
        else if (t.contains("features_per_frame"))
          per = fmt::format("  {} features/frame", t["features_per_frame"].get<int64_t>());
        s += fmt::format("[vision] {}: layers {} ({}{})  hidden {}  ffn {}  heads {}  image {}  patch {}{}  parameters {}\n",
                         siglip ? "SigLIP ViT" : "CLIP ViT", t["layers"].get<int64_t>(), feat,
                         siglip ? "no class token, post-layernorm" : "class token, pre-layernorm",
                         t["hidden"].get<int64_t>(), t["ffn"].get<int64_t>(), t["heads"].get<int64_t>(),
                         t["image_size"].get<int64_t>(), t["patch_size"].get<int64_t>(), per,
                         t["parameters"].get<int64_t>());
      } else if (name == "projector") {
        s += fmt::format("[projector] {}: {} -> {}{}  parameters {}\n", t["kind"].get<std::string>(),
                         t["in"].get<int64_t>(), t["out"].get<int64_t>(),
                         t.contains("image_newline") ? "  + image_newline" : "", t["parameters"].get<int64_t>());
      } else if (name == "connector") {
        s += fmt::format("[connector] pixel shuffle x{} + linear: {} -> {}  parameters {}\n",
                         t["scale_factor"].get<int64_t>(), t["in"].get<int64_t>(), t["out"].get<int64_t>(),
                         t["parameters"].get<int64_t>());
      }
      else
        s += fmt::format("[language] LLaMA decoder: layers {}  hidden {}  ffn {}  heads {}  kv heads {}  head_dim {}  "
                         "vocab {}  context {}  tied embeddings: {}  parameters {}\n",
                         c["num_hidden_layers"].get<int64_t>(), c["hidden_size"].get<int64_t>(),
                         c["intermediate_size"].get<int64_t>(), c["num_attention_heads"].get<int64_t>(),
                         c["num_key_value_heads"].get<int64_t>(), c["head_dim"].get<int64_t>(),
                         c["vocab_size"].get<int64_t>(), c["max_position_embeddings"].get<int64_t>(),
                         c["tie_word_embeddings"].get<bool>() ? "yes" : "no", t["parameters"].get<int64_t>());
      s += linear_table(t["linears"]);
    }
    s += "(kurtosis: 3 for a Gaussian; large values mean outliers that hurt low-bit quantization)\n";
    return s;
  }
  s += fmt::format("model         {}\n", r["model"].get<std::string>());
  s += fmt::format("architecture  {} ({})\n", r["architecture"].get<std::string>(), c["model_type"].get<std::string>());
  s += fmt::format("parameters    {} ({:.3f} M)\n", r["parameters"].get<int64_t>(),
                   double(r["parameters"].get<int64_t>()) / 1e6);
  s += fmt::format("layers {}  hidden {}  ffn {}  heads {}  kv heads {}  head_dim {}  vocab {}  context {}\n",
                   c["num_hidden_layers"].get<int64_t>(), c["hidden_size"].get<int64_t>(),
                   c["intermediate_size"].get<int64_t>(), c["num_attention_heads"].get<int64_t>(),
                   c["num_key_value_heads"].get<int64_t>(), c["head_dim"].get<int64_t>(),
                   c["vocab_size"].get<int64_t>(), c["max_position_embeddings"].get<int64_t>());
  s += fmt::format("rope          {}  tied embeddings: {}\n", c["rope_parameters"].dump(),
                   c["tie_word_embeddings"].get<bool>() ? "yes" : "no");
  s += "dtypes       ";
  for (auto& [k, v] : r["dtypes"].items()) s += fmt::format(" {}: {}", k, v.get<int64_t>());
  s += "\n\n";
  s += fmt::format("{:<44} {:>13} {:>5} {:>10} {:>10} {:>10}\n", "linear", "shape", "dtype", "absmax", "std",
                   "kurtosis");
  for (auto& l : r["linears"]) {
    auto sh = l["shape"];
    s += fmt::format("{:<44} {:>13} {:>5} {:>10.4f} {:>10.5f} {:>10.2f}\n", l["name"].get<std::string>(),
                     fmt::format("{}x{}", sh[0].get<int64_t>(), sh[1].get<int64_t>()), l["dtype"].get<std::string>(),
                     l["absmax"].get<double>(), l["std"].get<double>(), l["kurtosis"].get<double>());
  }
  s += "(kurtosis: 3 for a Gaussian; large values mean outliers that hurt low-bit quantization)\n";
  return s;
}

}  // namespace lowbit
