// What the rest of lowbit sees of the CUDA backend. Always compiled: in a build
// without CUDA (LOWBIT_HAVE_CUDA undefined) available() is false and everything
// else throws DeviceError, so callers need no #ifdefs.
#pragma once
#include <cstdint>
#include <memory>
#include <string>

#include "backend/backend.h"
#include "quant/gptq_solver.h"

namespace lowbit {
class LlamaModel;
class LlamaLayer;
class Block;
struct BlockState;
struct BlockCtx;
namespace cuda {

bool compiled();                 // built with the CUDA backend
bool available();                // compiled and a CUDA device can be opened
std::string unavailable_reason();  // why not (for the one-line error)
std::string describe();          // "NVIDIA H200 (sm_90, 132 SMs, 139.8 GiB)"

// The CUDA implementation of the Backend interface. Pointers passed to it are host
// pointers (the same contract as the CPU backend): heavy ops (GEMM, linear, attention,
// Gram matrices, Cholesky family) run on the device with their operands copied in and
// out; the rest is delegated to the CPU backend (see cuda_backend.cpp for which and why).
Backend& backend();

// Device memory statistics of the caching allocator (bytes).
struct MemStats {
  int64_t in_use = 0, peak = 0, reserved = 0;
};
MemStats mem_stats();
void reset_peak();

// Host-pointer wrappers of the device kernels the quantized forward uses on --device cuda
// (x is copied in, transformed, copied back):
//   hadamard_rows: x [rows, n] ← x·H for H = (H_K ⊗ H_P)/√n given as K×K `M` (= Hadamard::HKt, or HK
//   for the transpose) — Hadamard::apply's arithmetic; act_quant: fake_quant_act's.
void hadamard_rows_host(float* x, int64_t rows, int64_t n, int64_t P, int64_t K, const float* M);
void act_quant_host(float* x, int64_t rows, int64_t cols, int bits, int64_t groupsize, bool asym, float clip);

// Device-held running Hessian mean (HessianAccumulator on --device cuda):
//   H ← a·H + b·XᵀX, X [rows, n] a host f32 matrix; the Gram in f32, H in f64.
struct DeviceHessian;
std::shared_ptr<DeviceHessian> make_device_hessian(int64_t n);
void device_hessian_add(DeviceHessian& h, const float* X, int64_t rows, double a, double b);
void device_hessian_download(const DeviceHessian& h, double* H);  // [n, n] row-major

// Device-resident calibration steps (backend/cuda/cuda_block.cpp). Each copies the block
// state in once and out once and runs everything between on the GPU, with the weights
// from the backend's cache. Both return false, having done nothing, where the device path
// does not apply (then the caller runs the host path): a KV cache, an observer, a start
// position other than 0, biases, or a linear without a float weight.
//   llama_advance:  LlamaLayer::advance(g, st, ctx).
//   block_group_gram: group g's input (norm, online transform, activation quantizer when
//                     act_quant) folded into h (H ← a·H + b·XᵀX); only LlamaLayer blocks.
bool llama_advance(const LlamaLayer& L, int g, BlockState& st, const BlockCtx& ctx);
bool block_group_gram(const Block& blk, int g, const BlockState& st, bool act_quant, DeviceHessian& h, double a,
                      double b);

// GPTQ / GPTAQ on the device (backend/cuda/gptq_cuda.*): the same contract and result as
// lowbit::gptq_quantize (quant/gptq_solver.h), W a host pointer [out, in].
GptqResult gptq_quantize(const float* W, int64_t out, int64_t in, const HessianAccumulator& stats,
                         const GptqConfig& cfg, const std::string& name = "linear");
// RTN on the device: lowbit::quantize_rtn's result (quant/rtn_quant.h), W a host pointer.
QuantizedWeight quantize_rtn(const float* W, int64_t out, int64_t in, const QuantSpec& spec);

}  // namespace cuda
}  // namespace lowbit
