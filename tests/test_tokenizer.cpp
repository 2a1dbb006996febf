// Tokenizers: every golden case of ../shared/golden/*_tokenizer_cases.json for
// each tokenizer that has golden ids (tokenizer.json and tokenizer.model), round
// trips, the pre-tokenizer regexes, load_tokenizer's BOS/EOS logic, error cases,
// and the token counts and speed of the perplexity corpora.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/files.h"
#include "io/tokenizer.h"
#include "testing.h"

using namespace lowbit;
using json = nlohmann::json;

namespace {

std::string preview(const std::string& s) {
  std::string p = s.substr(0, 60);
  for (char& c : p)
    if (c == '\n') c = '|';
  return "'" + p + (s.size() > 60 ? "...'" : "'");
}

// Encodes every case's text and requires exactly the golden ids under `key`.
void expect_cases(const Tokenizer& tok, const std::string& cases_path, const std::string& key) {
  json cases = json::parse(test::read_file(cases_path)).at("cases");
  ASSERT_GT(cases.size(), 0u);
  size_t checked = 0;
  for (size_t i = 0; i < cases.size(); ++i) {
    const json& c = cases[i];
    ASSERT_TRUE(c.contains(key)) << cases_path << " case " << i << " has no '" << key << "'";
    std::string text = c.at("text").get<std::string>();
    auto want = c.at(key).get<std::vector<int32_t>>();
    SCOPED_TRACE(cases_path + " case " + std::to_string(i) + " " + preview(text));
    EXPECT_EQ(tok.encode(text), want);
    ++checked;
  }
  EXPECT_EQ(checked, cases.size());
}

std::vector<std::string> case_texts(const std::string& cases_path) {
  std::vector<std::string> out;
  const json j = json::parse(test::read_file(cases_path));  // a named object: the loop must not outlive it
  for (const json& c : j.at("cases")) out.push_back(c.at("text"));
  return out;
}

// SentencePiece with remove_extra_whitespaces: leading/trailing spaces go and runs collapse.
std::string collapse_spaces(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == ' ' && (out.empty() || out.back() == ' ')) continue;
    out += c;
  }
  while (!out.empty() && out.back() == ' ') out.pop_back();
  return out;
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

std::string make_dir(const std::string& tag, const std::vector<std::pair<std::string, std::string>>& files) {
  std::string d = test::temp_dir(tag);
  for (const auto& [name, content] : files) test::write_file(d + "/" + name, content);
  return d;
}

// A small SentencePiece-style tokenizer.json: byte fallback over the 256 bytes
// plus a few letters and merges, in the layout of the LLaMA-2 file.
json tiny_sp_json() {
  json vocab = {{"<unk>", 0}, {"<s>", 1}, {"</s>", 2}};
  for (int b = 0; b < 256; ++b) vocab[fmt::format("<0x{:02X}>", b)] = 3 + b;
  int id = 259;
  for (const char* t : {"\u2581", "a", "b", "c", "ab", "\u2581ab", "abc"}) vocab[t] = id++;
  auto special = [](int i, const char* s) {
    return json{{"id", i}, {"content", s}, {"special", true}, {"normalized", false}, {"lstrip", false},
                {"rstrip", false}, {"single_word", false}};
  };
  return {{"version", "1.0"},
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
          {"model", {{"type", "BPE"}, {"unk_token", "<unk>"}, {"fuse_unk", true}, {"byte_fallback", true},
                     {"vocab", vocab}, {"merges", {"a b", json::array({"\u2581", "ab"}), "ab c"}}}}};
}

}  // namespace

// ---- golden ids -------------------------------------------------------------------

TEST(TokenizerGolden, Llama2TokenizerJson) {
  LOWBIT_REQUIRE_SHARED(path, "tokenizers/llama2/tokenizer.json");
  LOWBIT_REQUIRE_SHARED(cases, "golden/llama2_tokenizer_cases.json");
  auto tok = load_tokenizer_json(path);
  EXPECT_EQ(tok->kind(), "bpe-sp");
  EXPECT_EQ(tok->vocab_size(), 32000);
  expect_cases(*tok, cases, "ids");
}

