// libFuzzer target: tokenizer.json text through parse_tokenizer_json (what
// load_tokenizer_json runs on the file's contents), then a short encode/decode with
// whatever normalizers, pre-tokenizers, added tokens and decoders the input set up.
// Malformed input must end in a lowbit::Error — never another exception, a crash, a
// hang, a huge allocation or a sanitizer report (ASan/UBSan on).
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "core/error.h"
#include "core/progress.h"
#include "io/tokenizer.h"

// core/progress.cpp is not linked: its log_warn would print a line per input that has
// an NFC normalizer and flood the fuzzer's output. Messages are dropped here.
namespace lowbit {
void log_warn(const std::string&) {}
void log_info(const std::string&) {}
}  // namespace lowbit

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  try {
    auto tok = lowbit::parse_tokenizer_json(text, "fuzz/tokenizer.json");
    const int32_t n = tok->vocab_size();
    // Mixed text: words, digits, contractions, runs of spaces and newlines, a special
    // token spelled out, non-ASCII letters and a stray invalid UTF-8 byte.
    static const std::string_view kSample =
        "Hello world! It's 2026, the  year\n\n of <s> t\xc3\xa9st \xe2\x96\x81x \xf0\x9f\x98\x80 \xff end  ";
    std::vector<int32_t> ids = tok->encode(kSample);
    for (int32_t id : ids)
      if (id < 0 || id >= n) __builtin_trap();  // encode must only produce ids it can decode
    (void)tok->decode(ids);
    std::vector<int32_t> all;
    for (int32_t id = 0; id < n && id < 512; ++id) all.push_back(id);
    (void)tok->decode(all);
    for (int32_t id = 0; id < n && id < 64; ++id) (void)tok->token_to_id(tok->id_to_token(id));
  } catch (const lowbit::Error&) {
  }
  return 0;
}
