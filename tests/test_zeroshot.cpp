// Zero-shot scoring (eval/zeroshot.h) against hand computations and lm-eval-harness
// 0.4.13's task definitions (lm_eval/tasks/{arc,piqa,openbookqa,siqa,winogrande,lambada}/*.yaml,
// api/task.py process_results, api/model.py _encode_pair, models/huggingface.py).
#include <cmath>
#include <filesystem>

#include "core/error.h"
#include "eval/zeroshot.h"
#include "io/tokenizer.h"
#include "models/loader.h"
#include "quant/driver.h"
#include "testing.h"

using namespace lowbit;
using nlohmann::json;

// ---- metrics --------------------------------------------------------------------------------

TEST(ZeroShot, PythonRandomSequence) {
  // Python 3.11: [random.Random(0).random() for _ in range(4)] and Random(1)'s first three.
  PyRandom r0{0};
  EXPECT_EQ(r0.random(), 0.8444218515250481);
  EXPECT_EQ(r0.random(), 0.7579544029403025);
  EXPECT_EQ(r0.random(), 0.420571580830845);
  EXPECT_EQ(r0.random(), 0.25891675029296335);
  PyRandom r1{1};
  EXPECT_EQ(r1.random(), 0.13436424411240122);
  EXPECT_EQ(r1.random(), 0.8474337369372327);
  EXPECT_EQ(r1.random(), 0.763774618976614);
}

TEST(ZeroShot, MeanStderrHandVector) {
  // x = [1, 0, 1, 1]: mean 0.75, Σ(x-mean)² = 3·0.0625 + 0.5625 = 0.75, /(n-1) = 0.25,
  // sample std 0.5, / sqrt(4) = 0.25.
  EXPECT_DOUBLE_EQ(mean_stderr({1, 0, 1, 1}), 0.25);
  EXPECT_EQ(mean_stderr({1}), 0.0);
}

TEST(ZeroShot, PerplexityBootstrapTwoResamples) {
  // iters 2: one chunk of 2 resamples drawn by random.Random(0) over n = 2 items:
  // indices floor(0.844·2)=1, floor(0.758·2)=1 → [x1, x1]; floor(0.421·2)=0, floor(0.259·2)=0 → [x0, x0].
  // x = [0, ln 2]: statistics exp(-ln 2) = 0.5 and exp(0) = 1; sample std = 0.5/sqrt(2).
  EXPECT_NEAR(perplexity_bootstrap_stderr({0.0, std::log(2.0)}, 2), 0.5 / std::sqrt(2.0), 1e-15);
  // Equal items: every resample has the same perplexity, the std is 0 up to the rounding
  // of the 3000-term mean inside the sample std (~1e-16 relative).
  EXPECT_NEAR(perplexity_bootstrap_stderr({-0.5, -0.5, -0.5}, 3000), 0.0, 1e-12);
}

TEST(ZeroShot, AccAndAccNormPickDifferentAnswers) {
  // Choices "a" (len 1) and "bbbb" (len 4) with ll -2 and -4: acc picks 0 (-2 > -4);
  // acc_norm: -2/1 = -2 < -4/4 = -1 picks 1.
  const std::vector<double> ll = {-2.0, -4.0};
  const std::vector<int64_t> len = {choice_length("a"), choice_length("bbbb")};
  EXPECT_EQ(len[0], 1);
  EXPECT_EQ(len[1], 4);
  EXPECT_EQ(argmax_first(ll), 0);
  EXPECT_EQ(argmax_first({ll[0] / double(len[0]), ll[1] / double(len[1])}), 1);
  // lm-eval's acc_norm divides by len(choice) (Python code points): "café" is 4, not its
  // 5 UTF-8 bytes; "日本" is 2 (6 bytes).
  EXPECT_EQ(choice_length("caf\xc3\xa9"), 4);
  EXPECT_EQ(choice_length("\xe6\x97\xa5\xe6\x9c\xac"), 2);
  // Ties go to the first index (numpy argmax).
  EXPECT_EQ(argmax_first({-1.0, -1.0, -3.0}), 0);
}

