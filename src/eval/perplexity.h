// Perplexity by the GPTQ/QuaRot protocol: the whole text is tokenized once with a
// single BOS in front, cut into non-overlapping windows of `seqlen` tokens (the
// tail that does not fill a window is dropped), and
//   PPL = exp( mean over windows w, positions t < seqlen-1 of  -log p(x[w,t+1] | x[w,≤t]) ).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "io/tokenizer.h"
#include "models/llama.h"

namespace lowbit {

struct PplOptions {
  int64_t seqlen = 2048;
  int64_t max_windows = -1;  // -1: all
  bool progress = true;
};

struct PplResult {
  double ppl = 0, nll = 0;  // nll: mean per predicted token
  int64_t tokens = 0;       // tokens in the stream (BOS included)
  int64_t windows = 0;      // windows evaluated
  int64_t seqlen = 0;
  double seconds = 0;
  std::string path = "cpu";  // which forward ran: cpu | cuda (device-resident) | cuda (generic backend: why)
};

// [BOS] + encode(text). Throws ArgError for empty text.
std::vector<int32_t> tokenize_stream(const Tokenizer& tok, const std::string& text, int32_t bos_fallback);

PplResult perplexity(LlamaModel& model, const std::vector<int32_t>& tokens, const PplOptions& opt);

// Mean negative log-likelihood of targets under logits [T, V] (log-softmax in double).
double sum_nll(const float* logits, int64_t T, int64_t V, const int32_t* targets);

}  // namespace lowbit
