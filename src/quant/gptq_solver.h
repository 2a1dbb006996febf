// GPTQ (Frantar et al., 2023) and GPTAQ / "GPTQv2" (Li et al., 2025) as
// functions of (W, calibration statistics, config). See gptq_solver.cpp.
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "quant/qgrid.h"

namespace lowbit {

// Running calibration statistics of one linear's input (x: columns of X, dim n):
//   H     = 2/N Σ x xᵀ            [n, n]
//   dXXᵀ  = 2/N Σ (x̃ - x) xᵀ      [n, n]  (GPTAQ; x̃ = the full-precision model's input)
// kept as running means like the reference (rescaled as tokens arrive), in f64.
namespace cuda {
struct DeviceHessian;  // backend/cuda_api.h
}

struct HessianAccumulator {
  explicit HessianAccumulator(int64_t n_in = 0) : n(n_in), H(static_cast<size_t>(n_in * n_in), 0.0) {}
  int64_t n;
  std::vector<double> H, dXXT;
  int64_t tokens = 0;
  void add(const float* X, int64_t rows);                     // X: [rows, n]
  void add_v2(const float* X, const float* Xfp, int64_t rows);  // both [rows, n]
  // On --device cuda, H is accumulated on the GPU (one f32 Gram per batch folded into an
  // f64 running mean there, like the host path) and reaches `H` only here; the solvers
  // refuse statistics that were not finalized.
  void finalize();
  bool pending_on_device() const { return dev != nullptr; }
  std::shared_ptr<cuda::DeviceHessian> dev;
};

struct GptqConfig {
  QuantSpec spec;
  double percdamp = 0.01;
  int64_t blocksize = 128;
  bool act_order = false;
  bool static_groups = false;
  bool use_v2 = false;
  double alpha = 0.25;
};

struct GptqResult {
  QuantizedWeight weight;
  double loss = 0;          // Σ (w - q)² / [U]_jj²  (GPTQ's reported error)
  double percdamp_used = 0; // after automatic increases
};

// The preparation the CPU solver and the CUDA one (backend/cuda/gptq_cuda.cpp) share:
// inputs checked, dead inputs (diag H <= 0: never fire) get weight 0 and diag 1, the
// damping base, the processing order and H in it, the result shaped with its g_idx.
struct GptqSetup {
  int64_t out = 0, n = 0;
  std::vector<double> W;      // [out, n] original column order, dead inputs' columns zeroed
  std::vector<double> Hp;     // [n, n] P H Pᵀ (H in processing order)
  std::vector<int64_t> perm;  // processing position → original column (act_order: descending diag H)
  double mean_diag = 0;       // damping λ = percdamp · mean(diag H)
  int64_t gs = 0, ngroups = 0;  // group size (n per channel); the last group may be shorter
  bool dynamic_groups = false;  // groups fitted when the column loop reaches them
  QuantizedWeight q;          // codes 0, grids (1, 0), g_idx of every column
};
GptqSetup gptq_setup(const float* W, int64_t out, int64_t in, const HessianAccumulator& stats, const GptqConfig& cfg,
                     const std::string& name);
// Tries factor(λ) with λ = percdamp·mean_diag, raising percdamp ×10 (six times at most,
// warning each time) while it fails; returns the percdamp that worked.
double gptq_damped(const GptqSetup& su, const GptqConfig& cfg, const std::string& name,
                   const std::function<bool(double lambda)>& factor);
// End of the lazy block that starts at column i1 (at most B columns). A group fitted inside
// the block must see the updated weights of all its columns, so with dynamic groups the
// block ends where a group would start inside it and run past it.
int64_t gptq_block_end(const GptqSetup& su, int64_t i1, int64_t B);
// GPTAQ's dXXᵀ in processing order, columns of dead inputs zeroed: [n, n].
std::vector<double> gptaq_dxxt(const GptqSetup& su, const HessianAccumulator& stats);

// W: [out, in] f32. `name` appears in warnings and errors.
GptqResult gptq_quantize(const float* W, int64_t out, int64_t in, const HessianAccumulator& stats,
                         const GptqConfig& cfg, const std::string& name = "linear");

}  // namespace lowbit
