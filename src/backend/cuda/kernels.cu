// lowbit's own CUDA kernels (all launchers of kernels.h except attention, which is in
// attention.cu). Each kernel reproduces its CPU reference's formulas in the same order
// where rounding could tell them apart; the references are named in kernels.h and the
// cross-backend checks are in tests/test_cuda_ops.cpp.
//
// Conventions: every size and offset is int64_t; every launcher returns early on an empty
// problem (a grid of 0 blocks is a launch error); every launch is followed by
// LOWBIT_CUDA_LAUNCHED(). Block sizes are multiples of 32 (block_reduce needs full warps).
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/kernels.h"

namespace lowbit::cuda {
namespace {

// An argument the launcher cannot work with (a bug in the caller): DeviceError via fail().
#define LOWBIT_KERNEL_REQUIRE(cond, what)                                                    \
  do {                                                                                      \
    if (!(cond)) ::lowbit::cuda::fail("lowbit kernel", 0, "invalid argument", what, __FILE__, __LINE__); \
  } while (0)

constexpr int kThreads = 256;
constexpr int64_t kMaxGrid = int64_t(1) << 20;  // grid-stride loops cover the rest
constexpr int64_t kMaxBlocks1D = 2147483647;    // gridDim.x limit

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
int grid_for(int64_t work, int threads) {
  int64_t b = ceil_div(work, threads);
  if (b < 1) b = 1;
  if (b > kMaxGrid) b = kMaxGrid;
  return int(b);
}
bool aligned(const void* p, uintptr_t a) { return (reinterpret_cast<uintptr_t>(p) % a) == 0; }
// Threads per block for a row of `len` elements handled `vpt` per thread: a multiple of 32 in [32, 1024].
int row_threads(int64_t len, int vpt) {
  int64_t t = ceil_div(len, vpt);
  t = ceil_div(t, 32) * 32;
  if (t < 32) t = 32;
  if (t > 1024) t = 1024;
  return int(t);
}

// ---- scalar conversions (bit-exact ports of core/dtype) ---------------------------------

__device__ __forceinline__ uint16_t bf16_bits(float f) {  // f32_to_bf16: RNE, NaN kept quiet
  uint32_t u = __float_as_uint(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40);
  u += 0x7fffu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}
__device__ __forceinline__ float bf16_value(uint16_t h) { return __uint_as_float(uint32_t(h) << 16); }

__device__ __forceinline__ float f16_value(uint16_t h) {  // f16_to_f32, exact
  const uint32_t sign = uint32_t(h & 0x8000) << 16;
  const uint32_t exp = (h >> 10) & 0x1f;
  uint32_t man = h & 0x3ff;
  uint32_t u;
  if (exp == 0) {
    if (man == 0) {
      u = sign;
    } else {
      int e = -1;
      do {
        man <<= 1;
        ++e;
      } while (!(man & 0x400));
      u = sign | uint32_t(127 - 15 - e) << 23 | (man & 0x3ff) << 13;
    }
  } else if (exp == 31) {
    u = sign | 0x7f800000u | man << 13;
  } else {
    u = sign | (exp + 127 - 15) << 23 | man << 13;
  }
  return __uint_as_float(u);
}

__device__ __forceinline__ uint16_t f16_bits(float f) {  // f32_to_f16: RNE, overflow to inf
  const uint32_t u = __float_as_uint(f);
  const uint32_t sign = (u >> 16) & 0x8000;
  const uint32_t absu = u & 0x7fffffff;
  if (absu > 0x7f800000u) return uint16_t(sign | 0x7e00);
  if (absu >= 0x477ff000u) return uint16_t(sign | 0x7c00);
  if (absu < 0x38800000u) {
    const float a = __uint_as_float(absu);
    const float scaled = a * 16777216.0f;  // exact (power of two)
    const uint32_t m = uint32_t(rintf(scaled));  // RNE, like nearbyint in the default mode
    return uint16_t(sign | m);
  }
  const uint32_t exp = ((absu >> 23) - 127 + 15);
  const uint32_t man = absu & 0x7fffff;
  uint32_t h = exp << 10 | man >> 13;
  const uint32_t rest = man & 0x1fff;
  if (rest > 0x1000 || (rest == 0x1000 && (h & 1))) ++h;
  return uint16_t(sign | h);
}

__device__ __forceinline__ float load_as_f32(const void* p, WType t, int64_t i) {
  switch (t) {
    case WType::F32: return static_cast<const float*>(p)[i];
    case WType::F16: return f16_value(static_cast<const uint16_t*>(p)[i]);
    case WType::BF16: return bf16_value(static_cast<const uint16_t*>(p)[i]);
  }
  return 0.0f;
}

// ---- block reductions -------------------------------------------------------------------

struct SumOp {
  template <class T>
  __device__ T operator()(T a, T b) const { return a + b; }
};
struct MaxOp {
  __device__ float operator()(float a, float b) const { return fmaxf(a, b); }
};
// std::min / std::max semantics ((b < a) ? b : a), as find_params uses them.
struct StdMinOp {
  __device__ float operator()(float a, float b) const { return (b < a) ? b : a; }
};
struct StdMaxOp {
  __device__ float operator()(float a, float b) const { return (a < b) ? b : a; }
};

// Every thread of the block must call this (blockDim.x a multiple of 32); every thread gets
// the result. `red` is __shared__ scratch of >= 32 elements; the leading barrier makes it
// safe to reuse the same scratch for consecutive reductions.
template <class T, class Op>
__device__ T block_reduce(T v, Op op, T* red) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = int(blockDim.x >> 5);
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = op(v, __shfl_xor_sync(0xffffffffu, v, o));
  __syncthreads();
  if (lane == 0) red[warp] = v;
  __syncthreads();
  T r = red[0];
  for (int w = 1; w < nw; ++w) r = op(r, red[w]);
  return r;
}

// ---- elementwise maps -------------------------------------------------------------------
// Op::scalar(i) handles element i; Op::vec4(i) handles elements 4i..4i+3 with vector loads
// (only called when the launcher found every pointer aligned: n4 > 0).

template <class Op>
__global__ void map_kernel(Op op, int64_t n, int64_t n4) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  const int64_t tid = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  for (int64_t i = tid; i < n4; i += stride) op.vec4(i);
  for (int64_t i = n4 * 4 + tid; i < n; i += stride) op.scalar(i);
}

