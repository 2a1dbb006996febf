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

 protected:
  int32_t bos_id_ = -1, eos_id_ = -1;
  bool add_bos_ = true;
};

std::unique_ptr<Tokenizer> load_tokenizer_json(const std::string& path);
std::unique_ptr<Tokenizer> load_sentencepiece_model(const std::string& path);

// Loads a model directory's tokenizer. prefer: "auto" (tokenizer.model when
// present, it is canonical for SentencePiece models; else tokenizer.json),
// "json" or "spm". BOS/EOS come from tokenizer_config.json (bos_token /
// eos_token / add_bos_token), falling back to config.json's bos/eos_token_id.
std::unique_ptr<Tokenizer> load_tokenizer(const std::string& model_dir, const std::string& prefer = "auto");

}  // namespace lowbit