TEST(ZeroShot, GreedyMatchAndLoglikelihood) {
  // V = 3. Row [1, 3, 2] with target 1: argmax 1 → greedy; ll = 3 - log(e + e³ + e²)
  // = 3 - 3.40760596444438 = -0.40760596444438.
  const float rows[] = {1, 3, 2, /* row 2 */ 0, 0, 0};
  const int32_t t1[] = {1};
  LlResult r = score_continuation(rows, 1, 3, t1);
  EXPECT_TRUE(r.greedy);
  EXPECT_NEAR(r.ll, -0.40760596444438, 1e-12);
  // Row [0, 0, 0] with target 1: ll = -log 3 = -1.0986122886681098; the tie's argmax is 0,
  // so the target is not the greedy token (torch argmax: first maximum) and the whole
  // continuation is not a greedy match.
  const int32_t t2[] = {1, 1};
  r = score_continuation(rows, 2, 3, t2);
  EXPECT_FALSE(r.greedy);
  EXPECT_NEAR(r.ll, -0.40760596444438 - 1.0986122886681098, 1e-12);
  const int32_t t3[] = {1, 0};
  EXPECT_TRUE(score_continuation(rows, 2, 3, t3).greedy);
}

// ---- templates (lm-eval 0.4.13 yaml, written out by hand) ----------------------------------

TEST(ZeroShot, TemplatesPerTask) {
  const json mc = {{"id", "x"}, {"question", "Which gas do plants take in?"},
                   {"choices", {"oxygen", "carbon dioxide"}}, {"answer", 1}};
  // arc_easy / arc_challenge: doc_to_text "Question: {{question}}\nAnswer:", choices.text, " ".
  for (const char* t : {"arc_easy", "arc_challenge"}) {
    Prompt p = make_prompt(t, mc);
    ASSERT_EQ(p.contexts.size(), 2u);
    EXPECT_EQ(p.contexts[0], "Question: Which gas do plants take in?\nAnswer:");
    EXPECT_EQ(p.contexts[1], p.contexts[0]);
    EXPECT_EQ(p.continuations[0], " oxygen");
    EXPECT_EQ(p.continuations[1], " carbon dioxide");
    EXPECT_EQ(p.choice_len[1], 14);  // len("carbon dioxide"), delimiter excluded
    EXPECT_EQ(p.gold, 1);
  }
  // piqa: "Question: {{goal}}\nAnswer:", [sol1, sol2].
  Prompt p = make_prompt("piqa", json{{"question", "To dry wet socks,"},
                                      {"choices", {"hang them up.", "put them in water."}},
                                      {"answer", 0}});
  EXPECT_EQ(p.contexts[0], "Question: To dry wet socks,\nAnswer:");
  EXPECT_EQ(p.continuations[1], " put them in water.");
  EXPECT_EQ(p.gold, 0);
  // openbookqa: doc_to_text is question_stem itself.
  p = make_prompt("openbookqa", json{{"question", "Predators eat"}, {"choices", {"lions", "bunnies"}}, {"answer", 1}});
  EXPECT_EQ(p.contexts[0], "Predators eat");
  EXPECT_EQ(p.continuations[0], " lions");
  // siqa (lm-eval's social_iqa): "Q: {{context}} {{question}}\nA:"; our record's question
  // is "{context} {question}".
  p = make_prompt("siqa", json{{"question", "Tracy stayed out. What does Tracy need to do before this?"},
                               {"choices", {"make a plan", "go home", "sleep"}},
                               {"answer", 2}});
  EXPECT_EQ(p.contexts[0], "Q: Tracy stayed out. What does Tracy need to do before this?\nA:");
  EXPECT_EQ(p.continuations[2], " sleep");
  EXPECT_EQ(p.gold, 2);
  // winogrande: idx = sentence.index("_"); contexts sentence[:idx] + option;
  // target sentence[idx+1:].strip() after the " " delimiter; gold answer - 1.
  p = make_prompt("winogrande", json{{"sentence", "Sarah was a better surgeon than Maria so _ got the easier cases. "},
                                     {"option1", "Sarah"},
                                     {"option2", "Maria"},
                                     {"answer", 2}});
  ASSERT_EQ(p.contexts.size(), 2u);
  EXPECT_EQ(p.contexts[0], "Sarah was a better surgeon than Maria so Sarah");
  EXPECT_EQ(p.contexts[1], "Sarah was a better surgeon than Maria so Maria");
  EXPECT_EQ(p.continuations[0], " got the easier cases.");
  EXPECT_EQ(p.continuations[1], p.continuations[0]);
  EXPECT_EQ(p.gold, 1);
  // lambada_openai: "{{text.split(' ')[:-1]|join(' ')}}" and "{{' '+text.split(' ')[-1]}}",
  // loglikelihood requests take the target as is (no extra delimiter).
  p = make_prompt("lambada_openai", json{{"text", "He fed the cat.\n\nThen he petted the cat"}});
  ASSERT_EQ(p.contexts.size(), 1u);
  EXPECT_EQ(p.contexts[0], "He fed the cat.\n\nThen he petted the");
  EXPECT_EQ(p.continuations[0], " cat");
  p = make_prompt("lambada_openai", json{{"text", "a  b"}});  // split(' ') = ['a', '', 'b']
  EXPECT_EQ(p.contexts[0], "a ");
  EXPECT_EQ(p.continuations[0], " b");
}

