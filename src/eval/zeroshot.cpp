// Zero-shot scoring (eval/zeroshot.h): loglikelihoods of continuations with prefix reuse,
// lm-eval's per-item metrics and their aggregation / standard errors.
//
// For a request with model input inp = tokens[-(max_len+1):][:-1] (n tokens) and c
// continuation tokens, the continuation is predicted by logits rows n-c .. n-1:
//   ll = Σ_{j<c} log softmax(logits[n-c+j])[cont_j]   (log-sum-exp in double)
// The choices of one item share a token prefix P (longest common prefix of their inputs,
// cut to at most the first predicting row of every choice). P runs once into a KV cache;
// each choice then runs inp[P:] from position P (the cache's len reset to P, which is
// all later positions' attention reads), giving the same rows as a full forward.
#include "eval/zeroshot.h"

#include <algorithm>
#include <chrono>
#include <cmath>

#include "core/error.h"
#include "core/progress.h"

namespace lowbit {

// Σ log p(targets) over rows [c, V] and whether each target was its row's (first) argmax.
LlResult score_continuation(const float* logits, int64_t c, int64_t V, const int32_t* targets) {
  LlResult r;
  r.greedy = true;
  for (int64_t t = 0; t < c; ++t) {
    const float* row = logits + t * V;
    int64_t am = 0;
    for (int64_t i = 1; i < V; ++i)
      if (row[i] > row[am]) am = i;
    double s = 0;
    const float mx = row[am];
    for (int64_t i = 0; i < V; ++i) s += std::exp(double(row[i]) - double(mx));
    r.ll += double(row[targets[t]]) - double(mx) - std::log(s);
    if (am != targets[t]) r.greedy = false;
  }
  return r;
}

std::vector<LlResult> score_requests(LlamaModel& m, const std::vector<LlRequest>& reqs, int64_t max_len,
                                     bool prefix_reuse, int64_t* shared_prefix) {
  const int64_t V = m.cfg.vocab_size;
  const size_t n = reqs.size();
  // Model inputs (left-truncated like HFLM) and the first row predicting the continuation.
  std::vector<std::vector<int32_t>> inp(n);
  std::vector<int64_t> first(n);
  std::vector<LlResult> out(n);
  int64_t longest = 0;
  for (size_t i = 0; i < n; ++i) {
    const auto& tk = reqs[i].tokens;
    const int64_t c = reqs[i].cont_len;
    LOWBIT_CHECK(c <= max_len, ArgError, "a continuation of {} tokens does not fit the model's context of {}", c,
                 max_len);
    const int64_t keep = std::min<int64_t>(int64_t(tk.size()), max_len + 1);
    inp[i].assign(tk.end() - keep, tk.end() - 1);  // [n_i]
    first[i] = int64_t(inp[i].size()) - c;
    longest = std::max<int64_t>(longest, int64_t(inp[i].size()));
  }
  // Shared prefix length P.
  int64_t P = 0;
  if (prefix_reuse && n > 1) {
    P = *std::min_element(first.begin(), first.end());
    for (size_t i = 1; i < n; ++i) {
      int64_t k = 0;
      while (k < P && inp[i][size_t(k)] == inp[0][size_t(k)]) ++k;
      P = k;
    }
  }
  if (shared_prefix) *shared_prefix = P;
  KVCache cache = m.make_cache(std::max<int64_t>(longest, 1));
  ForwardOptions last;
  last.last_only = true;
  if (P > 0) m.forward(inp[0].data(), P, &cache, last);
  for (size_t i = 0; i < n; ++i) {
    const int64_t c = reqs[i].cont_len;
    if (c == 0) {  // nothing to score: lm-eval sums an empty slice (0) and all() of nothing is true
      out[i] = {0.0, true};
      continue;
    }
    cache.len = P;
    const int64_t rows = int64_t(inp[i].size()) - P;  // >= c since first[i] >= P
    Tensor logits = m.forward(inp[i].data() + P, rows, &cache);  // [rows, V]
    const int32_t* targets = reqs[i].tokens.data() + (reqs[i].tokens.size() - size_t(c));
    out[i] = score_continuation(logits.f32() + (rows - c) * V, c, V, targets);
    LOWBIT_CHECK(std::isfinite(out[i].ll), NumericError, "non-finite loglikelihood (NaN/Inf in the logits)");
  }
  return out;
}

// ---- metrics ----------------------------------------------------------------------------

int64_t argmax_first(const std::vector<double>& v) {
  int64_t am = 0;
  for (size_t i = 1; i < v.size(); ++i)
    if (v[i] > v[size_t(am)]) am = int64_t(i);
  return am;
}

namespace {
double py_mean(const std::vector<double>& x) {
  double s = 0;  // Python's sum(): left to right
  for (double v : x) s += v;
  return s / double(x.size());
}
double sample_stddev(const std::vector<double>& x) {
  const double mu = py_mean(x);
  double s = 0;
  for (double v : x) s += (v - mu) * (v - mu);
  return std::sqrt(s / double(x.size() - 1));
}
}  // namespace

double mean_stderr(const std::vector<double>& x) {
  if (x.size() < 2) return 0.0;
  return sample_stddev(x) / std::sqrt(double(x.size()));
}

// CPython's _random: init_genrand / init_by_array (seed(int) uses the int's 32-bit
// words, little end first; 0 gives the key [0]) and genrand_res53.
PyRandom::PyRandom(uint32_t seed) {
  mt_[0] = 5489u;
  auto init_genrand = [this](uint32_t s) {
    mt_[0] = s;
    for (uint32_t i = 1; i < 624; ++i) mt_[i] = 1812433253u * (mt_[i - 1] ^ (mt_[i - 1] >> 30)) + i;
  };
  init_genrand(19650218u);
  const uint32_t key[1] = {seed};
  const uint32_t key_len = 1;
  uint32_t i = 1, j = 0;
  for (uint32_t k = 624; k; --k) {
    mt_[i] = (mt_[i] ^ ((mt_[i - 1] ^ (mt_[i - 1] >> 30)) * 1664525u)) + key[j] + j;
    ++i;
    ++j;
    if (i >= 624) {
      mt_[0] = mt_[623];
      i = 1;
    }
    if (j >= key_len) j = 0;
  }
  for (uint32_t k = 623; k; --k) {
    mt_[i] = (mt_[i] ^ ((mt_[i - 1] ^ (mt_[i - 1] >> 30)) * 1566083941u)) - i;
    ++i;
    if (i >= 624) {
      mt_[0] = mt_[623];
      i = 1;
    }
  }
  mt_[0] = 0x80000000u;
  idx_ = 624;
}

uint32_t PyRandom::genrand() {
  static constexpr uint32_t kMag[2] = {0u, 0x9908b0dfu};
  if (idx_ >= 624) {
    int kk = 0;
    for (; kk < 624 - 397; ++kk) {
      const uint32_t y = (mt_[kk] & 0x80000000u) | (mt_[kk + 1] & 0x7fffffffu);
      mt_[kk] = mt_[kk + 397] ^ (y >> 1) ^ kMag[y & 1u];
    }
    for (; kk < 623; ++kk) {
      const uint32_t y = (mt_[kk] & 0x80000000u) | (mt_[kk + 1] & 0x7fffffffu);
      mt_[kk] = mt_[kk + (397 - 624)] ^ (y >> 1) ^ kMag[y & 1u];
    }
    const uint32_t y = (mt_[623] & 0x80000000u) | (mt_[0] & 0x7fffffffu);
    mt_[623] = mt_[396] ^ (y >> 1) ^ kMag[y & 1u];
    idx_ = 0;
  }
  uint32_t y = mt_[idx_++];
  y ^= (y >> 11);
  y ^= (y << 7) & 0x9d2c5680u;
  y ^= (y << 15) & 0xefc60000u;
  y ^= (y >> 18);
  return y;
}

double PyRandom::random() {
  const uint32_t a = genrand() >> 5, b = genrand() >> 6;
  return (double(a) * 67108864.0 + double(b)) * (1.0 / 9007199254740992.0);
}

// lm-eval: bootstrap_stderr(perplexity, xs, iters): chunks i = 0 .. iters/chunk-1 of
// chunk = min(1000, iters) resamples, each rnd = random.Random(i); rnd.choices(xs, k=len(xs))
// (index floor(random()·n)); the statistic exp(-mean); the result is the sample standard
// deviation of all resampled statistics.
double perplexity_bootstrap_stderr(const std::vector<double>& ll, int64_t iters) {
  const int64_t n = int64_t(ll.size());
  if (n == 0 || iters < 2) return 0.0;
  const int64_t chunk = std::min<int64_t>(1000, iters), nchunks = iters / chunk;
  std::vector<double> stats(size_t(nchunks * chunk));
#pragma omp parallel for schedule(dynamic)
  for (int64_t c = 0; c < nchunks; ++c) {
    PyRandom rnd{uint32_t(c)};
    for (int64_t r = 0; r < chunk; ++r) {
      double s = 0;
      for (int64_t k = 0; k < n; ++k) s += ll[size_t(std::floor(rnd.random() * double(n)))];
      stats[size_t(c * chunk + r)] = std::exp(-(s / double(n)));
    }
  }
  return stats.size() < 2 ? 0.0 : sample_stddev(stats);
}

// ---- evaluation ---------------------------------------------------------------------------

nlohmann::json eval_zeroshot(LlamaModel& m, const Tokenizer& tok, const std::vector<std::string>& tasks,
                             const ZeroShotOptions& opt) {
  LOWBIT_CHECK(!tasks.empty(), ArgError, "--tasks: no task given");
  for (const auto& t : tasks) task_kind(t);  // unknown names fail before any loading
  // HFLM's max_length: the model's context (max_position_embeddings), 2048 when absent.
  const int64_t max_len = m.cfg.max_position > 0 ? m.cfg.max_position : 2048;
  // Load and tokenize everything first: a bad file fails before hours of scoring.
  std::vector<std::vector<ZsItem>> all;
  const bool add_bos = opt.add_bos >= 0 ? opt.add_bos == 1 : hf_adds_bos(m.dir, tok);
  for (const auto& t : tasks) all.push_back(load_task(t, opt.tasks_dir, tok, opt.limit, add_bos));
  // lm-eval asserts every continuation fits the context window (it cannot left-truncate a
  // continuation); say which item does not, before any scoring.
  for (size_t ti = 0; ti < tasks.size(); ++ti)
    for (const ZsItem& it : all[ti])
      for (size_t i = 0; i < it.reqs.size(); ++i)
        LOWBIT_CHECK(it.reqs[i].cont_len <= max_len, ArgError,
                     "task '{}' item {}: continuation {} is {} tokens, more than the model's context of {} (lm-eval "
                     "cannot score it either); leave the item out of {}/{}.jsonl or use --limit",
                     tasks[ti], it.id, i, it.reqs[i].cont_len, max_len, opt.tasks_dir, tasks[ti]);

  nlohmann::json out = {{"results", nlohmann::json::object()},
                        {"n-samples", nlohmann::json::object()},
                        {"seconds", nlohmann::json::object()}};
  for (size_t ti = 0; ti < tasks.size(); ++ti) {
    const std::string& task = tasks[ti];
    const TaskKind kind = task_kind(task);
    const auto& items = all[ti];
    int64_t total_tokens = 0;
    for (const auto& it : items)
      for (const auto& r : it.reqs) total_tokens += int64_t(r.tokens.size());
    const auto t0 = std::chrono::steady_clock::now();
    Progress prog(task, int64_t(items.size()), opt.progress);
    std::vector<double> acc, acc_norm, lls;
    nlohmann::json samples = nlohmann::json::array();
    for (size_t k = 0; k < items.size(); ++k) {
      const ZsItem& it = items[k];
      std::vector<LlResult> res = score_requests(m, it.reqs, max_len, opt.prefix_reuse);
      if (kind == TaskKind::Lambada) {
        acc.push_back(res[0].greedy ? 1.0 : 0.0);
        lls.push_back(res[0].ll);
      } else {
        std::vector<double> ll(res.size()), norm(res.size());
        for (size_t i = 0; i < res.size(); ++i) {
          ll[i] = res[i].ll;
          norm[i] = res[i].ll / double(it.choice_len[i]);
        }
        acc.push_back(argmax_first(ll) == it.gold ? 1.0 : 0.0);
        acc_norm.push_back(argmax_first(norm) == it.gold ? 1.0 : 0.0);
      }
      if (opt.log_samples) {
        nlohmann::json s = {{"id", it.id}, {"gold", it.gold}, {"acc", acc.back()}};
        for (const auto& r : res) {
          s["loglikelihoods"].push_back(r.ll);
          s["greedy"].push_back(r.greedy);
        }
        if (!acc_norm.empty() && kind != TaskKind::Lambada) s["acc_norm"] = acc_norm.back();
        samples.push_back(std::move(s));
      }
      prog.update(int64_t(k + 1), fmt::format("acc {:.4f}", py_mean(acc)));
    }
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    prog.finish(fmt::format("acc {:.4f}, {:.0f} tok/s", py_mean(acc), double(total_tokens) / secs));
    nlohmann::json r = {{"alias", task}, {"acc", py_mean(acc)}, {"acc_stderr", mean_stderr(acc)}};
    if (kind == TaskKind::Lambada) {
      r["perplexity"] = std::exp(-py_mean(lls));
      r["perplexity_stderr"] = perplexity_bootstrap_stderr(lls, opt.bootstrap_iters);
    } else if (task_reports_acc_norm(task)) {
      r["acc_norm"] = py_mean(acc_norm);
      r["acc_norm_stderr"] = mean_stderr(acc_norm);
    }
    out["results"][task] = r;
    out["n-samples"][task] = {{"effective", items.size()}};
    out["seconds"][task] = secs;
    if (opt.log_samples) out["samples"][task] = std::move(samples);
  }
  out["config"] = {{"model", m.dir}, {"limit", opt.limit}, {"tasks_dir", opt.tasks_dir},
                   {"max_length", max_len}, {"prefix_reuse", opt.prefix_reuse}, {"add_bos", add_bos}};
  return out;
}

}  // namespace lowbit