template <class Op>
void launch_map(const Op& op, int64_t n, bool vec_ok, cudaStream_t s) {
  if (n <= 0) return;
  const int64_t n4 = vec_ok ? n / 4 : 0;
  const int64_t work = n4 > 0 ? n4 : n;
  map_kernel<Op><<<grid_for(work, kThreads), kThreads, 0, s>>>(op, n, n4);
  LOWBIT_CUDA_LAUNCHED();
}

__device__ __forceinline__ float silu_mul1(float g, float u) { return g / (1.0f + expf(-g)) * u; }

struct SiluMulOp {  // out may alias gate: each element is read before it is written, by one thread
  const float* gate;
  const float* up;
  float* out;
  __device__ void scalar(int64_t i) const { out[i] = silu_mul1(gate[i], up[i]); }
  __device__ void vec4(int64_t i) const {
    const float4 g = reinterpret_cast<const float4*>(gate)[i];
    const float4 u = reinterpret_cast<const float4*>(up)[i];
    reinterpret_cast<float4*>(out)[i] =
        make_float4(silu_mul1(g.x, u.x), silu_mul1(g.y, u.y), silu_mul1(g.z, u.z), silu_mul1(g.w, u.w));
  }
};
struct SiluMulBf16Op {
  const float* gate;
  const float* up;
  uint16_t* out;
  __device__ void scalar(int64_t i) const { out[i] = bf16_bits(silu_mul1(gate[i], up[i])); }
  __device__ void vec4(int64_t i) const {
    const float4 g = reinterpret_cast<const float4*>(gate)[i];
    const float4 u = reinterpret_cast<const float4*>(up)[i];
    ushort4 o;
    o.x = bf16_bits(silu_mul1(g.x, u.x));
    o.y = bf16_bits(silu_mul1(g.y, u.y));
    o.z = bf16_bits(silu_mul1(g.z, u.z));
    o.w = bf16_bits(silu_mul1(g.w, u.w));
    reinterpret_cast<ushort4*>(out)[i] = o;
  }
};
struct AddOp {
  float* x;
  const float* y;
  __device__ void scalar(int64_t i) const { x[i] = x[i] + y[i]; }
  __device__ void vec4(int64_t i) const {
    float4 a = reinterpret_cast<const float4*>(x)[i];
    const float4 b = reinterpret_cast<const float4*>(y)[i];
    a.x = a.x + b.x;
    a.y = a.y + b.y;
    a.z = a.z + b.z;
    a.w = a.w + b.w;
    reinterpret_cast<float4*>(x)[i] = a;
  }
};
struct ToBf16Op {
  const float* x;
  uint16_t* y;
  __device__ void scalar(int64_t i) const { y[i] = bf16_bits(x[i]); }
  __device__ void vec4(int64_t i) const {
    const float4 a = reinterpret_cast<const float4*>(x)[i];
    ushort4 o;
    o.x = bf16_bits(a.x);
    o.y = bf16_bits(a.y);
    o.z = bf16_bits(a.z);
    o.w = bf16_bits(a.w);
    reinterpret_cast<ushort4*>(y)[i] = o;
  }
};
struct ToF16Op {
  const float* x;
  uint16_t* y;
  __device__ void scalar(int64_t i) const { y[i] = f16_bits(x[i]); }
  __device__ void vec4(int64_t) const {}  // never used (launched scalar-only)
};
struct ToF32Op {
  const void* x;
  WType t;
  float* y;
  __device__ void scalar(int64_t i) const { y[i] = load_as_f32(x, t, i); }
  __device__ void vec4(int64_t) const {}
};
struct RoundF16Op {
  float* x;
  __device__ void scalar(int64_t i) const { x[i] = f16_value(f16_bits(x[i])); }
  __device__ void vec4(int64_t) const {}
};
struct ScaleOp {
  float* x;
  float s;
  __device__ void scalar(int64_t i) const { x[i] = x[i] * s; }
  __device__ void vec4(int64_t) const {}
};