TEST(ZeroShot, UnknownTaskAndBadRecords) {
  EXPECT_THROW(task_kind("hellaswag"), ArgError);
  EXPECT_THROW(make_prompt("arc_easy", json{{"question", "q"}, {"choices", {"a"}}, {"answer", 3}}), FormatError);
  EXPECT_THROW(make_prompt("winogrande", json{{"sentence", "no blank"}, {"option1", "a"}, {"option2", "b"},
                                               {"answer", 1}}),
               FormatError);
}

// ---- tokenization (HFLM._encode_pair) and scoring on stories260K ------------------------

TEST(ZeroShot, EncodePairSplitsLikeHFLM) {
  LOWBIT_REQUIRE_SHARED(dir, "models/stories260K");
  auto tok = load_tokenizer(dir);
  // stories260K's tokenizer.json post-processor is "<s> $A": transformers adds BOS.
  ASSERT_TRUE(hf_adds_bos(dir, *tok));
  // Trailing whitespace of the context moves to the continuation.
  LlRequest r = encode_request(*tok, "Once upon a ", "time", true);
  EXPECT_EQ(r.context, "Once upon a");
  EXPECT_EQ(r.continuation, " time");
  std::vector<int32_t> ctx = tok->encode("Once upon a"), whole = tok->encode("Once upon a time");
  // tokens = [BOS] + encode(context) ++ ([BOS] + encode(whole))[len(ctx)+1:]
  ASSERT_EQ(r.tokens.size(), 1 + whole.size());
  EXPECT_EQ(r.tokens[0], tok->bos_id());
  EXPECT_EQ(std::vector<int32_t>(r.tokens.begin() + 1, r.tokens.begin() + 1 + int64_t(ctx.size())), ctx);
  EXPECT_EQ(r.cont_len, int64_t(whole.size() - ctx.size()));
  EXPECT_EQ(std::vector<int32_t>(r.tokens.end() - r.cont_len, r.tokens.end()),
            std::vector<int32_t>(whole.begin() + int64_t(ctx.size()), whole.end()));
  // Winogrande partial scoring: two contexts, one continuation " got the easier cases.".
  Prompt p = make_prompt("winogrande", json{{"sentence", "Tom was smaller than Bob so _ got the easier cases."},
                                            {"option1", "Tom"},
                                            {"option2", "Bob"},
                                            {"answer", 1}});
  for (size_t i = 0; i < 2; ++i) {
    LlRequest w = encode_request(*tok, p.contexts[i], p.continuations[i], true);
    std::vector<int32_t> c = hf_encode(*tok, p.contexts[i], true);
    std::vector<int32_t> all = hf_encode(*tok, p.contexts[i] + " got the easier cases.", true);
    EXPECT_EQ(w.cont_len, int64_t(all.size() - c.size()));
    EXPECT_EQ(std::vector<int32_t>(w.tokens.end() - w.cont_len, w.tokens.end()),
              std::vector<int32_t>(all.begin() + int64_t(c.size()), all.end()));
  }
  // Empty context: the prefix token (BOS) is the context.
  LlRequest e = encode_request(*tok, "", " Hello", true);
  EXPECT_EQ(e.tokens[0], tok->bos_id());
  EXPECT_EQ(e.cont_len, int64_t(tok->encode(" Hello").size()));
}

