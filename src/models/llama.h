// LLaMA-family decoder (LLaMA-2/3, Mistral, Qwen2 spellings) on the backend
// interface. HF layout and names (models/llama_names.h); weights stay in their file
// dtype (mmap'd) or packed codes, activations are f32.
//
// Quantization plugs in as data on the pieces, not as hooks into this file's math:
// every Linear carries its online transform and activation quantizer, every layer its
// online Q/K transform (R3) and K/V quantizers; BlockCtx says whether quantizers run.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "core/tensor.h"
#include "io/safetensors.h"
#include "models/block.h"
#include "models/config.h"
#include "models/weights.h"

namespace lowbit {

// h = x + o_proj(Attn(RoPE(q_proj(n1)), RoPE(k_proj(n1)), v_proj(n1))),  n1 = RMSNorm(x)·w1
// x' = h + down_proj(silu(gate_proj(n2)) ⊙ up_proj(n2)),                 n2 = RMSNorm(h)·w2
// Groups: {q, k, v} → {o} → {gate, up} → {down}. Boundaries: 0 {x}, 1 {x, a = attention
// output [T, Hq·D]}, 2 {x = h}, 3 {x = h, a = silu(g)⊙u [T, f]}, 4 {x'}.
class LlamaLayer : public Block {
 public:
  int64_t index = 0;
  int64_t d = 0, f = 0, Hq = 0, Hkv = 0, D = 0;
  float eps = 1e-5f;
  std::vector<float> inv_freq;  // [D/2]
  Backend* backend = &default_backend();

  Tensor attn_norm;  // [d] f32 (undefined: scale-free norm, after fusing into the linears)
  Tensor mlp_norm;   // [d] f32
  Linear q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj;
  // After RoPE, before K/V enter the cache: qk_rot on Q [T, Hq·D] and K [T, Hkv·D]
  // (QuaRot R3), then K/V fake quantization per head (rows [T·Hkv, D]).
  OnlineTransform qk_rot;
  ActQuant k_quant, v_quant;

 private:
  template <class Self>  // Self = LlamaLayer or const LlamaLayer
  static auto groups_of(Self& s) {
    using P = decltype(&s.q_proj);
    return std::vector<std::vector<P>>{{&s.q_proj, &s.k_proj, &s.v_proj}, {&s.o_proj}, {&s.gate_proj, &s.up_proj},
                                       {&s.down_proj}};
  }

 public:

  // A layer with the config's dimensions (no weights yet).
  static LlamaLayer shaped(const LlamaConfig& cfg, int64_t index);

  std::string kind() const override { return "llama_decoder"; }
  std::unique_ptr<Block> clone() const override { return std::make_unique<LlamaLayer>(*this); }
  std::vector<std::vector<const Linear*>> groups() const override { return groups_of(*this); }
  std::vector<std::vector<Linear*>> groups() override { return groups_of(*this); }
  const float* group_input(int g, const BlockState& st, std::vector<float>& buf) const override;
  void advance(int g, BlockState& st, const BlockCtx& ctx) const override;
  int64_t state_floats(int boundary, int64_t T) const override;
};

struct ForwardOptions {
  bool last_only = false;  // logits for the last position only
  bool act_quant = true;   // activation / KV quantizers on (they exist only on quantized models)
  Observer observer;       // sees each group's input (named by its first linear), K after RoPE/R3, lm_head's input
  // Input of layer l (l = 0..L-1) and, for l = L, the final-norm output: [T, d].
  std::function<void(int64_t l, const float* h, int64_t T, int64_t d)> hidden_hook;
  // Vision-language models: sees each tower's input as the next tower will read it — stage "pixels": a frame's
  // pixel values [C, S·S] (the patch conv's input); "vision": a frame's embeddings (hidden_states[0], [T, d_v]);
  // stage "projector": the projector's input (rows = features of the images in one call). The quantization
  // driver takes its calibration states (and the patch conv's Hessian) from here.
  std::function<void(const char* stage, const float* x, int64_t rows, int64_t cols)> tower_hook;
};

class LlamaModel {
 public:
  LlamaConfig cfg;
  Tensor embed;  // [vocab, d]
  std::vector<LlamaLayer> layers;
  Tensor final_norm;  // [d] f32 (undefined: scale-free)
  Linear lm_head;     // [vocab, d]; aliases embed when tied
  std::string dir;
  Backend* backend = &default_backend();

  // Loads config.json + safetensors from an HF model directory. Checks every
  // shape against the config (ShapeError naming the tensor).
  static LlamaModel load(const std::string& dir);
  static LlamaModel from_store(const LlamaConfig& cfg, const WeightStore& store, const std::string& dir);
  // Builds a model from any tensor source: `get(name)` returns an undefined Tensor when
  // absent; `get_packed(linear, out, in)` (may be empty) returns a linear's packed codes
  // (validated against [out, in]), or null when that linear is not quantized.
  using TensorSource = lowbit::TensorSource;  // models/weights.h
  using PackedSource = lowbit::PackedSource;
  static LlamaModel from_source(const LlamaConfig& cfg, const TensorSource& get, const PackedSource& get_packed,
                                const std::string& source, const std::string& dir);

  KVCache make_cache(int64_t max_seq) const;

  // Runs T tokens starting at position cache->len (0 without a cache) and
  // returns logits [T, vocab] (or [1, vocab] with last_only). Advances the cache.
  Tensor forward(const int32_t* ids, int64_t T, KVCache* cache = nullptr, const ForwardOptions& opt = {});
  // The same from embedded inputs x [T, d] (token embeddings, or a VLM's mix of token
  // embeddings and image features): forward(ids) = forward_embeds(embed_tokens(ids)).
  Tensor forward_embeds(const float* x, int64_t T, KVCache* cache = nullptr, const ForwardOptions& opt = {});

  // B independent sequences in one pass: sequence b runs ids_b [T_b] from position
  // cache_b->len into its own cache, exactly as forward(ids_b, T_b, cache_b) would, but the
  // norms and linears (with their online transforms and per-token activation quantizers)
  // see the stacked rows [Σ T_b, d] — each weight is read once per batch instead of once
  // per sequence; RoPE, K/V caching and causal attention stay per sequence. Returns each
  // sequence's logits [T_b, vocab] ([1, vocab] with last_only). Only act_quant is read
  // from opt (observers/hooks refused). On the CUDA backend the sequences run one at a time.
  struct BatchSeq {
    const int32_t* ids = nullptr;
    int64_t T = 0;
    KVCache* cache = nullptr;
    bool last_only = false;
  };
  std::vector<Tensor> forward_batch(const std::vector<BatchSeq>& seqs, const ForwardOptions& opt = {});

  void embed_tokens(const int32_t* ids, int64_t T, float* x) const;  // x: [T, d]
  // The input of lm_head (final norm) for x [T, d] → h [T, d].
  void final_hidden(const float* x, int64_t T, float* h) const;
  void head(const float* x, int64_t T, float* logits, const ForwardOptions& opt = {}) const;  // norm + lm_head

  std::vector<Block*> blocks();
  std::vector<Linear*> all_linears();  // every layer's, then lm_head
  int64_t num_parameters() const;

 private:
  // Checks T tokens fit after the cache's positions; returns the first position.
  int64_t check_span(int64_t T, const KVCache* cache) const;
};

}  // namespace lowbit
