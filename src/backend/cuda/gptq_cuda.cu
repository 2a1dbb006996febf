// Kernels of the device GPTQ / GPTAQ solver (see gptq_kernels.h, gptq_cuda.cpp).
//
// The per-row arithmetic reproduces the CPU code bit for bit where it can, so codes agree:
// every f32/f64 operation is written with an explicit rounding intrinsic (__fmul_rn,
// __fmaf_rn, ...), which nvcc never contracts or reorders, and where the CPU build
// (g++ -O3, -std=gnu++20, i.e. -ffp-contract=fast, with FMA) fuses a multiply and an
// add, the same fma is written here. The fused spots, read off the CPU object code:
//   find_params (asym):  range = fma(mx, clip, -(mn·clip))               qgrid.cpp
//   find_params_mse:     d = fma(q - zero, scale, -x)                     qgrid.cpp
//   in-block update:     w_k = fma(-e, u_k, w_k)                          gptq_solver.cpp
//   GPTAQ update:        w_k = w_k - fma(e, u_k, -(w_j·p_k))              gptq_solver.cpp
//   loss:                loss = fma(e, e, loss)
// What cannot match bit for bit: pow() in the MSE search (CUDA's is within 2 ulp, glibc's
// correctly rounded), and everything fed by cuBLAS / cuSOLVER (U, P, the lazy GEMMs).
#include <cstdint>

#include <cuda_runtime.h>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/gptq_kernels.h"

