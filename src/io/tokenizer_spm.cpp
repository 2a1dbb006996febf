// tokenizer.model through libsentencepiece: the canonical tokenizer of
// SentencePiece models (its normalisation and score-based merging are exactly
// what the model was trained with, which a tokenizer.json mirror only approximates).
#include <sentencepiece_processor.h>

#include <filesystem>

#include "core/error.h"
#include "io/tokenizer.h"

namespace lowbit {
namespace {

class SentencePieceTokenizer : public Tokenizer {
 public:
  explicit SentencePieceTokenizer(const std::string& path) : path_(path) {
    LOWBIT_CHECK(std::filesystem::is_regular_file(path), IoError, "cannot open {}: no such file or not a regular file", path);
    auto st = sp_.Load(path);
    LOWBIT_CHECK(st.ok(), FormatError, "{}: not a SentencePiece model: {}", path, st.ToString());
    // Ids that SentencePiece reports as absent are -1 already.
    set_special(sp_.bos_id(), sp_.eos_id(), sp_.bos_id() >= 0);
  }

  std::vector<int32_t> encode(std::string_view text) const override {
    std::vector<int> ids;
    auto st = sp_.Encode(text, &ids);
    LOWBIT_CHECK(st.ok(), Error, "{}: sentencepiece encode failed: {}", path_, st.ToString());
    return {ids.begin(), ids.end()};
  }

  std::string decode(const std::vector<int32_t>& ids) const override {
    // SentencePiece drops control pieces (<s>, </s>) itself; check the range so a
    // bad id is an error naming it rather than a status string.
    for (int32_t id : ids)
      LOWBIT_CHECK(id >= 0 && id < vocab_size(), ArgError, "token id {} out of range [0, {}) for {}", id,
                   vocab_size(), path_);
    std::string s;
    auto st = sp_.Decode(std::vector<int>(ids.begin(), ids.end()), &s);
    LOWBIT_CHECK(st.ok(), Error, "{}: sentencepiece decode failed: {}", path_, st.ToString());
    return s;
  }

  int32_t vocab_size() const override { return sp_.GetPieceSize(); }
  std::string kind() const override { return "sentencepiece"; }
  int32_t token_to_id(std::string_view token) const override {
    // PieceToId answers unk_id for unknown pieces; only the unk piece itself may map there.
    int id = sp_.PieceToId(token);
    return id == sp_.unk_id() && sp_.IdToPiece(id) != token ? -1 : id;
  }
  std::string id_to_token(int32_t id) const override {
    return id >= 0 && id < vocab_size() ? sp_.IdToPiece(id) : std::string();
  }

 private:
  std::string path_;
  sentencepiece::SentencePieceProcessor sp_;
};

}  // namespace

std::unique_ptr<Tokenizer> load_sentencepiece_model(const std::string& path) {
  return std::make_unique<SentencePieceTokenizer>(path);
}

}  // namespace lowbit
