#include "models/synth.h"

#include <cmath>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/files.h"
#include "io/safetensors.h"

namespace lowbit {

LlamaConfig write_synthetic_model(const std::string& dir, const SynthSpec& sp) {
  LOWBIT_CHECK(sp.hidden % sp.heads == 0 && sp.heads % sp.kv_heads == 0 && (sp.hidden / sp.heads) % 2 == 0, ArgError,
               "synthetic model: hidden {} / heads {} / kv heads {} do not fit", sp.hidden, sp.heads, sp.kv_heads);
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
  randn("model.embed_tokens.weight", {c.vocab_size, d}, 1.0f);
  for (int64_t l = 0; l < sp.layers; ++l) {
    std::string p = "model.layers." + std::to_string(l) + ".";
    ones(p + "input_layernorm.weight", d);
    ones(p + "post_attention_layernorm.weight", d);
    randn(p + "self_attn.q_proj.weight", {qd, d}, sp.init_std);
    randn(p + "self_attn.k_proj.weight", {kvd, d}, sp.init_std);
    randn(p + "self_attn.v_proj.weight", {kvd, d}, sp.init_std);
    randn(p + "self_attn.o_proj.weight", {d, qd}, sp.init_std);
    randn(p + "mlp.gate_proj.weight", {f, d}, sp.init_std);
    randn(p + "mlp.up_proj.weight", {f, d}, sp.init_std);
    randn(p + "mlp.down_proj.weight", {d, f}, sp.init_std);
  }
  ones("model.norm.weight", d);
  randn("lm_head.weight", {c.vocab_size, d}, sp.init_std);
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
