// QuaRot --rotate_mode: R1 as a Haar-random orthogonal Q (QR of a seeded Gaussian)
// next to the default randomized Hadamard diag(s)·H_d. Checks: Q is orthogonal, it
// is the positive-diag(R) QR factor of its Gaussian, it depends only on the seed;
// fusing either R1 leaves a model's logits unchanged; a bad mode is refused.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "core/error.h"
#include "core/rng.h"
#include "models/llama.h"
#include "models/synth.h"
#include "quant/rotation.h"
#include "testing.h"

using namespace lowbit;
using lowbit::test::normalized_error;

namespace {

// max |QᵀQ − I|, Q [n, n] row-major.
double orthogonality_error(const std::vector<double>& Q, int64_t n) {
  std::vector<double> G(size_t(n * n));
  cpu_backend().gemm(true, false, n, n, n, 1.0, Q.data(), n, Q.data(), n, 0.0, G.data(), n);
  double err = 0;
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < n; ++j) err = std::max(err, std::abs(G[size_t(i * n + j)] - (i == j ? 1.0 : 0.0)));
  return err;
}

std::vector<int32_t> test_ids(const LlamaModel& m, int64_t T) {
  std::vector<int32_t> ids = {int32_t(std::max(0, m.cfg.bos_token_id))};
  for (int64_t i = 1; i < T; ++i) ids.push_back(int32_t((i * 131 + 7) % m.cfg.vocab_size));
  return ids;
}

Tensor random_vector(NormalRng& rng, int64_t n, float mean, float stdv) {
  Tensor t = Tensor::empty({n}, DType::F32);
  for (int64_t i = 0; i < n; ++i) t.f32()[i] = mean + float(rng.normal()) * stdv;
  return t;
}

// Synthetic files have unit norms and no biases: give the loaded model random norm
// weights and a bias on every linear so fuse_norms and the bias rotations
// (b ← b·R1 on o/down, R2 on v) take part. Same draw for every call.
void perturb(LlamaModel& m) {
  NormalRng rng(99);
  const int64_t d = m.cfg.hidden_size;
  for (auto& L : m.layers) {
    L.attn_norm = random_vector(rng, d, 1.0f, 0.3f);
    L.mlp_norm = random_vector(rng, d, 1.0f, 0.3f);
    for (Linear* l : L.linears()) l->bias = random_vector(rng, l->out(), 0.0f, 0.05f);
  }
  m.final_norm = random_vector(rng, d, 1.0f, 0.3f);
}

// The online half of the rotation that the runtime normally installs (at 16 bits):
// H_Hq ⊗ I before o_proj (rest of R2), H_f before down_proj (R4). R3 is left off.
void install_online(LlamaModel& m, const OnlineRotations& R) {
  const int64_t Hq = m.cfg.num_heads, D = m.cfg.head_dim;
  for (auto& L : m.layers) {
    L.o_proj.rot.kind = OnlineTransform::Kind::cross_head;
    L.o_proj.rot.H = R.heads;
    L.o_proj.rot.heads = Hq;
    L.o_proj.rot.head_dim = D;
    L.down_proj.rot.kind = OnlineTransform::Kind::full;
    L.down_proj.rot.H = R.ffn;
  }
}

// Normalized logits error of model `dir` rotated in `mode` vs the unrotated model.
double invariance_error(const std::string& dir, const std::string& mode, bool perturbed) {
  LlamaModel ref = LlamaModel::load(dir);
  if (perturbed) perturb(ref);
  auto ids = test_ids(ref, 64);
  auto want = ref.forward(ids.data(), int64_t(ids.size())).to_vector();
  LlamaModel m = LlamaModel::load(dir);
  if (perturbed) perturb(m);
  RotationConfig rc;
  rc.rotate = true;
  rc.seed = 3;
  rc.mode = mode;
  install_online(m, rotate_model(m, rc));
  auto got = m.forward(ids.data(), int64_t(ids.size())).to_vector();
  return normalized_error(got, want);
}

std::string synth_model(int64_t hidden, int64_t ffn, int64_t heads, int64_t kv_heads) {
  std::string dir = lowbit::test::temp_dir("rotmode_" + std::to_string(hidden));
  SynthSpec sp;
  sp.hidden = hidden;
  sp.ffn = ffn;
  sp.heads = heads;
  sp.kv_heads = kv_heads;
  sp.init_std = 0.1f;  // large enough that attention and MLP change the stream visibly
  write_synthetic_model(dir, sp);
  return dir;
}

}  // namespace

// Householder QR is backward stable: |QᵀQ − I| ≤ c·n·ε₆₄ ≈ 1e-13 at n = 256, so 1e-12
// leaves margin; a dropped sign or a transposed factor is O(1).
TEST(RotateMode, RandomR1Orthogonal) {
  for (int64_t n : {1, 2, 7, 48, 64, 100, 256}) {
    auto Q = random_orthogonal_matrix(n, 5);
    ASSERT_EQ(Q.size(), size_t(n * n));
    EXPECT_LT(orthogonality_error(Q, n), 1e-12) << n;
  }
}

// Q is the QR factor with positive diag(R) of G[i][j] = (i·d + j)-th NormalRng(seed)
// draw: R = QᵀG must be upper triangular with a positive diagonal (the sign
// correction that makes Q Haar-distributed). Entries of G are O(1), so the lower
// triangle of QᵀG is rounding, O(n·ε₆₄): bound 1e-11.
TEST(RotateMode, RandomR1IsSignCorrectedQrOfGaussian) {
  for (int64_t n : {3, 48, 100}) {
    auto Q = random_orthogonal_matrix(n, 11);
    NormalRng rng(11);
    std::vector<double> G(size_t(n * n)), R(size_t(n * n));
    for (auto& v : G) v = rng.normal();
    cpu_backend().gemm(true, false, n, n, n, 1.0, Q.data(), n, G.data(), n, 0.0, R.data(), n);
    double below = 0, min_diag = 1e300;
    for (int64_t i = 0; i < n; ++i) {
      for (int64_t j = 0; j < i; ++j) below = std::max(below, std::abs(R[size_t(i * n + j)]));
      min_diag = std::min(min_diag, R[size_t(i * n + i)]);
    }
    EXPECT_LT(below, 1e-11) << n;
    EXPECT_GT(min_diag, 0.0) << n;
  }
}

