#include "eval/generate.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "core/error.h"
#include "core/progress.h"
#include "core/rng.h"

namespace lowbit {

int32_t sample_token(const float* logits, int64_t V, double temperature, double top_p, uint64_t* rng) {
  if (temperature <= 0.0) return int32_t(std::max_element(logits, logits + V) - logits);
  const float mx = *std::max_element(logits, logits + V);
  std::vector<double> p(static_cast<size_t>(V));
  double sum = 0;
  for (int64_t i = 0; i < V; ++i) sum += (p[size_t(i)] = std::exp((double(logits[i]) - mx) / temperature));
  std::vector<int32_t> order(static_cast<size_t>(V));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return p[size_t(a)] > p[size_t(b)]; });
  // Nucleus: smallest prefix whose mass reaches top_p (always at least one token).
  size_t keep = 0;
  double mass = 0;
  while (keep < order.size()) {
    mass += p[size_t(order[keep])] / sum;
    ++keep;
    if (mass >= top_p) break;
  }
  double kept = 0;
  for (size_t i = 0; i < keep; ++i) kept += p[size_t(order[i])];
  SplitMix64 g(*rng);  // *rng is the generator's state word; advance it by one draw
  double u = g.uniform() * kept;
  *rng = g.state();
  for (size_t i = 0; i < keep; ++i) {
    u -= p[size_t(order[i])];
    if (u <= 0) return order[i];
  }
  return order[keep - 1];
}

std::vector<int32_t> generate(LlamaModel& model, const std::vector<int32_t>& prompt, const GenOptions& opt,
                              const std::function<void(int32_t)>& on_token) {
  LOWBIT_CHECK(!prompt.empty(), ArgError, "generate: the prompt has no tokens (not even BOS)");
  LOWBIT_CHECK(opt.max_new_tokens >= 0, ArgError, "--max-new-tokens must be >= 0, got {}", opt.max_new_tokens);
  LOWBIT_CHECK(opt.temperature >= 0, ArgError, "--temperature must be >= 0, got {}", opt.temperature);
  LOWBIT_CHECK(opt.top_p > 0 && opt.top_p <= 1, ArgError, "--top-p must be in (0, 1], got {}", opt.top_p);
  const int64_t ctx = model.cfg.max_position;
  LOWBIT_CHECK(int64_t(prompt.size()) < ctx, ArgError, "the prompt has {} tokens; the model's context is {}",
               prompt.size(), ctx);
  int64_t budget = std::min<int64_t>(opt.max_new_tokens, ctx - int64_t(prompt.size()));
  if (budget < opt.max_new_tokens)
    log_warn(fmt::format("generation stops at the model's context of {} tokens", ctx));
  KVCache cache = model.make_cache(int64_t(prompt.size()) + budget);
  uint64_t rng = opt.seed;
  ForwardOptions fo;
  fo.last_only = true;
  std::vector<int32_t> out;
  if (budget == 0) return out;
  Tensor logits = model.forward(prompt.data(), int64_t(prompt.size()), &cache, fo);
  const int64_t V = model.cfg.vocab_size;
  for (int64_t i = 0; i < budget; ++i) {
    int32_t next = sample_token(logits.f32(), V, opt.temperature, opt.top_p, &rng);
    out.push_back(next);
    if (on_token) on_token(next);
    if (next == opt.eos_id || i + 1 == budget) break;
    logits = model.forward(&next, 1, &cache, fo);
  }
  return out;
}

}  // namespace lowbit
