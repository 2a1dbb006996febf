// QuaRot: computational invariance of a pre-norm transformer under orthogonal Q.
//
// With scale-free RMSNorm (weights folded into the next linears, W ← W·diag(g)),
// RMSNorm(x·Q) = RMSNorm(x)·Q for orthogonal Q, so rotating the residual stream by
// R1 = diag(s)·H_d (random signs s, Hadamard H_d) changes no output when
//   E ← E·R1                       (embedding rows)
//   W_in ← W_in·R1                 (q, k, v, gate, up, lm_head: read the stream)
//   W_out ← R1ᵀ·W_out, b ← b·R1     (o, down: write the stream)
// R2 = H_D per head: v' = v·H_D (W_v[h] ← H_Dᵀ·W_v[h]); o_proj's input gets the
// full (H_Hq ⊗ H_D), of which the cross-head H_Hq ⊗ I part runs online:
//   W_o ← W_o·(H_Hq ⊗ H_D).
// R4 = H_f before down_proj: online a ← a·H_f, offline W_down ← W_down·H_f.
// R3 = H_D on Q and K after RoPE, online only (q·kᵀ is unchanged); it makes K
// incoherent before KV-cache quantization.
// Row-vector convention throughout: Hadamard::apply(x) computes x ← x·H.
#include "quant/rotation.h"

#include <cstring>
#include <vector>

#include "core/error.h"

namespace lowbit {
namespace {

// f32 copy of a weight (rotations produce f32 weights).
Tensor f32_copy(const Tensor& t) { return t.to(DType::F32); }

// W[out, in] ← W · diag(g)
void scale_columns(Tensor& W, const float* g) {
  W = f32_copy(W);
  float* w = W.f32();
  const int64_t out = W.size(0), in = W.size(1);
  for (int64_t o = 0; o < out; ++o)
    for (int64_t i = 0; i < in; ++i) w[o * in + i] *= g[i];
}

// rows of X [rows, n] ← (row ∘ s) · H
void rotate_rows(float* X, int64_t rows, int64_t n, const std::vector<float>& s, const Hadamard& H) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t i = 0; i < n; ++i) X[r * n + i] *= s[size_t(i)];
  H.apply(X, rows);
}

std::vector<float> transpose(const float* A, int64_t r, int64_t c) {
  std::vector<float> T(static_cast<size_t>(r * c));
  for (int64_t i = 0; i < r; ++i)
    for (int64_t j = 0; j < c; ++j) T[size_t(j * r + i)] = A[i * c + j];
  return T;
}

// W ← W·R1 (R1 acting on the input dimension)
void rotate_input(Linear& L, const std::vector<float>& s, const Hadamard& H) {
  L.W = f32_copy(L.W);
  rotate_rows(L.W.f32(), L.out(), L.in(), s, H);
}

// W ← R1ᵀ·W, b ← b·R1 (R1 acting on the output dimension)
void rotate_output(Linear& L, const std::vector<float>& s, const Hadamard& H) {
  const int64_t out = L.out(), in = L.in();
  Tensor W = f32_copy(L.W);
  std::vector<float> Wt = transpose(W.f32(), out, in);  // [in, out]: rows are columns of W
  rotate_rows(Wt.data(), in, out, s, H);
  std::vector<float> back = transpose(Wt.data(), in, out);
  std::memcpy(W.f32(), back.data(), back.size() * 4);
  L.W = W;
  if (L.bias.defined()) {
    L.bias = L.bias.clone();
    rotate_rows(L.bias.f32(), 1, out, s, H);
  }
}

}  // namespace

void apply_per_block(const Hadamard& H, float* x, int64_t rows, int64_t cols) {
  LOWBIT_ASSERT(cols % H.n == 0);
  H.apply(x, rows * (cols / H.n));
}

void apply_cross_head(const Hadamard& Hh, float* x, int64_t rows, int64_t heads, int64_t D) {
  LOWBIT_ASSERT(Hh.n == heads);
#pragma omp parallel
  {
    std::vector<float> col(static_cast<size_t>(heads * D));
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      float* row = x + r * heads * D;
      // [heads, D] -> [D, heads], rotate each length-heads vector, back.
      for (int64_t h = 0; h < heads; ++h)
        for (int64_t d = 0; d < D; ++d) col[size_t(d * heads + h)] = row[h * D + d];
      Hh.apply(col.data(), D);
      for (int64_t h = 0; h < heads; ++h)
        for (int64_t d = 0; d < D; ++d) row[h * D + d] = col[size_t(d * heads + h)];
    }
  }
}

