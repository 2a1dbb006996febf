// The CUDA backend behind the Backend interface (host pointers in and out, like the CPU
// backend, so every model and the quantization driver run on it unchanged).
//
// What runs on the device: the O(n³)/O(T²) work — GEMMs (f32 without TF32, f64), the
// linear product (the weight goes up in its file dtype and is widened there), causal
// attention, Gram matrices and the Cholesky family. Each call copies its operands in and
// its result out. What stays on the host (the CPU backend): RMSNorm, RoPE, SiLU·up
// (memory-bound: a round trip over PCIe costs more than the op), eigh and SVD (rare,
// small). The device-resident forward that keeps activations on the GPU for evaluation
// is cuda_llama.cpp.
#include <algorithm>
#include <list>
#include <mutex>
#include <cstring>
#include <vector>

#include "backend/cuda/cuda_context.h"
#include "backend/cuda/kernels.h"
#include "backend/cuda_api.h"
#include "core/error.h"

namespace lowbit::cuda {
namespace {

// Copies a row-major host matrix [rows, cols] with leading dimension ld into a dense device one.
template <class T>
void upload_matrix(T* dst, const T* src, int64_t rows, int64_t cols, int64_t ld) {
  if (rows == 0 || cols == 0) return;
  LOWBIT_CUDA_CHECK(cudaMemcpy2DAsync(dst, size_t(cols) * sizeof(T), src, size_t(ld) * sizeof(T),
                                      size_t(cols) * sizeof(T), size_t(rows), cudaMemcpyHostToDevice, stream()));
}
template <class T>
void download_matrix(T* dst, int64_t ld, const T* src, int64_t rows, int64_t cols) {
  if (rows == 0 || cols == 0) return;
  LOWBIT_CUDA_CHECK(cudaMemcpy2DAsync(dst, size_t(ld) * sizeof(T), src, size_t(cols) * sizeof(T),
                                      size_t(cols) * sizeof(T), size_t(rows), cudaMemcpyDeviceToHost, stream()));
  sync();
}

int info_of(const DeviceBuffer<int>& info) {
  int v = 0;
  download(&v, info.get(), sizeof(int));
  return v;
}

// Row-major C[M,N] = alpha op(A) op(B) + beta C on dense device operands, via the
// column-major identity Cᵀ = op(B)ᵀ op(A)ᵀ.
void gemm_dev(bool tA, bool tB, int64_t M, int64_t N, int64_t K, float alpha, const float* A, const float* B,
              float beta, float* C) {
  const int lda = int(tA ? M : K), ldb = int(tB ? K : N);
  LOWBIT_CUBLAS_CHECK(cublasSgemm(cublas(), tB ? CUBLAS_OP_T : CUBLAS_OP_N, tA ? CUBLAS_OP_T : CUBLAS_OP_N, int(N),
                                  int(M), int(K), &alpha, B, ldb, A, lda, &beta, C, int(N)));
}
void gemm_dev(bool tA, bool tB, int64_t M, int64_t N, int64_t K, double alpha, const double* A, const double* B,
              double beta, double* C) {
  const int lda = int(tA ? M : K), ldb = int(tB ? K : N);
  LOWBIT_CUBLAS_CHECK(cublasDgemm(cublas(), tB ? CUBLAS_OP_T : CUBLAS_OP_N, tA ? CUBLAS_OP_T : CUBLAS_OP_N, int(N),
                                  int(M), int(K), &alpha, B, ldb, A, lda, &beta, C, int(N)));
}

template <class T>
void gemm_host(bool tA, bool tB, int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t lda, const T* B,
               int64_t ldb, T beta, T* C, int64_t ldc) {
  if (M == 0 || N == 0) return;
  LOWBIT_CHECK(M < (int64_t(1) << 31) && N < (int64_t(1) << 31) && K < (int64_t(1) << 31), ArgError,
               "cuda gemm: dimension over 2^31 ({}x{}x{})", M, N, K);
  DeviceBuffer<T> dA(size_t(M * K)), dB(size_t(K * N)), dC(size_t(M * N));
  upload_matrix(dA.get(), A, tA ? K : M, tA ? M : K, lda);
  upload_matrix(dB.get(), B, tB ? N : K, tB ? K : N, ldb);
  if (beta != T(0)) upload_matrix(dC.get(), C, M, N, ldc);
  gemm_dev(tA, tB, M, N, K, alpha, dA.get(), dB.get(), beta, dC.get());
  download_matrix(C, ldc, dC.get(), M, N);
}

WType wtype_of(DType t) {
  switch (t) {
    case DType::F32: return WType::F32;
    case DType::F16: return WType::F16;
    case DType::BF16: return WType::BF16;
    default: throw DTypeError(fmt::format("cuda linear: unsupported weight dtype {}", dtype_name(t)));
  }
}

template <class T>
int potrf(cublasFillMode_t uplo, T* A, int64_t n, DeviceBuffer<int>& info) {
  int lw = 0;
  if constexpr (std::is_same_v<T, double>) {
    LOWBIT_CUSOLVER_CHECK(cusolverDnDpotrf_bufferSize(cusolver(), uplo, int(n), A, int(n), &lw));
    DeviceBuffer<double> work(size_t(std::max(lw, 1)));
    LOWBIT_CUSOLVER_CHECK(cusolverDnDpotrf(cusolver(), uplo, int(n), A, int(n), work.get(), lw, info.get()));
    return info_of(info);
  } else {
    LOWBIT_CUSOLVER_CHECK(cusolverDnSpotrf_bufferSize(cusolver(), uplo, int(n), A, int(n), &lw));
    DeviceBuffer<float> work(size_t(std::max(lw, 1)));
    LOWBIT_CUSOLVER_CHECK(cusolverDnSpotrf(cusolver(), uplo, int(n), A, int(n), work.get(), lw, info.get()));
    return info_of(info);
  }
}

int potri(cublasFillMode_t uplo, double* A, int64_t n, DeviceBuffer<int>& info) {
  int lw = 0;
  LOWBIT_CUSOLVER_CHECK(cusolverDnDpotri_bufferSize(cusolver(), uplo, int(n), A, int(n), &lw));
  DeviceBuffer<double> work(size_t(std::max(lw, 1)));
  LOWBIT_CUSOLVER_CHECK(cusolverDnDpotri(cusolver(), uplo, int(n), A, int(n), work.get(), lw, info.get()));
  return info_of(info);
}

// Row-major lower Cholesky factor (upper zeroed). A row-major symmetric matrix is the
// same bytes column-major; cuSOLVER's column-major UPPER factor U (A = UᵀU) read back
// row-major is Uᵀ = L.
template <class T>
bool cholesky_dev(T* A, int64_t n) {
  DeviceBuffer<T> d(size_t(n * n));
  DeviceBuffer<int> info(1);
  upload(d.get(), A, size_t(n * n) * sizeof(T));
  if (potrf(CUBLAS_FILL_MODE_UPPER, d.get(), n, info) != 0) return false;
  download(A, d.get(), size_t(n * n) * sizeof(T));
  for (int64_t i = 0; i < n; ++i) std::fill(A + i * n + i + 1, A + (i + 1) * n, T(0));
  return true;
}

// Device copies (f32) of the weights linear() has multiplied by, so the calibration
// passes of the quantization driver (hundreds of products per layer with the same
// weights) upload each weight once. An entry is found by the tensor's storage identity
// (a weak reference: freed storage never matches), address, dtype and size, and is used
// only if a fingerprint of 64 strided elements still matches — lowbit gives a linear a
// new tensor whenever it changes a weight, and the fingerprint catches an in-place
// change regardless. Least recently used entries go first beyond kCacheBytes.
class WeightCache {
 public:
  static constexpr size_t kCacheBytes = size_t(8) << 30;

