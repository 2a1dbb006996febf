// Tokenizers: HF tokenizer.json (SentencePiece-style BPE with byte fallback,
// byte-level BPE with the GPT-2/LLaMA-3 regex pre-tokenizer, added/special
// tokens) implemented here, and tokenizer.model through libsentencepiece.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace lowbit {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  // Text -> ids, no BOS/EOS added.
  virtual std::vector<int32_t> encode(std::string_view text) const = 0;
  // Ids -> text; special tokens (BOS/EOS/...) are skipped.
  virtual std::string decode(const std::vector<int32_t>& ids) const = 0;
  virtual int32_t vocab_size() const = 0;
  virtual std::string kind() const = 0;  // "sentencepiece", "bpe-sp", "bpe-bytelevel"
  int32_t bos_id() const { return bos_id_; }  // -1 if none
  int32_t eos_id() const { return eos_id_; }
  bool add_bos() const { return add_bos_; }   // whether encode-for-model prepends BOS
  void set_special(int32_t bos, int32_t eos, bool add_bos) { bos_id_ = bos; eos_id_ = eos; add_bos_ = add_bos; }
  // Vocabulary lookups (added/special tokens included); -1 / "" when unknown.
  // Defaults keep minimal implementations compiling.
  virtual int32_t token_to_id(std::string_view token) const { (void)token; return -1; }
  virtual std::string id_to_token(int32_t id) const { (void)id; return {}; }

 protected:
  int32_t bos_id_ = -1, eos_id_ = -1;
  bool add_bos_ = true;
};

// Single files. IoError when missing/unreadable, FormatError for malformed or
// unsupported contents (the message names the file and the offending part).
// BOS/EOS here come from the file alone (tokenizer.json: the post-processor's
// leading special token; tokenizer.model: its <s>/</s>); load_tokenizer refines them.
std::unique_ptr<Tokenizer> load_tokenizer_json(const std::string& path);
std::unique_ptr<Tokenizer> load_sentencepiece_model(const std::string& path);
// load_tokenizer_json on text already in memory; `path` only names it in errors.
std::unique_ptr<Tokenizer> parse_tokenizer_json(std::string_view text, const std::string& path);

// Loads a model directory's tokenizer. prefer: "auto" (tokenizer.model when
// present, it is canonical for SentencePiece models; else tokenizer.json),
// "json" or "spm". BOS/EOS come from tokenizer_config.json (bos_token /
// eos_token / add_bos_token), falling back to config.json's bos/eos_token_id.
// add_bos: tokenizer_config's add_bos_token when given, else whether a BOS exists.
std::unique_ptr<Tokenizer> load_tokenizer(const std::string& model_dir, const std::string& prefer = "auto");

// ---- pieces exposed for tests ------------------------------------------------
namespace unicode {
bool is_letter(uint32_t cp);      // \p{L} (general category L*), unicode_tables.cpp
bool is_number(uint32_t cp);      // \p{N} (general category N*), unicode_tables.cpp
bool is_whitespace(uint32_t cp);  // \s (Unicode White_Space)
}  // namespace unicode

// The pre-tokenizer regexes of byte-level BPE, hand-written (std::regex has no
// \p{L} and is slow). Returned pieces are views into `text` and cover it exactly.
//   llama3: (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|
//           \s*[\r\n]+|\s+(?!\S)|\s+
//   gpt2:   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
std::vector<std::string_view> pretokenize_llama3(std::string_view text);
std::vector<std::string_view> pretokenize_gpt2(std::string_view text);

}  // namespace lowbit
