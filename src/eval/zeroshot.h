// Zero-shot tasks scored as lm-evaluation-harness (lm-eval 0.4.x, HFLM) scores them.
//
// Every item becomes loglikelihood requests (context, continuation):
//   multiple choice (arc_easy, arc_challenge, piqa, openbookqa, siqa):
//       one request per choice c: (doc_to_text(doc), " " + c)        — target delimiter " "
//   winogrande (partial scoring): sentence = pre + "_" + post; one request per option o:
//       (pre + o, " " + strip(post))   — the contexts differ, the continuation is shared
//   lambada_openai: words = text.split(' '); (join(words[:-1], ' '), " " + words[-1])
// A request is tokenized like HFLM._encode_pair: trailing whitespace of the context moves
// to the front of the continuation, whole = encode(context + continuation) and
// ctx = encode(context), each with a BOS exactly when Hugging Face's tokenizer adds one
// (HFLM 0.4.13 leaves add_special_tokens to the tokenizer; see hf_adds_bos);
// the continuation tokens are whole[len(ctx):]. The model sees
// (ctx ++ continuation)[-(max_len+1):][:-1] (left-truncated to the context window) and
//   ll(request)  = Σ_{continuation tokens t} log softmax(logits at t-1)[token t]
//   greedy       = every continuation token is its position's argmax.
// Metrics per item (means over items; *_stderr = sample std / sqrt(n)):
//   acc      = [argmax_i ll_i == gold]
//   acc_norm = [argmax_i ll_i / len(choice_i) == gold]  (multiple choice; len as Python's
//              len(str): code points of the choice without the delimiter — lm-eval's
//              acc_norm code; its byte-length variant is the separate metric acc_bytes)
//   lambada: acc = greedy; perplexity = exp(-mean ll), its stderr bootstrapped as lm-eval
//            does (100 chunks × 1000 resamples, chunk i drawn by Python's random.Random(i)).
// argmax ties resolve to the first index (numpy argmax).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "io/tokenizer.h"
#include "models/llama.h"