TEST(TokenizerGolden, Llama2SentencePiece) {
  LOWBIT_REQUIRE_SHARED(path, "tokenizers/llama2/tokenizer.model");
  LOWBIT_REQUIRE_SHARED(cases, "golden/llama2_tokenizer_cases.json");
  auto tok = load_sentencepiece_model(path);
  EXPECT_EQ(tok->kind(), "sentencepiece");
  EXPECT_EQ(tok->vocab_size(), 32000);
  expect_cases(*tok, cases, "sentencepiece_ids");
}

TEST(TokenizerGolden, ByteLevel2kTokenizerJson) {
  LOWBIT_REQUIRE_SHARED(path, "tokenizers/bytelevel2k/tokenizer.json");
  LOWBIT_REQUIRE_SHARED(cases, "golden/bytelevel2k_tokenizer_cases.json");
  auto tok = load_tokenizer_json(path);
  EXPECT_EQ(tok->kind(), "bpe-bytelevel");
  EXPECT_EQ(tok->vocab_size(), 2048);
  expect_cases(*tok, cases, "ids");
}

TEST(TokenizerGolden, TinyLlama3TokenizerJson) {
  // The model's tokenizer is the bytelevel2k one; the same goldens apply.
  LOWBIT_REQUIRE_SHARED(path, "models/tiny-llama3/tokenizer.json");
  LOWBIT_REQUIRE_SHARED(cases, "golden/bytelevel2k_tokenizer_cases.json");
  LOWBIT_REQUIRE_SHARED(other, "tokenizers/bytelevel2k/tokenizer.json");
  if (test::read_file(path) != test::read_file(other)) GTEST_SKIP() << "tiny-llama3 has its own tokenizer now";
  expect_cases(*load_tokenizer_json(path), cases, "ids");
}

TEST(TokenizerGolden, Stories260KTokenizerJson) {
  LOWBIT_REQUIRE_SHARED(path, "models/stories260K/tokenizer.json");
  LOWBIT_REQUIRE_SHARED(cases, "golden/stories260K_tokenizer_cases.json");
  auto tok = load_tokenizer_json(path);
  EXPECT_EQ(tok->kind(), "bpe-sp");
  EXPECT_EQ(tok->vocab_size(), 512);
  expect_cases(*tok, cases, "ids");
}

TEST(TokenizerGolden, Stories260KSentencePiece) {
  LOWBIT_REQUIRE_SHARED(path, "models/stories260K/tokenizer.model");
  LOWBIT_REQUIRE_SHARED(cases, "golden/stories260K_tokenizer_cases.json");
  auto tok = load_sentencepiece_model(path);
  EXPECT_EQ(tok->vocab_size(), 512);
  expect_cases(*tok, cases, "sentencepiece_ids");
}

// ---- round trips --------------------------------------------------------------------

TEST(TokenizerRoundTrip, ByteLevelIsExact) {
  LOWBIT_REQUIRE_SHARED(path, "tokenizers/bytelevel2k/tokenizer.json");
  LOWBIT_REQUIRE_SHARED(cases, "golden/bytelevel2k_tokenizer_cases.json");
  auto tok = load_tokenizer_json(path);
  auto texts = case_texts(cases);
  texts.push_back("tabs\t\tand \r\n crlf, 'quotes' DON'T ½ ⅔ ١٢٣ Ωmega");
  for (const auto& t : texts) EXPECT_EQ(tok->decode(tok->encode(t)), t) << preview(t);
  // Special tokens typed in the text are matched, and skipped by decode.
  auto ids = tok->encode("<|begin_of_text|>hi<|eot_id|>");
  ASSERT_GE(ids.size(), 3u);
  EXPECT_EQ(ids.front(), 0);
  EXPECT_EQ(ids.back(), 4);
  EXPECT_EQ(tok->decode(ids), "hi");
}