TEST(ZeroShot, BosAsTransformersAddsIt) {
  // tiny-llama3's tokenizer.json post-processor is "$A" alone: transformers' encode adds no
  // BOS (checked with transformers 5.24: [53, 89, 437, ...] for "Question: ..."), although the
  // tokenizer has one (<|begin_of_text|>, which lowbit's perplexity protocol prepends).
  LOWBIT_REQUIRE_SHARED(dir, "models/tiny-llama3");
  auto tok = load_tokenizer(dir);
  EXPECT_TRUE(tok->add_bos());
  EXPECT_FALSE(hf_adds_bos(dir, *tok));
  LlRequest r = encode_request(*tok, "Question: Which gas do plants take in?\nAnswer:", " oxygen", false);
  ASSERT_GE(r.tokens.size(), 3u);
  EXPECT_EQ(r.tokens[0], 53);
  EXPECT_EQ(r.tokens[1], 89);
  EXPECT_EQ(r.tokens[2], 437);
  // Without a tokenizer.json, the SentencePiece tokenizer's own rule.
  EXPECT_TRUE(hf_adds_bos("", *tok));
}

TEST(ZeroShot, PrefixReuseEqualsFullForward) {
  LOWBIT_REQUIRE_SHARED(dir, "models/stories260K");
  LlamaModel m = load_model(dir);
  auto tok = load_tokenizer(dir);
  Prompt p = make_prompt("arc_easy", json{{"question", "Lily went to the park with her mom. What did she see?"},
                                          {"choices", {"a big dog", "a red ball", "the sun and a tree"}},
                                          {"answer", 0}});
  std::vector<LlRequest> reqs;
  for (size_t i = 0; i < p.contexts.size(); ++i) reqs.push_back(encode_request(*tok, p.contexts[i], p.continuations[i], true));
  int64_t shared = -1, shared_off = -1;
  auto a = score_requests(m, reqs, m.cfg.max_position, true, &shared);
  auto b = score_requests(m, reqs, m.cfg.max_position, false, &shared_off);
  EXPECT_GT(shared, 5);  // the context ran once
  EXPECT_EQ(shared_off, 0);
  // The rows are the same function of the same tokens; only the GEMMs' row blocking
  // differs (f32 sums in another order), ~1e-6 relative on logits of magnitude ~10.
  for (size_t i = 0; i < reqs.size(); ++i) {
    EXPECT_NEAR(a[i].ll, b[i].ll, 1e-4) << i;
    EXPECT_EQ(a[i].greedy, b[i].greedy) << i;
    EXPECT_LT(a[i].ll, 0);
  }
  // Left truncation to the context window: with max_len 6, the model sees the last 7
  // tokens minus the final one, from position 0 — the same as scoring that suffix alone.
  LlRequest t = reqs[1];
  LlRequest cut = t;
  cut.tokens.assign(t.tokens.end() - 7, t.tokens.end());
  ASSERT_LE(t.cont_len, 6);
  auto tr = score_requests(m, {t}, 6, true);
  auto cr = score_requests(m, {cut}, 512, true);
  EXPECT_EQ(tr[0].ll, cr[0].ll);
}

