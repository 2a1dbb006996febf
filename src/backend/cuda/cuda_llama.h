// Device-resident LLaMA forward for evaluation: the whole residual stream, every
// activation and (bf16/f16) KV-free prefill attention stay on the GPU; only token ids go
// in and per-token NLLs or logits come out. Weights are copied from the mmap'd file to
// the device linear by linear in their storage dtype (bf16/f16/f32), so neither host RAM
// nor GPU memory ever holds a bf16 model in f32.
//
// Precision: GEMMs take weights and inputs in the weights' dtype with f32 accumulation
// (cuBLAS, tensor cores for bf16/f16; plain IEEE f32 — no TF32 — for f32 weights). The
// residual stream is f32 (o_proj and down_proj add into it inside the GEMM), and so are
// norms, softmax statistics and the cross-entropy. bf16 models keep what a bf16 framework
// keeps in bf16: q/k/v and gate/up leave their GEMMs in bf16, RoPE and SiLU·up run on
// them (f32 arithmetic, bf16 storage). Attention: f32/f16 models use the flash-style f32
// kernel (kernels.h attention); bf16 models the tiled tensor-core path (query blocks of
// kQueryBlock rows: scores [Hq, rows, keys] in f32, never the full T×T, softmax to bf16,
// P·V), or with RunnerOptions::flash_attention (head_dim 64/128) the fused kernel
// kernels.h flash_attention_bf16.
//
// Scope: plain and weight-quantized linears (packed codes are dequantized when uploaded).
// Online rotations, activation and KV quantizers and biases run through the generic path
// (LlamaModel::forward on the CUDA Backend); fast_path_unsupported() says why a model
// cannot take this one.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "models/config.h"

namespace lowbit {
class LlamaModel;
namespace cuda {

// Empty when LlamaRunner can run `m`; else the reason (for a log line).
std::string fast_path_unsupported(const LlamaModel& m);

struct RunnerOptions {
  bool f32_compute = false;  // widen 16-bit weights to f32 on the device and compute in f32 (exactness tests)
  bool profile = false;      // time the linear-layer GEMMs with events (linear_seconds)
  bool flash_attention = false;  // fused tensor-core kernel instead of the tiled cuBLAS path
                                 // (bf16 compute, head_dim 64 or 128; else the tiled path)
};

class LlamaRunner {
 public:
  // Uploads `m` (which must outlive nothing: the runner keeps its own device copies).
  LlamaRunner(const LlamaModel& m, const RunnerOptions& opt = {});
  // A model of shape `cfg` with uniform random weights made on the device (benchmarks):
  // linears U(-a, a) with a = 1/sqrt(fan_in), norms 1, embeddings U(-1, 1), in bf16.
  static std::unique_ptr<LlamaRunner> random(const LlamaConfig& cfg, uint64_t seed, const RunnerOptions& opt = {});
  ~LlamaRunner();
  LlamaRunner(const LlamaRunner&) = delete;
  LlamaRunner& operator=(const LlamaRunner&) = delete;

  // logits [T, vocab] (host, f32) of ids [T] at positions 0..T-1.
  std::vector<float> logits(const int32_t* ids, int64_t T);
  // nll[t] = -log p(ids[t+1] | ids[0..t]), t < T-1 (the GPTQ perplexity window).
  std::vector<double> window_nll(const int32_t* ids, int64_t T);

  // Decoding with a KV cache on the device (f32 keys/values, f32 activations between the
  // GEMMs): begin_sequence clears it for up to max_seq positions; feed runs T tokens at the
  // next positions and returns the logits [vocab] of the last one.
  void begin_sequence(int64_t max_seq);
  std::vector<float> feed(const int32_t* ids, int64_t T);

  double linear_seconds() const;  // GEMM time in the decoder linears and lm_head (profile only)
  double linear_flops() const;    // their FLOPs over the same calls
  void reset_profile();
  void set_profile(bool on);
  int64_t weight_bytes() const;   // device bytes of the uploaded weights

  struct Impl;

 private:
  LlamaRunner() = default;
  std::unique_ptr<Impl> p_;
};

}  // namespace cuda
}  // namespace lowbit