TEST(TokenizerRoundTrip, Llama2SentencePieceIsExact) {
  LOWBIT_REQUIRE_SHARED(path, "tokenizers/llama2/tokenizer.model");
  LOWBIT_REQUIRE_SHARED(cases, "golden/llama2_tokenizer_cases.json");
  auto tok = load_sentencepiece_model(path);
  for (const auto& t : case_texts(cases)) EXPECT_EQ(tok->decode(tok->encode(t)), t) << preview(t);
  // Control tokens are dropped.
  auto ids = tok->encode("Hello");
  ids.insert(ids.begin(), 1);
  ids.push_back(2);
  EXPECT_EQ(tok->decode(ids), "Hello");
}

TEST(TokenizerRoundTrip, Llama2TokenizerJsonIsExact) {
  LOWBIT_REQUIRE_SHARED(path, "tokenizers/llama2/tokenizer.json");
  LOWBIT_REQUIRE_SHARED(cases, "golden/llama2_tokenizer_cases.json");
  auto tok = load_tokenizer_json(path);
  for (const auto& t : case_texts(cases)) {
    if (t.find("<s>") != std::string::npos) continue;  // specials are skipped by decode
    EXPECT_EQ(tok->decode(tok->encode(t)), t) << preview(t);
  }
  EXPECT_EQ(tok->decode({1, 15043, 3186, 2}), "Hello world");
}

TEST(TokenizerRoundTrip, Stories260KModuloWhitespace) {
  // stories260K's SentencePiece model strips and collapses spaces (remove_extra_whitespaces);
  // its tokenizer.json mirrors that, so both give back the normalised text.
  LOWBIT_REQUIRE_SHARED(spm, "models/stories260K/tokenizer.model");
  LOWBIT_REQUIRE_SHARED(js, "models/stories260K/tokenizer.json");
  LOWBIT_REQUIRE_SHARED(cases, "golden/stories260K_tokenizer_cases.json");
  auto a = load_sentencepiece_model(spm);
  auto b = load_tokenizer_json(js);
  for (const auto& t : case_texts(cases)) {
    EXPECT_EQ(a->decode(a->encode(t)), collapse_spaces(t)) << preview(t);
    if (t.find("<s>") == std::string::npos) EXPECT_EQ(b->decode(b->encode(t)), collapse_spaces(t)) << preview(t);
  }
}

// ---- pieces ---------------------------------------------------------------------------

TEST(TokenizerPieces, UnicodeClasses) {
  EXPECT_TRUE(unicode::is_letter('a'));
  EXPECT_TRUE(unicode::is_letter(0xE9));    // é
  EXPECT_TRUE(unicode::is_letter(0x6771));  // 東
  EXPECT_TRUE(unicode::is_letter(0x30FC));  // ー (Lm)
  EXPECT_FALSE(unicode::is_letter('1'));
  EXPECT_FALSE(unicode::is_letter(0x1F680));  // 🚀
  EXPECT_TRUE(unicode::is_number('7'));
  EXPECT_TRUE(unicode::is_number(0xBD));    // ½ (No)
  EXPECT_TRUE(unicode::is_number(0x0663));  // Arabic-Indic 3 (Nd)
  EXPECT_TRUE(unicode::is_number(0x2167));  // Roman numeral eight (Nl)
  EXPECT_FALSE(unicode::is_number('x'));
  EXPECT_TRUE(unicode::is_whitespace(0xA0));
  EXPECT_TRUE(unicode::is_whitespace(0x3000));
  EXPECT_FALSE(unicode::is_whitespace(0x200B));  // zero width space is not White_Space
}

namespace {
using Pieces = std::vector<std::string>;
Pieces pieces(const std::vector<std::string_view>& v) { return {v.begin(), v.end()}; }
}  // namespace