TEST(ZeroShot, CliEndToEnd) {
  LOWBIT_REQUIRE_SHARED(dir, "models/stories260K");
  LOWBIT_REQUIRE_SHARED(tasks, "data/tasks");
  const std::string out = test::temp_dir("zs") + "/r.json";
  json j = test::run_lowbit_json("eval zeroshot --model " + dir + " --tasks arc_easy,winogrande,lambada_openai,siqa,piqa"
                                     " --limit 4 --log-samples --quiet --tasks-dir " + tasks,
                                 out);
  ASSERT_FALSE(j.is_null());
  for (const char* t : {"arc_easy", "winogrande", "lambada_openai", "siqa", "piqa"}) {
    ASSERT_TRUE(j["results"].contains(t)) << t;
    EXPECT_EQ(j["n-samples"][t]["effective"], 4) << t;
    const double acc = j["results"][t]["acc"];
    EXPECT_GE(acc, 0.0);
    EXPECT_LE(acc, 1.0);
    // acc is the mean of the per-item scores, recomputed from the logged loglikelihoods.
    double sum = 0;
    for (const auto& s : j["samples"][t]) {
      std::vector<double> ll = s["loglikelihoods"].get<std::vector<double>>();
      const double a = std::string(t) == "lambada_openai" ? (s["greedy"][0].get<bool>() ? 1.0 : 0.0)
                                                          : (argmax_first(ll) == s["gold"].get<int64_t>() ? 1.0 : 0.0);
      sum += a;
    }
    EXPECT_DOUBLE_EQ(acc, sum / 4) << t;
  }
  EXPECT_TRUE(j["results"]["arc_easy"].contains("acc_norm"));
  EXPECT_FALSE(j["results"]["siqa"].contains("acc_norm"));  // social_iqa.yaml lists acc only
  EXPECT_TRUE(j["results"]["lambada_openai"].contains("perplexity"));
  EXPECT_GT(j["results"]["lambada_openai"]["perplexity_stderr"].get<double>(), 0.0);

  // Quantized: in-memory flags and the checkpoint `quantize` writes score the same
  // (the same packed codes, the same forward).
  const std::string tmp = test::temp_dir("zs-q");
  ASSERT_EQ(test::run_lowbit("quantize --model " + dir + " --w_bits 4 --w_rtn --quiet --out " + tmp + "/q").exit_code, 0);
  json qa = test::run_lowbit_json("eval zeroshot --model " + dir + " --w_bits 4 --w_rtn --tasks piqa --limit 3"
                                  " --log-samples --quiet --tasks-dir " + tasks, tmp + "/a.json");
  json qb = test::run_lowbit_json("eval zeroshot --model " + tmp + "/q --tasks piqa --limit 3 --log-samples --quiet"
                                  " --tasks-dir " + tasks, tmp + "/b.json");
  ASSERT_FALSE(qa.is_null() || qb.is_null());
  EXPECT_EQ(qa["samples"]["piqa"], qb["samples"]["piqa"]);
  EXPECT_NE(qa["samples"]["piqa"], j["samples"].value("piqa", json()));  // and not the FP numbers
  EXPECT_TRUE(qa.contains("quantization"));

  auto r = test::run_lowbit("eval zeroshot --model " + dir + " --tasks arc_easy,hellaswag --tasks-dir " + tasks);
  test::expect_error_line(r, "unknown task 'hellaswag'", 2);
  const std::string empty = test::temp_dir("zs-empty");
  r = test::run_lowbit("eval zeroshot --model " + dir + " --tasks piqa --tasks-dir " + empty);
  test::expect_error_line(r, "piqa.jsonl", 1);
}

// ---- batching by length (ZeroShotOptions::batch_size, LlamaModel::forward_batch) ------------

