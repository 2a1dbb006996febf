// The skew-based QuaRot's symmetric/asymmetric choice ("seed" auto-asym rule,
// K1ta141k/QuaRot_extended skew_based/, ../shared/docs/seed-protocols.md §5).
//
// For one linear, over the n values x of its OUTPUT on the first calibration window
// (flattened, after rotation and weight quantization, activation quantizers off):
//   μ    = Σx / n
//   σ    = sqrt(Σ(x − μ)² / (n − 1))                     (unbiased, torch.std)
//   skew = (Σ(x − μ)³ / n) / (σ³ + 1e-6)
//   asym ⇔ |μ| / (σ + 1e-6) > t1  or  |skew| > t2      (the seed: t1 = 0.1, t2 = 0.2)
// The decision sets that linear's INPUT quantizer (the seed decides a layer's input
// quantizer from its output distribution), and v_proj's also sets the V-cache quantizer;
// K stays symmetric. Computed in double (the seed computes in the model dtype, which for
// fp16 models can overflow the cubes; lowbit does not reproduce that).
#pragma once
#include <cstdint>

namespace lowbit {

struct SeedSkewStats {
  double mean = 0, std = 0, skew = 0;
  int64_t n = 0;
};

// Two-pass statistics of x[0:n] in double (n >= 2 for a defined std; n < 2 gives std 0).
SeedSkewStats seed_skew_stats(const float* x, int64_t n);
// The seed's comparison (strict > on both, with its +1e-6 guards).
bool seed_choose_asym(const SeedSkewStats& s, double t1, double t2);

}  // namespace lowbit
