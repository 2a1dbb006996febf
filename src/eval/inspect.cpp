#include "eval/inspect.h"

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

std::string format_inspect(const nlohmann::json& r) {
  const auto& c = r["config"];
  std::string s;
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