namespace lowbit {

struct ZeroShotOptions {
  std::string tasks_dir;   // folder with <task>.jsonl (the caller resolves the default ../shared/data/tasks)
  int64_t limit = -1;      // first N items of each task (-1: all)
  // The choices of an item share one forward over their common token prefix (KV cache),
  // then each choice runs only its own tokens.
  bool prefix_reuse = true;  // false: every request runs from position 0 (tests compare both)
  // Requests per batched forward (items sorted longest first; see zeroshot.cpp); 1: the
  // one-item-at-a-time path above, in file order.
  int64_t batch_size = 8;
  bool progress = true;
  bool log_samples = false;  // per-item loglikelihoods under "samples" (lm-eval's --log_samples)
  // Whether requests start with BOS: -1 as Hugging Face's tokenizer of the model's
  // directory does it (hf_adds_bos(m.dir)), 0 / 1 to force.
  int add_bos = -1;
  int64_t bootstrap_iters = 100000;  // lambada perplexity stderr (lm-eval's default)
};

// One loglikelihood request, tokenized.
struct LlRequest {
  std::string context, continuation;  // after moving the context's trailing whitespace
  // encode(context) ++ encode(context + continuation)[len(encode(context)):] — what HFLM
  // feeds the model (not always encode(context + continuation) when a token straddles the cut)
  std::vector<int32_t> tokens;
  int64_t cont_len = 0;               // the continuation tokens are the last cont_len of `tokens`
};
struct LlResult {
  double ll = 0;        // Σ log p(continuation token)
  bool greedy = false;  // every continuation token was the argmax
};

// Task documents turned into requests.
struct ZsItem {
  std::string id;
  std::vector<LlRequest> reqs;  // one per choice (lambada: one)
  std::vector<int64_t> choice_len;  // acc_norm's divisor per request (Prompt::choice_len)
  int64_t gold = -1;            // index of the right choice (lambada: -1)
};
enum class TaskKind { MultipleChoice, Winogrande, Lambada };

// Known task names and their kinds; ArgError for an unknown name (listing the known ones).
TaskKind task_kind(const std::string& task);
const std::vector<std::string>& known_tasks();
// Whether lm-eval's task yaml lists acc_norm among its metrics.
bool task_reports_acc_norm(const std::string& task);

// lm-eval's doc_to_text / doc_to_choice / doc_to_target on one of our jsonl records (pure,
// for tests): request i is (contexts[i], continuations[i]) before _encode_pair's
// whitespace move. Multiple choice: one context, continuations " " + choice; winogrande:
// contexts pre + option, one continuation; lambada: one request.
struct Prompt {
  std::vector<std::string> contexts, continuations;  // same length
  std::vector<int64_t> choice_len;  // lm-eval's len(choice) for acc_norm (code points; see zeroshot.cpp)
  int64_t gold = -1;
};
Prompt make_prompt(const std::string& task, const nlohmann::json& doc);
// What acc_norm divides by for a choice string (see zeroshot_tasks.cpp).
int64_t choice_length(const std::string& choice);

// Whether transformers' tokenizer for `model_dir` prepends BOS in encode(text) (its default
// add_special_tokens=True). transformers 5 builds it from tokenizer.json when present, and
// then the post-processor alone decides (a template that starts with a special token;
// tokenizer_config's add_bos_token is not consulted — checked with transformers 5.24);
// with only tokenizer.model, LLaMA's SentencePiece tokenizer adds BOS (tok.add_bos()).
bool hf_adds_bos(const std::string& model_dir, const Tokenizer& tok);
// HFLM.tok_encode: [BOS if add_bos] + encode(text) (no BOS when text starts with the BOS string).
std::vector<int32_t> hf_encode(const Tokenizer& tok, const std::string& text, bool add_bos);
// _encode_pair: trailing whitespace moved, then whole / context tokenization (an empty
// context becomes the prefix token, as HFLM.loglikelihood does).
LlRequest encode_request(const Tokenizer& tok, const std::string& context, const std::string& continuation,
                         bool add_bos);

// Reads <tasks_dir>/<task>.jsonl (first `limit` lines), IoError/FormatError naming file and line.
std::vector<ZsItem> load_task(const std::string& task, const std::string& tasks_dir, const Tokenizer& tok,
                              int64_t limit, bool add_bos);

// Scores the requests of one item: their common token prefix runs once when prefix_reuse
// (its length goes to *shared_prefix when given). max_len: the model's context window.
std::vector<LlResult> score_requests(LlamaModel& m, const std::vector<LlRequest>& reqs, int64_t max_len,
                                     bool prefix_reuse, int64_t* shared_prefix = nullptr);
// Several items at once (ZeroShotOptions::batch_size > 1): their prefixes in one batched
// forward, then all their requests' own tokens in another; results per item, per request.
std::vector<std::vector<LlResult>> score_items_batched(LlamaModel& m, const std::vector<const ZsItem*>& items,
                                                       int64_t max_len, bool prefix_reuse);
// ll and greedy of targets [c] under logits rows [c, V] (row j predicts targets[j]).
LlResult score_continuation(const float* logits, int64_t c, int64_t V, const int32_t* targets);

// ---- metrics (pure) ------------------------------------------------------------------
// numpy-style argmax (first maximum).
int64_t argmax_first(const std::vector<double>& v);
// sqrt(Σ(x-mean)² / (n-1)) / sqrt(n)  (lm-eval mean_stderr); 0 for n < 2.
double mean_stderr(const std::vector<double>& x);
// lm-eval's bootstrap stderr of perplexity = exp(-mean(ll)) over `iters` resamples drawn
// with Python's random.Random(chunk).choices, chunks of min(1000, iters).
double perplexity_bootstrap_stderr(const std::vector<double>& ll, int64_t iters);
// Python's random.Random(seed): MT19937 seeded by init_by_array, random() = 53-bit double.
class PyRandom {
 public:
  explicit PyRandom(uint32_t seed);
  double random();
  uint32_t genrand();

 private:
  uint32_t mt_[624];
  int idx_ = 625;
};

// Scores each task exactly as lm-eval-harness does; returns lm-eval-shaped JSON:
// {"results": {"<task>": {"acc", "acc_stderr", "acc_norm", "acc_norm_stderr" (multiple
// choice), lambada: "acc", "acc_stderr", "perplexity", "perplexity_stderr"}},
//  "n-samples": {"<task>": {"original", "effective"}}, "config": {...}, "seconds": {...}}
nlohmann::json eval_zeroshot(LlamaModel& m, const Tokenizer& tok, const std::vector<std::string>& tasks,
                             const ZeroShotOptions& opt);

}  // namespace lowbit
