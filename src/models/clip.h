// ViT vision towers of the CLIP family: CLIP (HF CLIPVisionModel, the image encoder of LLaVA)
// and SigLIP (HF SiglipVisionTransformer and Idefics3/SmolVLM's vision model, which has the
// same layer and names), one class with switches for where they differ.
//
//   patches  p_i = unfold(pixels)[i]  [P, C·p·p], P = (image_size/p)², patch-major, row by row
//   CLIP:    x_0 = [class_embedding ; p_i · W_patchᵀ] + position_embedding   [P + 1, d]
//            h_0 = LayerNorm_pre(x_0)                   (hidden_states[0])
//   SigLIP:  h_0 = p_i · W_patchᵀ + b_patch + position_embedding             [P, d]
//            (no class token, no pre-layernorm)
//   h_k      = ClipLayer_k(h_{k−1}), k = 1..L       (hidden_states[k])
//   SigLIP's last_hidden_state = post_layernorm(h_L) (forward_output); CLIP's post_layernorm
//   only normalizes the pooled class token, which LLaVA never reads.
// The patch-embedding convolution (stride = kernel = p) is the GEMM of the unfolded patches
// with the conv weight viewed as [d, C·p·p]. LLaVA takes hidden_states at
// vision_feature_layer (−2: the output of layer L−1), so the tower runs only as many layers
// as the selected states need. Both use full (unmasked) attention over all positions;
// Idefics3's position ids equal 0..P−1 when every patch is real (the only case here).
// The MLP activation comes from hidden_act (quick_gelu for CLIP, gelu_pytorch_tanh for SigLIP).
//
// A ClipLayer is a Block (models/block.h), so the quantization driver walks the vision
// tower like the decoder.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "backend/backend.h"
#include "core/tensor.h"
#include "models/block.h"
#include "models/llama.h"  // ForwardOptions
#include "models/weights.h"
#include "nn/activation.h"

namespace lowbit {

// vision_config of a CLIP-family vision tower. model_type picks the family and HF's defaults:
//   clip_vision_model | clip                          CLIP  (class token, pre-layernorm, conv without bias)
//   siglip_vision_model | idefics3_vision | smolvlm_vision   SigLIP (none of those, conv bias, post-layernorm)
struct ClipVisionConfig {
  std::string model_type = "clip_vision_model";
  bool class_token = true;   // a learned class embedding in front of the patches
  bool pre_norm = true;      // pre_layrnorm on the embeddings
  bool patch_bias = false;   // the patch convolution has a bias
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_layers = 0;
  int64_t num_heads = 0;
  int64_t num_channels = 3;
  int64_t image_size = 0;
  int64_t patch_size = 0;
  double layer_norm_eps = 1e-5;
  Activation hidden_act = Activation::quick_gelu;

  // Parses and validates (ConfigError naming `path` and the key).
  static ClipVisionConfig from_json(const nlohmann::json& j, const std::string& path);
  int64_t head_dim() const { return hidden_size / num_heads; }
  int64_t grid() const { return image_size / patch_size; }          // patches per side (the conv drops a remainder)
  int64_t num_patches() const { return grid() * grid(); }           // P
  int64_t num_positions() const { return num_patches() + (class_token ? 1 : 0); }  // tokens: [CLS +] P
  bool is_siglip() const { return !class_token; }
  int64_t patch_dim() const { return num_channels * patch_size * patch_size; }  // C·p·p
};

// y = LayerNorm(x)·w + b per row of x [rows, dim] (biased variance, HF/PyTorch semantics;
// mean and variance summed in double lanes, the normalization in f32).
void layer_norm(const float* x, const float* w, const float* b, float* y, int64_t rows, int64_t dim, float eps);

// Full (non-causal) multi-head attention: q, k, v [T, H, D] → out [T, H, D] (host memory),
// out_t = Σ_s softmax_s(q_t·k_s · scale) v_s. Per head two CPU GEMMs around a row softmax
// (S = scale·Q_h K_hᵀ [T, T], O_h = softmax(S) V_h), heads in parallel on the OpenMP threads.
void full_attention(const float* q, const float* k, const float* v, float* out, int64_t T, int64_t H, int64_t D,
                    float scale);

// h = x + out_proj(Attn(q_proj(n1), k_proj(n1), v_proj(n1))),  n1 = LayerNorm1(x)
// x' = h + fc2(act(fc1(n2))),                                   n2 = LayerNorm2(h)
// Groups: {q, k, v} → {out_proj} → {fc1} → {fc2}. Boundaries: 0 {x}, 1 {x, a = attention
// output [T, d]}, 2 {x = h}, 3 {x = h, a = act(fc1(n2)) [T, f]}, 4 {x'}.
class ClipLayer : public Block {
 public:
  int64_t index = 0;
  int64_t d = 0, f = 0, H = 0, D = 0;
  float eps = 1e-5f;
  Activation act = Activation::quick_gelu;
  Backend* backend = &default_backend();