namespace {
// Deterministic token ids (no tokenizer needed): [n] in [3, vocab).
std::vector<int32_t> some_ids(const LlamaModel& m, int64_t n, int salt) {
  std::vector<int32_t> ids;
  for (int64_t i = 0; i < n; ++i) ids.push_back(int32_t(3 + (i * 131 + 7 + salt * 977) % (m.cfg.vocab_size - 3)));
  return ids;
}
// forward_batch over sequences of different lengths, some after a cached prefix (own
// positions, own causal attention), against forward one sequence at a time. Every row is
// the same function of the same inputs; the stacked GEMMs may block the rows differently,
// so f32 sums can round in another order: ~1e-6 relative on logits of magnitude ~10, 1e-4
// absolute is ~100x that. (With activation/KV quantizers a rounding difference may in
// principle move a value across a quantization step; the per-token quantizers themselves
// see the same rows either way.)
void expect_batch_equals_single(LlamaModel& m, const char* what) {
  SCOPED_TRACE(what);
  const std::vector<int64_t> prefix = {0, 9, 4, 0}, len = {13, 5, 1, 7};
  const size_t B = prefix.size();
  std::vector<std::vector<int32_t>> ids;
  std::vector<KVCache> single, batched;
  for (size_t b = 0; b < B; ++b) {
    ids.push_back(some_ids(m, prefix[b] + len[b], int(b)));
    single.push_back(m.make_cache(32));
    batched.push_back(m.make_cache(32));
    if (prefix[b] > 0) {  // the same prefix in both caches, run the ordinary way
      m.forward(ids[b].data(), prefix[b], &single[b]);
      m.forward(ids[b].data(), prefix[b], &batched[b]);
    }
  }
  std::vector<LlamaModel::BatchSeq> seqs;
  for (size_t b = 0; b < B; ++b) seqs.push_back({ids[b].data() + prefix[b], len[b], &batched[b], b == 2});
  std::vector<Tensor> got = m.forward_batch(seqs);
  ASSERT_EQ(got.size(), B);
  for (size_t b = 0; b < B; ++b) {
    ForwardOptions o;
    o.last_only = b == 2;
    Tensor want = m.forward(ids[b].data() + prefix[b], len[b], &single[b], o);
    ASSERT_EQ(got[b].shape(), want.shape()) << b;
    const std::vector<float> g = got[b].to_vector(), w = want.to_vector();
    double worst = 0;
    for (size_t i = 0; i < g.size(); ++i) worst = std::max(worst, std::fabs(double(g[i]) - double(w[i])));
    EXPECT_LT(worst, 1e-4) << "sequence " << b;
    EXPECT_EQ(batched[b].len, prefix[b] + len[b]);
    // The caches hold the same K/V afterwards (a later step reads them).
    for (size_t l = 0; l < single[b].k.size(); ++l) {
      const size_t n = size_t((prefix[b] + len[b]) * m.cfg.num_kv_heads * m.cfg.head_dim);
      for (size_t i = 0; i < n; ++i) ASSERT_NEAR(batched[b].k[l][i], single[b].k[l][i], 1e-4) << b << " " << l;
    }
  }
}
}  // namespace

TEST(ZeroShot, ForwardBatchEqualsOneAtATime) {
  LOWBIT_REQUIRE_SHARED(dir, "models/stories260K");
  LlamaModel m = load_model(dir);
  expect_batch_equals_single(m, "fp");
  // The model quantized in memory: RTN W4, A4 per token, K/V 4-bit, online Hadamards.
  for (bool per_head : {false, true}) {
    LlamaModel q = load_model(dir);
    QuantConfig c;
    c.w_bits = 4;
    c.w_rtn = true;
    c.a_bits = 4;
    c.k_bits = c.v_bits = 4;
    c.k_asym = true;
    c.rotate = true;
    if (per_head) {
      c.k_groupsize = c.v_groupsize = 0;  // per head
      c.a_groupsize = 4;  // divides d = 64 and f = 172
    }
    std::vector<std::vector<int32_t>> calib = {some_ids(q, 24, 7), some_ids(q, 17, 8)};
    quantize_model(q, c, calib);
    expect_batch_equals_single(q, per_head ? "rtn w4a4kv4 rotate, per-head KV, a g4" : "rtn w4a4kv4 rotate");
  }
}

