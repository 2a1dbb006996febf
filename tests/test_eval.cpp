// Perplexity and generation against the Hugging Face goldens (golden/stories260K.json).
#include <gtest/gtest.h>

#include <cmath>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "eval/generate.h"
#include "eval/perplexity.h"
#include "io/files.h"
#include "io/tokenizer.h"
#include "testing.h"

using namespace lowbit;
using json = nlohmann::json;

namespace {
json golden() {
  std::string p = lowbit::test::shared_path("golden/stories260K.json");
  return json::parse(read_text_file(p));
}
struct Stories {
  LlamaModel model;
  std::unique_ptr<Tokenizer> tok;
};
Stories load_stories(const std::string& dir) {
  Stories s{LlamaModel::load(dir), load_tokenizer(dir)};
  return s;
}
}  // namespace

// The three golden perplexities, each within 0.05 %.
TEST(Perplexity, Stories260KGoldens) {
  LOWBIT_REQUIRE_SHARED(dir, "models/stories260K");
  LOWBIT_REQUIRE_SHARED(ts, "data/text/tinystories_val.txt");
  LOWBIT_REQUIRE_SHARED(wt, "data/text/wikitext2_test.txt");
  json g = golden();
  Stories s = load_stories(dir);
  const int64_t split = g["tinystories_split_char"].get<int64_t>() + 2;  // eval starts 2 chars after the break
  std::vector<int32_t> ev = tokenize_stream(*s.tok, utf8_slice(read_text_file(ts), split), s.model.cfg.bos_token_id);
  EXPECT_EQ(int64_t(ev.size()), g["tinystories_eval"]["tokens"].get<int64_t>());
  PplOptions o;
  o.progress = false;
  for (auto [key, L] : {std::pair{"tinystories_eval", 512}, std::pair{"tinystories_eval_256", 256}}) {
    o.seqlen = L;
    PplResult r = perplexity(s.model, ev, o);
    double want = g[key]["ppl"].get<double>();
    EXPECT_EQ(r.windows, g[key]["windows"].get<int64_t>());
    EXPECT_NEAR(r.ppl, want, want * 5e-4) << key;
    std::printf("  %s seqlen %d: ppl %.5f (HF %.5f)\n", key, L, r.ppl, want);
  }
  std::vector<int32_t> wk = tokenize_stream(*s.tok, read_text_file(wt), s.model.cfg.bos_token_id);
  EXPECT_EQ(int64_t(wk.size()), g["wikitext2_test"]["tokens"].get<int64_t>());
  o.seqlen = 512;
  PplResult r = perplexity(s.model, wk, o);
  double want = g["wikitext2_test"]["ppl"].get<double>();
  EXPECT_EQ(r.windows, g["wikitext2_test"]["windows"].get<int64_t>());
  EXPECT_NEAR(r.ppl, want, want * 5e-4);
  std::printf("  wikitext2 seqlen 512: ppl %.5f (HF %.5f)\n", r.ppl, want);
}

TEST(Perplexity, RejectsBadInputs) {
  LOWBIT_REQUIRE_SHARED(dir, "models/stories260K");
  Stories s = load_stories(dir);
  EXPECT_THROW(tokenize_stream(*s.tok, "", 1), ArgError);
  std::vector<int32_t> few(100, 5);
  PplOptions o;
  o.progress = false;
  o.seqlen = 512;
  EXPECT_THROW(perplexity(s.model, few, o), ArgError);  // fewer tokens than one window
  o.seqlen = 1024;
  std::vector<int32_t> many(4096, 5);
  EXPECT_THROW(perplexity(s.model, many, o), ArgError);  // beyond the 512-token context
  o.seqlen = 1;
  EXPECT_THROW(perplexity(s.model, many, o), ArgError);
}

TEST(Generate, GreedyFromBosMatchesGolden) {
  LOWBIT_REQUIRE_SHARED(dir, "models/stories260K");
  json g = golden();
  Stories s = load_stories(dir);
  std::vector<int32_t> want = g["greedy_from_bos_ids"].get<std::vector<int32_t>>();
  ASSERT_EQ(want[0], 1);  // the golden list starts with the BOS prompt
  GenOptions o;
  o.max_new_tokens = int64_t(want.size()) - 1;
  std::vector<int32_t> got = generate(s.model, {1}, o);
  EXPECT_EQ(got, std::vector<int32_t>(want.begin() + 1, want.end()));
  EXPECT_EQ(s.tok->decode(got), g["greedy_from_bos_text"].get<std::string>());
}

TEST(Generate, SamplingIsSeededAndTopPNarrows) {
  std::vector<float> logits = {2.0f, 1.9f, 0.5f, -1.0f, 1.95f};
  uint64_t a = 7, b = 7;
  for (int i = 0; i < 20; ++i)
    EXPECT_EQ(sample_token(logits.data(), 5, 1.0, 0.9, &a), sample_token(logits.data(), 5, 1.0, 0.9, &b));
  uint64_t r = 3;
  for (int i = 0; i < 50; ++i) EXPECT_EQ(sample_token(logits.data(), 5, 1.0, 1e-6, &r), 0);  // top-p → argmax
  EXPECT_EQ(sample_token(logits.data(), 5, 0.0, 1.0, &r), 0);
  // High temperature with top-p 1 reaches every token eventually.
  std::vector<int> seen(5, 0);
  for (int i = 0; i < 2000; ++i) seen[size_t(sample_token(logits.data(), 5, 5.0, 1.0, &r))]++;
  for (int c : seen) EXPECT_GT(c, 0);
}
