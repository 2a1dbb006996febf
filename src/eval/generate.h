// Autoregressive generation with the KV cache: greedy at temperature 0, else
// temperature + nucleus (top-p) sampling from a seeded generator.
#pragma once
#include <cstdint>
#include <functional>
#include <vector>

#include "models/llama.h"

namespace lowbit {

struct GenOptions {
  int64_t max_new_tokens = 64;
  double temperature = 0.0;
  double top_p = 1.0;
  uint64_t seed = 0;
  int32_t eos_id = -1;  // stop when generated (it is included in the output)
  std::vector<int32_t> stop_ids;  // further stop tokens (end-of-turn tokens), included like eos_id
};

// Returns the generated ids (prompt excluded). `on_token` is called per new id.
std::vector<int32_t> generate(LlamaModel& model, const std::vector<int32_t>& prompt, const GenOptions& opt,
                              const std::function<void(int32_t)>& on_token = {});

// The same from an embedded prompt x [T, d] (a VLM's token embeddings with the image features
// written in; models/llava.h). Runs the model's generic path (forward_embeds with the KV cache)
// on whatever backend the model uses; never the device-resident CUDA runner, which takes ids.
std::vector<int32_t> generate_from_embeds(LlamaModel& model, const std::vector<float>& x, int64_t T,
                                          const GenOptions& opt, const std::function<void(int32_t)>& on_token = {});

// Picks the next token from logits [V] (exposed for tests).
int32_t sample_token(const float* logits, int64_t V, double temperature, double top_p, uint64_t* rng_state);

}  // namespace lowbit