  const float* get(const Tensor& W) {
    const std::weak_ptr<const void> owner = W.storage_handle();
    const int64_t n = W.numel();
    const uint64_t fp = fingerprint(W);
    ++clock_;
    for (auto it = entries_.begin(); it != entries_.end();) {
      if (it->owner.expired()) {
        bytes_ -= it->W.bytes();
        it = entries_.erase(it);
        continue;
      }
      if (it->raw == W.raw() && it->dtype == W.dtype() && it->n == n && same_owner(it->owner, owner)) {
        if (it->fp == fp) {
          it->last_use = clock_;
          return it->W.get();
        }
        bytes_ -= it->W.bytes();
        it = entries_.erase(it);  // changed in place: upload again
        continue;
      }
      ++it;
    }
    Entry e;
    e.owner = owner;
    e.raw = W.raw();
    e.dtype = W.dtype();
    e.n = n;
    e.fp = fp;
    e.last_use = clock_;
    e.W = DeviceBuffer<float>(size_t(n));
    if (W.dtype() == DType::F32) {
      upload(e.W.get(), W.raw(), size_t(n) * 4);
    } else {  // up in its 2-byte dtype, widened on the device (exactly)
      DeviceBuffer<uint16_t> raw{size_t(n)};
      upload(raw.get(), W.raw(), size_t(n) * 2);
      to_f32(raw.get(), wtype_of(W.dtype()), e.W.get(), n, stream());
    }
    bytes_ += e.W.bytes();
    entries_.push_back(std::move(e));
    const float* p = entries_.back().W.get();
    while (bytes_ > kCacheBytes && entries_.size() > 1) {  // evict the least recently used (never the new one)
      auto lru = entries_.begin();
      for (auto it = entries_.begin(); it != entries_.end(); ++it)
        if (it->last_use < lru->last_use) lru = it;
      bytes_ -= lru->W.bytes();
      entries_.erase(lru);
    }
    return p;
  }

