// CUDA context, checked-call failure path and the caching allocator (see cuda_context.h).
#include "backend/cuda/cuda_context.h"

#include <algorithm>
#include <cstring>
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

// Host <-> device copies. Pageable memory crosses the bus at a fraction of its speed (the
// driver stages it itself, one thread), which made these copies the quantization driver's
// bottleneck. Large copies go through two page-locked staging buffers instead: the host
// side is a parallel memcpy into one while the DMA of the other runs.
namespace {

constexpr size_t kStageBytes = size_t(32) << 20;  // per buffer
constexpr size_t kDirectBelow = size_t(1) << 20;   // small copies: plain cudaMemcpyAsync

struct Staging {
  std::mutex mu;
  void* buf[2] = {nullptr, nullptr};
  cudaEvent_t done[2] = {nullptr, nullptr};
  bool ready = false;
  void init() {
    if (ready) return;
    for (int i = 0; i < 2; ++i) {
      LOWBIT_CUDA_CHECK(cudaHostAlloc(&buf[i], kStageBytes, cudaHostAllocDefault));
      LOWBIT_CUDA_CHECK(cudaEventCreateWithFlags(&done[i], cudaEventDisableTiming));
    }
    ready = true;
  }
};

Staging& staging() {
  static Staging* s = new Staging;  // never destroyed (pinned memory is released at exit)
  return *s;
}

void parallel_memcpy(void* dst, const void* src, size_t n) {
  const int64_t pieces = int64_t((n + (size_t(1) << 20) - 1) >> 20);
#pragma omp parallel for schedule(static) if (pieces > 1)
  for (int64_t p = 0; p < pieces; ++p) {
    const size_t b = size_t(p) << 20, e = std::min(n, b + (size_t(1) << 20));
    std::memcpy(static_cast<char*>(dst) + b, static_cast<const char*>(src) + b, e - b);
  }
}

}  // namespace

void upload(void* dst, const void* src, size_t nbytes) {
  if (nbytes == 0) return;
  if (nbytes < kDirectBelow) {
    LOWBIT_CUDA_CHECK(cudaMemcpyAsync(dst, src, nbytes, cudaMemcpyHostToDevice, stream()));
    sync();
    return;
  }
  Staging& st = staging();
  std::lock_guard<std::mutex> lk(st.mu);
  st.init();
  size_t i = 0;
  for (size_t off = 0; off < nbytes; off += kStageBytes, ++i) {
    const size_t len = std::min(kStageBytes, nbytes - off);
    const int b = int(i & 1);
    LOWBIT_CUDA_CHECK(cudaEventSynchronize(st.done[b]));  // its previous DMA has finished
    parallel_memcpy(st.buf[b], static_cast<const char*>(src) + off, len);
    LOWBIT_CUDA_CHECK(cudaMemcpyAsync(static_cast<char*>(dst) + off, st.buf[b], len, cudaMemcpyHostToDevice, stream()));
    LOWBIT_CUDA_CHECK(cudaEventRecord(st.done[b], stream()));
  }
  sync();
}

void download(void* dst, const void* src, size_t nbytes) {
  if (nbytes == 0) return;
  if (nbytes < kDirectBelow) {
    LOWBIT_CUDA_CHECK(cudaMemcpyAsync(dst, src, nbytes, cudaMemcpyDeviceToHost, stream()));
    sync();
    return;
  }
  Staging& st = staging();
  std::lock_guard<std::mutex> lk(st.mu);
  st.init();
  const size_t chunks = (nbytes + kStageBytes - 1) / kStageBytes;
  auto issue = [&](size_t i) {
    const size_t off = i * kStageBytes, len = std::min(kStageBytes, nbytes - off);
    LOWBIT_CUDA_CHECK(cudaMemcpyAsync(st.buf[i & 1], static_cast<const char*>(src) + off, len,
                                      cudaMemcpyDeviceToHost, stream()));
    LOWBIT_CUDA_CHECK(cudaEventRecord(st.done[i & 1], stream()));
  };
  issue(0);
  for (size_t i = 0; i < chunks; ++i) {
    if (i + 1 < chunks) issue(i + 1);  // the next chunk lands in the other buffer meanwhile
    LOWBIT_CUDA_CHECK(cudaEventSynchronize(st.done[i & 1]));
    const size_t off = i * kStageBytes, len = std::min(kStageBytes, nbytes - off);
    parallel_memcpy(static_cast<char*>(dst) + off, st.buf[i & 1], len);
  }
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
