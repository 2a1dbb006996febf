#include "quant/checkpoint.h"
#include "quant/checkpoint_meta.h"
#include "io/json_util.h"

#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <unistd.h>

#include <cerrno>

#include <filesystem>

#include "core/error.h"
#include "core/fault.h"
#include "core/progress.h"
#include "io/files.h"
#include "io/safetensors.h"
#include "quant/rotation.h"
#include "quant/runtime.h"
#include "models/llama_names.h"

#include <cstring>
#include <set>

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

void add_packed(std::vector<std::pair<std::string, Tensor>>& ts, const std::string& name, const PackedWeight& p) {
  ts.push_back({name + ".qweight", p.qweight});
  ts.push_back({name + ".scales", p.scales});
  ts.push_back({name + ".qzeros", p.qzeros});
  ts.push_back({name + ".g_idx", p.g_idx});
}

// Every file lowbit writes into a checkpoint directory (nothing else is ever deleted).
const char* const kOwnedFiles[] = {"model.safetensors",     "config.json",           "lowbit_quant.json",
                                   "tokenizer.json",        "tokenizer.model",       "tokenizer_config.json",
                                   "special_tokens_map.json", "generation_config.json",
                                   // vision-language checkpoints (quant/vlm_quant.h)
                                   "processor_config.json", "preprocessor_config.json", "chat_template.jinja",
                                   "chat_template.json", "added_tokens.json"};
bool owned(const std::string& name) {
  for (const char* f : kOwnedFiles)
    if (name == f) return true;
  return false;
}
// ... and the temporary files of its atomic writes ("config.json.tmp.<pid>").
bool owned_or_temp(const std::string& name) {
  for (const char* f : kOwnedFiles)
    if (name == f || name.rfind(std::string(f) + ".tmp.", 0) == 0) return true;
  return false;
}

// Removes what lowbit wrote in `dir`, then `dir` itself if that left it empty.
void remove_owned(const fs::path& dir) {
  std::error_code ec;
  if (!fs::exists(dir, ec)) return;
  std::vector<fs::path> ours;
  for (const auto& e : fs::directory_iterator(dir, ec))
    if (e.is_regular_file(ec) && owned_or_temp(e.path().filename().string())) ours.push_back(e.path());
  for (const auto& p : ours) fs::remove(p, ec);
  if (!fs::remove(dir, ec))
    log_warn(fmt::format("left {} in place: it holds files lowbit did not write", dir.string()));
}

// Temporary directories `<out>.tmp.<pid>` of lowbit processes that died (SIGKILL, power loss).
void clean_stale_temps(const fs::path& out) {
  const fs::path parent = out.has_parent_path() ? out.parent_path() : fs::path(".");
  const std::string prefix = out.filename().string() + ".tmp.";
  std::error_code ec;
  if (!fs::is_directory(parent, ec)) return;
  for (const auto& e : fs::directory_iterator(parent, ec)) {
    const std::string name = e.path().filename().string();
    if (name.rfind(prefix, 0) != 0 || !e.is_directory(ec)) continue;
    const std::string pid = name.substr(prefix.size());
    if (pid.empty() || pid.size() > 9 || pid.find_first_not_of("0123456789") != std::string::npos) continue;
    if (kill(pid_t(std::stol(pid)), 0) == 0 || errno != ESRCH) continue;  // alive (or not ours to judge)
    log_info(fmt::format("removing {} (left by a lowbit process that no longer runs)", e.path().string()));
    remove_owned(e.path());
  }
}

}  // namespace

void check_output_dir(const std::string& out_dir) {
  LOWBIT_CHECK(!out_dir.empty(), ArgError, "--out is empty");
  const fs::path out(out_dir);
  std::error_code ec;
  if (!fs::exists(out, ec)) return;
  LOWBIT_CHECK(fs::is_directory(out, ec), ArgError, "--out {} exists and is not a directory", out_dir);
  if (fs::is_empty(out, ec)) return;
  // A non-empty --out is replaced only if it is a lowbit checkpoint holding nothing else.
  bool ours = false;
  try {
    const nlohmann::json j = parse_json(read_text_file((out / kQuantFile).string()), out_dir);
    ours = j.is_object() && j.value("format", "") == "lowbit-fakequant";
  } catch (const std::exception&) {
  }
  LOWBIT_CHECK(ours, ArgError,
               "--out {} is a non-empty directory that is not a lowbit checkpoint; refusing to write there", out_dir);
  std::vector<std::string> foreign;
  for (const auto& e : fs::directory_iterator(out, ec))
    if (!e.is_regular_file(ec) || !owned(e.path().filename().string()))
      foreign.push_back(e.path().filename().string() + (e.is_directory(ec) ? "/" : ""));
  LOWBIT_CHECK(foreign.empty(), ArgError, "--out {} holds files lowbit did not write ({}{}); refusing to replace it",
               out_dir, foreign.empty() ? "" : foreign.front(),
               foreign.size() > 1 ? fmt::format(" and {} more", foreign.size() - 1) : "");
}