// ---- RMSNorm ----------------------------------------------------------------------------
// One block per row. The row is read once into registers (kNormVpt values per thread; a
// row longer than 1024·kNormVpt re-reads the remainder), the sum of squares is accumulated
// in double like the CPU, then inv = 1 / sqrt(float(ss / dim) + eps) and y = w · (x · inv).

constexpr int kNormVpt = 16;

template <bool kBf16>
__global__ void rmsnorm_kernel(const float* x, const float* w, void* y, int64_t dim, float eps) {
  __shared__ double red[32];
  const int64_t r = blockIdx.x;
  const float* xr = x + r * dim;
  const int64_t bd = blockDim.x, tid = threadIdx.x;
  float v[kNormVpt];
  double ss = 0.0;
#pragma unroll
  for (int k = 0; k < kNormVpt; ++k) {
    const int64_t i = tid + k * bd;
    v[k] = i < dim ? xr[i] : 0.0f;
    ss += double(v[k]) * double(v[k]);
  }
  for (int64_t i = tid + kNormVpt * bd; i < dim; i += bd) {
    const double a = xr[i];
    ss += a * a;
  }
  ss = block_reduce(ss, SumOp{}, red);
  const float inv = 1.0f / sqrtf(float(ss / double(dim)) + eps);
  auto store = [&](int64_t i, float a) {
    const float o = w ? w[i] * (a * inv) : a * inv;
    if constexpr (kBf16)
      static_cast<uint16_t*>(y)[r * dim + i] = bf16_bits(o);
    else
      static_cast<float*>(y)[r * dim + i] = o;
  };
#pragma unroll
  for (int k = 0; k < kNormVpt; ++k) {
    const int64_t i = tid + k * bd;
    if (i < dim) store(i, v[k]);
  }
  for (int64_t i = tid + kNormVpt * bd; i < dim; i += bd) store(i, xr[i]);
}

