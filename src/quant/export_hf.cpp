#include "quant/export_hf.h"

#include <unistd.h>

#include <filesystem>

#include "core/error.h"
#include "core/fault.h"
#include "io/files.h"
#include "io/safetensors.h"
#include "models/llama_names.h"
#include "quant/checkpoint.h"

namespace lowbit {

namespace fs = std::filesystem;

std::vector<std::string> export_blockers(const LlamaModel& m) {
  // kind -> (first module, count)
  struct Seen {
    std::string what, first;
    int64_t n = 0;
  };
  std::vector<Seen> seen = {{"online Hadamard on the input of", "", 0},
                            {"activation quantizer on the input of", "", 0},
                            {"online Q/K Hadamard (R3) in", "", 0},
                            {"K/V-cache quantizer in", "", 0}};
  auto hit = [&](size_t k, const std::string& name) {
    if (seen[k].n++ == 0) seen[k].first = name;
  };
  std::vector<const Linear*> lins;
  for (const LlamaLayer& L : m.layers) {
    for (const Linear* l : L.linears()) lins.push_back(l);
    const std::string attn = llama_names::module(L.index, llama_names::Role::q_proj);
    const std::string self_attn = attn.substr(0, attn.rfind('.'));  // model.layers.N.self_attn
    if (L.qk_rot) hit(2, self_attn);
    if (L.k_quant.on() || L.v_quant.on()) hit(3, self_attn);
  }
  lins.push_back(&m.lm_head);
  for (const Linear* l : lins) {
    if (l->rot) hit(0, l->name);
    if (l->aq.on()) hit(1, l->name);
  }
  std::vector<std::string> out;
  for (const auto& s : seen)
    if (s.n > 0)
      out.push_back(fmt::format("{} {}{}", s.what, s.first,
                                s.n > 1 ? fmt::format(" (and {} more)", s.n - 1) : std::string()));
  return out;
}

void export_hf_dequantized(const LlamaModel& m, const std::string& src_dir, const std::string& out_dir) {
  const std::vector<std::string> blockers = export_blockers(m);
  if (!blockers.empty()) {
    std::string list;
    for (const auto& b : blockers) list += (list.empty() ? "" : "; ") + b;
    throw ArgError(fmt::format(
        "--format hf-dequantized cannot export this model: a plain HF checkpoint holds weights only, and these run "
        "online at inference: {}. Export weight-only quantization (no --a_bits/--k_bits/--v_bits, no online "
        "rotation)",
        list));
  }
  LOWBIT_CHECK(!out_dir.empty(), ArgError, "--out is empty");
  const fs::path out(out_dir);
  std::error_code ec;
  if (fs::exists(out, ec)) {
    LOWBIT_CHECK(fs::is_directory(out, ec) && fs::is_empty(out, ec), ArgError,
                 "--out {} exists and is not an empty directory; refusing to write there", out_dir);
  }
  const fs::path tmp = out.string() + ".tmp." + std::to_string(getpid());
  fs::remove_all(tmp, ec);
  fs::create_directories(tmp);
  try {
    using llama_names::Role;
    const int64_t d = m.cfg.hidden_size;
    std::vector<std::pair<std::string, Tensor>> ts;
    auto f32 = [](const Tensor& t) { return t.dtype() == DType::F32 ? t : t.to(DType::F32); };
    auto ones = [&](int64_t n) { return Tensor::from_vector(std::vector<float>(static_cast<size_t>(n), 1.0f), {n}); };
    auto linear = [&](const Linear& lin) {
      ts.push_back({lin.name + ".weight", lin.weight_f32()});  // Ŵ: dequantized codes, or the weight
      if (lin.bias.defined()) ts.push_back({lin.name + ".bias", f32(lin.bias)});
    };
    ts.push_back({llama_names::kEmbed, f32(m.embed)});
    for (const LlamaLayer& L : m.layers) {
      ts.push_back({llama_names::module(L.index, Role::attn_norm) + ".weight",
                    L.attn_norm.defined() ? f32(L.attn_norm) : ones(d)});
      ts.push_back({llama_names::module(L.index, Role::mlp_norm) + ".weight",
                    L.mlp_norm.defined() ? f32(L.mlp_norm) : ones(d)});
      for (const Linear* lin : L.linears()) linear(*lin);
    }
    ts.push_back({llama_names::kFinalNorm, m.final_norm.defined() ? f32(m.final_norm) : ones(d)});
    const bool tied = !m.lm_head.quantized() && m.lm_head.W.defined() && m.lm_head.W.raw() == m.embed.raw();
    if (!tied) linear(m.lm_head);
    save_safetensors((tmp / "model.safetensors").string(), ts,
                     {{"format", "pt"}, {"lowbit", "hf-dequantized"}});
    fault_point("write");
    LlamaConfig cfg = m.cfg;
    cfg.tie_word_embeddings = tied;
    // f32 weights: dtype float32 (transformers then computes RoPE frequencies in f32; a
    // 16-bit source's in-memory model rounds them to its dtype — see README).
    cfg.torch_dtype = "float32";
    write_file_atomic((tmp / "config.json").string(), cfg.to_json().dump(2) + "\n");
    copy_model_files(src_dir, tmp, tokenizer_file_names());
    if (fs::exists(out, ec)) fs::remove(out);  // the empty directory checked above
    fs::rename(tmp, out);
  } catch (...) {
    fs::remove_all(tmp, ec);
    throw;
  }
}

}  // namespace lowbit
