// CPU backend: OpenBLAS for GEMM, OpenMP for the elementwise/fused ops,
// LAPACKE for Cholesky / eigen / SVD. This is the reference implementation
// every other backend is tested against.
#include <cblas.h>
#include <lapacke.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "backend/backend.h"
#include "core/error.h"

extern "C" void openblas_set_num_threads(int);

namespace lowbit {
namespace {

// Checked LAPACK call: negative info is an argument bug, carry file:line.
#define LAPACK_CHECK(call)                                                                    \
  [&] {                                                                                      \
    lapack_int info_ = (call);                                                              \
    if (info_ < 0)                                                                           \
      throw Error(fmt::format("LAPACK argument error {} in {} ({}:{})", info_, #call, __FILE__, \
                              __LINE__));                                                    \
    return info_;                                                                            \
  }()

// e^x for the softmax (x <= 0 there): range reduction x = n·ln2 + r, |r| <= ln2/2,
// degree-7 Taylor polynomial (relative error < 2e-8 on top of rounding, i.e. about
// 2 ulp), 2^n assembled in the exponent bits. Plain arithmetic so the loops
// around it vectorize (std::exp is a scalar libm call).
inline float exp_approx(float x) {
  x = std::max(x, -87.0f);
  const float n = std::floor(x * 1.44269504088896341f + 0.5f);
  const float r = (x - n * 0.693145751953125f) - n * 1.42860682030941723e-06f;
  float p = 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const int32_t bits = (int32_t(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, 4);
  return p * scale;
}

// row[0:n] <- softmax(row[0:n]) in place.
inline void softmax_inplace(float* row, int64_t n) {
  float mx = -INFINITY;
  for (int64_t s = 0; s < n; ++s) mx = std::max(mx, row[s]);
  float sum = 0.0f;
  for (int64_t s = 0; s < n; ++s) {
    row[s] = exp_approx(row[s] - mx);
    sum += row[s];
  }
  const float inv = 1.0f / sum;
  for (int64_t s = 0; s < n; ++s) row[s] *= inv;
}

class CpuBackend final : public Backend {
 public:
  CpuBackend() { set_threads(0); }
  const char* name() const override { return "cpu"; }
  Device device() const override { return Device::CPU; }

  void set_threads(int n) override {
    // 0: the OpenMP default, which is every core unless OMP_NUM_THREADS says otherwise
    // (the test runner sets 1 so parallel test processes do not oversubscribe the cores).
    static const int dflt = omp_get_max_threads();
    if (n <= 0) n = dflt;
    threads_ = n;
    omp_set_num_threads(n);
    openblas_set_num_threads(n);
  }
  int threads() const override { return threads_; }

  void* allocate(size_t nbytes) override {
    void* p = std::aligned_alloc(64, std::max<size_t>(64, (nbytes + 63) / 64 * 64));
    if (!p) throw Error(fmt::format("cpu backend: out of memory allocating {} bytes", nbytes));
    return p;
  }
  void deallocate(void* p) override { std::free(p); }
  void copy(void* dst, Device dd, const void* src, Device sd, size_t nbytes) override {
    LOWBIT_CHECK(dd == Device::CPU && sd == Device::CPU, Error, "cpu backend cannot copy device memory");
    std::memcpy(dst, src, nbytes);
  }

  void gemm(bool tA, bool tB, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
            const float* B, int64_t ldb, float beta, float* C, int64_t ldc) override {
    if (M == 0 || N == 0) return;
    cblas_sgemm(CblasRowMajor, tA ? CblasTrans : CblasNoTrans, tB ? CblasTrans : CblasNoTrans, int(M), int(N),
                int(K), alpha, A, int(lda), B, int(ldb), beta, C, int(ldc));
  }
  void gemm(bool tA, bool tB, int64_t M, int64_t N, int64_t K, double alpha, const double* A, int64_t lda,
            const double* B, int64_t ldb, double beta, double* C, int64_t ldc) override {
    if (M == 0 || N == 0) return;
    cblas_dgemm(CblasRowMajor, tA ? CblasTrans : CblasNoTrans, tB ? CblasTrans : CblasNoTrans, int(M), int(N),
                int(K), alpha, A, int(lda), B, int(ldb), beta, C, int(ldc));
  }

  void linear(const float* X, int64_t M, const Tensor& W, float* Y, const float* bias) override {
    LOWBIT_CHECK(W.dim() == 2, ShapeError, "linear: weight must be 2-D, got {}", shape_str(W.shape()));
    const int64_t N = W.size(0), K = W.size(1);
    const float* Wf;
    std::vector<float>& scratch = weight_scratch();
    if (W.dtype() == DType::F32) {
      Wf = W.data<float>();
    } else {
      // Half-precision weights stay half in memory; widen per call (compute is f32).
      scratch.resize(static_cast<size_t>(N * K));
      const size_t n = size_t(N * K);
      const int64_t chunks = 64;
#pragma omp parallel for schedule(static)
      for (int64_t c = 0; c < chunks; ++c) {
        size_t b = n * c / chunks, e = n * (c + 1) / chunks;
        convert_to_f32(W.dtype(), static_cast<const char*>(W.raw()) + b * dtype_size(W.dtype()),
                       scratch.data() + b, e - b);
      }
      Wf = scratch.data();
    }
    if (bias) {
      for (int64_t m = 0; m < M; ++m) std::memcpy(Y + m * N, bias, size_t(N) * 4);
    }
    if (M == 1) {
      cblas_sgemv(CblasRowMajor, CblasNoTrans, int(N), int(K), 1.0f, Wf, int(K), X, 1, bias ? 1.0f : 0.0f, Y, 1);
    } else {
      gemm(false, true, M, N, K, 1.0f, X, K, Wf, K, bias ? 1.0f : 0.0f, Y, N);
    }
  }

  void rmsnorm(const float* x, const float* w, float* y, int64_t rows, int64_t dim, float eps) override {
#pragma omp parallel for schedule(static) if (rows > 8)
    for (int64_t r = 0; r < rows; ++r) {
      const float* xr = x + r * dim;
      float* yr = y + r * dim;
      // HF computes the mean square in f32; accumulate in double to be safe, round once.
      double ss = 0;
      for (int64_t i = 0; i < dim; ++i) ss += double(xr[i]) * xr[i];
      float inv = 1.0f / std::sqrt(float(ss / double(dim)) + eps);
      if (w)
        for (int64_t i = 0; i < dim; ++i) yr[i] = w[i] * (xr[i] * inv);
      else
        for (int64_t i = 0; i < dim; ++i) yr[i] = xr[i] * inv;
    }
  }

  void rope(float* x, int64_t T, int64_t heads, int64_t D, const int32_t* pos, const float* inv_freq) override {
    const int64_t half = D / 2;
#pragma omp parallel for schedule(static) if (T > 8)
    for (int64_t t = 0; t < T; ++t) {
      std::vector<float> c(static_cast<size_t>(half)), s(static_cast<size_t>(half));
      for (int64_t j = 0; j < half; ++j) {
        float ang = float(pos[t]) * inv_freq[j];  // f32 product, as HF does
        c[size_t(j)] = float(std::cos(double(ang)));
        s[size_t(j)] = float(std::sin(double(ang)));
      }
      for (int64_t h = 0; h < heads; ++h) {
        float* v = x + (t * heads + h) * D;
        for (int64_t j = 0; j < half; ++j) {
          float a = v[j], b = v[j + half];
          v[j] = a * c[size_t(j)] - b * s[size_t(j)];
          v[j + half] = b * c[size_t(j)] + a * s[size_t(j)];
        }
      }
    }
  }

  void attention(const float* q, const float* k, const float* v, float* out, int64_t T, int64_t S, int64_t Hq,
                 int64_t Hkv, int64_t D, int64_t q_offset, float scale) override {
    LOWBIT_CHECK(Hkv > 0 && Hq % Hkv == 0, ShapeError, "attention: {} query heads not a multiple of {} kv heads",
                 Hq, Hkv);
    LOWBIT_CHECK(q_offset + T <= S, ShapeError, "attention: queries end at {} but only {} keys", q_offset + T, S);
    const int64_t group = Hq / Hkv;
    if (T * S * Hq <= 64 * 1024 || T == 1) {
      // Small problems / decoding: direct loops, parallel over (t, head).
#pragma omp parallel for collapse(2) schedule(static)
      for (int64_t t = 0; t < T; ++t)
        for (int64_t h = 0; h < Hq; ++h) {
          const int64_t kvh = h / group, n = q_offset + t + 1;
          const float* qv = q + (t * Hq + h) * D;
          std::vector<float> p(static_cast<size_t>(n));
          for (int64_t s = 0; s < n; ++s) {
            const float* kv = k + (s * Hkv + kvh) * D;
            float acc = 0;
            for (int64_t d = 0; d < D; ++d) acc += qv[d] * kv[d];
            p[size_t(s)] = acc * scale;
          }
          softmax_inplace(p.data(), n);
          float* o = out + (t * Hq + h) * D;
          std::fill(o, o + D, 0.0f);
          for (int64_t s = 0; s < n; ++s) {
            const float* vv = v + (s * Hkv + kvh) * D;
            const float w = p[size_t(s)];
            for (int64_t d = 0; d < D; ++d) o[d] += w * vv[d];
          }
        }
      return;
    }
    // Large prefill: blocks of query rows per head, in parallel. Each block only
    // touches the keys it can see (causal), as two small GEMMs around a softmax:
    // P = softmax(mask(Q_blk K[0:n]ᵀ)), O_blk = P V[0:n]. Inside the parallel
    // region OpenBLAS (OpenMP build) runs each GEMM on the calling thread.
    const int64_t BQ = 64, nblk = (T + BQ - 1) / BQ;
#pragma omp parallel
    {
      std::vector<float> P(static_cast<size_t>(BQ * S));
#pragma omp for collapse(2) schedule(dynamic)
      for (int64_t h = 0; h < Hq; ++h)
        for (int64_t b = 0; b < nblk; ++b) {
          const int64_t kvh = h / group, t0 = b * BQ, t1 = std::min(T, t0 + BQ), rows = t1 - t0;
          const int64_t n = q_offset + t1;  // keys visible to the last row of the block
          gemm(false, true, rows, n, D, scale, q + (t0 * Hq + h) * D, Hq * D, k + kvh * D, Hkv * D, 0.0f,
               P.data(), n);
          for (int64_t r = 0; r < rows; ++r) {
            float* row = P.data() + r * n;
            const int64_t valid = q_offset + t0 + r + 1;
            softmax_inplace(row, valid);
            for (int64_t s = valid; s < n; ++s) row[s] = 0.0f;
          }
          gemm(false, false, rows, D, n, 1.0f, P.data(), n, v + kvh * D, Hkv * D, 0.0f, out + (t0 * Hq + h) * D,
               Hq * D);
        }
    }
  }

  void silu_mul(const float* gate, const float* up, float* out, int64_t n) override {
#pragma omp parallel for schedule(static) if (n > 4096)
    for (int64_t i = 0; i < n; ++i) {
      float g = gate[i];
      out[i] = g / (1.0f + std::exp(-g)) * up[i];
    }
  }

  void gram(const float* X, int64_t rows, int64_t n, float* C) override {
    // syrk computes one triangle (half a GEMM's flops); mirror it.
    cblas_ssyrk(CblasRowMajor, CblasUpper, CblasTrans, int(n), int(rows), 1.0f, X, int(n), 0.0f, C, int(n));
#pragma omp parallel for schedule(static) if (n > 256)
    for (int64_t i = 1; i < n; ++i)
      for (int64_t j = 0; j < i; ++j) C[i * n + j] = C[j * n + i];
  }
  bool cholesky(float* A, int64_t n) override {
    lapack_int info = LAPACK_CHECK(LAPACKE_spotrf(LAPACK_ROW_MAJOR, 'L', lapack_int(n), A, lapack_int(n)));
    if (info > 0) return false;
    for (int64_t i = 0; i < n; ++i) std::fill(A + i * n + i + 1, A + (i + 1) * n, 0.0f);
    return true;
  }
  bool cholesky(double* A, int64_t n) override {
    lapack_int info = LAPACK_CHECK(LAPACKE_dpotrf(LAPACK_ROW_MAJOR, 'L', lapack_int(n), A, lapack_int(n)));
    if (info > 0) return false;
    for (int64_t i = 0; i < n; ++i) std::fill(A + i * n + i + 1, A + (i + 1) * n, 0.0);
    return true;
  }
  bool spd_inverse(double* A, int64_t n) override {
    if (!cholesky(A, n)) return false;
    lapack_int info = LAPACK_CHECK(LAPACKE_dpotri(LAPACK_ROW_MAJOR, 'L', lapack_int(n), A, lapack_int(n)));
    if (info > 0) return false;
    for (int64_t i = 0; i < n; ++i)  // mirror lower -> upper
      for (int64_t j = i + 1; j < n; ++j) A[i * n + j] = A[j * n + i];
    return true;
  }
  // With J the reversal permutation: J A J = L Lᵀ gives A = (J L J)(J L J)ᵀ with
  // J L J upper, so A⁻¹ = UᵀU for U = (J L J)⁻¹ = J L⁻¹ J. Reversing both indices
  // of a row-major matrix is reversing its storage. Cost: potrf + trtri (2n³/3)
  // instead of potrf + potri + potrf (4n³/3).
  bool inverse_cholesky_upper(double* A, int64_t n) override {
    std::reverse(A, A + n * n);
    if (!cholesky(A, n)) return false;
    lapack_int info = LAPACK_CHECK(LAPACKE_dtrtri(LAPACK_ROW_MAJOR, 'L', 'N', lapack_int(n), A, lapack_int(n)));
    if (info > 0) return false;
    std::reverse(A, A + n * n);
    return true;
  }
  void eigh(double* A, int64_t n, double* w) override {
    lapack_int info = LAPACK_CHECK(LAPACKE_dsyevd(LAPACK_ROW_MAJOR, 'V', 'L', lapack_int(n), A, lapack_int(n), w));
    LOWBIT_CHECK(info == 0, NumericError, "eigh: dsyevd failed to converge (info {})", info);
  }
  void svd(const double* A, int64_t m, int64_t n, double* U, double* S, double* Vt) override {
    std::vector<double> a(A, A + m * n);
    const int64_t k = std::min(m, n);
    lapack_int info = LAPACK_CHECK(LAPACKE_dgesdd(LAPACK_ROW_MAJOR, 'S', lapack_int(m), lapack_int(n), a.data(),
                                                  lapack_int(n), S, U, lapack_int(k), Vt, lapack_int(n)));
    LOWBIT_CHECK(info == 0, NumericError, "svd: dgesdd failed to converge (info {})", info);
  }

 private:
  static std::vector<float>& weight_scratch() {
    thread_local std::vector<float> s;
    return s;
  }
  int threads_ = 1;
};

}  // namespace

Backend& cpu_backend() {
  static CpuBackend b;
  return b;
}

}  // namespace lowbit