template <bool kBf16>
void launch_rmsnorm(const float* x, const float* w, void* y, int64_t rows, int64_t dim, float eps, cudaStream_t s) {
  LOWBIT_KERNEL_REQUIRE(rows >= 0 && dim >= 0 && rows <= kMaxBlocks1D, "rmsnorm: bad shape");
  if (rows == 0 || dim == 0) return;
  rmsnorm_kernel<kBf16><<<unsigned(rows), row_threads(dim, kNormVpt), 0, s>>>(x, w, y, dim, eps);
  LOWBIT_CUDA_LAUNCHED();
}

// ---- RoPE -------------------------------------------------------------------------------
// One thread per (t, j < D/2) and chunk of kRopeHeads heads (grid y): cos/sin computed in
// double from the f32 angle, like the CPU, then the chunk's pairs are loaded together and
// rotated. Consecutive threads touch consecutive j. Every (t, h, j) pair has one owner.

constexpr int kRopeHeads = 8;

__global__ void rope_kernel(float* x, int64_t T, int64_t H, int64_t D, const int32_t* __restrict__ pos,
                            const float* __restrict__ inv_freq) {
  const int64_t half = D / 2, total = T * half;
  const int64_t h0 = int64_t(blockIdx.y) * kRopeHeads;
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += stride) {
    const int64_t t = i / half, j = i - t * half;
    const float ang = float(pos[t]) * inv_freq[j];
    double sd, cd;
    sincos(double(ang), &sd, &cd);
    const float c = float(cd), sn = float(sd);
    float a[kRopeHeads], b[kRopeHeads];
#pragma unroll
    for (int u = 0; u < kRopeHeads; ++u) {
      a[u] = b[u] = 0.0f;
      if (h0 + u < H) {
        const float* v = x + (t * H + h0 + u) * D;
        a[u] = v[j];
        b[u] = v[j + half];
      }
    }
#pragma unroll
    for (int u = 0; u < kRopeHeads; ++u) {
      if (h0 + u < H) {
        float* v = x + (t * H + h0 + u) * D;
        v[j] = a[u] * c - b[u] * sn;
        v[j + half] = b[u] * c + a[u] * sn;
      }
    }
  }
}

// ---- embedding gather -------------------------------------------------------------------

__global__ void embed_kernel(const void* table, WType t, const int32_t* __restrict__ ids, int64_t d,
                             float* __restrict__ x) {
  const int64_t tok = blockIdx.x;
  const int64_t row = ids[tok];
  for (int64_t i = threadIdx.x; i < d; i += blockDim.x) x[tok * d + i] = load_as_f32(table, t, row * d + i);
}

// ---- causal softmax → bf16 --------------------------------------------------------------
// One block per (batch, row). The visible columns c < n = min(cols, row_offset + r + 1) are
// read once into registers (kSmVpt per thread; longer rows re-read the remainder), scaled,
// max-subtracted and exponentiated in f32, normalized by the f32 block sum, rounded to bf16.
// Columns n..ld-1 are written as 0; masked scores are never read.

constexpr int kSmVpt = 8;

__global__ void causal_softmax_kernel(const float* __restrict__ scores, uint16_t* __restrict__ P, int64_t rows,
                                      int64_t cols, int64_t ld, int64_t row_offset, float scale) {
  __shared__ float red[32];
  const int64_t br = blockIdx.x;
  const int64_t r = br % rows;
  const float* srow = scores + br * ld;
  uint16_t* prow = P + br * ld;
  const int64_t vis = row_offset + r + 1;
  const int64_t n = cols < vis ? cols : vis;
  const int64_t bd = blockDim.x, tid = threadIdx.x;
  float z[kSmVpt];
  float m = -INFINITY;
#pragma unroll
  for (int k = 0; k < kSmVpt; ++k) {
    const int64_t c = tid + k * bd;
    z[k] = c < n ? scale * srow[c] : -INFINITY;
    m = fmaxf(m, z[k]);
  }
  for (int64_t c = tid + kSmVpt * bd; c < n; c += bd) m = fmaxf(m, scale * srow[c]);
  m = block_reduce(m, MaxOp{}, red);
  float sum = 0.0f;
#pragma unroll
  for (int k = 0; k < kSmVpt; ++k) {
    const int64_t c = tid + k * bd;
    z[k] = c < n ? expf(z[k] - m) : 0.0f;
    sum += z[k];
  }
  for (int64_t c = tid + kSmVpt * bd; c < n; c += bd) sum += expf(scale * srow[c] - m);
  sum = block_reduce(sum, SumOp{}, red);
  const float inv = 1.0f / sum;  // sum >= 1 whenever n >= 1 (the max term is exp(0))
#pragma unroll
  for (int k = 0; k < kSmVpt; ++k) {
    const int64_t c = tid + k * bd;
    if (c < ld) prow[c] = c < n ? bf16_bits(z[k] * inv) : uint16_t(0);
  }
  for (int64_t c = tid + kSmVpt * bd; c < ld; c += bd)
    prow[c] = c < n ? bf16_bits(expf(scale * srow[c] - m) * inv) : uint16_t(0);
}