bool is_quantized_checkpoint(const std::string& dir) { return fs::exists(fs::path(dir) / kQuantFile); }

void copy_model_files(const std::string& src_dir, const fs::path& dst, const std::vector<std::string>& names) {
  for (const std::string& f : names)
    if (fs::exists(fs::path(src_dir) / f)) {
      fs::copy_file(fs::path(src_dir) / f, dst / f);
      fs::permissions(dst / f, fs::perms::owner_read | fs::perms::owner_write | fs::perms::group_read |
                                   fs::perms::others_read);
    }
}

const std::vector<std::string>& tokenizer_file_names() {
  static const std::vector<std::string> k = {"tokenizer.json", "tokenizer.model", "tokenizer_config.json",
                                             "special_tokens_map.json", "generation_config.json"};
  return k;
}

nlohmann::json quant_meta_common(const QuantRuntime& rt, const std::string& src_dir, const nlohmann::json& qlin,
                                 const nlohmann::json& report) {
  return {{"format", "lowbit-fakequant"},
          {"format_version", 1},
          {"source_model", src_dir},
          {"quant_config", rt.cfg.to_json()},
          {"summary", rt.cfg.summary()},
          {"rotated", rt.rotated},
          {"rotate_seed", rt.cfg.rotate_seed},
          {"asym_decisions", rt.asym},
          {"quantized_linears", qlin},
          {"report", report}};
}

void save_quantized(const LlamaModel& m, const QuantizedModel& q, const std::string& src_dir,
                    const std::string& out_dir) {
  using llama_names::Role;
  const QuantRuntime& rt = *q.runtime;
  write_checkpoint_atomically(out_dir, [&](const fs::path& tmp) {
    std::vector<std::pair<std::string, Tensor>> ts;
    nlohmann::json qlin = nlohmann::json::object();
    auto plain = [&](const std::string& name, const Tensor& t) { ts.push_back({name, t}); };
    auto ones = [&](int64_t d) { return Tensor::from_vector(std::vector<float>(static_cast<size_t>(d), 1.0f), {d}); };
    auto linear = [&](const Linear& lin) {
      if (lin.quantized()) {
        add_packed(ts, lin.name, *lin.qw);
        qlin[lin.name] = {{"bits", lin.qw->bits}, {"sym", lin.qw->sym}, {"groupsize", lin.qw->groupsize}};
      } else {
        plain(lin.name + ".weight", lin.W);
      }
      if (lin.bias.defined()) plain(lin.name + ".bias", lin.bias);
    };
    const int64_t d = m.cfg.hidden_size;
    plain(llama_names::kEmbed, m.embed);
    for (const LlamaLayer& L : m.layers) {
      // Norm weights folded into the linears by the rotation are stored as ones (x·1 = x exactly).
      plain(llama_names::module(L.index, Role::attn_norm) + ".weight", L.attn_norm.defined() ? L.attn_norm : ones(d));
      plain(llama_names::module(L.index, Role::mlp_norm) + ".weight", L.mlp_norm.defined() ? L.mlp_norm : ones(d));
      for (const Linear* lin : L.linears()) linear(*lin);
    }
    plain(llama_names::kFinalNorm, m.final_norm.defined() ? m.final_norm : ones(d));
    const bool tied = !m.lm_head.quantized() && m.lm_head.W.raw() == m.embed.raw();
    if (!tied) linear(m.lm_head);
    save_safetensors((tmp / "model.safetensors").string(), ts, {{"format", "pt"}, {"lowbit", "fakequant-v1"}});
    fault_point("write");

    LlamaConfig cfg = m.cfg;
    cfg.tie_word_embeddings = tied;
    write_file_atomic((tmp / "config.json").string(), cfg.to_json().dump(2) + "\n");
    copy_model_files(src_dir, tmp, tokenizer_file_names());
    write_file_atomic((tmp / kQuantFile).string(), quant_meta_common(rt, src_dir, qlin, q.report).dump(2) + "\n");
  });
}