  Tensor ln1_w, ln1_b, ln2_w, ln2_b;  // [d] f32
  Linear q_proj, k_proj, v_proj, out_proj, fc1, fc2;

 private:
  template <class Self>  // Self = ClipLayer or const ClipLayer
  static auto groups_of(Self& s) {
    using P = decltype(&s.q_proj);
    return std::vector<std::vector<P>>{{&s.q_proj, &s.k_proj, &s.v_proj}, {&s.out_proj}, {&s.fc1}, {&s.fc2}};
  }

 public:
  static ClipLayer shaped(const ClipVisionConfig& cfg, int64_t index);

  std::string kind() const override { return "clip_encoder"; }
  std::unique_ptr<Block> clone() const override { return std::make_unique<ClipLayer>(*this); }
  std::vector<std::vector<const Linear*>> groups() const override { return groups_of(*this); }
  std::vector<std::vector<Linear*>> groups() override { return groups_of(*this); }
  const float* group_input(int g, const BlockState& st, std::vector<float>& buf) const override;
  void advance(int g, BlockState& st, const BlockCtx& ctx) const override;
  int64_t state_floats(int boundary, int64_t T) const override;
};

class ClipVisionTower {
 public:
  ClipVisionConfig cfg;
  std::string root;         // tensor-name prefix of the tower in its file, e.g. "vision_tower."
  Linear patch_embed;       // conv weight viewed as [d, C·p·p]; bias [d] f32 for SigLIP
  Tensor class_embedding;   // [d] f32 (CLIP only)
  Tensor position_embedding;  // [num_positions, d] f32
  Tensor pre_norm_w, pre_norm_b;    // [d] f32 (CLIP only)
  Tensor post_norm_w, post_norm_b;  // [d] f32 (undefined when the file has none)
  std::vector<ClipLayer> layers;
  Backend* backend = &default_backend();

  // Loads the tower whose tensors are named `root` + clip_names (checked against cfg).
  static ClipVisionTower from_source(const ClipVisionConfig& cfg, const WeightSource& src, const std::string& root);

  // The conv's input rows for one image px [C, S, S]: unfold(px) [P, C·p·p], patch (gy, gx)
  // row-major, column (c, ky, kx) as the conv weight's layout.
  std::vector<float> unfold(const float* px) const;
  // hidden_states[0] for one image px [C, S, S] (S = image_size) → x [T, d], T = num_positions().
  void embed(const float* px, float* x) const;
  // Runs the embeddings and layers 1..upto on one image; opt.hidden_hook sees hidden_states[k]
  // for k = 0..upto ([T, d] each); opt.tower_hook sees "pixels" (px as [C, S·S]) then "vision"
  // (hidden_states[0], [T, d]). Returns hidden_states[upto].
  std::vector<float> forward(const float* px, int64_t upto, const ForwardOptions& opt = {}) const;
  // All L layers, then post_layernorm: HF's last_hidden_state of a SigLIP tower ([T, d]).
  // ShapeError when the tower has no post_layernorm.
  std::vector<float> forward_output(const float* px, const ForwardOptions& opt = {}) const;

  std::vector<Block*> blocks();
};

}  // namespace lowbit