// ---- per-row NLL ------------------------------------------------------------------------
// One block per row: f32 max, then Σ exp(x - max) with f32 exponentials summed in double
// (the CPU's sum_nll), nll = log(sum) + max - x[target].

constexpr int kNllThreads = 512;

__global__ void nll_kernel(const float* __restrict__ logits, const int32_t* __restrict__ target, int64_t V,
                           double* __restrict__ nll) {
  __shared__ float redf[32];
  __shared__ double redd[32];
  const int64_t t = blockIdx.x;
  const float* row = logits + t * V;
  float mx = -INFINITY;
  for (int64_t i = threadIdx.x; i < V; i += blockDim.x) mx = fmaxf(mx, row[i]);
  mx = block_reduce(mx, MaxOp{}, redf);
  double s = 0.0;
  for (int64_t i = threadIdx.x; i < V; i += blockDim.x) s += double(expf(row[i] - mx));
  s = block_reduce(s, SumOp{}, redd);
  if (threadIdx.x == 0) nll[t] = log(s) + double(mx) - double(row[target[t]]);
}

// ---- activation fake quantization -------------------------------------------------------
// One block per (row, group): find_params (min/max starting at 0, std::min/max semantics,
// clip, sym/asym) then v = scale · (clamp(rint(v / scale) + zero) - zero), the same IEEE
// operations in the same order as qgrid.cpp (no contraction is possible in them), so the
// result is bit-identical to fake_quant_act.

__global__ void act_quant_kernel(float* x, int64_t cols, int64_t g, int64_t ngroups, int qmin, int qmax, bool asym,
                                 float clip) {
  __shared__ float red[32];
  const int64_t b = blockIdx.x;
  const int64_t r = b / ngroups, gi = b - r * ngroups;
  float* v = x + r * cols + gi * g;
  float mn = 0.0f, mx = 0.0f;
  for (int64_t i = threadIdx.x; i < g; i += blockDim.x) {
    const float a = v[i];
    mn = (a < mn) ? a : mn;
    mx = (mx < a) ? a : mx;
  }
  mn = block_reduce(mn, StdMinOp{}, red);
  mx = block_reduce(mx, StdMaxOp{}, red);
  float scale = 1.0f, zero = 0.0f;
  if (!asym) {
    const float nmn = -mn;
    const float amax = ((nmn < mx) ? mx : nmn) * clip;
    scale = amax > 0 ? amax / float(qmax) : 1.0f;
  } else {
    mn *= clip;
    mx *= clip;
    if (!(mx - mn <= 0.0f)) {
      scale = (mx - mn) / float(qmax);
      zero = rintf(-mn / scale);
    }
  }
  const float fqmin = float(qmin), fqmax = float(qmax);
  for (int64_t i = threadIdx.x; i < g; i += blockDim.x) {
    float q = rintf(v[i] / scale) + zero;
    q = fminf(fmaxf(q, fqmin), fqmax);
    v[i] = scale * (q - zero);
  }
}

// ---- Hadamard ---------------------------------------------------------------------------
// FWHT of contiguous length-P segments (P a power of two). Shared-memory version: a block
// takes whole segments, max(P, 2048) elements, and runs the log2(P) butterfly stages in
// shared memory with a barrier between stages; the stage order (h = 1, 2, 4, ...) and the
// butterflies (u + v, u - v) are fwht_impl's, so the unnormalized result is bit-identical.
// src may equal dst (a block reads all of its segments before writing them).

