// LLaMA-family decoder (LLaMA-2/3, Mistral, Qwen2 spellings) on the backend
// interface. HF layout and names throughout; weights stay in their file dtype
// (mmap'd), activations are f32.
//
// Quantization plugs in without touching this file's math: every Linear has an
// optional `pre` transform on its input (online Hadamard, activation fake-quant),
// every layer an optional `post_rope` hook on Q/K/V (online Q/K rotation, KV-cache
// quantization), and a forward-time Observer sees each linear's input under its
// HF name (calibration statistics).
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "core/tensor.h"
#include "io/safetensors.h"
#include "models/config.h"

namespace lowbit {

// In-place transform of a [rows, cols] f32 activation.
using ActTransform = std::function<void(float* x, int64_t rows, int64_t cols)>;
// Sees the input of linear `name` ([rows, cols], exactly what the weight multiplies).
using Observer = std::function<void(const std::string& name, const float* x, int64_t rows, int64_t cols)>;

struct Linear {
  std::string name;  // HF module name, e.g. "model.layers.0.self_attn.q_proj"
  Tensor W;          // [out, in], any float dtype
  Tensor bias;       // [out] f32, or undefined
  ActTransform pre;  // applied to a copy of the input before the product
  int64_t out() const { return W.size(0); }
  int64_t in() const { return W.size(1); }
};

struct LlamaLayer {
  Tensor attn_norm;  // [d] f32 (undefined: scale-free norm, after fusing into the linears)
  Tensor mlp_norm;   // [d] f32
  Linear q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj;
  // Called after RoPE with q [T, Hq*D], k/v [T, Hkv*D] before K/V enter the cache.
  std::function<void(float* q, float* k, float* v, int64_t T)> post_rope;
  std::vector<Linear*> linears();  // in true-sequential order q,k,v,o,gate,up,down
};

// Per-layer K/V cache: [max_seq, Hkv, D] f32 each.
struct KVCache {
  int64_t max_seq = 0;
  int64_t len = 0;  // positions filled
  std::vector<std::vector<float>> k, v;
};

struct ForwardOptions {
  bool last_only = false;  // logits for the last position only
  Observer observer;
  // Input of layer l (l = 0..L-1) and, for l = L, the final-norm output: [T, d].
  std::function<void(int64_t l, const float* h, int64_t T, int64_t d)> hidden_hook;
};

class LlamaModel {
 public:
  LlamaConfig cfg;
  Tensor embed;      // [vocab, d]
  std::vector<LlamaLayer> layers;
  Tensor final_norm; // [d] f32 (undefined: scale-free)
  Linear lm_head;    // [vocab, d]; aliases embed when tied
  std::vector<float> inv_freq;  // [head_dim/2]
  std::string dir;
  Backend* backend = &cpu_backend();

  // Loads config.json + safetensors from an HF model directory. Checks every
  // shape against the config (ShapeError naming the tensor).
  static LlamaModel load(const std::string& dir);
  // Builds a model from an already-opened store.
  static LlamaModel from_store(const LlamaConfig& cfg, const WeightStore& store, const std::string& dir);
  // Builds a model from any tensor source (quantized checkpoints dequantize on the fly):
  // `get(name)` returns an undefined Tensor when the tensor is absent.
  using TensorSource = std::function<Tensor(const std::string& name)>;
  static LlamaModel from_source(const LlamaConfig& cfg, const TensorSource& get, const std::string& source,
                                const std::string& dir);

  KVCache make_cache(int64_t max_seq) const;

  // Runs T tokens starting at position cache->len (0 without a cache) and
  // returns logits [T, vocab] (or [1, vocab] with last_only). Advances the cache.
  Tensor forward(const int32_t* ids, int64_t T, KVCache* cache = nullptr, const ForwardOptions& opt = {});

  // Pieces for layer-by-layer drivers.
  void embed_tokens(const int32_t* ids, int64_t T, float* x) const;  // x: [T, d]
  // x: [T, d] in/out; positions start at `start`; cache may be null (then start must be 0).
  void layer_forward(int64_t l, float* x, int64_t T, int64_t start, KVCache* cache, const Observer& obs) const;
  void head(const float* x, int64_t T, float* logits, const ForwardOptions& opt = {}) const;  // norm + lm_head

  // Applies `lin` (pre transform, observer, product, bias): y [rows, out].
  void run_linear(const Linear& lin, const float* x, int64_t rows, float* y, const Observer& obs) const;

  int64_t num_parameters() const;
};

}  // namespace lowbit
