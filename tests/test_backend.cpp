// CPU backend ops against plain double-precision references written here.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "backend/backend.h"
#include "core/dtype.h"
#include "core/error.h"
#include "testing.h"

using namespace lowbit;
using lowbit::test::normalized_error;

namespace {
std::vector<float> randv(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 g(seed);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<float> v(n);
  for (auto& x : v) x = u(g) * scale;
  return v;
}

// Reference causal GQA attention in double.
std::vector<float> attention_ref(const std::vector<float>& q, const std::vector<float>& k, const std::vector<float>& v,
                                 int64_t T, int64_t S, int64_t Hq, int64_t Hkv, int64_t D, int64_t off) {
  std::vector<float> out(static_cast<size_t>(T * Hq * D));
  for (int64_t t = 0; t < T; ++t)
    for (int64_t h = 0; h < Hq; ++h) {
      int64_t kh = h / (Hq / Hkv), n = off + t + 1;
      std::vector<double> p(static_cast<size_t>(n));
      double mx = -1e300, sum = 0;
      for (int64_t s = 0; s < n; ++s) {
        double a = 0;
        for (int64_t d = 0; d < D; ++d) a += double(q[size_t((t * Hq + h) * D + d)]) * k[size_t((s * Hkv + kh) * D + d)];
        p[size_t(s)] = a / std::sqrt(double(D));
        mx = std::max(mx, p[size_t(s)]);
      }
      for (auto& x : p) sum += (x = std::exp(x - mx));
      for (int64_t d = 0; d < D; ++d) {
        double a = 0;
        for (int64_t s = 0; s < n; ++s) a += p[size_t(s)] / sum * v[size_t((s * Hkv + kh) * D + d)];
        out[size_t((t * Hq + h) * D + d)] = float(a);
      }
      (void)S;
    }
  return out;
}
}  // namespace

TEST(DType, F16RoundTripIsExactForEveryHalf) {
  for (uint32_t h = 0; h < 65536; ++h) {
    float f = f16_to_f32(uint16_t(h));
    if (std::isnan(f)) continue;
    ASSERT_EQ(f32_to_f16(f), uint16_t(h)) << h;
  }
  EXPECT_EQ(f16_to_f32(0x3c00), 1.0f);
  EXPECT_EQ(f16_to_f32(0x0001), std::ldexp(1.0f, -24));
  EXPECT_EQ(f32_to_f16(65520.0f), 0x7c00);       // rounds to inf
  EXPECT_EQ(f32_to_f16(1.0f + std::ldexp(1.0f, -11)), 0x3c00);  // tie -> even
}

TEST(DType, Bf16RoundsToNearestEven) {
  EXPECT_EQ(f32_to_bf16(1.0f), 0x3f80);
  float tie;  // 1 + 2^-8 is halfway between bf16 1.0 and 1.0078125
  tie = 1.0f + std::ldexp(1.0f, -8);
  EXPECT_EQ(f32_to_bf16(tie), 0x3f80);
  EXPECT_EQ(bf16_to_f32(f32_to_bf16(3.140625f)), 3.140625f);
  EXPECT_TRUE(std::isnan(bf16_to_f32(f32_to_bf16(NAN))));
}

TEST(Backend, LinearAllWeightDtypesMatchDoubleReference) {
  Backend& be = cpu_backend();
  const int64_t M = 7, N = 33, K = 70;
  auto x = randv(static_cast<size_t>(M * K), 1), w = randv(static_cast<size_t>(N * K), 2);
  for (DType dt : {DType::F32, DType::BF16, DType::F16}) {
    Tensor W = Tensor::from_vector(w, {N, K}).to(dt);
    std::vector<float> wr = W.to_vector();  // the weight as stored
    for (int64_t rows : {int64_t(1), M}) {
      std::vector<float> y(static_cast<size_t>(rows * N)), ref(static_cast<size_t>(rows * N));
      be.linear(x.data(), rows, W, y.data());
      for (int64_t m = 0; m < rows; ++m)
        for (int64_t n = 0; n < N; ++n) {
          double a = 0;
          for (int64_t k = 0; k < K; ++k) a += double(x[size_t(m * K + k)]) * wr[size_t(n * K + k)];
          ref[size_t(m * N + n)] = float(a);
        }
      EXPECT_LT(normalized_error(y, ref), 1e-6) << dtype_name(dt) << " rows " << rows;
    }
  }
}

