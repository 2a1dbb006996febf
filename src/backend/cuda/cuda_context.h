// The process's CUDA context: one device, one stream, cuBLAS / cuSOLVER handles, and a
// caching allocator (device memory is taken from cudaMalloc once and reused: no
// cudaMalloc/cudaFree per op, which would synchronize the device every time).
#pragma once
#include <cstddef>
#include <cstdint>
#include <utility>

#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <cusolverDn.h>

#include "backend/cuda/cuda_check.h"

namespace lowbit {
class Tensor;
}

namespace lowbit::cuda {

// Opens device 0 on first use (DeviceError when there is none).
cudaStream_t stream();
cublasHandle_t cublas();
cusolverDnHandle_t cusolver();
void sync();  // cudaStreamSynchronize(stream()), checked

// Caching allocator: blocks are rounded up (512 B below 1 MiB, 2 MiB above) and kept
// in per-size free lists after device_free; an allocation that cudaMalloc refuses first
// returns the cached blocks to the driver and retries, then throws DeviceError naming
// the size and the memory in use. Frees are stream-ordered on stream() (the only stream).
void* device_alloc(size_t nbytes);
void device_free(void* p);

// An owning device buffer of T (RAII over device_alloc).
template <class T>
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t n) : n_(n), p_(n ? static_cast<T*>(device_alloc(n * sizeof(T))) : nullptr) {}
  ~DeviceBuffer() { reset(); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& o) noexcept : n_(std::exchange(o.n_, 0)), p_(std::exchange(o.p_, nullptr)) {}
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    if (this != &o) {
      reset();
      n_ = std::exchange(o.n_, 0);
      p_ = std::exchange(o.p_, nullptr);
    }
    return *this;
  }
  void reset() {
    if (p_) device_free(p_);
    p_ = nullptr;
    n_ = 0;
  }
  // Grows (never shrinks) to hold at least n elements; contents are not kept.
  void ensure(size_t n) {
    if (n > n_) *this = DeviceBuffer(n);
  }
  T* get() const { return p_; }
  size_t size() const { return n_; }
  size_t bytes() const { return n_ * sizeof(T); }

 private:
  size_t n_ = 0;
  T* p_ = nullptr;
};

// The device copy (f32) of a weight from the CUDA backend's weight cache (uploaded on a
// miss). Use it in work enqueued right away: a later call may evict it (stream-ordered,
// so work already enqueued still reads the right data).
const float* cached_weight_f32(const Tensor& W);
// Row-major C[M,N] = alpha op(A) op(B) + beta C on dense device f32 operands (cuBLAS, no TF32).
void gemm_f32(bool tA, bool tB, int64_t M, int64_t N, int64_t K, float alpha, const float* A, const float* B,
              float beta, float* C);

// H ← a·H + b·XᵀX for X [rows, n] already on the device (DeviceHessian of cuda_api.h).
struct DeviceHessian;
void device_hessian_add_device(DeviceHessian& h, const float* dX, int64_t rows, double a, double b);

// Host → device / device → host on stream(); both synchronous with respect to the host
// (the host buffer may be reused right after the call returns).
void upload(void* dst, const void* src, size_t nbytes);
void download(void* dst, const void* src, size_t nbytes);

}  // namespace lowbit::cuda
