// Fused causal GQA flash attention on bf16 inputs with tensor cores (nvcuda::wmma,
// bf16 16x16x16 fragments, f32 accumulators); see kernels.h flash_attention_bf16.
//
// One block of kWarps = 4 warps per (tile of kBM = 64 queries, query head h); warp w owns
// the 16 query rows t0 + 16w .. t0 + 16w + 15. Per tile of kBN = 64 keys (s0 .. s0 + 63,
// up to the block's last visible key):
//   1. the block stages K and V rows [s0, s0 + 64) in shared memory (bf16; rows at or past
//      the block's key end are zero-filled and never read from global memory);
//   2. each warp computes S = Q_w · Kᵀ (16 x 64, f32) with wmma into its own shared tile;
//   3. online softmax in f32, lane l owning row l/2 and columns 32·(l%2) .. +31: masked
//      keys (key > q_offset + t) excluded, running max m and sum l updated, the old output
//      row rescaled by alpha = exp(m_old - m_new), P = exp(s - m_new) written as bf16;
//   4. O_w += P · V with wmma, O_w (16 x D f32) living in shared memory: each 16-column
//      block is loaded as an accumulator fragment, 4 MMAs over the tile's keys, stored back.
// At the end each row is divided by its sum and rounded to bf16 once.
//
// Every wmma pointer is 32-byte aligned (row offsets are multiples of 16 rows, column
// offsets multiples of 16 elements, and the per-warp / per-array bases are multiples of
// 32 bytes); every ldm is a multiple of 8 bf16 / 4 f32 elements (static_asserts below).
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <mma.h>

#include <cstdint>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/kernels.h"

namespace lowbit::cuda {
namespace {

namespace wmma = nvcuda::wmma;
using bf16 = __nv_bfloat16;

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
constexpr int kBM = 16 * kWarps;  // query rows per block
constexpr int kBN = 64;           // keys per tile
constexpr int kLdS = kBN + 4;     // f32 score tile stride
constexpr int kLdP = kBN + 8;     // bf16 P tile stride

template <int D>
struct Layout {
  static constexpr int kLdQ = D + 8;  // bf16 Q / K / V row stride
  static constexpr int kLdO = D + 4;  // f32 O row stride
  // byte offsets of the shared arrays
  static constexpr size_t q = 0;
  static constexpr size_t k = q + size_t(kBM) * kLdQ * 2;
  static constexpr size_t v = k + size_t(kBN) * kLdQ * 2;
  static constexpr size_t s = v + size_t(kBN) * kLdQ * 2;
  static constexpr size_t p = s + size_t(kWarps) * 16 * kLdS * 4;
  static constexpr size_t o = p + size_t(kWarps) * 16 * kLdP * 2;
  static constexpr size_t bytes = o + size_t(kWarps) * 16 * kLdO * 4;
  // per-warp sub-tiles (bytes)
  static constexpr size_t s_warp = size_t(16) * kLdS * 4;
  static constexpr size_t p_warp = size_t(16) * kLdP * 2;
  static constexpr size_t o_warp = size_t(16) * kLdO * 4;