 private:
  struct Entry {
    std::weak_ptr<const void> owner;
    const void* raw = nullptr;
    DType dtype = DType::F32;
    int64_t n = 0;
    uint64_t fp = 0, last_use = 0;
    DeviceBuffer<float> W;
  };
  static bool same_owner(const std::weak_ptr<const void>& a, const std::weak_ptr<const void>& b) {
    return !a.owner_before(b) && !b.owner_before(a);
  }
  static uint64_t fingerprint(const Tensor& W) {
    const size_t es = dtype_size(W.dtype()), n = size_t(W.numel());
    const unsigned char* p = static_cast<const unsigned char*>(W.raw());
    uint64_t h = 1469598103934665603ull ^ n;
    for (size_t i = 0; i < 64 && n > 0; ++i) {
      const size_t idx = (i * 0x9E3779B97F4A7C15ull + i * n / 64) % n;
      for (size_t b = 0; b < es; ++b) h = (h ^ p[idx * es + b]) * 1099511628211ull;
    }
    return h;
  }
  std::list<Entry> entries_;
  size_t bytes_ = 0;
  uint64_t clock_ = 0;
};

std::mutex g_cache_mu;  // the weight cache may be reached from several host threads
WeightCache& weight_cache() {
  static WeightCache* c = new WeightCache;  // never destroyed (device memory goes with the process)
  return *c;
}

class CudaBackend final : public Backend {
 public:
  const char* name() const override { return "cuda"; }
  Device device() const override { return Device::CUDA; }
  // Threads of the host-side work (the ops delegated to the CPU backend).
  void set_threads(int n) override { cpu_backend().set_threads(n); }
  int threads() const override { return cpu_backend().threads(); }

  void* allocate(size_t nbytes) override { return device_alloc(nbytes); }
  void deallocate(void* p) override { device_free(p); }
  void copy(void* dst, Device dd, const void* src, Device sd, size_t nbytes) override {
    if (nbytes == 0) return;
    const cudaMemcpyKind k = dd == Device::CUDA ? (sd == Device::CUDA ? cudaMemcpyDeviceToDevice : cudaMemcpyHostToDevice)
                                                : (sd == Device::CUDA ? cudaMemcpyDeviceToHost : cudaMemcpyHostToHost);
    LOWBIT_CUDA_CHECK(cudaMemcpyAsync(dst, src, nbytes, k, stream()));
    sync();
  }