TEST(TokenizerPieces, Llama3Regex) {
  // Expected splits from Python's `regex` module with the same pattern.
  EXPECT_EQ(pieces(pretokenize_llama3("Hello world")), (Pieces{"Hello", " world"}));
  EXPECT_EQ(pieces(pretokenize_llama3("I'M can't we'LL they're")),
            (Pieces{"I", "'M", " can", "'t", " we", "'LL", " they", "'re"}));
  EXPECT_EQ(pieces(pretokenize_llama3("  a   b \n\n c\t\td  ")),
            (Pieces{" ", " a", "  ", " b", " \n\n", " c", "\t", "\td", "  "}));
  EXPECT_EQ(pieces(pretokenize_llama3("x\r\n\r\n  y")), (Pieces{"x", "\r\n\r\n", " ", " y"}));
  EXPECT_EQ(pieces(pretokenize_llama3("12345 3.14159")), (Pieces{"123", "45", " ", "3", ".", "141", "59"}));
  EXPECT_EQ(pieces(pretokenize_llama3("price: $100!!\n\nok")), (Pieces{"price", ":", " $", "100", "!!\n\n", "ok"}));
  EXPECT_EQ(pieces(pretokenize_llama3("naïve café 東京タワー")), (Pieces{"naïve", " café", " 東京タワー"}));
  EXPECT_EQ(pieces(pretokenize_llama3("emoji 🚀🔥 done")), (Pieces{"emoji", " 🚀🔥", " done"}));
  EXPECT_EQ(pieces(pretokenize_llama3("\u00a0word\u3000x")), (Pieces{"\u00a0word", "\u3000x"}));
  EXPECT_EQ(pieces(pretokenize_llama3("don't 'tis '")), (Pieces{"don", "'t", " '", "tis", " '"}));
  EXPECT_EQ(pieces(pretokenize_llama3("a\n \nb")), (Pieces{"a", "\n \n", "b"}));
  EXPECT_EQ(pieces(pretokenize_llama3("?!\n\n")), (Pieces{"?!\n\n"}));
  EXPECT_EQ(pieces(pretokenize_llama3("\t\n")), (Pieces{"\t\n"}));
  EXPECT_TRUE(pretokenize_llama3("").empty());
  // Malformed UTF-8 still splits into pieces that cover the input.
  std::string bad = "ab\xff\xfe cd\xc3";
  std::string joined;
  for (auto p : pretokenize_llama3(bad)) joined += p;
  EXPECT_EQ(joined, bad);
}

TEST(TokenizerPieces, Gpt2Regex) {
  EXPECT_EQ(pieces(pretokenize_gpt2("I'M can't we'LL they're")),
            (Pieces{"I", "'", "M", " can", "'t", " we", "'", "LL", " they", "'re"}));
  EXPECT_EQ(pieces(pretokenize_gpt2("  a   b \n\n c\t\td  ")),
            (Pieces{" ", " a", "  ", " b", " \n\n", " c", "\t", "\t", "d", "  "}));
  EXPECT_EQ(pieces(pretokenize_gpt2("x\r\n\r\n  y")), (Pieces{"x", "\r\n\r\n ", " y"}));
  EXPECT_EQ(pieces(pretokenize_gpt2("12345 3.14159")), (Pieces{"12345", " 3", ".", "14159"}));
  EXPECT_EQ(pieces(pretokenize_gpt2("price: $100!!\n\nok")),
            (Pieces{"price", ":", " $", "100", "!!", "\n", "\n", "ok"}));
  EXPECT_EQ(pieces(pretokenize_gpt2("\u00a0word\u3000x")), (Pieces{"\u00a0", "word", "\u3000", "x"}));
  EXPECT_EQ(pieces(pretokenize_gpt2("a\n \nb")), (Pieces{"a", "\n ", "\n", "b"}));
}