constexpr int64_t kFwhtBlockElems = 2048;
constexpr int64_t kFwhtMaxSharedP = 16384;  // 64 KiB of shared memory (opt-in above 48 KiB)

__global__ void fwht_shared_kernel(const float* src, float* dst, int64_t nseg, int P, int spb, float scale) {
  extern __shared__ float buf[];
  const int64_t seg0 = int64_t(blockIdx.x) * spb;
  const int64_t left = nseg - seg0;
  const int nsegs = left < spb ? int(left) : spb;
  const int E = nsegs * P;
  const float* s = src + seg0 * P;
  float* d = dst + seg0 * P;
  for (int i = threadIdx.x; i < E; i += blockDim.x) buf[i] = s[i];
  __syncthreads();
  for (int h = 1; h < P; h <<= 1) {
    for (int i = threadIdx.x; i < E / 2; i += blockDim.x) {
      const int a = (i / h) * (2 * h) + (i % h);  // pairs (a, a + h) never cross a segment: 2h divides P
      const float u = buf[a], w = buf[a + h];
      buf[a] = u + w;
      buf[a + h] = u - w;
    }
    __syncthreads();
  }
  for (int i = threadIdx.x; i < E; i += blockDim.x) d[i] = buf[i] * scale;
}

// Global-memory version for P > kFwhtMaxSharedP: one launch per stage, one thread per butterfly.
__global__ void fwht_stage_kernel(float* x, int64_t npairs, int64_t h) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < npairs; i += stride) {
    const int64_t a = (i / h) * (2 * h) + (i % h);
    const float u = x[a], w = x[a + h];
    x[a] = u + w;
    x[a + h] = u - w;
  }
}

// The K×K mix of transform_row: dst[r][kp][j] = Σ_k M[kp][k] · src[r][k][j] / √P, with the
// CPU's rounding order: P >= 16 accumulates (M·s)·x, P < 16 accumulates M·x then scales.
__global__ void hadamard_mix_kernel(const float* __restrict__ src, float* __restrict__ dst,
                                    const float* __restrict__ M, int64_t total, int64_t n, int64_t P, int64_t K,
                                    float s) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += stride) {
    const int64_t r = i / n, rem = i - r * n;
    const int64_t kp = rem / P, j = rem - kp * P;
    const float* xr = src + r * n + j;
    const float* m = M + kp * K;
    float acc = 0.0f;
    if (P >= 16) {
      for (int64_t k = 0; k < K; ++k) acc += (m[k] * s) * xr[k * P];
      dst[i] = acc;
    } else {
      for (int64_t k = 0; k < K; ++k) acc += m[k] * xr[k * P];
      dst[i] = acc * s;
    }
  }
}

}  // namespace

// ================================ launchers ==============================================

void rmsnorm(const float* x, const float* w, float* y, int64_t rows, int64_t dim, float eps, cudaStream_t s) {
  launch_rmsnorm<false>(x, w, y, rows, dim, eps, s);
}
void rmsnorm_bf16(const float* x, const float* w, uint16_t* y, int64_t rows, int64_t dim, float eps,
                  cudaStream_t s) {
  launch_rmsnorm<true>(x, w, y, rows, dim, eps, s);
}

void rope(float* x, int64_t T, int64_t H, int64_t D, const int32_t* pos, const float* inv_freq, cudaStream_t s) {
  LOWBIT_KERNEL_REQUIRE(T >= 0 && H >= 0 && D >= 0, "rope: bad shape");
  const int64_t total = T * (D / 2);
  if (total == 0 || H == 0) return;
  const int64_t chunks = ceil_div(H, kRopeHeads);
  LOWBIT_KERNEL_REQUIRE(chunks <= 65535, "rope: too many heads");
  const dim3 grid{unsigned(grid_for(total, kThreads)), unsigned(chunks), 1u};
  rope_kernel<<<grid, kThreads, 0, s>>>(x, T, H, D, pos, inv_freq);
  LOWBIT_CUDA_LAUNCHED();
}

