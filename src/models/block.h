// A model, for the quantization driver and the forward alike, is a sequence of blocks
// (a decoder layer, later a ViT layer or a projector). A block declares its linears in
// true-sequential groups — the linears of one group read the same input, so they share
// one Hessian — and runs its forward as a chain of steps, one per group:
//
//   boundary 0 ──advance(0)──▶ boundary 1 ──advance(1)──▶ … ──advance(G−1)──▶ boundary G
//
// At boundary g the BlockState holds what the rest of the block needs (the residual x
// and, where the next group's input is not cheaply derived from x, that input a);
// group_input(g) is the input of group g's linears before their online transform and
// activation quantizer. The driver keeps per-sample states at some boundary and
// advances them group by group, so every sublayer runs once per pass; the plain
// forward is advance(0..G−1).
//
// What a pass changes is explicit in BlockCtx (activation quantizers on or off, the
// observer, the KV cache); nothing in a block reads global switches.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "nn/linear.h"

namespace lowbit {

// Per-layer K/V cache: [max_seq, Hkv, D] f32 each.
struct KVCache {
  int64_t max_seq = 0;
  int64_t len = 0;  // positions filled
  std::vector<std::vector<float>> k, v;
};

struct BlockState {
  int64_t T = 0;         // tokens of this sample
  std::vector<float> x;  // [T, d] residual stream
  std::vector<float> a;  // [T, cols] the next group's input, when the block keeps it (else empty)
};

// One of several independent sequences stacked into one BlockState (LlamaModel::forward_batch):
// rows [row0, row0 + T) of the state, its own cache and first position.
struct SeqSegment {
  int64_t row0 = 0, T = 0;
  KVCache* cache = nullptr;  // required: the sequence's own K/V (positions [0, start) already filled)
  int64_t start = 0;
};

struct BlockCtx {
  bool act_quant = true;            // activation / KV fake quantizers on
  const Observer* observer = nullptr;  // sees each group's input as its linears multiply it
  KVCache* cache = nullptr;         // decoder blocks: cache to append to (null: none, start = 0)
  int64_t start = 0;                // position of the first token
  // Non-null: the state's rows are these independent sequences (cache / start above unused).
  // Row-wise steps (norms, linears with their online transforms and per-token activation
  // quantizers, K/V quantizers per token) see all rows at once; RoPE, the cache and
  // attention run per sequence.
  const std::vector<SeqSegment>* segments = nullptr;
};

class Block {
 public:
  virtual ~Block() = default;
  virtual std::string kind() const = 0;
  // A copy sharing the weight storage (the driver's full-precision reference while it
  // replaces this block's weights).
  virtual std::unique_ptr<Block> clone() const = 0;
  // True-sequential groups; the linears of a group read one input (one shared Hessian)
  // and have the same online transform and activation quantizer.
  // (Both constnesses: a block type lists its linears once in a template, see LlamaLayer.)
  virtual std::vector<std::vector<const Linear*>> groups() const = 0;
  virtual std::vector<std::vector<Linear*>> groups() = 0;
  std::vector<Linear*> linears();
  std::vector<const Linear*> linears() const;
  // Input of group g at boundary g, [T, in]: a pointer into `st` or into `buf`.
  virtual const float* group_input(int g, const BlockState& st, std::vector<float>& buf) const = 0;
  // boundary g → g+1 (runs group g's linears and what follows them).
  virtual void advance(int g, BlockState& st, const BlockCtx& ctx) const = 0;
  // Floats a BlockState holds at `boundary` for T tokens (what keeping it costs).
  virtual int64_t state_floats(int boundary, int64_t T) const = 0;
  // The whole block: boundary 0 → G.
  void forward(BlockState& st, const BlockCtx& ctx) const;
};

}  // namespace lowbit