TEST(TokenizerPieces, SmallSentencePieceStyleJson) {
  std::string dir = make_dir("tok_small", {{"tokenizer.json", tiny_sp_json().dump()}});
  auto tok = load_tokenizer_json(dir + "/tokenizer.json");
  auto id = [&](const char* t) { return tok->token_to_id(t); };
  EXPECT_EQ(tok->vocab_size(), 266);
  // "▁abc ab": merges a+b (rank 0), ▁+ab (rank 1), ab+c (rank 2) — the lowest rank wins
  // first, so the first word becomes ▁ab c, not ▁ abc.
  EXPECT_EQ(tok->encode("abc ab"), (std::vector<int32_t>{id("\u2581ab"), id("c"), id("\u2581ab")}));
  // Unknown characters fall back to <0xNN> bytes; decode reassembles them.
  auto ids = tok->encode("aé");
  EXPECT_EQ(ids, (std::vector<int32_t>{id("\u2581"), id("a"), 3 + 0xC3, 3 + 0xA9}));
  EXPECT_EQ(tok->decode(ids), "aé");
  // A lone continuation byte decodes to U+FFFD, as in HF.
  EXPECT_EQ(tok->decode({3 + 0xA9}), "\uFFFD");
  // Special tokens in the text; decode skips them.
  EXPECT_EQ(tok->encode("<s>b</s>"), (std::vector<int32_t>{1, id("\u2581"), id("b"), 2}));
  EXPECT_EQ(tok->decode({1, id("\u2581ab"), 2}), "ab");
  EXPECT_EQ(tok->bos_id(), -1);  // no post-processor
  EXPECT_THROW(tok->decode({9999}), ArgError);

  // A token with ▁ after another character ("c▁") lets merges cross word starts;
  // the tokenizer must then run BPE over the whole segment, not word by word.
  json j = tiny_sp_json();
  j["model"]["vocab"]["c\u2581"] = 266;
  j["model"]["merges"].push_back("c \u2581");
  test::write_file(dir + "/tokenizer.json", j.dump());
  tok = load_tokenizer_json(dir + "/tokenizer.json");
  EXPECT_EQ(tok->encode("abc d"), (std::vector<int32_t>{id("\u2581ab"), 266, 3 + 'd'}));
  EXPECT_EQ(tok->decode(tok->encode("abc d")), "abc d");

  // Without byte fallback, unknown characters become one fused <unk>.
  j = tiny_sp_json();
  j["model"]["byte_fallback"] = false;
  test::write_file(dir + "/tokenizer.json", j.dump());
  tok = load_tokenizer_json(dir + "/tokenizer.json");
  EXPECT_EQ(tok->encode("aéé"), (std::vector<int32_t>{id("\u2581"), id("a"), 0}));
}

// ---- load_tokenizer -------------------------------------------------------------------

TEST(TokenizerLoad, Stories260K) {
  LOWBIT_REQUIRE_SHARED(dir, "models/stories260K");
  auto a = load_tokenizer(dir);
  EXPECT_EQ(a->kind(), "sentencepiece");  // tokenizer.model is preferred
  EXPECT_EQ(a->bos_id(), 1);
  EXPECT_EQ(a->eos_id(), 2);
  EXPECT_TRUE(a->add_bos());
  auto b = load_tokenizer(dir, "json");
  EXPECT_EQ(b->kind(), "bpe-sp");
  EXPECT_EQ(b->bos_id(), 1);
  EXPECT_EQ(b->eos_id(), 2);
  EXPECT_TRUE(b->add_bos());
  EXPECT_EQ(load_tokenizer(dir, "spm")->kind(), "sentencepiece");
}

TEST(TokenizerLoad, TinyLlama3) {
  LOWBIT_REQUIRE_SHARED(dir, "models/tiny-llama3");
  auto t = load_tokenizer(dir);
  EXPECT_EQ(t->kind(), "bpe-bytelevel");
  EXPECT_EQ(t->bos_id(), 0);  // <|begin_of_text|>
  EXPECT_EQ(t->eos_id(), 1);  // <|end_of_text|>
  EXPECT_TRUE(t->add_bos());  // no add_bos_token, no BOS in the post-processor, but a BOS exists
  EXPECT_EQ(t->token_to_id("<|eot_id|>"), 4);
  EXPECT_EQ(t->id_to_token(0), "<|begin_of_text|>");
  EXPECT_THROW(load_tokenizer(dir, "spm"), IoError);
}

TEST(TokenizerLoad, Llama2AndByteLevelDirs) {
  LOWBIT_REQUIRE_SHARED(llama2, "tokenizers/llama2");
  LOWBIT_REQUIRE_SHARED(bl, "tokenizers/bytelevel2k");
  auto a = load_tokenizer(llama2);
  EXPECT_EQ(a->kind(), "sentencepiece");
  EXPECT_EQ(a->bos_id(), 1);
  EXPECT_EQ(a->eos_id(), 2);
  auto j = load_tokenizer(llama2, "json");
  EXPECT_EQ(j->bos_id(), 1);  // also what the post-processor prepends
  EXPECT_TRUE(j->add_bos());
  auto b = load_tokenizer(bl);  // no config.json: tokenizer_config.json alone
  EXPECT_EQ(b->bos_id(), 0);
  EXPECT_EQ(b->eos_id(), 1);
}

