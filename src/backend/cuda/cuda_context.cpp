// CUDA context, checked-call failure path and the caching allocator (see cuda_context.h).
#include "backend/cuda/cuda_context.h"

#include <map>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "backend/cuda_api.h"
#include "core/error.h"

namespace lowbit::cuda {

void fail(const char* lib, int code, const char* errname, const char* call, const char* file, int line) {
  throw DeviceError(fmt::format("{} error {} ({}) in {} ({}:{})", lib, code, errname ? errname : "?", call, file, line));
}

namespace {

struct Context {
  int device = 0;
  cudaDeviceProp prop{};
  cudaStream_t stream = nullptr;
  cublasHandle_t cublas = nullptr;
  cusolverDnHandle_t cusolver = nullptr;
};

std::string g_open_error;

Context* open_context() {
  int n = 0;
  cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess || n == 0) {
    g_open_error = e != cudaSuccess ? fmt::format("no usable CUDA device ({})", cudaGetErrorString(e))
                                    : std::string("no CUDA device found");
    cudaGetLastError();  // clear the sticky-free error so later queries are clean
    return nullptr;
  }
  auto* c = new Context;  // lives for the process (handles are torn down by the driver at exit)
  LOWBIT_CUDA_CHECK(cudaSetDevice(c->device));
  LOWBIT_CUDA_CHECK(cudaGetDeviceProperties(&c->prop, c->device));
  LOWBIT_CUDA_CHECK(cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking));
  LOWBIT_CUBLAS_CHECK(cublasCreate(&c->cublas));
  LOWBIT_CUBLAS_CHECK(cublasSetStream(c->cublas, c->stream));
  // Plain f32 GEMMs stay IEEE f32 (no TF32): the CUDA backend must agree with the CPU one.
  LOWBIT_CUBLAS_CHECK(cublasSetMathMode(c->cublas, CUBLAS_DEFAULT_MATH));
  LOWBIT_CUSOLVER_CHECK(cusolverDnCreate(&c->cusolver));
  LOWBIT_CUSOLVER_CHECK(cusolverDnSetStream(c->cusolver, c->stream));
  return c;
}

Context& ctx() {
  static Context* c = open_context();
  if (!c) throw DeviceError("--device cuda: " + g_open_error);
  return *c;
}

// ---- caching allocator ----------------------------------------------------------------
struct Allocator {
  std::mutex mu;
  std::multimap<size_t, void*> free_blocks;     // size → block
  std::unordered_map<void*, size_t> live;        // block → size
  int64_t in_use = 0, peak = 0, reserved = 0;

  static size_t round(size_t n) {
    if (n < (size_t(1) << 20)) return (n + 511) & ~size_t(511);
    return (n + (size_t(2) << 20) - 1) & ~((size_t(2) << 20) - 1);
  }

  void release_locked() {
    if (free_blocks.empty()) return;
    LOWBIT_CUDA_CHECK(cudaStreamSynchronize(ctx().stream));
    for (auto& [sz, p] : free_blocks) {
      LOWBIT_CUDA_CHECK(cudaFree(p));
      reserved -= int64_t(sz);
    }
    free_blocks.clear();
  }

  void* alloc(size_t nbytes) {
    if (nbytes == 0) nbytes = 1;
    const size_t sz = round(nbytes);
    std::lock_guard<std::mutex> lk(mu);
    ctx();
    // Best fit among cached blocks no more than 2x the request (larger ones would waste memory).
    auto it = free_blocks.lower_bound(sz);
    void* p = nullptr;
    size_t got = 0;
    if (it != free_blocks.end() && it->first <= 2 * sz) {
      p = it->second;
      got = it->first;
      free_blocks.erase(it);
    } else {
      cudaError_t e = cudaMalloc(&p, sz);
      if (e == cudaErrorMemoryAllocation) {
        cudaGetLastError();
        release_locked();
        e = cudaMalloc(&p, sz);
      }
      if (e != cudaSuccess) {
        cudaGetLastError();
        size_t fr = 0, tot = 0;
        cudaMemGetInfo(&fr, &tot);
        throw DeviceError(fmt::format("out of device memory: asked for {:.1f} MiB with {:.1f} MiB in use by lowbit, "
                                      "{:.1f} MiB free of {:.1f} MiB",
                                      double(sz) / 1048576.0, double(in_use) / 1048576.0, double(fr) / 1048576.0,
                                      double(tot) / 1048576.0));
      }
      got = sz;
      reserved += int64_t(sz);
    }
    live[p] = got;
    in_use += int64_t(got);
    peak = std::max(peak, in_use);
    return p;
  }

  void free(void* p) {
    if (!p) return;
    std::lock_guard<std::mutex> lk(mu);
    auto it = live.find(p);
    LOWBIT_ASSERT(it != live.end());
    in_use -= int64_t(it->second);
    // Work queued on the one stream that still reads p runs before any later work that
    // reuses it (same stream), so the block can go back to the cache right away.
    free_blocks.emplace(it->second, p);
    live.erase(it);
  }
};

Allocator& allocator() {
  static Allocator* a = new Allocator;  // never destroyed: frees may come from static destructors
  return *a;
}

}  // namespace

cudaStream_t stream() { return ctx().stream; }
cublasHandle_t cublas() { return ctx().cublas; }
cusolverDnHandle_t cusolver() { return ctx().cusolver; }
void sync() { LOWBIT_CUDA_CHECK(cudaStreamSynchronize(ctx().stream)); }

void* device_alloc(size_t nbytes) { return allocator().alloc(nbytes); }
void device_free(void* p) { allocator().free(p); }
void release_cached() {
  Allocator& a = allocator();
  std::lock_guard<std::mutex> lk(a.mu);
  a.release_locked();
}

void upload(void* dst, const void* src, size_t nbytes) {
  if (nbytes == 0) return;
  LOWBIT_CUDA_CHECK(cudaMemcpyAsync(dst, src, nbytes, cudaMemcpyHostToDevice, stream()));
  sync();
}
void download(void* dst, const void* src, size_t nbytes) {
  if (nbytes == 0) return;
  LOWBIT_CUDA_CHECK(cudaMemcpyAsync(dst, src, nbytes, cudaMemcpyDeviceToHost, stream()));
  sync();
}

// ---- cuda_api.h -----------------------------------------------------------------------------
bool compiled() { return true; }
bool available() {
  try {
    ctx();
    return true;
  } catch (const DeviceError&) {
    return false;
  }
}
std::string unavailable_reason() {
  if (available()) return "";
  return g_open_error;
}
std::string describe() {
  const Context& c = ctx();
  return fmt::format("{} (sm_{}{}, {} SMs, {:.1f} GiB)", c.prop.name, c.prop.major, c.prop.minor,
                     c.prop.multiProcessorCount, double(c.prop.totalGlobalMem) / 1073741824.0);
}
MemStats mem_stats() {
  Allocator& a = allocator();
  std::lock_guard<std::mutex> lk(a.mu);
  return {a.in_use, a.peak, a.reserved};
}
void reset_peak() {
  Allocator& a = allocator();
  std::lock_guard<std::mutex> lk(a.mu);
  a.peak = a.in_use;
}

}  // namespace lowbit::cuda
