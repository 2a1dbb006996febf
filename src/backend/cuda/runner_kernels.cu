#include "backend/cuda/cuda_check.h"
#include "backend/cuda/runner_kernels.h"

namespace lowbit::cuda {
namespace {

__device__ inline uint64_t splitmix(uint64_t z) {
  z += 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

__device__ inline uint16_t f32_to_bf16_rne(float f) {
  uint32_t u = __float_as_uint(f);
  u += 0x7fffu + ((u >> 16) & 1u);  // finite inputs only (these are)
  return uint16_t(u >> 16);
}

__global__ void fill_uniform_bf16_k(uint16_t* p, int64_t n, uint64_t seed, float a) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const uint64_t r = splitmix(seed ^ (uint64_t(i) * 0xD1B54A32D192ED03ull));
    const float u = float(r >> 40) * (1.0f / 16777216.0f);  // [0, 1)
    p[i] = f32_to_bf16_rne((2.0f * u - 1.0f) * a);
  }
}

__global__ void fill_f32_k(float* p, int64_t n, float v) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    p[i] = v;
}

__global__ void axpby_f64_f32_k(double* H, const float* G, int64_t n, double a, double b) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    H[i] = H[i] * a + b * double(G[i]);
}

__global__ void transpose_inner_k(const float* x, float* y, int64_t rows, int64_t A, int64_t B) {
  const int64_t n = rows * A * B;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = i / (A * B), rem = i % (A * B), a = rem / B, b = rem % B;  // i = x index (r, a, b)
    y[r * A * B + b * A + a] = x[i];
  }
}

__device__ inline float bf16_to_f32(uint16_t h) { return __uint_as_float(uint32_t(h) << 16); }

__global__ void rope_bf16_k(uint16_t* x, int64_t T, int64_t H, int64_t D, const int32_t* pos, const float* inv_freq) {
  const int64_t half = D / 2, n = T * H * half;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t j = i % half, th = i / half, t = th / H;  // th = t·H + h
    const float ang = float(pos[t]) * inv_freq[j];
    double sd, cd;
    sincos(double(ang), &sd, &cd);
    const float c = float(cd), sn = float(sd);
    uint16_t* v = x + th * D;
    const float a = bf16_to_f32(v[j]), b = bf16_to_f32(v[j + half]);
    v[j] = f32_to_bf16_rne(a * c - b * sn);
    v[j + half] = f32_to_bf16_rne(b * c + a * sn);
  }
}

__global__ void silu_mul_bf16_bf16_k(const uint16_t* gate, const uint16_t* up, uint16_t* out, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const float g = bf16_to_f32(gate[i]), u = bf16_to_f32(up[i]);
    out[i] = f32_to_bf16_rne(g / (1.0f + expf(-g)) * u);
  }
}

int blocks_for(int64_t n) {
  int64_t b = (n + 255) / 256;
  return int(b < 65536 ? (b > 0 ? b : 1) : 65536);
}

}  // namespace

void fill_uniform_bf16(uint16_t* p, int64_t n, uint64_t seed, float a, cudaStream_t s) {
  fill_uniform_bf16_k<<<blocks_for(n), 256, 0, s>>>(p, n, seed, a);
  LOWBIT_CUDA_LAUNCHED();
}
void fill_f32(float* p, int64_t n, float v, cudaStream_t s) {
  fill_f32_k<<<blocks_for(n), 256, 0, s>>>(p, n, v);
  LOWBIT_CUDA_LAUNCHED();
}

void transpose_inner(const float* x, float* y, int64_t rows, int64_t A, int64_t B, cudaStream_t s) {
  transpose_inner_k<<<blocks_for(rows * A * B), 256, 0, s>>>(x, y, rows, A, B);
  LOWBIT_CUDA_LAUNCHED();
}

void rope_bf16(uint16_t* x, int64_t T, int64_t H, int64_t D, const int32_t* pos, const float* inv_freq,
               cudaStream_t s) {
  if (T * H * (D / 2) == 0) return;
  rope_bf16_k<<<blocks_for(T * H * (D / 2)), 256, 0, s>>>(x, T, H, D, pos, inv_freq);
  LOWBIT_CUDA_LAUNCHED();
}

void silu_mul_bf16_bf16(const uint16_t* gate, const uint16_t* up, uint16_t* out, int64_t n, cudaStream_t s) {
  if (n == 0) return;
  silu_mul_bf16_bf16_k<<<blocks_for(n), 256, 0, s>>>(gate, up, out, n);
  LOWBIT_CUDA_LAUNCHED();
}

void axpby_f64_f32(double* H, const float* G, int64_t n, double a, double b, cudaStream_t s) {
  axpby_f64_f32_k<<<blocks_for(n), 256, 0, s>>>(H, G, n, a, b);
  LOWBIT_CUDA_LAUNCHED();
}

}  // namespace lowbit::cuda