void fuse_norms(LlamaModel& m) {
  if (m.lm_head.W.raw() == m.embed.raw()) m.lm_head.W = m.embed.clone();  // untie before changing either
  for (auto& L : m.layers) {
    if (L.attn_norm.defined()) {
      for (Linear* l : {&L.q_proj, &L.k_proj, &L.v_proj}) scale_columns(l->W, L.attn_norm.f32());
      L.attn_norm = Tensor();
    }
    if (L.mlp_norm.defined()) {
      for (Linear* l : {&L.gate_proj, &L.up_proj}) scale_columns(l->W, L.mlp_norm.f32());
      L.mlp_norm = Tensor();
    }
  }
  if (m.final_norm.defined()) {
    scale_columns(m.lm_head.W, m.final_norm.f32());
    m.final_norm = Tensor();
  }
  m.cfg.tie_word_embeddings = false;
}

OnlineRotations make_online_rotations(const LlamaConfig& c, uint64_t seed) {
  OnlineRotations r;
  r.hidden = std::make_shared<Hadamard>(make_hadamard(c.hidden_size, seed));
  r.head = std::make_shared<Hadamard>(make_hadamard(c.head_dim, seed + 1));
  r.heads = std::make_shared<Hadamard>(make_hadamard(c.num_heads, seed + 2));
  r.ffn = std::make_shared<Hadamard>(make_hadamard(c.intermediate_size, seed + 3));
  return r;
}

OnlineRotations rotate_model(LlamaModel& m, const RotationConfig& rc) {
  fuse_norms(m);
  const LlamaConfig& c = m.cfg;
  OnlineRotations R = make_online_rotations(c, rc.seed);
  // R1 = diag(s)·H_d with seeded random signs.
  std::vector<float> s(static_cast<size_t>(c.hidden_size));
  {
    uint64_t st = rc.seed ^ 0x5151'aaaa'1234'0001ull;
    for (auto& v : s) {
      uint64_t z = (st += 0x9e3779b97f4a7c15ull);
      z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
      z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
      v = ((z ^ (z >> 31)) >> 63) ? -1.0f : 1.0f;
    }
  }
  const Hadamard& Hd = *R.hidden;
  m.embed = f32_copy(m.embed);
  rotate_rows(m.embed.f32(), c.vocab_size, c.hidden_size, s, Hd);
  rotate_input(m.lm_head, s, Hd);
  for (auto& L : m.layers) {
    for (Linear* l : {&L.q_proj, &L.k_proj, &L.v_proj, &L.gate_proj, &L.up_proj}) rotate_input(*l, s, Hd);
    for (Linear* l : {&L.o_proj, &L.down_proj}) rotate_output(*l, s, Hd);
    // R2: v' = v·H_D per kv head (W_v ← blockwise H_Dᵀ·W_v), bias likewise.
    {
      Linear& v = L.v_proj;
      std::vector<float> Wt = transpose(v.W.f32(), v.out(), v.in());  // [in, kvh*D]
      apply_per_block(*R.head, Wt.data(), v.in(), v.out());
      std::vector<float> back = transpose(Wt.data(), v.in(), v.out());
      std::memcpy(v.W.f32(), back.data(), back.size() * 4);
      if (v.bias.defined()) {
        v.bias = v.bias.clone();
        apply_per_block(*R.head, v.bias.f32(), 1, v.out());
      }
    }
    // o_proj input: W_o ← W_o·(H_Hq ⊗ H_D)
    {
      Linear& o = L.o_proj;
      apply_per_block(*R.head, o.W.f32(), o.out(), o.in());
      apply_cross_head(*R.heads, o.W.f32(), o.out(), c.num_heads, c.head_dim);
    }
    // R4: W_down ← W_down·H_f
    L.down_proj.W = f32_copy(L.down_proj.W);
    R.ffn->apply(L.down_proj.W.f32(), L.down_proj.out());
  }
  return R;
}

}  // namespace lowbit
