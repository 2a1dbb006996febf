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
// Batched (batch_size > 1): items sorted by total tokens, longest first, are taken in
// batches of at most batch_size requests (at least one item); pass 1 runs the batch's
// prefixes as one LlamaModel::forward_batch (stacked rows, per-sequence attention), each
// prefix's KV rows are copied into its sibling requests' caches, pass 2 runs every
// request's own tokens as one forward_batch. Every row is computed as in the one-at-a-time
// path; only the GEMM's blocking over a different number of rows can round differently.
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

namespace {
// The model inputs of an item's requests (left-truncated like HFLM), the first row that
// predicts each continuation, and the shared prefix length P (0 without prefix reuse).
struct ReqPlan {
  std::vector<std::vector<int32_t>> inp;  // [n][n_i]
  std::vector<int64_t> first;
  int64_t longest = 0, P = 0;
};
ReqPlan plan_requests(const std::vector<LlRequest>& reqs, int64_t max_len, bool prefix_reuse) {
  const size_t n = reqs.size();
  ReqPlan p;
  p.inp.resize(n);
  p.first.resize(n);
  for (size_t i = 0; i < n; ++i) {
    const auto& tk = reqs[i].tokens;
    const int64_t c = reqs[i].cont_len;
    LOWBIT_CHECK(c <= max_len, ArgError, "a continuation of {} tokens does not fit the model's context of {}", c,
                 max_len);
    const int64_t keep = std::min<int64_t>(int64_t(tk.size()), max_len + 1);
    p.inp[i].assign(tk.end() - keep, tk.end() - 1);  // [n_i]
    p.first[i] = int64_t(p.inp[i].size()) - c;
    p.longest = std::max<int64_t>(p.longest, int64_t(p.inp[i].size()));
  }
  if (prefix_reuse && n > 1) {
    p.P = *std::min_element(p.first.begin(), p.first.end());
    for (size_t i = 1; i < n; ++i) {
      int64_t k = 0;
      while (k < p.P && p.inp[i][size_t(k)] == p.inp[0][size_t(k)]) ++k;
      p.P = k;
    }
  }
  return p;
}
LlResult score_rows(const LlRequest& r, const Tensor& logits, int64_t rows, int64_t V) {
  const int64_t c = r.cont_len;
  const int32_t* targets = r.tokens.data() + (r.tokens.size() - size_t(c));
  LlResult out = score_continuation(logits.f32() + (rows - c) * V, c, V, targets);
  LOWBIT_CHECK(std::isfinite(out.ll), NumericError, "non-finite loglikelihood (NaN/Inf in the logits)");
  return out;
}
}  // namespace

std::vector<LlResult> score_requests(LlamaModel& m, const std::vector<LlRequest>& reqs, int64_t max_len,
                                     bool prefix_reuse, int64_t* shared_prefix) {
  const int64_t V = m.cfg.vocab_size;
  const size_t n = reqs.size();
  const ReqPlan p = plan_requests(reqs, max_len, prefix_reuse);
  const auto& inp = p.inp;
  const int64_t P = p.P;
  std::vector<LlResult> out(n);
  if (shared_prefix) *shared_prefix = P;
  KVCache cache = m.make_cache(std::max<int64_t>(p.longest, 1));
  ForwardOptions last;
  last.last_only = true;
  if (P > 0) m.forward(inp[0].data(), P, &cache, last);
  for (size_t i = 0; i < n; ++i) {
    if (reqs[i].cont_len == 0) {  // nothing to score: lm-eval sums an empty slice (0) and all() of nothing is true
      out[i] = {0.0, true};
      continue;
    }
    cache.len = P;
    const int64_t rows = int64_t(inp[i].size()) - P;  // >= c since first[i] >= P
    Tensor logits = m.forward(inp[i].data() + P, rows, &cache);  // [rows, V]
    out[i] = score_rows(reqs[i], logits, rows, V);
  }
  return out;
}

