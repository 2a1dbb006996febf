// QuaRot rotations (Ashkboos et al. 2024), fused into a LlamaModel's weights
// plus the online transforms that must run at inference.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "models/llama.h"
#include "quant/hadamard.h"

namespace lowbit {

struct RotationConfig {
  bool rotate = false;     // R1 (+ R2, R4 and, when K is quantized, R3)
  uint64_t seed = 0;       // random signs of R1 ("hadamard") or its Gaussian draw ("random")
  bool online_qk = false;  // R3: online Hadamard on Q and K after RoPE (set when k_bits < 16)
  std::string mode = "hadamard";  // R1: "hadamard" (diag(s)·H_d) | "random" (Haar orthogonal Q)
};

// Throws ArgError naming --rotate_mode unless mode is "hadamard" or "random".
void check_rotate_mode(const std::string& mode);

// R1 of mode "random": Haar-distributed orthogonal Q [d, d], row-major f64.
// G[i][j] = the (i·d + j)-th normal() of NormalRng(seed); G = Q·R by Householder QR,
// then Q[:, j] *= sign(R[j][j]), i.e. the QR with positive diag(R).
std::vector<double> random_orthogonal_matrix(int64_t d, uint64_t seed);

// The online half of the rotation, kept with the model (sizes fixed by the config).
struct OnlineRotations {
  std::shared_ptr<Hadamard> head;   // H_D     (R2 offline part, R3 online)
  std::shared_ptr<Hadamard> heads;  // H_Hq    (cross-head part applied before o_proj)
  std::shared_ptr<Hadamard> ffn;    // H_f     (R4, before down_proj)
  std::shared_ptr<Hadamard> hidden; // H_d     (R1 base in mode "hadamard": R1 = diag(s)·H_d)
};

// Folds every RMSNorm weight into the linears that read its output, leaving the
// norms scale-free (undefined weight tensors). Unties a tied lm_head first.
void fuse_norms(LlamaModel& m);

// Fuses R1 (residual stream), R2 (per-head on v_proj/o_proj) and R4 (down_proj
// input) into the weights, after fuse_norms. Weights become f32. R1 per cfg.mode
// (checked first: a bad mode throws before the model is touched); R2/R3/R4 are
// Hadamards in both modes.
// Returns the transforms the forward must apply online (see install_online_rotations).
OnlineRotations rotate_model(LlamaModel& m, const RotationConfig& cfg);

// What else writes into the decoder's residual stream (a VLM: the projector's last linear,
// whose output rows are image-token embeddings, and LLaVA-NeXT's image_newline): rotated as the
// embedding rows are, so image tokens stay exact: W ← R1ᵀ·W, b ← b·R1 for each linear;
// v ← v·R1 for each row tensor ([n, d] or [d], made f32).
struct StreamWriters {
  std::vector<Linear*> linears;
  std::vector<Tensor*> rows;
};
OnlineRotations rotate_model(LlamaModel& m, const RotationConfig& cfg, const StreamWriters& writers);

// Rebuilds the online transforms for a model whose weights were rotated already
// (a saved checkpoint); same sizes and seed give the same matrices.
OnlineRotations make_online_rotations(const LlamaConfig& cfg, uint64_t seed);

// x[rows, Hq*D] <- x · (H_Hq ⊗ I_D): the cross-head part of o_proj's input rotation.
void apply_cross_head(const Hadamard& H_heads, float* x, int64_t rows, int64_t heads, int64_t head_dim);
// x[rows, n_blocks*D] <- each D-block · H_D.
void apply_per_block(const Hadamard& H, float* x, int64_t rows, int64_t cols);

}  // namespace lowbit
