#include "eval/generate.h"

#include <algorithm>
#include <cmath>
#include <memory>
#include <numeric>

#include "backend/cuda/cuda_llama.h"
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

namespace {

// prompt_len tokens (ids, or embeddings when x is given) then up to max_new_tokens decoded.
std::vector<int32_t> generate_impl(LlamaModel& model, const std::vector<int32_t>* prompt, const std::vector<float>* x,
                                   int64_t prompt_len, const GenOptions& opt,
                                   const std::function<void(int32_t)>& on_token) {
  LOWBIT_CHECK(prompt_len > 0, ArgError, "generate: the prompt has no tokens (not even BOS)");
  LOWBIT_CHECK(opt.max_new_tokens >= 0, ArgError, "--max-new-tokens must be >= 0, got {}", opt.max_new_tokens);
  LOWBIT_CHECK(opt.temperature >= 0, ArgError, "--temperature must be >= 0, got {}", opt.temperature);
  LOWBIT_CHECK(opt.top_p > 0 && opt.top_p <= 1, ArgError, "--top-p must be in (0, 1], got {}", opt.top_p);
  const int64_t ctx = model.cfg.max_position;
  LOWBIT_CHECK(prompt_len < ctx, ArgError, "the prompt has {} tokens; the model's context is {}", prompt_len, ctx);
  int64_t budget = std::min<int64_t>(opt.max_new_tokens, ctx - prompt_len);
  if (budget < opt.max_new_tokens)
    log_warn(fmt::format("generation stops at the model's context of {} tokens", ctx));
  uint64_t rng = opt.seed;
  std::vector<int32_t> out;
  if (budget == 0) return out;
  const int64_t max_seq = prompt_len + budget;
  // step(ids, T): logits [V] of the last of T more tokens. On --device cuda plain and
  // weight-quantized models decode device-resident (KV cache on the GPU).
  std::function<std::vector<float>(const int32_t*, int64_t)> step;
  std::unique_ptr<cuda::LlamaRunner> runner;
  KVCache cache;
  ForwardOptions fo;
  fo.last_only = true;
  if (!x && default_device() == Device::CUDA && cuda::fast_path_unsupported(model).empty()) {
    runner = std::make_unique<cuda::LlamaRunner>(model);
    runner->begin_sequence(max_seq);
    step = [&](const int32_t* ids, int64_t T) { return runner->feed(ids, T); };
  } else {
    cache = model.make_cache(max_seq);
    step = [&](const int32_t* ids, int64_t T) { return model.forward(ids, T, &cache, fo).to_vector(); };
  }
  std::vector<float> logits;
  if (x) {
    LOWBIT_ASSERT(int64_t(x->size()) == prompt_len * model.cfg.hidden_size);
    logits = model.forward_embeds(x->data(), prompt_len, &cache, fo).to_vector();
  } else {
    logits = step(prompt->data(), prompt_len);
  }
  const int64_t V = model.cfg.vocab_size;
  for (int64_t i = 0; i < budget; ++i) {
    int32_t next = sample_token(logits.data(), V, opt.temperature, opt.top_p, &rng);
    out.push_back(next);
    if (on_token) on_token(next);
    if (next == opt.eos_id || i + 1 == budget) break;
    if (std::find(opt.stop_ids.begin(), opt.stop_ids.end(), next) != opt.stop_ids.end()) break;
    logits = step(&next, 1);
  }
  return out;
}

}  // namespace

std::vector<int32_t> generate(LlamaModel& model, const std::vector<int32_t>& prompt, const GenOptions& opt,
                              const std::function<void(int32_t)>& on_token) {
  return generate_impl(model, &prompt, nullptr, int64_t(prompt.size()), opt, on_token);
}

std::vector<int32_t> generate_from_embeds(LlamaModel& model, const std::vector<float>& x, int64_t T,
                                          const GenOptions& opt, const std::function<void(int32_t)>& on_token) {
  return generate_impl(model, nullptr, &x, T, opt, on_token);
}

}  // namespace lowbit
