// load_tokenizer: picks the tokenizer file of a model directory and settles
// BOS/EOS from the configs around it.
#include "io/tokenizer.h"
#include "io/json_util.h"

#include <filesystem>
#include <optional>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/progress.h"
#include "io/files.h"

namespace lowbit {
namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;

// A config file as JSON, or null when absent (configs are optional here).
json read_optional_json(const std::string& path) {
  if (!fs::exists(path)) return nullptr;
  std::string text = read_text_file(path);
  return parse_json(text, path);
}

// tokenizer_config.json spells special tokens as "<s>" or {"content": "<s>", ...}.
std::string token_name(const json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v["content"].is_string()) return v["content"].get<std::string>();
  return {};
}

// config.json's *_token_id: an int, or a list (several EOS ids; the first is the primary).
int32_t token_id(const json& v) {
  if (v.is_number_integer()) return v.get<int32_t>();
  if (v.is_array() && !v.empty() && v[0].is_number_integer()) return v[0].get<int32_t>();
  return -1;
}

}  // namespace

std::unique_ptr<Tokenizer> load_tokenizer(const std::string& model_dir, const std::string& prefer) {
  LOWBIT_CHECK(prefer == "auto" || prefer == "json" || prefer == "spm", ArgError,
               "unknown tokenizer kind '{}' (expected auto, json or spm)", prefer);
  const std::string spm_path = model_dir + "/tokenizer.model", json_path = model_dir + "/tokenizer.json";
  bool have_spm = fs::exists(spm_path), have_json = fs::exists(json_path);
  std::unique_ptr<Tokenizer> tok;
  if (prefer == "spm" || (prefer == "auto" && have_spm)) {
    LOWBIT_CHECK(have_spm, IoError, "no tokenizer.model in {}", model_dir);
    tok = load_sentencepiece_model(spm_path);
  } else {
    LOWBIT_CHECK(have_json, IoError, "no tokenizer.json{} in {}", prefer == "auto" ? " or tokenizer.model" : "",
                 model_dir);
    tok = load_tokenizer_json(json_path);
  }

  // Precedence: tokenizer_config.json's token names, then config.json's ids, then
  // what the tokenizer file itself says (SentencePiece's <s>/</s>, the post-processor).
  int32_t bos = tok->bos_id(), eos = tok->eos_id();
  const json cfg = read_optional_json(model_dir + "/config.json");
  if (cfg.is_object()) {
    if (int32_t id = token_id(cfg.value("bos_token_id", json())); id >= 0) bos = id;
    if (int32_t id = token_id(cfg.value("eos_token_id", json())); id >= 0) eos = id;
  }
  const std::string tc_path = model_dir + "/tokenizer_config.json";
  const json tc = read_optional_json(tc_path);
  std::optional<bool> add_bos;
  if (tc.is_object()) {
    auto lookup = [&](const char* key, int32_t& out) {
      std::string name = token_name(tc.value(key, json()));
      if (name.empty()) return;
      int32_t id = tok->token_to_id(name);
      if (id >= 0) out = id;
      else log_warn(fmt::format("{}: {} '{}' is not in the vocabulary; ignored", tc_path, key, name));
    };
    lookup("bos_token", bos);
    lookup("eos_token", eos);
    if (tc.contains("add_bos_token") && tc["add_bos_token"].is_boolean()) add_bos = tc["add_bos_token"].get<bool>();
  }
  for (int32_t* id : {&bos, &eos})
    if (*id >= tok->vocab_size()) {
      log_warn(fmt::format("{}: special token id {} is past the vocabulary ({}); ignored", model_dir, *id,
                           tok->vocab_size()));
      *id = -1;
    }
  // Without add_bos_token: SentencePiece models and post-processors that prepend
  // BOS say yes (tok->add_bos()), and so does any model that has a BOS at all —
  // the perplexity protocol prepends one regardless.
  bool want_bos = add_bos.value_or(tok->add_bos() || bos >= 0);
  tok->set_special(bos, eos, want_bos && bos >= 0);
  return tok;
}

}  // namespace lowbit
