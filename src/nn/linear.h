// The linear layer every block is built from, with what quantization attaches to it
// as plain data (no hooks that read global state):
//
//   y = Q_a(R(x)) · Ŵᵀ + b
//     R    an optional online transform of the input (a QuaRot Hadamard), always applied
//     Q_a  dynamic per-token fake quantization of the input (ActQuant), applied only when
//          the caller's context says activation quantizers are on
//     Ŵ    the weight: a float tensor, or packed integer codes (PackedWeight) dequantized
//          as the forward reaches the layer, so a W4 model never sits in memory as f32.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "core/tensor.h"

namespace lowbit {

struct QuantizedWeight;  // quant/qgrid.h

// Sees the input of a linear (or another activation site) by name: x [rows, cols].
using Observer = std::function<void(const std::string& name, const float* x, int64_t rows, int64_t cols)>;
struct Hadamard;  // quant/hadamard.h

// An online transform of an activation x [rows, cols], in place, as data (so every backend
// can run it; the host implementation is in quant/rotation.cpp):
//   full        x ← x·H on each row (H.n == cols)
//   per_block   x ← x·H on each block of H.n consecutive columns (QuaRot R3 per head)
//   cross_head  each row viewed as [heads, head_dim]: H (of order heads) mixes the heads
//               for every d (the online part of R2 before o_proj)
// f16_io: input and result are rounded to f16 around the f32 transform (QuaRot's
// online Hadamards in the model's FP16, i.e. without --fp32_had).
struct OnlineTransform {
  enum class Kind { none, full, per_block, cross_head };
  Kind kind = Kind::none;
  std::shared_ptr<const Hadamard> H;
  int64_t heads = 0, head_dim = 0;  // cross_head
  bool f16_io = false;
  explicit operator bool() const { return kind != Kind::none; }
  void operator()(float* x, int64_t rows, int64_t cols) const;
};

// Dynamic fake quantization of an activation, per row (token) and group of columns.
struct ActQuant {
  int bits = 16;  // 16: off
  int64_t groupsize = -1;  // -1: the whole row
  bool asym = false;
  float clip = 1.0f;
  bool on() const { return bits < 16; }
  void apply(float* x, int64_t rows, int64_t cols) const;  // no-op when off
  bool operator==(const ActQuant&) const = default;
};

// A quantized [out, in] weight exactly as a checkpoint stores it:
//   qweight U8  [out, ceil(in·bits/8)]  unsigned codes u, bit-packed LSB-first per row
//   scales  F32 [out, ngroups]
//   qzeros  I32 [out, ngroups]          unsigned zero points z (stored like the codes)
//   g_idx   I32 [in]                    group of each input column
//   Ŵ[r, c] = scales[r, g] · ((u[r, c] − off) − (z[r, g] − off)),  g = g_idx[c],  off = sym ? 2^(bits−1) : 0
// The tensors may be mmap'd from a checkpoint (zero copy) or made by a quantizer.
struct PackedWeight {
  int bits = 4;
  bool sym = true;
  int64_t groupsize = -1;  // as quantized (informational; g_idx is what dequantization uses)
  int64_t out = 0, in = 0, ngroups = 1;
  Tensor qweight, scales, qzeros, g_idx;

  static PackedWeight pack(const QuantizedWeight& q);
  // Checks dtypes, shapes against (out, in), bits and every g_idx / zero point before
  // any use; `what` names the tensor in errors (FormatError / ShapeError).
  void validate(const std::string& what) const;
  int64_t row_bytes() const { return (in * bits + 7) / 8; }
  // W [out, in] f32 (all rows).
  void dequantize(float* W) const;
};

struct Linear {
  std::string name;  // the HF module name, e.g. "model.layers.0.self_attn.q_proj"
  int64_t n_out = 0, n_in = 0;
  Tensor W;          // [out, in] f32/f16/bf16; undefined when only `qw` holds the weight
  std::shared_ptr<const PackedWeight> qw;  // set once quantized; W, if also set, equals its dequantization
  Tensor bias;       // [out] f32, or undefined
  OnlineTransform rot;  // online input transform (QuaRot), or empty
  ActQuant aq;          // input fake quantization
  int64_t out() const { return n_out; }
  int64_t in() const { return n_in; }
  bool quantized() const { return qw != nullptr; }
  // The weight as f32 [out, in] (dequantized when packed).
  Tensor weight_f32() const;
};

// What the linear multiplies: x [rows, in] → its transformed copy in `buf` (returns buf.data()),
// or x itself when there is nothing to apply.
const float* linear_input(const Linear& lin, const float* x, int64_t rows, bool act_quant, std::vector<float>& buf);
// y [rows, out] = xin · Ŵᵀ + b for an input already through linear_input.
void linear_product(Backend& be, const Linear& lin, const float* xin, int64_t rows, float* y);

}  // namespace lowbit
