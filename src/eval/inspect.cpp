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

nlohmann::json inspect_llava(const LlavaModel& m) {
  using json = nlohmann::json;
  const json lang = inspect_model(m.language);
  std::map<std::string, int64_t> dtypes = lang["dtypes"].get<std::map<std::string, int64_t>>();
  int64_t params = lang["parameters"].get<int64_t>();
  json all = json::array();

  const ClipVisionConfig& vc = m.cfg.vision;
  json vlin = json::array();
  int64_t vparams = 0;
  auto vtensor = [&](const Tensor& t) {
    if (!t.defined()) return;
    vparams += t.numel();
    dtypes[dtype_name(t.dtype())] += t.numel();
  };
  vlin.push_back(linear_entry(m.vision.patch_embed, dtypes));
  vparams += linear_params(m.vision.patch_embed);
  for (const Tensor* t : {&m.vision.class_embedding, &m.vision.position_embedding, &m.vision.pre_norm_w,
                          &m.vision.pre_norm_b, &m.vision.post_norm_w, &m.vision.post_norm_b})
    vtensor(*t);
  for (const ClipLayer& L : m.vision.layers) {
    for (const Tensor* t : {&L.ln1_w, &L.ln1_b, &L.ln2_w, &L.ln2_b}) vtensor(*t);
    for (const auto& g : L.groups())
      for (const Linear* lin : g) {
        vlin.push_back(linear_entry(*lin, dtypes));
        vparams += linear_params(*lin);
      }
  }
  std::vector<int64_t> states = m.cfg.feature_states();
  const int64_t used = *std::max_element(states.begin(), states.end());
  json vision = {{"name", "vision"},
                 {"kind", "clip_vit"},
                 {"layers", vc.num_layers},
                 {"layers_used", used},
                 {"hidden", vc.hidden_size},
                 {"ffn", vc.intermediate_size},
                 {"heads", vc.num_heads},
                 {"image_size", vc.image_size},
                 {"patch_size", vc.patch_size},
                 {"feature_layers", m.cfg.vision_feature_layers},
                 {"keep_cls", m.cfg.keep_cls},
                 {"features_per_image", m.cfg.features_per_image()},
                 {"parameters", vparams},
                 {"linears", vlin}};
  if (!m.vision_dir.empty()) vision["dir"] = m.vision_dir;

  json plin = json::array();
  int64_t pparams = 0;
  for (const Linear* lin : {&m.projector.linear_1, &m.projector.linear_2}) {
    plin.push_back(linear_entry(*lin, dtypes));
    pparams += linear_params(*lin);
  }
  json projector = {{"name", "projector"}, {"kind", "mlp2x_gelu"}, {"in", m.projector.d_in}, {"out", m.projector.d},
                    {"parameters", pparams},  {"linears", plin}};
  json language = {{"name", "language"}, {"kind", "llama_decoder"}, {"layers", m.cfg.text.num_layers},
                   {"parameters", params},  {"linears", lang["linears"]}};
  for (const json* t : {&vision, &projector, &language})
    for (const json& l : (*t)["linears"]) all.push_back(l);

  json r = lang;
  r["model"] = m.dir;
  r["architecture"] = m.cfg.architecture;
  r["image_token_index"] = m.cfg.image_token_index;
  r["parameters"] = params + vparams + pparams;
  r["dtypes"] = dtypes;
  r["towers"] = json::array({vision, projector, language});
  r["linears"] = all;
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
      if (name == "vision")
        s += fmt::format("[vision] CLIP ViT: layers {} (features from hidden state {}, {} layers run)  hidden {}  "
                         "ffn {}  heads {}  image {}  patch {}  {} features/image{}  parameters {}\n",
                         t["layers"].get<int64_t>(), t["feature_layers"].dump(), t["layers_used"].get<int64_t>(),
                         t["hidden"].get<int64_t>(), t["ffn"].get<int64_t>(), t["heads"].get<int64_t>(),
                         t["image_size"].get<int64_t>(), t["patch_size"].get<int64_t>(),
                         t["features_per_image"].get<int64_t>(), t["keep_cls"].get<bool>() ? " (CLS kept)" : "",
                         t["parameters"].get<int64_t>());
      else if (name == "projector")
        s += fmt::format("[projector] {}: {} -> {}  parameters {}\n", t["kind"].get<std::string>(),
                         t["in"].get<int64_t>(), t["out"].get<int64_t>(), t["parameters"].get<int64_t>());
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
