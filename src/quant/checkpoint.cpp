#include "quant/checkpoint.h"

#include <unistd.h>

#include <filesystem>

#include "core/error.h"
#include "core/progress.h"
#include "io/files.h"
#include "io/safetensors.h"
#include "quant/rotation.h"
#include "quant/runtime.h"
#include <cstring>

namespace lowbit {

namespace fs = std::filesystem;

std::vector<uint8_t> pack_codes(const std::vector<int32_t>& codes, int bits) {
  std::vector<uint8_t> out((codes.size() * size_t(bits) + 7) / 8, 0);
  size_t bit = 0;
  for (int32_t c : codes) {
    LOWBIT_ASSERT(c >= 0 && c < (1 << bits));
    for (int b = 0; b < bits; ++b, ++bit)
      if (c >> b & 1) out[bit / 8] |= uint8_t(1u << (bit % 8));
  }
  return out;
}

std::vector<int32_t> unpack_codes(const uint8_t* packed, size_t n, int bits) {
  std::vector<int32_t> out(n, 0);
  size_t bit = 0;
  for (size_t i = 0; i < n; ++i)
    for (int b = 0; b < bits; ++b, ++bit)
      if (packed[bit / 8] >> (bit % 8) & 1) out[i] |= 1 << b;
  return out;
}

namespace {

const char* kQuantFile = "lowbit_quant.json";

Tensor i32_tensor(const std::vector<int32_t>& v, Shape shape) {
  Tensor t = Tensor::empty(shape, DType::I32);
  std::memcpy(t.raw(), v.data(), v.size() * 4);
  return t;
}
Tensor f32_tensor(const std::vector<float>& v, Shape shape) { return Tensor::from_vector(v, shape); }

void add_quantized(std::vector<std::pair<std::string, Tensor>>& ts, const std::string& name, const QuantizedWeight& q) {
  const int off = q.sym ? (1 << (q.bits - 1)) : 0;  // stored unsigned
  std::vector<int32_t> u(q.codes.size());
  for (size_t i = 0; i < u.size(); ++i) u[i] = q.codes[i] + off;
  const int64_t row_bytes = (q.in * q.bits + 7) / 8;
  Tensor packed = Tensor::empty({q.out, row_bytes}, DType::U8);
  for (int64_t r = 0; r < q.out; ++r) {
    std::vector<int32_t> row(u.begin() + r * q.in, u.begin() + (r + 1) * q.in);
    std::vector<uint8_t> p = pack_codes(row, q.bits);
    std::memcpy(packed.data<uint8_t>() + r * row_bytes, p.data(), p.size());
  }
  std::vector<int32_t> z(q.zeros.size());
  for (size_t i = 0; i < z.size(); ++i) z[i] = int32_t(q.zeros[i]) + off;
  ts.push_back({name + ".qweight", packed});
  ts.push_back({name + ".scales", f32_tensor(q.scales, {q.out, q.ngroups})});
  ts.push_back({name + ".qzeros", i32_tensor(z, {q.out, q.ngroups})});
  ts.push_back({name + ".g_idx", i32_tensor(q.g_idx, {q.in})});
}

// Reads X.qweight/scales/qzeros/g_idx back into f32 weights [out, in].
Tensor dequantize_stored(const WeightStore& st, const std::string& name, int bits, bool sym) {
  Tensor pk = st.get(name + ".qweight"), sc = st.get(name + ".scales"), zr = st.get(name + ".qzeros"),
         gi = st.get(name + ".g_idx");
  LOWBIT_CHECK(pk.dtype() == DType::U8 && sc.dtype() == DType::F32 && zr.dtype() == DType::I32 &&
                   gi.dtype() == DType::I32 && pk.dim() == 2 && sc.dim() == 2 && gi.dim() == 1,
               FormatError, "{}: quantized tensor '{}' has unexpected dtypes or ranks", st.source(), name);
  const int64_t out = pk.size(0), in = gi.size(0), ng = sc.size(1);
  LOWBIT_CHECK(pk.size(1) == (in * bits + 7) / 8 && sc.size(0) == out && zr.shape() == sc.shape(), FormatError,
               "{}: quantized tensor '{}' shapes do not fit together", st.source(), name);
  const int off = sym ? (1 << (bits - 1)) : 0;
  const int32_t* g = gi.data<int32_t>();
  for (int64_t c = 0; c < in; ++c)
    LOWBIT_CHECK(g[c] >= 0 && g[c] < ng, FormatError, "{}: '{}.g_idx' entry {} out of range", st.source(), name, c);
  Tensor W = Tensor::empty({out, in}, DType::F32);
  const float* s = sc.data<float>();
  const int32_t* z = zr.data<int32_t>();
  for (int64_t r = 0; r < out; ++r) {
    std::vector<int32_t> u = unpack_codes(pk.data<uint8_t>() + r * pk.size(1), size_t(in), bits);
    for (int64_t c = 0; c < in; ++c) {
      const int64_t k = r * ng + g[c];
      W.f32()[r * in + c] = dequantize_code(float(u[size_t(c)] - off), QParams{s[k], float(z[k] - off)});
    }
  }
  return W;
}

}  // namespace

bool is_quantized_checkpoint(const std::string& dir) { return fs::exists(fs::path(dir) / kQuantFile); }

void save_quantized(const LlamaModel& m, const QuantizedModel& q, const std::string& src_dir,
                    const std::string& out_dir) {
  const QuantRuntime& rt = *q.runtime;
  LOWBIT_CHECK(!out_dir.empty(), ArgError, "--out is empty");
  const fs::path out(out_dir);
  LOWBIT_CHECK(!fs::exists(out) || fs::is_directory(out), IoError, "--out {} exists and is not a directory", out_dir);
  if (fs::exists(out) && !fs::is_empty(out))
    LOWBIT_CHECK(is_quantized_checkpoint(out_dir), IoError,
                 "--out {} is a non-empty directory that is not a lowbit checkpoint; refusing to overwrite it", out_dir);
  fs::path tmp = out.string() + ".tmp." + std::to_string(getpid());
  fs::remove_all(tmp);
  fs::create_directories(tmp);
  try {
    std::vector<std::pair<std::string, Tensor>> ts;
    auto plain = [&](const std::string& name, const Tensor& t) { ts.push_back({name, t.to(t.dtype())}); };
    auto ones = [&](int64_t d) { return Tensor::from_vector(std::vector<float>(static_cast<size_t>(d), 1.0f), {d}); };
    const int64_t d = m.cfg.hidden_size;
    plain("model.embed_tokens.weight", m.embed);
    for (size_t l = 0; l < m.layers.size(); ++l) {
      const LlamaLayer& L = m.layers[l];
      const std::string p = "model.layers." + std::to_string(l) + ".";
      // Norm weights folded into the linears by the rotation are stored as ones (x·1 = x exactly).
      plain(p + "input_layernorm.weight", L.attn_norm.defined() ? L.attn_norm : ones(d));
      plain(p + "post_attention_layernorm.weight", L.mlp_norm.defined() ? L.mlp_norm : ones(d));
      for (Linear* lin : const_cast<LlamaLayer&>(L).linears()) {
        auto it = q.weights.find(lin->name);
        if (it != q.weights.end())
          add_quantized(ts, lin->name, it->second);
        else
          plain(lin->name + ".weight", lin->W);
        if (lin->bias.defined()) plain(lin->name + ".bias", lin->bias);
      }
    }
    plain("model.norm.weight", m.final_norm.defined() ? m.final_norm : ones(d));
    const bool tied = m.lm_head.W.raw() == m.embed.raw();
    if (auto it = q.weights.find("lm_head"); it != q.weights.end())
      add_quantized(ts, "lm_head", it->second);
    else if (!tied)
      plain("lm_head.weight", m.lm_head.W);
    save_safetensors((tmp / "model.safetensors").string(), ts, {{"format", "pt"}, {"lowbit", "fakequant-v1"}});

    LlamaConfig cfg = m.cfg;
    cfg.tie_word_embeddings = tied && !q.weights.count("lm_head");
    write_file_atomic((tmp / "config.json").string(), cfg.to_json().dump(2) + "\n");
    for (const char* f : {"tokenizer.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json",
                          "generation_config.json"})
      if (fs::exists(fs::path(src_dir) / f)) {
        fs::copy_file(fs::path(src_dir) / f, tmp / f);
        // the source may be read-only (a shared model store); the copy is ours to edit
        fs::permissions(tmp / f, fs::perms::owner_read | fs::perms::owner_write | fs::perms::group_read |
                                     fs::perms::others_read);
      }
    nlohmann::json j = {{"format", "lowbit-fakequant"},
                        {"format_version", 1},
                        {"source_model", src_dir},
                        {"quant_config", rt.cfg.to_json()},
                        {"summary", rt.cfg.summary()},
                        {"rotated", rt.rotated},
                        {"rotate_seed", rt.cfg.rotate_seed},
                        {"asym_decisions", rt.asym},
                        {"quantized_linears", nlohmann::json::object()},
                        {"report", q.report}};
    for (auto& [name, w] : q.weights)
      j["quantized_linears"][name] = {{"bits", w.bits}, {"sym", w.sym}, {"groupsize", w.groupsize}};
    write_file_atomic((tmp / kQuantFile).string(), j.dump(2) + "\n");
    // Swap in: an older checkpoint at `out` is replaced only after the new one is complete.
    if (fs::exists(out)) fs::remove_all(out);
    fs::rename(tmp, out);
  } catch (...) {
    std::error_code ec;
    fs::remove_all(tmp, ec);
    throw;
  }
}

LlamaModel load_model(const std::string& dir) {
  if (!is_quantized_checkpoint(dir)) return LlamaModel::load(dir);
  const std::string qpath = (fs::path(dir) / kQuantFile).string();
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(read_text_file(qpath));
  } catch (const nlohmann::json::exception& e) {
    throw FormatError(fmt::format("{}: invalid JSON ({})", qpath, e.what()));
  }
  LOWBIT_CHECK(j.value("format", "") == "lowbit-fakequant" && j.value("format_version", 0) == 1, FormatError,
               "{}: not a lowbit-fakequant v1 checkpoint", qpath);
  auto rt = std::make_shared<QuantRuntime>();
  try {
    rt->cfg = QuantConfig::from_json(j.at("quant_config"));
    rt->rotated = j.at("rotated").get<bool>();
    rt->asym = j.at("asym_decisions").get<std::map<std::string, bool>>();
  } catch (const nlohmann::json::exception& e) {
    throw FormatError(fmt::format("{}: {}", qpath, e.what()));
  }
  std::map<std::string, std::pair<int, bool>> qlin;
  for (auto& [name, v] : j.at("quantized_linears").items()) qlin[name] = {v.at("bits").get<int>(), v.at("sym").get<bool>()};
  LlamaConfig cfg = LlamaConfig::load(dir);
  WeightStore st = WeightStore::open_dir(dir);
  LlamaModel::TensorSource get = [&](const std::string& tname) -> Tensor {
    if (st.has(tname)) return st.get(tname);
    const std::string suffix = ".weight";
    if (tname.size() > suffix.size() && tname.ends_with(suffix)) {
      std::string lin = tname.substr(0, tname.size() - suffix.size());
      if (auto it = qlin.find(lin); it != qlin.end()) return dequantize_stored(st, lin, it->second.first, it->second.second);
    }
    return Tensor();
  };
  LlamaModel m = LlamaModel::from_source(cfg, get, dir, dir);
  if (rt->rotated) {
    rt->rot = make_online_rotations(cfg, rt->cfg.rotate_seed);
    // The fused norms are stored as ones; drop them so the forward is scale-free as when quantized.
    for (auto& L : m.layers) {
      L.attn_norm = Tensor();
      L.mlp_norm = Tensor();
    }
    m.final_norm = Tensor();
  }
  install_runtime(m, rt);
  log_info(fmt::format("loaded quantized checkpoint {} ({})", dir, rt->cfg.summary()));
  return m;
}

}  // namespace lowbit
