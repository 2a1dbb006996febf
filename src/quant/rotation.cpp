// QuaRot: computational invariance of a pre-norm transformer under orthogonal Q.
//
// With scale-free RMSNorm (weights folded into the next linears, W ← W·diag(g)),
// RMSNorm(x·Q) = RMSNorm(x)·Q for orthogonal Q, so rotating the residual stream by
// an orthogonal R1 changes no output when
//   E ← E·R1                       (embedding rows)
//   W_in ← W_in·R1                 (q, k, v, gate, up, lm_head: read the stream)
//   W_out ← R1ᵀ·W_out, b ← b·R1     (o, down: write the stream)
// R1 by --rotate_mode:
//   hadamard: R1 = diag(s)·H_d, seeded random signs s, Hadamard H_d (fast transform);
//   random:   R1 = Q·diag(sign(diag R)) where G = Q·R is the QR of a seeded d×d
//             standard Gaussian G: Haar-distributed on O(d) (Mezzadri 2007); dense,
//             fused with GEMMs. Nothing of R1 runs online in either mode.
// R2 = H_D per head: v' = v·H_D (W_v[h] ← H_Dᵀ·W_v[h]); o_proj's input gets the
// full (H_Hq ⊗ H_D), of which the cross-head H_Hq ⊗ I part runs online:
//   W_o ← W_o·(H_Hq ⊗ H_D).
// R4 = H_f before down_proj: online a ← a·H_f, offline W_down ← W_down·H_f.
// R3 = H_D on Q and K after RoPE, online only (q·kᵀ is unchanged); it makes K
// incoherent before KV-cache quantization.
// Row-vector convention throughout: Hadamard::apply(x) computes x ← x·H.
#include "quant/rotation.h"

#include <lapacke.h>

#include <cstring>
#include <vector>

#include "core/dtype.h"
#include "core/error.h"
#include "core/rng.h"

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

// R1 in either form: diag(s)·H_d (H set) or a dense Q [d, d] row-major (Q non-empty).
struct R1 {
  std::vector<float> s;
  const Hadamard* H = nullptr;
  std::vector<float> Q;
  Backend* be = nullptr;
  int64_t d = 0;
};

std::vector<float> transpose(const float* A, int64_t r, int64_t c) {
  std::vector<float> T(static_cast<size_t>(r * c));
  for (int64_t i = 0; i < r; ++i)
    for (int64_t j = 0; j < c; ++j) T[size_t(j * r + i)] = A[i * c + j];
  return T;
}

// X[rows, d] ← X·R1
void r1_right(const R1& r, float* X, int64_t rows) {
  if (r.Q.empty()) return rotate_rows(X, rows, r.d, r.s, *r.H);
  std::vector<float> Y(static_cast<size_t>(rows * r.d));
  r.be->gemm(false, false, rows, r.d, r.d, 1.0f, X, r.d, r.Q.data(), r.d, 0.0f, Y.data(), r.d);
  std::memcpy(X, Y.data(), Y.size() * 4);
}

// W[d, cols] ← R1ᵀ·W
void r1_left_t(const R1& r, float* W, int64_t cols) {
  if (r.Q.empty()) {
    std::vector<float> Wt = transpose(W, r.d, cols);  // [cols, d]: rows are columns of W
    rotate_rows(Wt.data(), cols, r.d, r.s, *r.H);
    std::vector<float> back = transpose(Wt.data(), cols, r.d);
    std::memcpy(W, back.data(), back.size() * 4);
    return;
  }
  std::vector<float> Y(static_cast<size_t>(r.d * cols));
  r.be->gemm(true, false, r.d, cols, r.d, 1.0f, r.Q.data(), r.d, W, cols, 0.0f, Y.data(), cols);
  std::memcpy(W, Y.data(), Y.size() * 4);
}

// W ← W·R1 (R1 acting on the input dimension)
void rotate_input(Linear& L, const R1& r) {
  L.W = f32_copy(L.W);
  r1_right(r, L.W.f32(), L.out());
}

// W ← R1ᵀ·W, b ← b·R1 (R1 acting on the output dimension)
void rotate_output(Linear& L, const R1& r) {
  Tensor W = f32_copy(L.W);
  r1_left_t(r, W.f32(), L.in());
  L.W = W;
  if (L.bias.defined()) {
    L.bias = L.bias.clone();
    r1_right(r, L.bias.f32(), 1);
  }
}

}  // namespace

void check_rotate_mode(const std::string& mode) {
  LOWBIT_CHECK(mode == "hadamard" || mode == "random", ArgError,
               "--rotate_mode must be 'hadamard' or 'random', got '{}'", mode);
}