void silu_mul(const float* gate, const float* up, float* out, int64_t n, cudaStream_t s) {
  const bool v = aligned(gate, 16) && aligned(up, 16) && aligned(out, 16);
  launch_map(SiluMulOp{gate, up, out}, n, v, s);
}
void silu_mul_bf16(const float* gate, const float* up, uint16_t* out, int64_t n, cudaStream_t s) {
  const bool v = aligned(gate, 16) && aligned(up, 16) && aligned(out, 8);
  launch_map(SiluMulBf16Op{gate, up, out}, n, v, s);
}
void add_inplace(float* x, const float* y, int64_t n, cudaStream_t s) {
  launch_map(AddOp{x, y}, n, aligned(x, 16) && aligned(y, 16), s);
}

void f32_to_bf16(const float* x, uint16_t* y, int64_t n, cudaStream_t s) {
  launch_map(ToBf16Op{x, y}, n, aligned(x, 16) && aligned(y, 8), s);
}
void f32_to_f16(const float* x, uint16_t* y, int64_t n, cudaStream_t s) { launch_map(ToF16Op{x, y}, n, false, s); }
void to_f32(const void* x, WType t, float* y, int64_t n, cudaStream_t s) {
  LOWBIT_KERNEL_REQUIRE(t == WType::F32 || t == WType::F16 || t == WType::BF16, "to_f32: unknown WType");
  launch_map(ToF32Op{x, t, y}, n, false, s);
}
void round_f16_inplace(float* x, int64_t n, cudaStream_t s) { launch_map(RoundF16Op{x}, n, false, s); }

void embed(const void* table, WType t, const int32_t* ids, int64_t T, int64_t d, float* x, cudaStream_t s) {
  LOWBIT_KERNEL_REQUIRE(t == WType::F32 || t == WType::F16 || t == WType::BF16, "embed: unknown WType");
  LOWBIT_KERNEL_REQUIRE(T >= 0 && d >= 0 && T <= kMaxBlocks1D, "embed: bad shape");
  if (T == 0 || d == 0) return;
  embed_kernel<<<unsigned(T), kThreads, 0, s>>>(table, t, ids, d, x);
  LOWBIT_CUDA_LAUNCHED();
}

void causal_softmax_bf16(const float* scores, uint16_t* P, int64_t B, int64_t rows, int64_t cols, int64_t ld,
                         int64_t row_offset, float scale, cudaStream_t s) {
  LOWBIT_KERNEL_REQUIRE(B >= 0 && rows >= 0 && cols >= 0 && ld >= cols && row_offset >= 0,
                        "causal_softmax_bf16: bad shape");
  LOWBIT_KERNEL_REQUIRE(B * rows <= kMaxBlocks1D, "causal_softmax_bf16: too many rows");
  if (B == 0 || rows == 0 || ld == 0) return;
  causal_softmax_kernel<<<unsigned(B * rows), row_threads(ld, kSmVpt), 0, s>>>(scores, P, rows, cols, ld,
                                                                              row_offset, scale);
  LOWBIT_CUDA_LAUNCHED();
}

void nll_rows(const float* logits, const int32_t* target, int64_t T, int64_t V, double* nll, cudaStream_t s) {
  LOWBIT_KERNEL_REQUIRE(T >= 0 && V >= 1 && T <= kMaxBlocks1D, "nll_rows: bad shape");
  if (T == 0) return;
  nll_kernel<<<unsigned(T), kNllThreads, 0, s>>>(logits, target, V, nll);
  LOWBIT_CUDA_LAUNCHED();
}

