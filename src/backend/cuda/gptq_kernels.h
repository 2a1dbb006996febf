// Kernels of the device GPTQ / GPTAQ solver (gptq_cuda.cu), driven by gptq_cuda.cpp.
// Plain C++ (no CUDA-only syntax); all pointers are DEVICE pointers, every launch goes
// on the given stream and is checked (LOWBIT_CUDA_LAUNCHED).
#pragma once
#include <cstdint>

#include <cuda_runtime_api.h>

namespace lowbit::cuda::gptq {

// One lazy block [i1, i2) of GPTQ's column loop (quant/gptq_solver.cpp, the loop body
// inside `for (i1, i2)` before the trailing GEMMs). One thread per row r walks the
// block's columns j in order, exactly as the CPU row loop does:
//   dynamic groups: at j % gs == 0 fit the row's grid of columns [j, min(j+gs, n)) on the
//                   current W (weight_params: plain or the MSE clip search);
//   code = quantize_code(float(w_j)), e = (w_j - dequant) / U[j, j], loss += e²,
//   err[j - i1] = e, W[r, j+1:i2] -= e·U[j, j+1:i2]  (GPTAQ: - w_j·P[j, j+1:i2], wj saved).
// Layouts (column j of the weight is contiguous over rows, so a warp's loads coalesce):
struct BlockArgs {
  double* W = nullptr;          // [n][out]: W(r, j) at W[j*out + r], processing order, f64
  const double* U = nullptr;    // [n, n] row-major, upper Cholesky factor of (H + λI)⁻¹
  const double* P = nullptr;    // [n, n] row-major GPTAQ matrix, null for plain GPTQ
  const int32_t* gj = nullptr;  // [n] group index of processing column j (= g_idx[perm[j]])
  float* scales = nullptr;      // [ngroups][out]: read (static / per channel) or written (dynamic)
  float* zeros = nullptr;       // [ngroups][out]
  int32_t* codes = nullptr;     // [n][out] codes in processing order
  double* err = nullptr;        // [i2 - i1][out]  (the Err block, column-major out x (i2-i1))
  double* wj = nullptr;         // [i2 - i1][out]  w_j before rounding (GPTAQ), else null
  double* loss = nullptr;       // [out] per-row Σ e², accumulated across blocks
  int64_t out = 0, n = 0, i1 = 0, i2 = 0;
  int64_t gs = 0;               // group size (n when per channel)
  bool dynamic_groups = false;  // fit groups as they start (groupsize > 0 && !static_groups)
  bool sym = true;
  int bits = 4;
  float clip_ratio = 1.0f;
  bool mse_clip = false;
};
void block(const BlockArgs& a, cudaStream_t s);

// Static grids (per channel, or static groups), fitted on the device from W before the
// column loop, exactly as weight_params on the host: grid (r, k) from row r's original
// columns [k·gs, min((k+1)·gs, n)), which sit at processing positions cmap[c] of W
// ([n][out] layout as in BlockArgs). Writes scales/zeros in the [ngroups][out] layout.
void fit_static(const double* W, int64_t out, int64_t n, int64_t gs, int64_t ngroups, const int32_t* cmap, bool sym,
                int bits, float clip, bool mse, float* scales, float* zeros, cudaStream_t s);

// RTN codes from fitted grids: codes[c·out + r] = quantize_code(float(W(r, c)), grid of
// (r, c / gs)), W in the [n][out] layout, grids [ngroups][out].
void rtn_codes(const double* W, int64_t out, int64_t n, int64_t gs, const float* scales, const float* zeros, bool sym,
               int bits, int32_t* codes, cudaStream_t s);

// A = I (n x n).
void set_identity(double* A, int64_t n, cudaStream_t s);
// U[i, j] = X[n-1-i, n-1-j] for i <= j, 0 below the diagonal (row-major n x n; U != X).
void reverse_to_upper(const double* X, double* U, int64_t n, cudaStream_t s);
// M[a, b] = 0 for b <= a (keeps the strict upper triangle; row-major n x n).
void keep_strict_upper(double* M, int64_t n, cudaStream_t s);

}  // namespace lowbit::cuda::gptq
