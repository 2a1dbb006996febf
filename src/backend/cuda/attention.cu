// Causal GQA attention in f32 (the reference / decode path; see kernels.h), flash style:
// K/V tiles through shared memory with an online softmax, never a T×S score matrix.
//
// A block owns kRows consecutive queries t0..t0+kRows-1 of one query head h, one warp per
// query. For each tile of kTile = 32 keys (loaded once per block, shared by its warps):
//   * lane l scores key s0 + l against the warp's query (q row in shared memory, read as a
//     broadcast; K rows padded to an odd stride so the 32 lanes hit 32 different banks),
//   * the warp's running max / sum are updated (online softmax, warp shuffles),
//   * lane l accumulates output dims l, l+32, ... (registers) from the tile's V rows, each
//     key's probability broadcast by a shuffle.
// Keys at or beyond the block's last visible key (q_offset + t_last + 1) are never read, so
// a cache longer than the current length may hold anything.
#include <cuda_runtime.h>

#include <cstdint>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/kernels.h"

namespace lowbit::cuda {
namespace {

constexpr int kRows = 8;                 // warps (queries) per block
constexpr int kTile = 32;                // keys per tile: one per lane
constexpr int kMaxD = 256;
constexpr int kRegs = kMaxD / 32;        // output dims per lane

__global__ void __launch_bounds__(kRows * 32)
    attention_kernel(const float* __restrict__ q, const float* __restrict__ k, const float* __restrict__ v,
                     float* __restrict__ out, int64_t T, int64_t Hq, int64_t Hkv, int D, int64_t q_offset,
                     float scale, int64_t group) {
  extern __shared__ float sm[];
  const int ldk = D | 1;  // odd row stride: lane l reading column d of row l is conflict-free
  float* Ks = sm;                   // [kTile][ldk]
  float* Vs = Ks + kTile * ldk;     // [kTile][ldk]
  float* Qs = Vs + kTile * ldk;     // [kRows][D]
  const int warp = int(threadIdx.x >> 5), lane = int(threadIdx.x & 31);
  // Last query tiles have the most keys: start them first.
  const int64_t t0 = (int64_t(gridDim.x) - 1 - blockIdx.x) * kRows;
  const int64_t h = blockIdx.y, kvh = h / group;
  const int64_t t = t0 + warp;
  const bool active = t < T;  // warp-uniform
  const int64_t t_last = (t0 + kRows < T ? t0 + kRows : T) - 1;
  const int64_t kv_end = q_offset + t_last + 1;        // keys the block loads: [0, kv_end)
  const int64_t my_end = active ? q_offset + t + 1 : 0;  // keys this warp's query sees

  if (active)
    for (int d = lane; d < D; d += 32) Qs[warp * D + d] = q[(t * Hq + h) * D + d];

  float o[kRegs];
#pragma unroll
  for (int j = 0; j < kRegs; ++j) o[j] = 0.0f;
  float m_run = -INFINITY, l_run = 0.0f;

  for (int64_t s0 = 0; s0 < kv_end; s0 += kTile) {
    __syncthreads();  // the previous tile is consumed by every warp (and Qs is written)
    for (int idx = threadIdx.x; idx < kTile * D; idx += blockDim.x) {
      const int sl = idx / D, d = idx - sl * D;
      const int64_t key = s0 + sl;
      float kk = 0.0f, vv = 0.0f;
      if (key < kv_end) {
        const int64_t off = (key * Hkv + kvh) * D + d;
        kk = k[off];
        vv = v[off];
      }
      Ks[sl * ldk + d] = kk;
      Vs[sl * ldk + d] = vv;
    }
    __syncthreads();
    if (!active || s0 >= my_end) continue;  // warp-uniform; the barriers above are outside

    const int64_t key = s0 + lane;
    const bool valid = key < my_end;
    float sc = -INFINITY;
    if (valid) {
      const float* qr = Qs + warp * D;
      const float* kr = Ks + lane * ldk;
      float acc = 0.0f;
      for (int d = 0; d < D; ++d) acc += qr[d] * kr[d];
      sc = acc * scale;
    }
    float mt = sc;
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) mt = fmaxf(mt, __shfl_xor_sync(0xffffffffu, mt, off));
    // Key s0 <= my_end - 1 is valid (s0 < my_end), so mt and m_new are finite.
    const float m_new = fmaxf(m_run, mt);
    const float alpha = expf(m_run - m_new);  // 0 on the first tile (m_run = -inf)
    const float p = valid ? expf(sc - m_new) : 0.0f;
    float ps = p;
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) ps += __shfl_xor_sync(0xffffffffu, ps, off);
    l_run = l_run * alpha + ps;
#pragma unroll
    for (int j = 0; j < kRegs; ++j) o[j] *= alpha;
    const int64_t left = my_end - s0;
    const int nk = left < kTile ? int(left) : kTile;  // warp-uniform, >= 1
    for (int sl = 0; sl < nk; ++sl) {
      const float pj = __shfl_sync(0xffffffffu, p, sl);
      const float* vr = Vs + sl * ldk;
#pragma unroll
      for (int j = 0; j < kRegs; ++j) {
        const int d = lane + 32 * j;
        if (d < D) o[j] += pj * vr[d];
      }
    }
    m_run = m_new;
  }

  if (active) {
    const float inv = 1.0f / l_run;
    float* orow = out + (t * Hq + h) * D;
#pragma unroll
    for (int j = 0; j < kRegs; ++j) {
      const int d = lane + 32 * j;
      if (d < D) orow[d] = o[j] * inv;
    }
  }
}

}  // namespace

void attention(const float* q, const float* k, const float* v, float* out, int64_t T, int64_t S, int64_t Hq,
               int64_t Hkv, int64_t D, int64_t q_offset, float scale, cudaStream_t s) {
  auto require = [](bool ok, const char* what, int line) {
    if (!ok) fail("lowbit kernel", 0, "invalid argument", what, __FILE__, line);
  };
  require(T >= 0 && Hq >= 0 && Hkv > 0 && Hq % Hkv == 0, "attention: query heads not a multiple of kv heads",
          __LINE__);
  require(D >= 1 && D <= kMaxD, "attention: head dim must be in [1, 256]", __LINE__);
  require(q_offset >= 0 && q_offset + T <= S, "attention: queries end past the keys", __LINE__);
  require(Hq <= 65535, "attention: too many heads", __LINE__);
  if (T == 0 || Hq == 0) return;
  const int64_t tiles = (T + kRows - 1) / kRows;
  require(tiles <= 2147483647, "attention: too many queries", __LINE__);
  const int Di = int(D), ldk = Di | 1;
  const size_t smem = (size_t(2) * kTile * ldk + size_t(kRows) * Di) * sizeof(float);
  if (smem > 48 * 1024)
    LOWBIT_CUDA_CHECK(cudaFuncSetAttribute(attention_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
  const dim3 grid{unsigned(tiles), unsigned(Hq), 1u};
  attention_kernel<<<grid, kRows * 32, smem, s>>>(q, k, v, out, T, Hq, Hkv, Di, q_offset, scale, Hq / Hkv);
  LOWBIT_CUDA_LAUNCHED();
}

}  // namespace lowbit::cuda