std::vector<double> random_orthogonal_matrix(int64_t d, uint64_t seed) {
  LOWBIT_CHECK(d >= 1, ArgError, "random orthogonal matrix: size {} must be >= 1", d);
  NormalRng rng(seed);
  std::vector<double> A(static_cast<size_t>(d * d));  // G [d, d], then Q
  for (auto& v : A) v = rng.normal();
  std::vector<double> tau(static_cast<size_t>(d));
  const lapack_int n = lapack_int(d);
  lapack_int info = LAPACKE_dgeqrf(LAPACK_ROW_MAJOR, n, n, A.data(), n, tau.data());
  LOWBIT_CHECK(info == 0, NumericError, "random orthogonal {}x{}: dgeqrf failed (info {})", d, d, info);
  std::vector<double> sgn(static_cast<size_t>(d));  // sign(R_jj); R is the upper triangle now
  for (int64_t j = 0; j < d; ++j) sgn[size_t(j)] = A[size_t(j * d + j)] < 0 ? -1.0 : 1.0;
  info = LAPACKE_dorgqr(LAPACK_ROW_MAJOR, n, n, n, A.data(), n, tau.data());
  LOWBIT_CHECK(info == 0, NumericError, "random orthogonal {}x{}: dorgqr failed (info {})", d, d, info);
  for (int64_t i = 0; i < d; ++i)
    for (int64_t j = 0; j < d; ++j) A[size_t(i * d + j)] *= sgn[size_t(j)];
  return A;
}

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

void OnlineTransform::operator()(float* x, int64_t rows, int64_t cols) const {
  if (kind == Kind::none) return;
  LOWBIT_ASSERT(H != nullptr);
  auto round_f16 = [&] {
    if (!f16_io) return;
#pragma omp parallel for schedule(static) if (rows * cols > (1 << 16))
    for (int64_t i = 0; i < rows * cols; ++i) x[i] = f16_to_f32(f32_to_f16(x[i]));
  };
  round_f16();
  switch (kind) {
    case Kind::full:
      LOWBIT_ASSERT(H->n == cols);
      H->apply(x, rows);
      break;
    case Kind::per_block:
      apply_per_block(*H, x, rows, cols);
      break;
    case Kind::cross_head:
      LOWBIT_ASSERT(heads * head_dim == cols);
      apply_cross_head(*H, x, rows, heads, head_dim);
      break;
    case Kind::none:
      break;
  }
  round_f16();
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

OnlineRotations rotate_model(LlamaModel& m, const RotationConfig& rc) { return rotate_model(m, rc, StreamWriters{}); }

OnlineRotations rotate_model(LlamaModel& m, const RotationConfig& rc, const StreamWriters& writers) {
  check_rotate_mode(rc.mode);
  fuse_norms(m);
  const LlamaConfig& c = m.cfg;
  OnlineRotations R = make_online_rotations(c, rc.seed);
  R1 r1;
  r1.d = c.hidden_size;
  r1.be = m.backend;
  if (rc.mode == "random") {
    // R1 = Haar Q [d, d], rounded to f32 once; fused by GEMMs.
    std::vector<double> Q = random_orthogonal_matrix(c.hidden_size, rc.seed);
    r1.Q.assign(Q.begin(), Q.end());
  } else {
    // R1 = diag(s)·H_d with seeded random signs.
    r1.s.resize(static_cast<size_t>(c.hidden_size));
    SplitMix64 g(rc.seed ^ 0x5151'aaaa'1234'0001ull);
    for (auto& v : r1.s) v = (g.next_u64() >> 63) ? -1.0f : 1.0f;
    r1.H = R.hidden.get();
  }
  m.embed = f32_copy(m.embed);
  r1_right(r1, m.embed.f32(), c.vocab_size);
  for (Linear* w : writers.linears) {
    LOWBIT_CHECK(w->out() == c.hidden_size && !w->quantized(), ShapeError,
                 "rotation: '{}' writes {} features into a residual stream of {} (or is already quantized)", w->name,
                 w->out(), c.hidden_size);
    rotate_output(*w, r1);
  }
  for (Tensor* t : writers.rows) {
    LOWBIT_CHECK(t->numel() % c.hidden_size == 0, ShapeError, "rotation: stream rows of {} values, not rows of {}",
                 t->numel(), c.hidden_size);
    Tensor f = t->to(DType::F32).clone();
    r1_right(r1, f.f32(), f.numel() / c.hidden_size);
    *t = f;
  }
  rotate_input(m.lm_head, r1);
  for (auto& L : m.layers) {
    for (Linear* l : {&L.q_proj, &L.k_proj, &L.v_proj, &L.gate_proj, &L.up_proj}) rotate_input(*l, r1);
    for (Linear* l : {&L.o_proj, &L.down_proj}) rotate_output(*l, r1);
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