void act_quant(float* x, int64_t rows, int64_t cols, int bits, int64_t groupsize, bool asym, float clip,
               cudaStream_t s) {
  if (bits == 16) return;
  LOWBIT_KERNEL_REQUIRE(bits >= 2 && bits <= 8, "act_quant: bits must be 2..8 or 16");
  LOWBIT_KERNEL_REQUIRE(clip > 0.0f && clip <= 1.0f, "act_quant: clip ratio must be in (0, 1]");
  LOWBIT_KERNEL_REQUIRE(rows >= 0 && cols >= 0, "act_quant: bad shape");
  if (rows == 0 || cols == 0) return;
  const int64_t g = groupsize > 0 ? groupsize : cols;
  LOWBIT_KERNEL_REQUIRE(cols % g == 0, "act_quant: groupsize does not divide the dimension");
  const int64_t ngroups = cols / g;
  LOWBIT_KERNEL_REQUIRE(rows * ngroups <= kMaxBlocks1D, "act_quant: too many groups");
  const int qmin = asym ? 0 : -(1 << (bits - 1));
  const int qmax = asym ? (1 << bits) - 1 : (1 << (bits - 1)) - 1;
  const int threads = g >= 256 ? 256 : g >= 128 ? 128 : g >= 64 ? 64 : 32;
  act_quant_kernel<<<unsigned(rows * ngroups), threads, 0, s>>>(x, cols, g, ngroups, qmin, qmax, asym, clip);
  LOWBIT_CUDA_LAUNCHED();
}

void hadamard_rows(float* x, int64_t rows, int64_t n, int64_t P, int64_t K, const float* HKt, float* tmp,
                   cudaStream_t s) {
  LOWBIT_KERNEL_REQUIRE(rows >= 0 && n >= 1 && P >= 1 && K >= 1 && K * P == n && (P & (P - 1)) == 0,
                        "hadamard_rows: need n = K·P with P a power of two");
  LOWBIT_KERNEL_REQUIRE(K == 1 || (HKt != nullptr && tmp != nullptr), "hadamard_rows: K > 1 needs HKt and tmp");
  if (rows == 0 || n == 1) return;  // n == 1: H = [1]
  const int64_t total = rows * n;
  // K == 1: fwht_rows(normalize) scales the FWHT by 1/√n; K > 1: the mix scales by 1/√P.
  const float s_n = float(1.0 / std::sqrt(double(n)));
  const float s_p = float(1.0 / std::sqrt(double(P)));
  float* fw = K == 1 ? x : tmp;  // where the FWHT of the segments lands
  if (P == 1) {
    // No FWHT; K > 1 here (n > 1), the mix reads tmp.
    LOWBIT_CUDA_CHECK(cudaMemcpyAsync(tmp, x, size_t(total) * sizeof(float), cudaMemcpyDeviceToDevice, s));
  } else if (P <= kFwhtMaxSharedP) {
    const int64_t nseg = rows * K;
    const int64_t spb = P >= kFwhtBlockElems ? 1 : kFwhtBlockElems / P;
    const size_t smem = size_t(spb * P) * sizeof(float);
    if (smem > 48 * 1024)
      LOWBIT_CUDA_CHECK(cudaFuncSetAttribute(fwht_shared_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                             int(smem)));
    const int64_t blocks = ceil_div(nseg, spb);
    LOWBIT_KERNEL_REQUIRE(blocks <= kMaxBlocks1D, "hadamard_rows: too many rows");
    fwht_shared_kernel<<<unsigned(blocks), kThreads, smem, s>>>(x, fw, nseg, int(P), int(spb),
                                                                 K == 1 ? s_n : 1.0f);
    LOWBIT_CUDA_LAUNCHED();
  } else {
    if (fw != x)
      LOWBIT_CUDA_CHECK(cudaMemcpyAsync(fw, x, size_t(total) * sizeof(float), cudaMemcpyDeviceToDevice, s));
    const int64_t npairs = total / 2;
    for (int64_t h = 1; h < P; h <<= 1) {
      fwht_stage_kernel<<<grid_for(npairs, kThreads), kThreads, 0, s>>>(fw, npairs, h);
      LOWBIT_CUDA_LAUNCHED();
    }
    if (K == 1) launch_map(ScaleOp{x, s_n}, total, false, s);
  }
  if (K > 1) {
    hadamard_mix_kernel<<<grid_for(total, kThreads), kThreads, 0, s>>>(tmp, x, HKt, total, n, P, K, s_p);
    LOWBIT_CUDA_LAUNCHED();
  }
}

}  // namespace lowbit::cuda