  static_assert(D % 16 == 0, "D must be a multiple of 16");
  static_assert(kLdQ % 8 == 0 && kLdP % 8 == 0, "bf16 ldm must be a multiple of 8");
  static_assert(kLdS % 4 == 0 && kLdO % 4 == 0, "f32 ldm must be a multiple of 4");
  static_assert(k % 32 == 0 && v % 32 == 0 && s % 32 == 0 && p % 32 == 0 && o % 32 == 0, "32-byte bases");
  static_assert(s_warp % 32 == 0 && p_warp % 32 == 0 && o_warp % 32 == 0, "32-byte warp bases");
  static_assert((16 * kLdQ * 2) % 32 == 0, "16-row steps of Q/K/V keep 32-byte alignment");
};

// Copies rows [r0, r0 + rows) of a [*, H, D] bf16 tensor (head `head`) into shared rows
// 0..rows-1 (stride ld), zero-filling rows r >= r_end. 16-byte vector loads (D % 8 == 0,
// base pointer 16-byte aligned: checked by the launcher).
template <int D>
__device__ __forceinline__ void load_rows(bf16* dst, int ld, const uint16_t* __restrict__ src, int64_t r0,
                                          int rows, int64_t r_end, int64_t H, int64_t head) {
  constexpr int kVec = D / 8;  // uint4 per row
  for (int idx = int(threadIdx.x); idx < rows * kVec; idx += kThreads) {
    const int r = idx / kVec, c = (idx - r * kVec) * 8;
    const int64_t row = r0 + r;
    uint4 val = make_uint4(0u, 0u, 0u, 0u);
    if (row < r_end) val = *reinterpret_cast<const uint4*>(src + (row * H + head) * D + c);
    *reinterpret_cast<uint4*>(dst + r * ld + c) = val;
  }
}

template <int D>
__global__ void __launch_bounds__(kThreads)
    flash_attention_kernel(const uint16_t* __restrict__ q, const uint16_t* __restrict__ k,
                           const uint16_t* __restrict__ v, uint16_t* __restrict__ out, int64_t T, int64_t Hq,
                           int64_t Hkv, int64_t q_offset, float scale, int64_t group) {
  using L = Layout<D>;
  constexpr int kLdQ = L::kLdQ, kLdO = L::kLdO;
  extern __shared__ __align__(128) unsigned char smem[];
  bf16* Qs = reinterpret_cast<bf16*>(smem + L::q);  // [kBM][kLdQ]
  bf16* Ks = reinterpret_cast<bf16*>(smem + L::k);  // [kBN][kLdQ]
  bf16* Vs = reinterpret_cast<bf16*>(smem + L::v);  // [kBN][kLdQ]
  const int warp = int(threadIdx.x >> 5), lane = int(threadIdx.x & 31);
  float* Sw = reinterpret_cast<float*>(smem + L::s + warp * L::s_warp);  // [16][kLdS]
  bf16* Pw = reinterpret_cast<bf16*>(smem + L::p + warp * L::p_warp);    // [16][kLdP]
  float* Ow = reinterpret_cast<float*>(smem + L::o + warp * L::o_warp);  // [16][kLdO]

  // The last query tiles have the most keys: start them first.
  const int64_t t0 = (int64_t(gridDim.x) - 1 - int64_t(blockIdx.x)) * kBM;
  const int64_t h = blockIdx.y, kvh = h / group;
  const int64_t t_end = (t0 + kBM < T ? t0 + kBM : T);  // block's queries: [t0, t_end)
  const int64_t kv_end = q_offset + t_end;              // keys the block sees: [0, kv_end)

  load_rows<D>(Qs, kLdQ, q, t0, kBM, T, Hq, h);
  for (int i = lane; i < 16 * kLdO; i += 32) Ow[i] = 0.0f;

  // Softmax ownership: row r (of the warp's 16), columns c0 .. c0 + 31 of the key tile,
  // and output columns oc0 .. oc0 + D/2 - 1 of the row. Both lanes of a pair hold the
  // row's m and l.
  const int r = lane >> 1, c0 = (lane & 1) * 32, oc0 = (lane & 1) * (D / 2);
  const int64_t t_row = t0 + 16 * warp + r;  // may be >= T (a zero Q row; never stored)
  const int64_t lim = q_offset + t_row;      // last key the row sees (>= 0: key 0 always visible)
  const int64_t warp_lim = q_offset + t0 + 16 * warp + 15;  // last key any row of the warp sees
  float m_run = -INFINITY, l_run = 0.0f;

  for (int64_t s0 = 0; s0 < kv_end; s0 += kBN) {
    __syncthreads();  // every warp is done with the previous K/V tile (and Qs is visible below)
    load_rows<D>(Ks, kLdQ, k, s0, kBN, kv_end, Hkv, kvh);
    load_rows<D>(Vs, kLdQ, v, s0, kBN, kv_end, Hkv, kvh);
    __syncthreads();
    if (s0 > warp_lim) continue;  // warp-uniform: no row of this warp sees a key of the tile

    // ---- S = Q_w Kᵀ (16 x 64) ----
    {
      wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> a;
      wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::col_major> b;
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
#pragma unroll
      for (int jn = 0; jn < kBN / 16; ++jn) {
        wmma::fill_fragment(acc, 0.0f);
#pragma unroll
        for (int kk = 0; kk < D / 16; ++kk) {
          wmma::load_matrix_sync(a, Qs + (16 * warp) * kLdQ + 16 * kk, kLdQ);
          // Kᵀ as a col-major [D x 64] matrix: element (d, j) at Ks[j * kLdQ + d]
          wmma::load_matrix_sync(b, Ks + (16 * jn) * kLdQ + 16 * kk, kLdQ);
          wmma::mma_sync(acc, a, b, acc);
        }
        wmma::store_matrix_sync(Sw + 16 * jn, acc, kLdS, wmma::mem_row_major);
      }
    }
    __syncwarp();

    // ---- online softmax of the warp's rows ----
    {
      const float* srow = Sw + r * kLdS + c0;
      float mt = -INFINITY;
#pragma unroll 8
      for (int c = 0; c < 32; ++c)
        if (s0 + c0 + c <= lim) mt = fmaxf(mt, srow[c] * scale);
      mt = fmaxf(mt, __shfl_xor_sync(0xffffffffu, mt, 1));
      const float m_new = fmaxf(m_run, mt);
      // m_run = -inf only before the row's first visible key (tile 0 holds key 0, which every
      // row sees, so m_new is finite from then on); the guard keeps exp(-inf - -inf) out.
      const float alpha = m_run == -INFINITY ? 0.0f : expf(m_run - m_new);
      bf16* prow = Pw + r * kLdP + c0;
      float ps = 0.0f;
#pragma unroll 8
      for (int c = 0; c < 32; ++c) {
        float p = 0.0f;
        if (s0 + c0 + c <= lim) p = expf(srow[c] * scale - m_new);
        ps += p;
        prow[c] = __float2bfloat16_rn(p);
      }
      ps += __shfl_xor_sync(0xffffffffu, ps, 1);
      l_run = l_run * alpha + ps;
      m_run = m_new;
      float* orow = Ow + r * kLdO + oc0;
#pragma unroll 8
      for (int c = 0; c < D / 2; ++c) orow[c] *= alpha;
    }
    __syncwarp();

    // ---- O_w += P V (16 x D) ----
    {
      wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> a;
      wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::row_major> b;
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
#pragma unroll
      for (int n = 0; n < D / 16; ++n) {
        wmma::load_matrix_sync(acc, Ow + 16 * n, kLdO, wmma::mem_row_major);
#pragma unroll
        for (int kk = 0; kk < kBN / 16; ++kk) {
          wmma::load_matrix_sync(a, Pw + 16 * kk, kLdP);
          wmma::load_matrix_sync(b, Vs + (16 * kk) * kLdQ + 16 * n, kLdQ);
          wmma::mma_sync(acc, a, b, acc);
        }
        wmma::store_matrix_sync(Ow + 16 * n, acc, kLdO, wmma::mem_row_major);
      }
    }
    __syncwarp();
  }

  __syncwarp();
  if (t_row < T) {
    const float inv = l_run > 0.0f ? 1.0f / l_run : 0.0f;
    const float* orow = Ow + r * kLdO + oc0;
    uint16_t* dst = out + (t_row * Hq + h) * D + oc0;
#pragma unroll 8
    for (int c = 0; c < D / 2; ++c) dst[c] = __bfloat16_as_ushort(__float2bfloat16_rn(orow[c] * inv));
  }
}

template <int D>
void launch(const uint16_t* q, const uint16_t* k, const uint16_t* v, uint16_t* out, int64_t T, int64_t Hq,
            int64_t Hkv, int64_t q_offset, float scale, cudaStream_t s) {
  const size_t smem = Layout<D>::bytes;
  LOWBIT_CUDA_CHECK(
      cudaFuncSetAttribute(flash_attention_kernel<D>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
  const dim3 grid{unsigned((T + kBM - 1) / kBM), unsigned(Hq), 1u};
  flash_attention_kernel<D><<<grid, kThreads, smem, s>>>(q, k, v, out, T, Hq, Hkv, q_offset, scale, Hq / Hkv);
  LOWBIT_CUDA_LAUNCHED();
}

}  // namespace

void flash_attention_bf16(const uint16_t* q, const uint16_t* k, const uint16_t* v, uint16_t* out, int64_t T,
                          int64_t S, int64_t Hq, int64_t Hkv, int64_t D, int64_t q_offset, float scale,
                          cudaStream_t s) {
  auto require = [](bool ok, const char* what, int line) {
    if (!ok) fail("lowbit kernel", 0, "invalid argument", what, __FILE__, line);
  };
  require(T >= 0 && Hq >= 0 && Hkv > 0 && Hq % Hkv == 0,
          "flash_attention_bf16: query heads not a multiple of kv heads", __LINE__);
  require(D == 64 || D == 128, "flash_attention_bf16: head dim must be 64 or 128", __LINE__);
  require(q_offset >= 0 && q_offset + T <= S, "flash_attention_bf16: queries end past the keys", __LINE__);
  require(Hq <= 65535, "flash_attention_bf16: too many heads", __LINE__);
  require((T + kBM - 1) / kBM <= 2147483647, "flash_attention_bf16: too many queries", __LINE__);
  auto aligned16 = [](const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; };
  require(aligned16(q) && aligned16(k) && aligned16(v), "flash_attention_bf16: q, k, v must be 16-byte aligned",
          __LINE__);
  if (T == 0 || Hq == 0) return;
  if (D == 64)
    launch<64>(q, k, v, out, T, Hq, Hkv, q_offset, scale, s);
  else
    launch<128>(q, k, v, out, T, Hq, Hkv, q_offset, scale, s);
}

}  // namespace lowbit::cuda