TEST(ZeroShot, BatchSizeChangesNoResult) {
  LOWBIT_REQUIRE_SHARED(dir, "models/stories260K");
  LOWBIT_REQUIRE_SHARED(tasks, "data/tasks");
  const std::string tmp = test::temp_dir("zs-batch");
  // The same items scored one at a time (--batch-size 1, file order) and in batches of 7
  // requests (longest first; the batch edges fall inside tasks of 2-4 choices), FP and
  // quantized in memory (W4 RTN, A4, K/V 4-bit, rotated).
  // FP: every row is the same function of the same tokens; only the GEMMs' blocking over a
  // different number of stacked rows rounds f32 sums differently (measured: |Δll| ≤ 5e-5 on
  // ll of 30-300 nats), so 1e-4 absolute on ll and 1e-5 relative on lambada's perplexity
  // (exp of a mean ll of ~20).
  // Quantized: the same, except that such a 1-ulp difference can move an activation or K/V
  // value across a 4-bit rounding step, which then shifts that request's ll by far more
  // than rounding (measured: 1 of 54 requests, piqa item 5, moved by 0.5 and 2.2 nats).
  // So there at most 3 requests may leave 1e-4, and every item's acc / acc_norm must match.
  for (const std::string q : {"", " --w_bits 4 --w_rtn --a_bits 4 --k_bits 4 --v_bits 4 --rotate"}) {
    SCOPED_TRACE(q.empty() ? "fp" : q);
    json r[2];
    for (int k = 0; k < 2; ++k) {
      const std::string out = tmp + "/r" + std::to_string(k) + (q.empty() ? "f" : "q") + ".json";
      r[k] = test::run_lowbit_json("eval zeroshot --model " + dir + q +
                                       " --tasks arc_easy,piqa,winogrande,lambada_openai --limit 6 --log-samples"
                                       " --quiet --batch-size " + (k == 0 ? "1" : "7") + " --tasks-dir " + tasks,
                                   out);
      ASSERT_FALSE(r[k].is_null());
    }
    EXPECT_EQ(r[0]["config"]["batch_size"], 1);
    EXPECT_EQ(r[1]["config"]["batch_size"], 7);
    int64_t moved = 0, total = 0;
    for (const char* t : {"arc_easy", "piqa", "winogrande", "lambada_openai"}) {
      const json &a = r[0]["samples"][t], &b = r[1]["samples"][t];
      ASSERT_EQ(a.size(), 6u) << t;
      ASSERT_EQ(b.size(), 6u) << t;
      for (size_t i = 0; i < 6; ++i) {
        EXPECT_EQ(a[i]["id"], b[i]["id"]) << t;  // file order in the output either way
        EXPECT_EQ(a[i]["acc"], b[i]["acc"]) << t << " " << i;
        EXPECT_EQ(a[i].value("acc_norm", -1.0), b[i].value("acc_norm", -1.0)) << t << " " << i;
        const auto la = a[i]["loglikelihoods"].get<std::vector<double>>();
        const auto lb = b[i]["loglikelihoods"].get<std::vector<double>>();
        ASSERT_EQ(la.size(), lb.size());
        for (size_t c = 0; c < la.size(); ++c) {
          ++total;
          if (std::fabs(la[c] - lb[c]) <= 1e-4) continue;
          ++moved;
          if (q.empty()) ADD_FAILURE() << t << " item " << i << " choice " << c << ": " << la[c] << " vs " << lb[c];
        }
        if (q.empty()) EXPECT_EQ(a[i]["greedy"], b[i]["greedy"]) << t << " " << i;
      }
      for (const char* metric : {"acc", "acc_norm", "perplexity"})
        if (r[0]["results"][t].contains(metric)) {
          if (std::string(metric) != "perplexity") {
            EXPECT_EQ(r[0]["results"][t][metric], r[1]["results"][t][metric]) << t << " " << metric;
          } else if (q.empty()) {
            const double p0 = r[0]["results"][t][metric], p1 = r[1]["results"][t][metric];
            EXPECT_NEAR(p0, p1, 1e-5 * p0) << t;
          }
        }
    }
    EXPECT_EQ(total, 6 * (4 + 2 + 2 + 1));
    EXPECT_LE(moved, q.empty() ? 0 : 3);
  }
}