TEST(Backend, AttentionBothPathsMatchReference) {
  Backend& be = cpu_backend();
  // (T, S, Hq, Hkv, D, offset): small direct path, decode path, large GEMM path with offset.
  struct C { int64_t T, S, Hq, Hkv, D, off; };
  for (C c : {C{5, 5, 4, 2, 8, 0}, C{1, 9, 4, 1, 8, 8}, C{96, 160, 8, 2, 16, 64}, C{300, 300, 4, 4, 8, 0}}) {
    auto q = randv(static_cast<size_t>(c.T * c.Hq * c.D), 3), k = randv(static_cast<size_t>(c.S * c.Hkv * c.D), 4),
         v = randv(static_cast<size_t>(c.S * c.Hkv * c.D), 5);
    std::vector<float> out(q.size());
    be.attention(q.data(), k.data(), v.data(), out.data(), c.T, c.S, c.Hq, c.Hkv, c.D, c.off,
                 float(1.0 / std::sqrt(double(c.D))));
    auto ref = attention_ref(q, k, v, c.T, c.S, c.Hq, c.Hkv, c.D, c.off);
    EXPECT_LT(normalized_error(out, ref), 1e-6) << "T=" << c.T;
  }
  std::vector<float> q(8), k(8), v(8), o(8);
  EXPECT_THROW(be.attention(q.data(), k.data(), v.data(), o.data(), 1, 1, 3, 2, 4, 0, 1.f), ShapeError);
}

TEST(Backend, RmsNormAndRopeAndSilu) {
  Backend& be = cpu_backend();
  const int64_t R = 3, Dm = 16;
  auto x = randv(static_cast<size_t>(R * Dm), 6, 3.0f), w = randv(static_cast<size_t>(Dm), 7);
  std::vector<float> y(x.size());
  be.rmsnorm(x.data(), w.data(), y.data(), R, Dm, 1e-5f);
  for (int64_t r = 0; r < R; ++r) {
    double ss = 0;
    for (int64_t i = 0; i < Dm; ++i) ss += double(x[size_t(r * Dm + i)]) * x[size_t(r * Dm + i)];
    double inv = 1.0 / std::sqrt(ss / Dm + 1e-5);
    for (int64_t i = 0; i < Dm; ++i) EXPECT_NEAR(y[size_t(r * Dm + i)], x[size_t(r * Dm + i)] * inv * w[size_t(i)], 1e-5);
  }
  // RoPE: rotate-half pairs (j, j + D/2) by pos * f_j, norms preserved.
  const int64_t T = 4, H = 2, D = 8;
  auto q = randv(static_cast<size_t>(T * H * D), 8), q0 = q;
  std::vector<float> f = {1.0f, 0.1f, 0.01f, 0.001f};
  std::vector<int32_t> pos = {0, 3, 17, 100};
  be.rope(q.data(), T, H, D, pos.data(), f.data());
  for (int64_t t = 0; t < T; ++t)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t j = 0; j < D / 2; ++j) {
        double a = q0[size_t((t * H + h) * D + j)], b = q0[size_t((t * H + h) * D + j + D / 2)];
        double ang = double(float(pos[size_t(t)]) * f[size_t(j)]);
        EXPECT_NEAR(q[size_t((t * H + h) * D + j)], a * std::cos(ang) - b * std::sin(ang), 1e-6);
        EXPECT_NEAR(q[size_t((t * H + h) * D + j + D / 2)], b * std::cos(ang) + a * std::sin(ang), 1e-6);
      }
  std::vector<float> g = {-3, 0, 2}, u = {1, 5, 0.5}, o(3);
  be.silu_mul(g.data(), u.data(), o.data(), 3);
  for (int i = 0; i < 3; ++i) EXPECT_NEAR(o[size_t(i)], g[size_t(i)] / (1 + std::exp(-g[size_t(i)])) * u[size_t(i)], 1e-6);
}