namespace lowbit::cuda::gptq {
namespace {

struct QP {
  float scale, zero;
};

// quantize_code (qgrid.h): clamp(nearbyint(x / scale) + zero, qmin, qmax)
__device__ __forceinline__ float qcode(float x, float scale, float zero, float qmin, float qmax) {
  const float q = __fadd_rn(rintf(__fdiv_rn(x, scale)), zero);
  return fminf(fmaxf(q, qmin), qmax);
}

__device__ __forceinline__ float wval(const double* W, int64_t out, int64_t r, int64_t col) {
  return __double2float_rn(W[col * out + r]);
}

// find_params (qgrid.cpp) over row r, columns col(0..len-1) of W.
template <class Col>
__device__ QP find_params_cols(const double* W, int64_t out, int64_t r, int64_t len, Col col, bool sym, int qmax,
                               float clip) {
  float mn = 0.0f, mx = 0.0f;
  for (int64_t i = 0; i < len; ++i) {
    const float x = wval(W, out, r, col(i));
    mn = x < mn ? x : mn;  // std::min(mn, x)
    mx = mx < x ? x : mx;  // std::max(mx, x)
  }
  QP p{1.0f, 0.0f};
  if (sym) {
    const float nmn = -mn;
    const float amax = __fmul_rn(nmn < mx ? mx : nmn, clip);  // std::max(-mn, mx) * clip
    p.scale = amax > 0.0f ? __fdiv_rn(amax, float(qmax)) : 1.0f;
    p.zero = 0.0f;
  } else {
    const float mnc = __fmul_rn(mn, clip);
    const float range = __fmaf_rn(mx, clip, -mnc);  // (mx·clip) - (mn·clip), fused as on the CPU
    if (range <= 0.0f) return p;
    p.scale = __fdiv_rn(range, float(qmax));
    p.zero = rintf(__fdiv_rn(-mnc, p.scale));
  }
  return p;
}

// Σ |dequant(quant(x)) - x|^2.4 of candidate grid c over the columns (find_params_mse's error).
template <class Col>
__device__ double mse_err(const double* W, int64_t out, int64_t r, int64_t len, Col col, QP c, int qmin, int qmax) {
  const float fqmin = float(qmin), fqmax = float(qmax);
  double err = 0;
  for (int64_t k = 0; k < len; ++k) {
    const float x = wval(W, out, r, col(k));
    const float q = qcode(x, c.scale, c.zero, fqmin, fqmax);
    const float d = __fmaf_rn(__fsub_rn(q, c.zero), c.scale, -x);
    err = __dadd_rn(err, pow(fabs(double(d)), 2.4));
  }
  return err;
}

// Shrink factor of candidate i of the MSE search: 1 - i/100, i < kMseGrid.
constexpr int kMseGrid = 80;
__device__ __forceinline__ float mse_shrink(int i) { return __fsub_rn(1.0f, __fdiv_rn(float(i), 100.0f)); }

__device__ QP find_params(const double* W, int64_t out, int64_t r, int64_t col0, int64_t len, bool sym, int qmax,
                          float clip) {
  return find_params_cols(W, out, r, len, [col0](int64_t i) { return col0 + i; }, sym, qmax, clip);
}

// find_params_mse (qgrid.cpp).
__device__ QP find_params_mse(const double* W, int64_t out, int64_t r, int64_t col0, int64_t len, bool sym,
                              int qmin, int qmax) {
  auto col = [col0](int64_t i) { return col0 + i; };
  QP best = find_params_cols(W, out, r, len, col, sym, qmax, 1.0f);
  double best_err = __longlong_as_double(0x7ff0000000000000LL);  // +inf
  for (int i = 0; i < kMseGrid; ++i) {
    const QP c = find_params_cols(W, out, r, len, col, sym, qmax, mse_shrink(i));
    const double err = mse_err(W, out, r, len, col, c, qmin, qmax);
    if (err < best_err) {
      best_err = err;
      best = c;
    }
  }
  return best;
}

// Static grids (per channel / static groups): block (r, k) fits row r's group k over the
// original columns [k·gs, k·gs + len), found at processing positions cmap[c]. With the MSE
// search each of the first kMseGrid threads scores one candidate; the first minimum wins,
// exactly as the sequential loop picks it.
__global__ void fit_static_kernel(const double* W, int64_t out, int64_t n, int64_t gs, const int32_t* cmap, bool sym,
                                  int bits, float clip, bool mse, float* scales, float* zeros) {
  const int64_t r = blockIdx.x, k = blockIdx.y;
  const int64_t col0 = k * gs, len = gs < n - col0 ? gs : n - col0;
  const int qmin = sym ? -(1 << (bits - 1)) : 0;
  const int qmax = sym ? (1 << (bits - 1)) - 1 : (1 << bits) - 1;
  auto col = [cmap, col0](int64_t i) { return int64_t(cmap[col0 + i]); };
  __shared__ double errs[kMseGrid];
  __shared__ QP cands[kMseGrid];
  const int t = threadIdx.x;
  if (!mse) {
    if (t == 0) {
      const QP p = find_params_cols(W, out, r, len, col, sym, qmax, clip);
      scales[k * out + r] = p.scale;
      zeros[k * out + r] = p.zero;
    }
    return;
  }
  if (t < kMseGrid) {
    const QP c = find_params_cols(W, out, r, len, col, sym, qmax, mse_shrink(t));
    cands[t] = c;
    errs[t] = mse_err(W, out, r, len, col, c, qmin, qmax);
  }
  __syncthreads();
  if (t == 0) {
    QP best = find_params_cols(W, out, r, len, col, sym, qmax, 1.0f);
    double best_err = __longlong_as_double(0x7ff0000000000000LL);
    for (int i = 0; i < kMseGrid; ++i)
      if (errs[i] < best_err) {
        best_err = errs[i];
        best = cands[i];
      }
    scales[k * out + r] = best.scale;
    zeros[k * out + r] = best.zero;
  }
}

__global__ void block_kernel(BlockArgs a) {
  const int64_t r = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (r >= a.out) return;
  const int64_t out = a.out, n = a.n;
  const int qmin = a.sym ? -(1 << (a.bits - 1)) : 0;
  const int qmax = a.sym ? (1 << (a.bits - 1)) - 1 : (1 << a.bits) - 1;
  const float fqmin = float(qmin), fqmax = float(qmax);
  double* W = a.W;
  double loss = a.loss[r];
  for (int64_t j = a.i1; j < a.i2; ++j) {
    const int64_t g = a.gj[j];
    float* sp = a.scales + g * out + r;
    float* zp = a.zeros + g * out + r;
    if (a.dynamic_groups && j % a.gs == 0) {
      const int64_t len = a.gs < n - j ? a.gs : n - j;
      const QP p = a.mse_clip ? find_params_mse(W, out, r, j, len, a.sym, qmin, qmax)
                              : find_params(W, out, r, j, len, a.sym, qmax, a.clip_ratio);
      *sp = p.scale;
      *zp = p.zero;
    }
    const float scale = *sp, zero = *zp;
    const double w = W[j * out + r];
    const float code = qcode(__double2float_rn(w), scale, zero, fqmin, fqmax);
    a.codes[j * out + r] = int32_t(code);
    const float deq = __fmul_rn(scale, __fsub_rn(code, zero));  // dequantize_code
    const double* u = a.U + j * n;
    const double e = __ddiv_rn(__dsub_rn(w, double(deq)), u[j]);
    loss = __fma_rn(e, e, loss);
    a.err[(j - a.i1) * out + r] = e;
    if (a.P) {  // GPTAQ: W[:, k] -= e·U[j, k] - w_j·P[j, k]
      const double* p = a.P + j * n;
      a.wj[(j - a.i1) * out + r] = w;
      for (int64_t k = j + 1; k < a.i2; ++k) {
        double* wk = W + k * out + r;
        *wk = __dsub_rn(*wk, __fma_rn(e, u[k], -__dmul_rn(w, p[k])));
      }
    } else {
      for (int64_t k = j + 1; k < a.i2; ++k) {
        double* wk = W + k * out + r;
        *wk = __fma_rn(-e, u[k], *wk);
      }
    }
  }
  a.loss[r] = loss;
}

__global__ void rtn_codes_kernel(const double* W, int64_t out, int64_t n, int64_t gs, const float* scales,
                                 const float* zeros, bool sym, int bits, int32_t* codes) {
  const int qmin = sym ? -(1 << (bits - 1)) : 0;
  const int qmax = sym ? (1 << (bits - 1)) - 1 : (1 << bits) - 1;
  const int64_t total = out * n;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t c = i / out, r = i % out, g = c / gs;  // i = c·out + r
    codes[i] = int32_t(qcode(__double2float_rn(W[i]), scales[g * out + r], zeros[g * out + r], float(qmin),
                             float(qmax)));
  }
}

__global__ void set_identity_kernel(double* A, int64_t n) {
  const int64_t total = n * n;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x)
    A[i] = (i / n == i % n) ? 1.0 : 0.0;
}