  void gemm(bool tA, bool tB, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
            const float* B, int64_t ldb, float beta, float* C, int64_t ldc) override {
    gemm_host(tA, tB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  }
  void gemm(bool tA, bool tB, int64_t M, int64_t N, int64_t K, double alpha, const double* A, int64_t lda,
            const double* B, int64_t ldb, double beta, double* C, int64_t ldc) override {
    gemm_host(tA, tB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  }

  void linear(const float* X, int64_t M, const Tensor& W, float* Y, const float* bias) override {
    LOWBIT_CHECK(W.dim() == 2, ShapeError, "linear: weight must be 2-D, got {}", shape_str(W.shape()));
    const int64_t N = W.size(0), K = W.size(1);
    if (M == 0) return;
    wtype_of(W.dtype());  // DTypeError for anything but f32/f16/bf16
    const float* dW = cached_weight_f32(W);
    DeviceBuffer<float> dX(size_t(M * K)), dY(size_t(M * N));
    upload(dX.get(), X, size_t(M * K) * 4);
    gemm_dev(false, true, M, N, K, 1.0f, dX.get(), dW, 0.0f, dY.get());
    download(Y, dY.get(), size_t(M * N) * 4);
    if (bias)
      for (int64_t m = 0; m < M; ++m)
        for (int64_t j = 0; j < N; ++j) Y[m * N + j] += bias[j];
  }

  void rmsnorm(const float* x, const float* w, float* y, int64_t rows, int64_t dim, float eps) override {
    cpu_backend().rmsnorm(x, w, y, rows, dim, eps);
  }
  void rope(float* x, int64_t T, int64_t heads, int64_t head_dim, const int32_t* pos,
            const float* inv_freq) override {
    cpu_backend().rope(x, T, heads, head_dim, pos, inv_freq);
  }
  void silu_mul(const float* gate, const float* up, float* out, int64_t n) override {
    cpu_backend().silu_mul(gate, up, out, n);
  }

  void attention(const float* q, const float* k, const float* v, float* out, int64_t T, int64_t S, int64_t Hq,
                 int64_t Hkv, int64_t D, int64_t q_offset, float scale) override {
    if (T == 0) return;
    DeviceBuffer<float> dq(size_t(T * Hq * D)), dk(size_t(S * Hkv * D)), dv(size_t(S * Hkv * D)),
        dout(size_t(T * Hq * D));
    upload(dq.get(), q, dq.bytes());
    upload(dk.get(), k, dk.bytes());
    upload(dv.get(), v, dv.bytes());
    cuda::attention(dq.get(), dk.get(), dv.get(), dout.get(), T, S, Hq, Hkv, D, q_offset, scale, stream());
    download(out, dout.get(), dout.bytes());
  }

  void gram(const float* X, int64_t rows, int64_t n, float* C) override {
    if (rows == 0) {
      std::fill(C, C + n * n, 0.0f);
      return;
    }
    DeviceBuffer<float> dX(size_t(rows * n)), dC(size_t(n * n));
    upload(dX.get(), X, dX.bytes());
    gemm_dev(true, false, n, n, rows, 1.0f, dX.get(), dX.get(), 0.0f, dC.get());  // Xᵀ X
    download(C, dC.get(), dC.bytes());
  }

  bool cholesky(float* A, int64_t n) override { return cholesky_dev(A, n); }
  bool cholesky(double* A, int64_t n) override { return cholesky_dev(A, n); }

  bool spd_inverse(double* A, int64_t n) override {
    DeviceBuffer<double> d(size_t(n * n));
    DeviceBuffer<int> info(1);
    upload(d.get(), A, d.bytes());
    if (potrf(CUBLAS_FILL_MODE_LOWER, d.get(), n, info) != 0) return false;
    if (potri(CUBLAS_FILL_MODE_LOWER, d.get(), n, info) != 0) return false;
    download(A, d.get(), d.bytes());
    // column-major lower = row-major upper holds A⁻¹: mirror it down.
    for (int64_t i = 1; i < n; ++i)
      for (int64_t j = 0; j < i; ++j) A[i * n + j] = A[j * n + i];
    return true;
  }

  // A⁻¹ = UᵀU: L = chol(A), A⁻¹ = potri(L), L2 = chol(A⁻¹) (all column-major LOWER); L2
  // read back row-major is L2ᵀ = U (upper), with A⁻¹ = L2 L2ᵀ = UᵀU.
  bool inverse_cholesky_upper(double* A, int64_t n) override {
    DeviceBuffer<double> d(size_t(n * n));
    DeviceBuffer<int> info(1);
    upload(d.get(), A, d.bytes());
    if (potrf(CUBLAS_FILL_MODE_LOWER, d.get(), n, info) != 0) return false;
    if (potri(CUBLAS_FILL_MODE_LOWER, d.get(), n, info) != 0) return false;
    if (potrf(CUBLAS_FILL_MODE_LOWER, d.get(), n, info) != 0) return false;
    download(A, d.get(), d.bytes());
    for (int64_t i = 1; i < n; ++i) std::fill(A + i * n, A + i * n + i, 0.0);  // zero row-major lower
    return true;
  }

  void eigh(double* A, int64_t n, double* w) override { cpu_backend().eigh(A, n, w); }
  void svd(const double* A, int64_t m, int64_t n, double* U, double* S, double* Vt) override {
    cpu_backend().svd(A, m, n, U, S, Vt);
  }
};

}  // namespace

void gemm_f32(bool tA, bool tB, int64_t M, int64_t N, int64_t K, float alpha, const float* A, const float* B,
              float beta, float* C) {
  gemm_dev(tA, tB, M, N, K, alpha, A, B, beta, C);
}

const float* cached_weight_f32(const Tensor& W) {
  std::lock_guard<std::mutex> lk(g_cache_mu);
  return weight_cache().get(W);
}

Backend& backend() {
  if (!available()) throw DeviceError("--device cuda: " + unavailable_reason());
  static CudaBackend b;
  return b;
}

}  // namespace lowbit::cuda

// ---- device-held Hessian (cuda_api.h) ----------------------------------------------------
#include "backend/cuda/runner_kernels.h"

namespace lowbit::cuda {

void hadamard_rows_host(float* x, int64_t rows, int64_t n, int64_t P, int64_t K, const float* M) {
  if (rows <= 0) return;
  DeviceBuffer<float> d(size_t(rows * n)), tmp(K > 1 ? size_t(rows * n) : 0), dM(size_t(K * K));
  upload(d.get(), x, d.bytes());
  if (K > 1) upload(dM.get(), M, dM.bytes());
  hadamard_rows(d.get(), rows, n, P, K, K > 1 ? dM.get() : nullptr, tmp.get(), stream());
  download(x, d.get(), d.bytes());
}

void act_quant_host(float* x, int64_t rows, int64_t cols, int bits, int64_t groupsize, bool asym, float clip) {
  if (rows <= 0) return;
  DeviceBuffer<float> d(size_t(rows * cols));
  upload(d.get(), x, d.bytes());
  act_quant(d.get(), rows, cols, bits, groupsize, asym, clip, stream());
  download(x, d.get(), d.bytes());
}

struct DeviceHessian {
  int64_t n = 0;
  DeviceBuffer<double> H;  // [n, n]
  DeviceBuffer<float> X, G;
};

std::shared_ptr<DeviceHessian> make_device_hessian(int64_t n) {
  auto h = std::make_shared<DeviceHessian>();
  h->n = n;
  h->H = DeviceBuffer<double>(size_t(n * n));
  LOWBIT_CUDA_CHECK(cudaMemsetAsync(h->H.get(), 0, h->H.bytes(), stream()));
  h->G = DeviceBuffer<float>(size_t(n * n));
  return h;
}

// The same arithmetic as HessianAccumulator::add on the host: G = XᵀX of the batch in f32,
// H ← a·H + b·G in f64.
void device_hessian_add(DeviceHessian& h, const float* X, int64_t rows, double a, double b) {
  if (rows == 0) return;
  const int64_t n = h.n;
  h.X.ensure(size_t(rows * n));
  upload(h.X.get(), X, size_t(rows * n) * 4);
  gemm_dev(true, false, n, n, rows, 1.0f, h.X.get(), h.X.get(), 0.0f, h.G.get());
  axpby_f64_f32(h.H.get(), h.G.get(), n * n, a, b, stream());
}

void device_hessian_add_device(DeviceHessian& h, const float* dX, int64_t rows, double a, double b) {
  if (rows == 0) return;
  gemm_dev(true, false, h.n, h.n, rows, 1.0f, dX, dX, 0.0f, h.G.get());
  axpby_f64_f32(h.H.get(), h.G.get(), h.n * h.n, a, b, stream());
}

void device_hessian_download(const DeviceHessian& h, double* H) { download(H, h.H.get(), h.H.bytes()); }

}  // namespace lowbit::cuda