TEST(Backend, LinearAlgebra) {
  Backend& be = cpu_backend();
  const int64_t n = 6;
  auto r = randv(static_cast<size_t>(n * n), 9);
  std::vector<double> A(static_cast<size_t>(n * n), 0.0);  // A = R Rᵀ + I  (SPD)
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < n; ++j) {
      double s = i == j ? 1.0 : 0.0;
      for (int64_t k = 0; k < n; ++k) s += double(r[size_t(i * n + k)]) * r[size_t(j * n + k)];
      A[size_t(i * n + j)] = s;
    }
  auto L = A;
  ASSERT_TRUE(be.cholesky(L.data(), n));
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < n; ++j) {
      double s = 0;
      for (int64_t k = 0; k < n; ++k) s += L[size_t(i * n + k)] * L[size_t(j * n + k)];
      EXPECT_NEAR(s, A[size_t(i * n + j)], 1e-10);
    }
  auto Ai = A;
  ASSERT_TRUE(be.spd_inverse(Ai.data(), n));
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < n; ++j) {
      double s = 0;
      for (int64_t k = 0; k < n; ++k) s += A[size_t(i * n + k)] * Ai[size_t(k * n + j)];
      EXPECT_NEAR(s, i == j ? 1.0 : 0.0, 1e-10);
    }
  // U upper triangular with positive diagonal and UᵀU = A⁻¹ (GPTQ's factor)
  auto Uc = A;
  ASSERT_TRUE(be.inverse_cholesky_upper(Uc.data(), n));
  for (int64_t i = 0; i < n; ++i) {
    EXPECT_GT(Uc[size_t(i * n + i)], 0.0);
    for (int64_t j = 0; j < i; ++j) EXPECT_EQ(Uc[size_t(i * n + j)], 0.0);
  }
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < n; ++j) {
      double s = 0;
      for (int64_t k = 0; k < n; ++k) s += Uc[size_t(k * n + i)] * Uc[size_t(k * n + j)];
      EXPECT_NEAR(s, Ai[size_t(i * n + j)], 1e-10);
    }
  std::vector<double> neg(static_cast<size_t>(n * n), 0.0);
  for (int64_t i = 0; i < n; ++i) neg[size_t(i * n + i)] = -1.0;
  EXPECT_FALSE(be.cholesky(neg.data(), n));
  auto neg2 = neg;
  EXPECT_FALSE(be.inverse_cholesky_upper(neg2.data(), n));
  auto E = A;
  std::vector<double> w(static_cast<size_t>(n));
  be.eigh(E.data(), n, w.data());
  for (int64_t c = 0; c < n; ++c)  // A v = λ v
    for (int64_t i = 0; i < n; ++i) {
      double s = 0;
      for (int64_t k = 0; k < n; ++k) s += A[size_t(i * n + k)] * E[size_t(k * n + c)];
      EXPECT_NEAR(s, w[size_t(c)] * E[size_t(i * n + c)], 1e-9);
    }
  const int64_t m = 4;  // SVD of a 4x6
  std::vector<double> B(A.begin(), A.begin() + m * n), U(static_cast<size_t>(m * m)), S(static_cast<size_t>(m)), Vt(static_cast<size_t>(m * n));
  be.svd(B.data(), m, n, U.data(), S.data(), Vt.data());
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      double s = 0;
      for (int64_t k = 0; k < m; ++k) s += U[size_t(i * m + k)] * S[size_t(k)] * Vt[size_t(k * n + j)];
      EXPECT_NEAR(s, B[size_t(i * n + j)], 1e-10);
    }
}
