// Launchers of lowbit's own CUDA kernels (kernels.cu, attention.cu, flash_attention.cu, hadamard.cu,
// act_quant.cu). All pointers are DEVICE pointers; every launch goes on the given
// stream and is checked (LOWBIT_CUDA_LAUNCHED). bf16 / f16 tensors are passed as
// uint16_t* (their bits) so this header stays plain C++ for g++ callers.
// Each launcher computes exactly what the CPU backend's / CPU function's namesake
// computes (references named per function); tests/test_cuda_ops.cpp holds the
// cross-backend table that checks it.
#pragma once
#include <cstdint>

#include <cuda_runtime_api.h>

namespace lowbit::cuda {

// Storage type of a weight / embedding table (matches the file's dtype).
enum class WType : int { F32 = 0, F16 = 1, BF16 = 2 };

// y[r,:] = x[r,:] / sqrt(mean(x[r,:]²) + eps) * w      (w may be null)   ref: Backend::rmsnorm
void rmsnorm(const float* x, const float* w, float* y, int64_t rows, int64_t dim, float eps, cudaStream_t s);
// Same, output rounded to bf16 (the next GEMM's input).
void rmsnorm_bf16(const float* x, const float* w, uint16_t* y, int64_t rows, int64_t dim, float eps,
                  cudaStream_t s);

// Rotate-half RoPE in place, x: [T, H, D]; angle = pos[t] * inv_freq[j], j < D/2.   ref: Backend::rope
void rope(float* x, int64_t T, int64_t H, int64_t D, const int32_t* pos, const float* inv_freq, cudaStream_t s);

// out[i] = silu(gate[i]) * up[i]  (out may alias gate)                               ref: Backend::silu_mul
void silu_mul(const float* gate, const float* up, float* out, int64_t n, cudaStream_t s);
// Same, output rounded to bf16.
void silu_mul_bf16(const float* gate, const float* up, uint16_t* out, int64_t n, cudaStream_t s);
// x[i] += y[i]
void add_inplace(float* x, const float* y, int64_t n, cudaStream_t s);

// Conversions (round to nearest even for f32 → bf16/f16, like convert_from_f32 in core/dtype).
void f32_to_bf16(const float* x, uint16_t* y, int64_t n, cudaStream_t s);
void f32_to_f16(const float* x, uint16_t* y, int64_t n, cudaStream_t s);
void to_f32(const void* x, WType t, float* y, int64_t n, cudaStream_t s);  // any WType → f32 (exact)
// Round x through f16 and back, in place (QuaRot's fp32_had=false Hadamard in/out).
void round_f16_inplace(float* x, int64_t n, cudaStream_t s);

// x[t,:] = table[ids[t], :] as f32; table [vocab, d] of type t. ids are trusted (checked on the host).
void embed(const void* table, WType t, const int32_t* ids, int64_t T, int64_t d, float* x, cudaStream_t s);

// Causal GQA attention, f32, flash-style: K/V tiles through shared memory with an online
// softmax, never a T×S score matrix.                                                 ref: Backend::attention
// q: [T, Hq, D]; k, v: [S, Hkv, D]; query t sits at position q_offset + t and sees keys
// 0..q_offset+t. out: [T, Hq, D]. D <= 256.
void attention(const float* q, const float* k, const float* v, float* out, int64_t T, int64_t S, int64_t Hq,
               int64_t Hkv, int64_t D, int64_t q_offset, float scale, cudaStream_t s);

// Causal GQA attention on bf16 q [T, Hq, D], k, v [S, Hkv, D] (row strides Hq·D / Hkv·D),
// out bf16 [T, Hq, D]: one fused tensor-core kernel (flash_attention.cu; wmma bf16 MMAs,
// f32 accumulation). Query t at position q_offset + t sees keys 0..q_offset+t (keys past
// the last query's are never read); scores·scale, softmax in f32 (online, flash-style), P
// rounded to bf16 for the P·V product, output rounded to bf16 once. D ∈ {64, 128}; q, k, v
// 16-byte aligned.                                   ref: Backend::attention on bf16-rounded inputs
void flash_attention_bf16(const uint16_t* q, const uint16_t* k, const uint16_t* v, uint16_t* out, int64_t T,
                          int64_t S, int64_t Hq, int64_t Hkv, int64_t D, int64_t q_offset, float scale,
                          cudaStream_t s);

// Row softmax for the tiled tensor-core attention path: scores [B, rows, ld] f32 (the
// first `cols` columns valid); row r of every batch sees columns c <= row_offset + r
// (causal; columns beyond are written as 0). P[b, r, c] = softmax(scale · scores)[c],
// rounded to bf16, same layout [B, rows, ld].
void causal_softmax_bf16(const float* scores, uint16_t* P, int64_t B, int64_t rows, int64_t cols, int64_t ld,
                         int64_t row_offset, float scale, cudaStream_t s);

// Per-row negative log-likelihood: nll[t] = logsumexp(logits[t,:]) - logits[t, target[t]],
// accumulated in double. logits [T, V] f32.                       ref: eval/perplexity (log-softmax)
void nll_rows(const float* logits, const int32_t* target, int64_t T, int64_t V, double* nll, cudaStream_t s);

// Dynamic per-token (and per-group) fake quantization in place, x [rows, cols]; exactly
// fake_quant_act in quant/qgrid.cpp (sym/asym, clip ratio, groupsize -1 = whole row).
void act_quant(float* x, int64_t rows, int64_t cols, int bits, int64_t groupsize, bool asym, float clip,
               cudaStream_t s);

// Orthonormal Hadamard transform of every row, x [rows, n], n = K·P (P a power of two):
// x ← x·H exactly as Hadamard::apply (quant/hadamard.h): an FWHT on each contiguous block of
// P, then the K×K mix across blocks with HKt (device, K×K row-major, = Hadamard::HKt) — skipped
// when K == 1. `tmp` is device scratch of rows·n floats (used only when K > 1).
void hadamard_rows(float* x, int64_t rows, int64_t n, int64_t P, int64_t K, const float* HKt, float* tmp,
                   cudaStream_t s);

}  // namespace lowbit::cuda