void write_checkpoint_atomically(const std::string& out_dir, const std::function<void(const fs::path& tmp)>& fill) {
  check_output_dir(out_dir);
  const fs::path out(out_dir);
  clean_stale_temps(out);
  const fs::path tmp = out.string() + ".tmp." + std::to_string(getpid());
  remove_owned(tmp);
  fs::create_directories(tmp);
  try {
    fill(tmp);
    // Swap in: the complete new checkpoint and the old one trade places in one atomic
    // step (renameat2 RENAME_EXCHANGE), so --out always holds a complete checkpoint;
    // then only the files lowbit wrote are removed from the old one.
    check_output_dir(out_dir);  // nothing foreign appeared while we computed
    fault_point("swap");
    if (fs::exists(out)) {
      if (renameat2(AT_FDCWD, tmp.c_str(), AT_FDCWD, out.c_str(), RENAME_EXCHANGE) != 0)
        throw IoError(fmt::format("--out {}: cannot swap in the new checkpoint: {}", out_dir, std::strerror(errno)));
      fault_point("swapped");  // new checkpoint in place, old one not yet removed
      remove_owned(tmp);
    } else {
      fs::rename(tmp, out);
    }
  } catch (...) {
    remove_owned(tmp);
    throw;
  }
}

LlamaModel load_quantized(const std::string& dir) {
  const std::string qpath = (fs::path(dir) / kQuantFile).string();
  QuantCheckpointMeta meta = parse_quant_meta(read_text_file(qpath), qpath);
  QuantRuntime rt;
  rt.cfg = meta.cfg;
  rt.rotated = meta.rotated;
  rt.asym = meta.asym;
  const std::map<std::string, std::pair<int, bool>>& qlin = meta.qlin;
  LlamaConfig cfg = LlamaConfig::load(dir);
  WeightStore st = WeightStore::open_dir(dir);
  LlamaModel::TensorSource get = [&](const std::string& name) { return st.has(name) ? st.get(name) : Tensor(); };
  std::set<std::string> used;
  LlamaModel::PackedSource get_packed = [&](const std::string& lin, int64_t out,
                                            int64_t in) -> std::shared_ptr<const PackedWeight> {
    auto it = qlin.find(lin);
    const bool stored = st.has(lin + ".qweight");
    if (it == qlin.end()) {
      LOWBIT_CHECK(!stored, FormatError, "{}: '{}.qweight' is stored but {} does not list '{}' as quantized",
                   st.source(), lin, qpath, lin);
      return nullptr;
    }
    for (const char* part : {".qweight", ".scales", ".qzeros", ".g_idx"})
      LOWBIT_CHECK(st.has(lin + part), FormatError, "{}: missing tensor '{}{}' of quantized linear '{}'", st.source(),
                   lin, part, lin);
    auto p = std::make_shared<PackedWeight>();
    p->bits = it->second.first;
    p->sym = it->second.second;
    p->out = out;
    p->in = in;
    p->qweight = st.get(lin + ".qweight");
    p->scales = st.get(lin + ".scales");
    p->qzeros = st.get(lin + ".qzeros");
    p->g_idx = st.get(lin + ".g_idx");
    p->ngroups = p->scales.dim() == 2 ? p->scales.size(1) : 0;
    p->validate(st.source() + ": " + lin);
    used.insert(lin);
    return p;
  };
  LlamaModel m = LlamaModel::from_source(cfg, get, get_packed, dir, dir);
  for (auto& [name, v] : qlin)
    LOWBIT_CHECK(used.count(name), FormatError, "{}: lists '{}' as quantized, but the model has no such linear", qpath,
                 name);
  if (rt.rotated) {
    rt.rot = make_online_rotations(cfg, rt.cfg.rotate_seed);
    // The fused norms are stored as ones; drop them so the forward is scale-free as when quantized.
    for (auto& L : m.layers) {
      L.attn_norm = Tensor();
      L.mlp_norm = Tensor();
    }
    m.final_norm = Tensor();
  }
  install_runtime(m, rt);
  log_info(fmt::format("loaded quantized checkpoint {} ({})", dir, rt.cfg.summary()));
  return m;
}

}  // namespace lowbit