__global__ void reverse_to_upper_kernel(const double* X, double* U, int64_t n) {
  const int64_t total = n * n;
  for (int64_t t = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; t < total; t += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = t / n, j = t % n;
    U[t] = i <= j ? X[(n - 1 - i) * n + (n - 1 - j)] : 0.0;
  }
}

__global__ void keep_strict_upper_kernel(double* M, int64_t n) {
  const int64_t total = n * n;
  for (int64_t t = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; t < total; t += int64_t(gridDim.x) * blockDim.x)
    if (t % n <= t / n) M[t] = 0.0;
}

unsigned grid_for(int64_t total, int threads) {
  int64_t b = (total + threads - 1) / threads;
  if (b > 65535) b = 65535;  // grid-stride loops cover the rest
  return unsigned(b < 1 ? 1 : b);
}

}  // namespace

void block(const BlockArgs& a, cudaStream_t s) {
  if (a.out <= 0 || a.i2 <= a.i1) return;
  // One row per thread; rows are few (out ~ 10³..10⁴), so one-warp CTAs spread them over the SMs.
  constexpr int kThreads = 32;
  const unsigned blocks = unsigned((a.out + kThreads - 1) / kThreads);
  block_kernel<<<blocks, kThreads, 0, s>>>(a);
  LOWBIT_CUDA_LAUNCHED();
}

void fit_static(const double* W, int64_t out, int64_t n, int64_t gs, int64_t ngroups, const int32_t* cmap, bool sym,
                int bits, float clip, bool mse, float* scales, float* zeros, cudaStream_t s) {
  if (out <= 0 || n <= 0) return;
  const dim3 grid{unsigned(out), unsigned(ngroups), 1u};
  fit_static_kernel<<<grid, mse ? 96 : 32, 0, s>>>(W, out, n, gs, cmap, sym, bits, clip, mse, scales, zeros);
  LOWBIT_CUDA_LAUNCHED();
}

void rtn_codes(const double* W, int64_t out, int64_t n, int64_t gs, const float* scales, const float* zeros, bool sym,
               int bits, int32_t* codes, cudaStream_t s) {
  if (out <= 0 || n <= 0) return;
  rtn_codes_kernel<<<grid_for(out * n, 256), 256, 0, s>>>(W, out, n, gs, scales, zeros, sym, bits, codes);
  LOWBIT_CUDA_LAUNCHED();
}

void set_identity(double* A, int64_t n, cudaStream_t s) {
  if (n <= 0) return;
  set_identity_kernel<<<grid_for(n * n, 256), 256, 0, s>>>(A, n);
  LOWBIT_CUDA_LAUNCHED();
}

void reverse_to_upper(const double* X, double* U, int64_t n, cudaStream_t s) {
  if (n <= 0) return;
  reverse_to_upper_kernel<<<grid_for(n * n, 256), 256, 0, s>>>(X, U, n);
  LOWBIT_CUDA_LAUNCHED();
}

void keep_strict_upper(double* M, int64_t n, cudaStream_t s) {
  if (n <= 0) return;
  keep_strict_upper_kernel<<<grid_for(n * n, 256), 256, 0, s>>>(M, n);
  LOWBIT_CUDA_LAUNCHED();
}

}  // namespace lowbit::cuda::gptq
