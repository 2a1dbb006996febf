#include "eval/perplexity.h"

#include <chrono>
#include <cmath>

#include "backend/cuda/cuda_llama.h"
#include "core/error.h"
#include "core/fault.h"
#include "core/progress.h"

namespace lowbit {

std::vector<int32_t> tokenize_stream(const Tokenizer& tok, const std::string& text, int32_t bos_fallback) {
  LOWBIT_CHECK(!text.empty(), ArgError, "the evaluation text is empty");
  std::vector<int32_t> ids = tok.encode(text);
  LOWBIT_CHECK(!ids.empty(), ArgError, "the evaluation text produced no tokens");
  int32_t bos = tok.bos_id() >= 0 ? tok.bos_id() : bos_fallback;
  if (bos >= 0) ids.insert(ids.begin(), bos);
  return ids;
}

double sum_nll(const float* logits, int64_t T, int64_t V, const int32_t* targets) {
  double total = 0;
#pragma omp parallel for reduction(+ : total) schedule(static)
  for (int64_t t = 0; t < T; ++t) {
    const float* row = logits + t * V;
    float mx = row[0];
    for (int64_t i = 1; i < V; ++i) mx = std::max(mx, row[i]);
    double s = 0;  // f32 exponentials (each exact to an ulp), summed in double
    for (int64_t i = 0; i < V; ++i) s += std::exp(row[i] - mx);
    total += std::log(s) + mx - double(row[targets[t]]);
  }
  return total;
}

PplResult perplexity(LlamaModel& model, const std::vector<int32_t>& tokens, const PplOptions& opt) {
  const int64_t L = opt.seqlen;
  LOWBIT_CHECK(L >= 2, ArgError, "--seqlen must be at least 2, got {}", L);
  LOWBIT_CHECK(L <= model.cfg.max_position, ArgError,
               "--seqlen {} is larger than the model's context ({} max_position_embeddings)", L,
               model.cfg.max_position);
  int64_t nwin = int64_t(tokens.size()) / L;
  LOWBIT_CHECK(nwin > 0, ArgError, "the text has {} tokens, fewer than one window of --seqlen {}", tokens.size(), L);
  if (opt.max_windows > 0) nwin = std::min(nwin, opt.max_windows);

  auto t0 = std::chrono::steady_clock::now();
  const int64_t V = model.cfg.vocab_size;
  PplResult r;
  // On --device cuda, plain and weight-quantized models run device-resident (weights
  // uploaded once, only ids and NLLs cross the bus); the rest through the CUDA Backend.
  std::unique_ptr<cuda::LlamaRunner> runner;
  r.path = default_device() == Device::CUDA ? "cuda" : "cpu";
  if (default_device() == Device::CUDA) {
    const std::string why = cuda::fast_path_unsupported(model);
    if (why.empty()) {
      runner = std::make_unique<cuda::LlamaRunner>(model);
      r.path = "cuda (device-resident)";
    } else {
      r.path = "cuda (generic backend: " + why + ")";
    }
    log_info("ppl: " + r.path);
  }
  Progress prog("ppl", nwin, opt.progress);
  double total = 0;
  for (int64_t w = 0; w < nwin; ++w) {
    if (w == nwin / 2) fault_point("eval");
    const int32_t* ids = tokens.data() + w * L;
    double nll = 0;
    if (runner) {
      for (double v : runner->window_nll(ids, L)) nll += v;
    } else {
      Tensor logits = model.forward(ids, L, nullptr);  // [L, V]
      nll = sum_nll(logits.f32(), L - 1, V, ids + 1);
    }
    LOWBIT_CHECK(std::isfinite(nll), NumericError, "non-finite loss in window {} (NaN/Inf in the logits)", w);
    total += nll;
    prog.update(w + 1, fmt::format("ppl {:.4f}", std::exp(total / double((w + 1) * (L - 1)))));
  }
  r.nll = total / double(nwin * (L - 1));
  r.ppl = std::exp(r.nll);
  r.tokens = int64_t(tokens.size());
  r.windows = nwin;
  r.seqlen = L;
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  prog.finish(fmt::format("ppl {:.4f}, {:.0f} tok/s", r.ppl, double(nwin * L) / r.seconds));
  return r;
}

}  // namespace lowbit