TEST(RotateMode, RandomR1DeterministicPerSeed) {
  const int64_t n = 48;
  auto a = random_orthogonal_matrix(n, 7), b = random_orthogonal_matrix(n, 7), c = random_orthogonal_matrix(n, 8);
  EXPECT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * sizeof(double)));
  double diff = 0;
  for (size_t i = 0; i < a.size(); ++i) diff = std::max(diff, std::abs(a[i] - c[i]));
  EXPECT_GT(diff, 0.1);  // independent Haar matrices: entries ~ N(0, 1/n), max gap ≫ 0.1
}

// rotate_model in mode "random" fuses exactly random_orthogonal_matrix(d, seed):
// the embedding (untouched by fuse_norms) becomes E·Q. Bound 1e-6: one f32 GEMM
// over d = 48 terms plus rounding Q to f32, against an f64 reference.
TEST(RotateMode, RandomModeFusesQIntoEmbedding) {
  std::string dir = synth_model(48, 96, 4, 2);
  LlamaModel ref = LlamaModel::load(dir), m = LlamaModel::load(dir);
  RotationConfig rc;
  rc.rotate = true;
  rc.seed = 21;
  rc.mode = "random";
  rotate_model(m, rc);
  const int64_t V = m.cfg.vocab_size, d = m.cfg.hidden_size;
  auto Q = random_orthogonal_matrix(d, 21);
  auto E = ref.embed.to_vector(), got = m.embed.to_vector();
  std::vector<float> want(size_t(V * d));
  for (int64_t v = 0; v < V; ++v)
    for (int64_t j = 0; j < d; ++j) {
      double acc = 0;
      for (int64_t i = 0; i < d; ++i) acc += double(E[size_t(v * d + i)]) * Q[size_t(i * d + j)];
      want[size_t(v * d + j)] = float(acc);
    }
  EXPECT_LT(normalized_error(got, want), 1e-6);

  // Same seed, same weights bit for bit; another seed, other weights.
  LlamaModel m2 = LlamaModel::load(dir), m3 = LlamaModel::load(dir);
  rotate_model(m2, rc);
  rc.seed = 22;
  rotate_model(m3, rc);
  auto got2 = m2.embed.to_vector(), got3 = m3.embed.to_vector();
  EXPECT_EQ(0, std::memcmp(got.data(), got2.data(), got.size() * 4));
  EXPECT_GT(normalized_error(got3, got), 0.5);
}

// Invariance at 16 bits, as Rotation.InvariantAt16Bits checks through the pipeline:
// normalized logits error < 2e-5. Fusing rounds each weight once more (f32 GEMM over
// d terms, ≈ 2^-24·√d relative; FWHT ≈ 2^-24·log2 d) and the online H_Hq, H_f add
// the same per activation; a wrong side or a missing transpose of R1 is O(1).
// Hidden 48 (= 12·4, Paley Hadamard; head_dim 12) is not a power of two.
TEST(RotateMode, LogitsInvariantSynthetic) {
  struct Case {
    int64_t hidden, ffn, heads, kv_heads;
  };
  for (Case c : {Case{48, 96, 4, 2}, Case{64, 172, 4, 2}}) {
    std::string dir = synth_model(c.hidden, c.ffn, c.heads, c.kv_heads);
    for (const char* mode : {"hadamard", "random"}) {
      double err = invariance_error(dir, mode, true);
      std::printf("  synthetic hidden %lld, mode %s: normalized logits error %.3g\n", (long long)c.hidden, mode, err);
      EXPECT_LT(err, 2e-5) << "hidden " << c.hidden << " mode " << mode;
    }
  }
}

// Same bound on the real checkpoints in ../shared (skipped when absent).
TEST(RotateMode, LogitsInvariantSharedModels) {
  for (const char* name : {"models/stories260K", "models/tiny-llama3"}) {
    std::string dir = lowbit::test::shared_path(name);
    if (dir.empty()) GTEST_SKIP() << "../shared/" << name << " missing";
    double err = invariance_error(dir, "random", false);
    std::printf("  %s mode random: normalized logits error %.3g\n", name, err);
    EXPECT_LT(err, 2e-5) << name;
  }
}

TEST(RotateMode, UnknownModeThrows) {
  EXPECT_NO_THROW(check_rotate_mode("hadamard"));
  EXPECT_NO_THROW(check_rotate_mode("random"));
  for (const char* bad : {"", "Random", "hadamard ", "orthogonal"}) {
    try {
      check_rotate_mode(bad);
      ADD_FAILURE() << "no error for '" << bad << "'";
    } catch (const ArgError& e) {
      EXPECT_NE(std::string(e.what()).find("--rotate_mode"), std::string::npos) << e.what();
    }
  }
  // rotate_model refuses before touching the model.
  std::string dir = synth_model(48, 96, 4, 2);
  LlamaModel m = LlamaModel::load(dir);
  RotationConfig rc;
  rc.rotate = true;
  rc.mode = "qr";
  EXPECT_THROW(rotate_model(m, rc), ArgError);
  EXPECT_TRUE(m.layers[0].attn_norm.defined());
  EXPECT_TRUE(m.final_norm.defined());
}
