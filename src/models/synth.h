// Deterministic synthetic LLaMA models (random weights) for demos, tests and
// benchmarks when no real checkpoint is around. Their outputs mean nothing.
#pragma once
#include <cstdint>
#include <string>

#include "core/dtype.h"
#include "core/rng.h"  // NormalRng (used with these helpers)
#include "models/config.h"

namespace lowbit {

struct SynthSpec {
  int64_t hidden = 64, ffn = 172, layers = 2, heads = 4, kv_heads = 2, context = 512;
  uint64_t seed = 1;
  DType dtype = DType::F32;
  float init_std = 0.02f;
};

// Writes config.json, model.safetensors, tokenizer.json (byte-fallback BPE over
// the 256 bytes, vocab 259 with <unk>/<s>/</s>) and tokenizer_config.json.
LlamaConfig write_synthetic_model(const std::string& dir, const SynthSpec& spec);
// Deterministic pseudo-English text of about `bytes` bytes.
std::string synthetic_text(int64_t bytes, uint64_t seed);

}  // namespace lowbit