std::vector<std::vector<LlResult>> score_items_batched(LlamaModel& m, const std::vector<const ZsItem*>& items,
                                                       int64_t max_len, bool prefix_reuse) {
  const int64_t V = m.cfg.vocab_size;
  const size_t B = items.size();
  std::vector<ReqPlan> plans;
  std::vector<std::vector<LlResult>> out(B);
  // One cache per request (its item's prefix is copied in after pass 1).
  std::vector<std::vector<KVCache>> caches(B);
  for (size_t b = 0; b < B; ++b) {
    plans.push_back(plan_requests(items[b]->reqs, max_len, prefix_reuse));
    out[b].resize(items[b]->reqs.size());
    for (size_t i = 0; i < items[b]->reqs.size(); ++i)
      caches[b].push_back(m.make_cache(std::max<int64_t>(int64_t(plans[b].inp[i].size()), 1)));
  }
  // Pass 1: every item's shared prefix, stacked, into its first request's cache.
  std::vector<LlamaModel::BatchSeq> pre;
  for (size_t b = 0; b < B; ++b)
    if (plans[b].P > 0) pre.push_back({plans[b].inp[0].data(), plans[b].P, &caches[b][0], true});
  if (!pre.empty()) m.forward_batch(pre);
  for (size_t b = 0; b < B; ++b) {
    const int64_t P = plans[b].P;
    if (P == 0) continue;
    const KVCache& src = caches[b][0];
    const size_t span = size_t(P * m.cfg.num_kv_heads * m.cfg.head_dim);
    for (size_t i = 1; i < caches[b].size(); ++i) {
      KVCache& dst = caches[b][i];
      for (size_t l = 0; l < src.k.size(); ++l) {
        std::copy(src.k[l].begin(), src.k[l].begin() + std::ptrdiff_t(span), dst.k[l].begin());
        std::copy(src.v[l].begin(), src.v[l].begin() + std::ptrdiff_t(span), dst.v[l].begin());
      }
      dst.len = P;
    }
  }
  // Pass 2: every request's own tokens after its item's prefix, stacked.
  std::vector<LlamaModel::BatchSeq> seqs;
  std::vector<std::pair<size_t, size_t>> who;
  for (size_t b = 0; b < B; ++b)
    for (size_t i = 0; i < items[b]->reqs.size(); ++i) {
      if (items[b]->reqs[i].cont_len == 0) {  // as score_requests
        out[b][i] = {0.0, true};
        continue;
      }
      const int64_t P = plans[b].P;
      seqs.push_back({plans[b].inp[i].data() + P, int64_t(plans[b].inp[i].size()) - P, &caches[b][i], false});
      who.emplace_back(b, i);
    }
  if (seqs.empty()) return out;
  std::vector<Tensor> logits = m.forward_batch(seqs);
  for (size_t s = 0; s < seqs.size(); ++s) {
    const auto [b, i] = who[s];
    out[b][i] = score_rows(items[b]->reqs[i], logits[s], seqs[s].T, V);
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
    // Scores in file order (batch size 1), or in batches of items taken longest first
    // (lm-eval's order) with up to batch_size requests per batch; metrics use file order.
    std::vector<std::vector<LlResult>> results(items.size());
    std::vector<double> acc_done;  // the progress line's running accuracy
    auto item_acc = [&](const ZsItem& it, const std::vector<LlResult>& res) {
      if (kind == TaskKind::Lambada) return res[0].greedy ? 1.0 : 0.0;
      std::vector<double> ll(res.size());
      for (size_t i = 0; i < res.size(); ++i) ll[i] = res[i].ll;
      return argmax_first(ll) == it.gold ? 1.0 : 0.0;
    };
    if (opt.batch_size <= 1) {
      for (size_t k = 0; k < items.size(); ++k) {
        results[k] = score_requests(m, items[k].reqs, max_len, opt.prefix_reuse);
        acc_done.push_back(item_acc(items[k], results[k]));
        prog.update(int64_t(k + 1), fmt::format("acc {:.4f}", py_mean(acc_done)));
      }
    } else {
      std::vector<size_t> order(items.size());
      std::vector<int64_t> len(items.size(), 0);
      for (size_t k = 0; k < items.size(); ++k) {
        order[k] = k;
        for (const auto& r : items[k].reqs) len[k] += int64_t(r.tokens.size());
      }
      std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return len[a] > len[b]; });
      size_t next = 0;
      while (next < order.size()) {
        std::vector<const ZsItem*> batch;
        std::vector<size_t> ks;
        int64_t nreq = 0;
        while (next < order.size() &&
               (batch.empty() || nreq + int64_t(items[order[next]].reqs.size()) <= opt.batch_size)) {
          ks.push_back(order[next]);
          batch.push_back(&items[order[next]]);
          nreq += int64_t(items[order[next]].reqs.size());
          ++next;
        }
        std::vector<std::vector<LlResult>> res = score_items_batched(m, batch, max_len, opt.prefix_reuse);
        for (size_t j = 0; j < ks.size(); ++j) {
          results[ks[j]] = std::move(res[j]);
          acc_done.push_back(item_acc(items[ks[j]], results[ks[j]]));
        }
        prog.update(int64_t(next), fmt::format("acc {:.4f}", py_mean(acc_done)));
      }
    }
    for (size_t k = 0; k < items.size(); ++k) {
      const ZsItem& it = items[k];
      const std::vector<LlResult>& res = results[k];
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
                   {"max_length", max_len}, {"prefix_reuse", opt.prefix_reuse}, {"add_bos", add_bos},
                   {"batch_size", opt.batch_size}};
  return out;
}

}  // namespace lowbit
