// Small kernels of the device-resident runner (cuda_llama.cpp): random weights for
// benchmarks and constant fills. Device pointers; checked launches on stream s.
#pragma once
#include <cstdint>

#include <cuda_runtime_api.h>

namespace lowbit::cuda {

// p[i] = bf16(U(-a, a)) from a counter-based hash of (seed, i): the same on every run.
void fill_uniform_bf16(uint16_t* p, int64_t n, uint64_t seed, float a, cudaStream_t s);
void fill_f32(float* p, int64_t n, float v, cudaStream_t s);

}  // namespace lowbit::cuda

namespace lowbit::cuda {
// H[i] = a·H[i] + b·G[i]  (f64 running mean of f32 Gram matrices), n elements.
void axpby_f64_f32(double* H, const float* G, int64_t n, double a, double b, cudaStream_t s);
}  // namespace lowbit::cuda

namespace lowbit::cuda {
// y[r, b, a] = x[r, a, b] for x [rows, A, B] (the cross-head Hadamard's [heads, D] ↔ [D, heads]).
void transpose_inner(const float* x, float* y, int64_t rows, int64_t A, int64_t B, cudaStream_t s);
}  // namespace lowbit::cuda

namespace lowbit::cuda {
// Rotate-half RoPE in place on bf16 x [T, H, D] (computed in f32 with the angle of kernels.h
// rope, rounded back to bf16): the runner's q/k when its GEMMs write bf16.
void rope_bf16(uint16_t* x, int64_t T, int64_t H, int64_t D, const int32_t* pos, const float* inv_freq,
               cudaStream_t s);
// out[i] = bf16(silu(gate[i]) * up[i]) for bf16 gate/up (out may alias gate).
void silu_mul_bf16_bf16(const uint16_t* gate, const uint16_t* up, uint16_t* out, int64_t n, cudaStream_t s);
}  // namespace lowbit::cuda