TEST(TokenizerLoad, ConfigPrecedence) {
  std::string tj = tiny_sp_json().dump();
  // {"content": ...} spellings and add_bos_token false.
  std::string d1 = make_dir("tok_cfg1", {{"tokenizer.json", tj},
                                         {"tokenizer_config.json",
                                          R"({"bos_token": {"content": "<s>", "lstrip": false},
                                              "eos_token": {"content": "</s>"}, "add_bos_token": false})"}});
  auto t1 = load_tokenizer(d1);
  EXPECT_EQ(t1->bos_id(), 1);
  EXPECT_EQ(t1->eos_id(), 2);
  EXPECT_FALSE(t1->add_bos());
  // config.json ids when tokenizer_config.json is absent (eos may be a list).
  std::string d2 = make_dir("tok_cfg2", {{"tokenizer.json", tj},
                                         {"config.json", R"({"bos_token_id": 2, "eos_token_id": [1, 2]})"}});
  auto t2 = load_tokenizer(d2);
  EXPECT_EQ(t2->bos_id(), 2);
  EXPECT_EQ(t2->eos_id(), 1);
  EXPECT_TRUE(t2->add_bos());
  // tokenizer_config.json wins over config.json.
  std::string d3 = make_dir("tok_cfg3", {{"tokenizer.json", tj},
                                         {"config.json", R"({"bos_token_id": 2, "eos_token_id": 1})"},
                                         {"tokenizer_config.json", R"({"bos_token": "<s>", "eos_token": "</s>"})"}});
  auto t3 = load_tokenizer(d3);
  EXPECT_EQ(t3->bos_id(), 1);
  EXPECT_EQ(t3->eos_id(), 2);
  // Nothing names a BOS: none, and none prepended.
  std::string d4 = make_dir("tok_cfg4", {{"tokenizer.json", tj}});
  auto t4 = load_tokenizer(d4);
  EXPECT_EQ(t4->bos_id(), -1);
  EXPECT_FALSE(t4->add_bos());
}

// ---- errors ------------------------------------------------------------------------------

namespace {
template <class E, class F>
std::string error_of(F f) {
  try {
    f();
  } catch (const E& e) {
    return e.what();
  } catch (const std::exception& e) {
    return std::string("WRONG TYPE: ") + e.what();
  }
  return "NO THROW";
}
}  // namespace

TEST(TokenizerErrors, MissingFiles) {
  std::string dir = test::temp_dir("tok_missing");
  std::string p = dir + "/tokenizer.json";
  EXPECT_NE(error_of<IoError>([&] { load_tokenizer_json(p); }).find(p), std::string::npos);
  std::string m = dir + "/tokenizer.model";
  EXPECT_NE(error_of<IoError>([&] { load_sentencepiece_model(m); }).find(m), std::string::npos);
  std::string msg = error_of<IoError>([&] { load_tokenizer(dir); });
  EXPECT_NE(msg.find(dir), std::string::npos) << msg;
  EXPECT_NE(msg.find("tokenizer.json"), std::string::npos) << msg;
  EXPECT_THROW(load_tokenizer(dir, "spm"), IoError);
  EXPECT_THROW(load_tokenizer(dir, "json"), IoError);
  EXPECT_THROW(load_tokenizer(dir, "bpe"), ArgError);
}

TEST(TokenizerErrors, MalformedFiles) {
  std::string dir = test::temp_dir("tok_bad");
  std::string p = dir + "/tokenizer.json";
  test::write_file(p, "{\"model\": {\"type\": \"BPE\", ");
  std::string msg = error_of<FormatError>([&] { load_tokenizer_json(p); });
  EXPECT_NE(msg.find(p), std::string::npos) << msg;

  json j = tiny_sp_json();
  j["model"] = {{"type", "WordPiece"}, {"vocab", {{"a", 0}}}, {"unk_token", "a"}};
  test::write_file(p, j.dump());
  msg = error_of<FormatError>([&] { load_tokenizer_json(p); });
  EXPECT_NE(msg.find("WordPiece"), std::string::npos) << msg;

  j = tiny_sp_json();
  j["model"]["merges"] = {"a zzz"};
  test::write_file(p, j.dump());
  msg = error_of<FormatError>([&] { load_tokenizer_json(p); });
  EXPECT_NE(msg.find("a zzz"), std::string::npos) << msg;

  j = tiny_sp_json();
  j["pre_tokenizer"] = {{"type", "Split"}, {"pattern", {{"Regex", "\\w+"}}}, {"behavior", "Isolated"}};
  test::write_file(p, j.dump());
  msg = error_of<FormatError>([&] { load_tokenizer_json(p); });
  EXPECT_NE(msg.find("\\\\w+"), std::string::npos) << msg;

  j = tiny_sp_json();
  j["normalizer"] = {{"type", "BertNormalizer"}};
  test::write_file(p, j.dump());
  msg = error_of<FormatError>([&] { load_tokenizer_json(p); });
  EXPECT_NE(msg.find("BertNormalizer"), std::string::npos) << msg;

  j = tiny_sp_json();
  j["model"]["vocab"] = "not a map";
  test::write_file(p, j.dump());
  EXPECT_THROW(load_tokenizer_json(p), FormatError);

  std::string m = dir + "/tokenizer.model";
  test::write_file(m, "this is not a protobuf");
  msg = error_of<FormatError>([&] { load_sentencepiece_model(m); });
  EXPECT_NE(msg.find(m), std::string::npos) << msg;
}

// ---- corpora: counts and speed ----------------------------------------------------------

TEST(TokenizerCorpus, WikiText2TokenCount) {
  // golden/stories260K.json: 815066 tokens including the one BOS.
  LOWBIT_REQUIRE_SHARED(text_path, "data/text/wikitext2_test.txt");
  LOWBIT_REQUIRE_SHARED(spm, "models/stories260K/tokenizer.model");
  std::string text = read_text_file(text_path);
  auto t0 = std::chrono::steady_clock::now();
  auto ids = load_sentencepiece_model(spm)->encode(text);
  std::printf("  sentencepiece stories260K, wikitext2 (%zu bytes): %zu tokens in %.2f s\n", text.size(), ids.size(),
              seconds_since(t0));
  EXPECT_EQ(ids.size(), 815065u);
}

TEST(TokenizerCorpus, TinyStoriesEvalTokenCount) {
  // The eval half starts 2 characters after tinystories_split_char = 396694, a
  // paragraph break; offsets are code points (Python str), not bytes: the file
  // has non-ASCII characters before the split, so a byte offset lands elsewhere.
  LOWBIT_REQUIRE_SHARED(text_path, "data/text/tinystories_val.txt");
  LOWBIT_REQUIRE_SHARED(spm, "models/stories260K/tokenizer.model");
  std::string text = read_text_file(text_path);
  EXPECT_EQ(utf8_slice(text, 396694, 396696), "\n\n");
  auto tok = load_sentencepiece_model(spm);
  EXPECT_EQ(tok->encode(utf8_slice(text, 396696)).size(), 199282u);  // + 1 BOS = 199283
  EXPECT_NE(text.substr(396694, 2), "\n\n");  // the byte reading does not hit the break
}

TEST(TokenizerCorpus, TokenizerJsonSpeedOnWikiText2) {
  LOWBIT_REQUIRE_SHARED(text_path, "data/text/wikitext2_test.txt");
  LOWBIT_REQUIRE_SHARED(llama2, "tokenizers/llama2/tokenizer.json");
  LOWBIT_REQUIRE_SHARED(stories, "models/stories260K/tokenizer.json");
  LOWBIT_REQUIRE_SHARED(bytelevel, "tokenizers/bytelevel2k/tokenizer.json");
  LOWBIT_REQUIRE_SHARED(stories_spm, "models/stories260K/tokenizer.model");
  LOWBIT_REQUIRE_SHARED(llama2_spm, "tokenizers/llama2/tokenizer.model");
  std::string text = read_text_file(text_path);
  for (const std::string& path : {llama2, stories, bytelevel}) {
    auto tok = load_tokenizer_json(path);
    auto t0 = std::chrono::steady_clock::now();
    auto ids = tok->encode(text);
    double s = seconds_since(t0);
    std::printf("  %s, wikitext2: %zu tokens in %.2f s\n", path.c_str(), ids.size(), s);
    // Well under a few seconds on 2 cores in Release; generous for slow CI machines.
    EXPECT_LT(s, 10.0) << path;
    if (tok->kind() == "bpe-bytelevel") EXPECT_EQ(tok->decode(ids), text);
    // The tokenizer.json mirrors agree with the SentencePiece models on the whole corpus.
    if (path == stories) EXPECT_EQ(ids, load_sentencepiece_model(stories_spm)->encode(text));
    if (path == llama2) EXPECT_EQ(ids, load_sentencepiece_model(llama2_spm)->encode(text));
  }
}

// Hostile tokenizer.json contents found while fuzzing (fuzz/fuzz_tokenizer_json): each is a
// FormatError when loading or encoding/decoding, never a hang, a huge allocation or a cast of
// an out-of-range number.
TEST(TokenizerErrors, HostileJsonContents) {
  const json base = {{"model", {{"type", "BPE"}, {"vocab", {{"a", 0}, {"e", 1}, {"\u2581", 2}}}, {"merges", json::array()}}}};
  auto load = [](const json& j) { return parse_tokenizer_json(j.dump(), "x/tokenizer.json"); };
  EXPECT_EQ(load(base)->vocab_size(), 3);
  json j = base;
  j["decoder"] = {{"type", "Metaspace"}, {"replacement", ""}};  // decode looped forever
  EXPECT_THROW(load(j), FormatError);
  j = base;
  j["pre_tokenizer"] = {{"type", "Metaspace"}, {"replacement", ""}};
  EXPECT_THROW(load(j), FormatError);
  j = base;
  j["decoder"] = {{"type", "Strip"}, {"content", ""}, {"start", 1000000000000000000LL}, {"stop", 0}};  // looped 1e18 times
  EXPECT_THROW(load(j), FormatError);
  j = base;
  j["decoder"] = {{"type", "Strip"}, {"content", " "}, {"start", 1e300}, {"stop", 0}};  // was cast to size_t
  EXPECT_THROW(load(j), FormatError);
  j = base;
  j["decoder"] = {{"type", "Strip"}, {"content", " "}, {"start", -1}, {"stop", 0}};
  EXPECT_THROW(load(j), FormatError);
  j = base;
  j["post_processor"] = {{"type", "TemplateProcessing"},
                         {"single", {{{"SpecialToken", {{"id", "<s>"}}}}}},
                         {"special_tokens", {{"<s>", {{"ids", {1e300}}}}}}};  // was cast to int32
  EXPECT_THROW(load(j), FormatError);
  j["post_processor"]["special_tokens"]["<s>"]["ids"] = {7};  // beyond the vocabulary
  EXPECT_THROW(load(j), FormatError);
  j["post_processor"]["special_tokens"]["<s>"]["ids"] = {1};
  EXPECT_EQ(load(j)->bos_id(), 1);
  // 40 chained Replace "e" -> "ee" would grow a short text 2^40-fold.
  j = base;
  j["normalizer"] = {{"type", "Sequence"},
                     {"normalizers", json::array()}};
  for (int k = 0; k < 40; ++k)
    j["normalizer"]["normalizers"].push_back({{"type", "Replace"}, {"pattern", {{"String", "e"}}}, {"content", "ee"}});
  auto tok = load(j);
  EXPECT_THROW(tok->encode("see me"), FormatError);
  EXPECT_NO_THROW(tok->encode("aaa"));  // nothing to expand
  j = base;
  j["decoder"] = {{"type", "Sequence"}, {"decoders", json::array()}};
  for (int k = 0; k < 40; ++k)
    j["decoder"]["decoders"].push_back({{"type", "Replace"}, {"pattern", {{"String", "e"}}}, {"content", "ee"}});
  EXPECT_THROW(load(j)->decode({1, 1}), FormatError);
}
