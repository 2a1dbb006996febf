#include "models/synth.h"

#include "models/llama_names.h"

#include <cmath>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/files.h"
#include "io/safetensors.h"

namespace lowbit {

LlamaConfig write_synthetic_model(const std::string& dir, const SynthSpec& sp) {
  // Checked before anything is written: lowbit must be able to load what it writes.
  LOWBIT_CHECK(sp.hidden >= 2 && sp.hidden <= (1 << 16), ArgError, "--hidden {} must be in [2, 65536]", sp.hidden);
  LOWBIT_CHECK(sp.ffn >= 1 && sp.ffn <= (1 << 18), ArgError, "--ffn {} must be in [1, 262144]", sp.ffn);
  LOWBIT_CHECK(sp.layers >= 1 && sp.layers <= 1024, ArgError, "--layers {} must be in [1, 1024]", sp.layers);
  LOWBIT_CHECK(sp.heads >= 1 && sp.hidden % sp.heads == 0 && (sp.hidden / sp.heads) % 2 == 0, ArgError,
               "--heads {} must divide --hidden {} into heads of even size", sp.heads, sp.hidden);
  LOWBIT_CHECK(sp.kv_heads >= 1 && sp.heads % sp.kv_heads == 0, ArgError, "--kv-heads {} must divide --heads {}",
               sp.kv_heads, sp.heads);
  LOWBIT_CHECK(sp.context >= 2 && sp.context <= (1 << 24), ArgError, "--context {} must be in [2, 16777216]",
               sp.context);
  std::filesystem::create_directories(dir);
  LlamaConfig c;
  c.architecture = "LlamaForCausalLM";
  c.model_type = "llama";
  c.hidden_size = sp.hidden;
  c.intermediate_size = sp.ffn;
  c.num_layers = sp.layers;
  c.num_heads = sp.heads;
  c.num_kv_heads = sp.kv_heads;
  c.head_dim = sp.hidden / sp.heads;
  c.vocab_size = 259;
  c.max_position = sp.context;
  c.rms_eps = 1e-5;
  c.bos_token_id = 1;
  c.eos_token_id = 2;
  c.torch_dtype = sp.dtype == DType::BF16 ? "bfloat16" : sp.dtype == DType::F16 ? "float16" : "float32";

  NormalRng rng(sp.seed);
  std::vector<std::pair<std::string, Tensor>> ts;
  auto randn = [&](const std::string& name, Shape shape, float stdv) {
    Tensor t = Tensor::empty(shape, DType::F32);
    float* p = t.f32();
    for (int64_t i = 0; i < t.numel(); ++i) p[i] = float(rng.normal()) * stdv;
    ts.push_back({name, t.to(sp.dtype)});
  };
  auto ones = [&](const std::string& name, int64_t n) {
    Tensor t = Tensor::empty({n}, DType::F32);
    for (int64_t i = 0; i < n; ++i) t.f32()[i] = 1.0f;
    ts.push_back({name, t.to(sp.dtype)});
  };
  const int64_t d = sp.hidden, f = sp.ffn, qd = sp.heads * c.head_dim, kvd = sp.kv_heads * c.head_dim;
  using llama_names::Role;
  auto W = [](int64_t l, Role r) { return llama_names::module(l, r) + ".weight"; };
  randn(llama_names::kEmbed, {c.vocab_size, d}, 1.0f);  // the draw order fixes every model's weights
  for (int64_t l = 0; l < sp.layers; ++l) {
    ones(W(l, Role::attn_norm), d);
    ones(W(l, Role::mlp_norm), d);
    randn(W(l, Role::q_proj), {qd, d}, sp.init_std);
    randn(W(l, Role::k_proj), {kvd, d}, sp.init_std);
    randn(W(l, Role::v_proj), {kvd, d}, sp.init_std);
    randn(W(l, Role::o_proj), {d, qd}, sp.init_std);
    randn(W(l, Role::gate_proj), {f, d}, sp.init_std);
    randn(W(l, Role::up_proj), {f, d}, sp.init_std);
    randn(W(l, Role::down_proj), {d, f}, sp.init_std);
  }
  ones(llama_names::kFinalNorm, d);
  randn(std::string(llama_names::kLmHead) + ".weight", {c.vocab_size, d}, sp.init_std);
  save_safetensors(dir + "/model.safetensors", ts, {{"format", "pt"}, {"lowbit", "synthetic random weights"}});
  write_file_atomic(dir + "/config.json", c.to_json().dump(2) + "\n");

  using json = nlohmann::json;
  json vocab = json::object();
  vocab["<unk>"] = 0;
  vocab["<s>"] = 1;
  vocab["</s>"] = 2;
  for (int b = 0; b < 256; ++b) vocab[fmt::format("<0x{:02X}>", b)] = 3 + b;
  auto special = [](int id, const char* s) {
    return json{{"id", id}, {"content", s}, {"single_word", false}, {"lstrip", false}, {"rstrip", false},
                {"normalized", false}, {"special", true}};
  };
  json tj = {
      {"version", "1.0"},
      {"added_tokens", {special(0, "<unk>"), special(1, "<s>"), special(2, "</s>")}},
      {"normalizer", {{"type", "Sequence"},
                      {"normalizers", {{{"type", "Prepend"}, {"prepend", "\u2581"}},
                                       {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", "\u2581"}}}}}},
      {"pre_tokenizer", nullptr},
      {"post_processor", nullptr},
      {"decoder", {{"type", "Sequence"},
                   {"decoders", {{{"type", "Replace"}, {"pattern", {{"String", "\u2581"}}}, {"content", " "}},
                                 {{"type", "ByteFallback"}},
                                 {{"type", "Fuse"}},
                                 {{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}}}}}},
      {"model", {{"type", "BPE"}, {"dropout", nullptr}, {"unk_token", "<unk>"}, {"continuing_subword_prefix", nullptr},
                 {"end_of_word_suffix", nullptr}, {"fuse_unk", true}, {"byte_fallback", true},
                 {"ignore_merges", false}, {"vocab", vocab}, {"merges", json::array()}}}};
  write_file_atomic(dir + "/tokenizer.json", tj.dump(2) + "\n");
  write_file_atomic(dir + "/tokenizer_config.json",
                    json{{"bos_token", "<s>"}, {"eos_token", "</s>"}, {"unk_token", "<unk>"}, {"add_bos_token", true}}
                            .dump(2) + "\n");
  return c;
}

std::string synthetic_text(int64_t bytes, uint64_t seed) {
  static const char* words[] = {"the", "a", "cat", "dog", "ran", "saw", "big", "little", "happy", "park",
                                "ball", "friend", "played", "with", "and", "was", "very", "sun", "tree", "home"};
  NormalRng rng(seed);
  std::string s;
  while (int64_t(s.size()) < bytes) {
    int n = 4 + int(rng.next_u64() % 8);
    for (int i = 0; i < n; ++i) {
      std::string w = words[rng.next_u64() % 20];
      if (i == 0) w[0] = char(std::toupper(w[0]));
      s += w;
      s += i + 1 < n ? " " : ". ";
    }
    if (rng.next_u64() % 5 == 0) s += "\n\n";
  }
  return s;
}

}  // namespace lowbit
