// The backend seam: memory, copies, GEMM, a handful of fused transformer ops
// and dense linear algebra. The CPU backend (OpenBLAS + OpenMP + LAPACKE) is the
// reference; a CUDA backend implements the same interface. All matrices are
// row-major. Activations are f32; weights may be f32/f16/bf16 (see linear()).
#pragma once
#include <cstdint>

#include "core/tensor.h"

namespace lowbit {

class Backend {
 public:
  virtual ~Backend() = default;
  virtual const char* name() const = 0;
  virtual Device device() const = 0;
  virtual void set_threads(int n) = 0;  // <= 0: all cores
  virtual int threads() const = 0;

  // ---- memory ----------------------------------------------------------------
  virtual void* allocate(size_t nbytes) = 0;
  virtual void deallocate(void* p) = 0;
  virtual void copy(void* dst, Device dst_dev, const void* src, Device src_dev, size_t nbytes) = 0;

  // ---- GEMM ------------------------------------------------------------------
  // C[M,N] = alpha * op(A) op(B) + beta * C, op(X) = Xᵀ when trans*.
  virtual void gemm(bool transA, bool transB, int64_t M, int64_t N, int64_t K, float alpha,
                    const float* A, int64_t lda, const float* B, int64_t ldb, float beta, float* C,
                    int64_t ldc) = 0;
  virtual void gemm(bool transA, bool transB, int64_t M, int64_t N, int64_t K, double alpha,
                    const double* A, int64_t lda, const double* B, int64_t ldb, double beta, double* C,
                    int64_t ldc) = 0;
  // Y[M,N] = X[M,K] · Wᵀ (+ bias), W: [N, K] in f32/f16/bf16 (the nn.Linear product).
  virtual void linear(const float* X, int64_t M, const Tensor& W, float* Y, const float* bias = nullptr) = 0;

  // ---- fused transformer ops -----------------------------------------------------
  // y[r,:] = x[r,:] / sqrt(mean(x[r,:]²) + eps) * w   (w may be null: scale-free norm)
  virtual void rmsnorm(const float* x, const float* w, float* y, int64_t rows, int64_t dim, float eps) = 0;
  // Rotate-half RoPE in place on x: [T, heads, head_dim]; angle = pos[t] * inv_freq[j], j < head_dim/2.
  virtual void rope(float* x, int64_t T, int64_t heads, int64_t head_dim, const int32_t* pos,
                    const float* inv_freq) = 0;
  // Causal GQA attention. q: [T, Hq, D]; k, v: [S, Hkv, D] (the cache, S keys);
  // query t sits at absolute position q_offset + t and sees keys 0..q_offset+t.
  // out: [T, Hq, D].
  virtual void attention(const float* q, const float* k, const float* v, float* out, int64_t T, int64_t S,
                         int64_t Hq, int64_t Hkv, int64_t D, int64_t q_offset, float scale) = 0;
  // out[i] = silu(gate[i]) * up[i]
  virtual void silu_mul(const float* gate, const float* up, float* out, int64_t n) = 0;

  // C [n, n] = Xᵀ X for X [rows, n] (f32; symmetric, both triangles written).
  virtual void gram(const float* X, int64_t rows, int64_t n, float* C) = 0;

  // ---- linear algebra (in place, n×n symmetric, row-major) ----------------------
  // Lower Cholesky factor A = L Lᵀ (upper triangle zeroed). false if not positive definite.
  virtual bool cholesky(float* A, int64_t n) = 0;
  virtual bool cholesky(double* A, int64_t n) = 0;
  // A <- A⁻¹ for symmetric positive definite A (via Cholesky). false if not PD.
  virtual bool spd_inverse(double* A, int64_t n) = 0;
  // A (SPD) <- U, the upper Cholesky factor of A⁻¹ (A⁻¹ = Uᵀ U, lower triangle
  // zeroed) — what GPTQ needs, without forming A⁻¹. false if A is not PD.
  virtual bool inverse_cholesky_upper(double* A, int64_t n) = 0;
  // Eigen-decomposition of symmetric A: w ascending, A <- eigenvectors in columns.
  virtual void eigh(double* A, int64_t n, double* w) = 0;
  // Thin SVD of A [m, n]: U [m, k], S [k], Vt [k, n], k = min(m, n). A is not modified.
  virtual void svd(const double* A, int64_t m, int64_t n, double* U, double* S, double* Vt) = 0;
};

// The process-wide CPU backend.
Backend& cpu_backend();

// The backend models and solvers are built on: the CPU backend unless the process chose
// the CUDA one (`--device cuda`, set once at start-up before any model is loaded).
Backend& default_backend();
Device default_device();
void set_default_device(Device d);  // DeviceError when CUDA is not compiled in or no GPU is found

}  // namespace lowbit
