// Every tensor name of the CLIP vision tower (HF CLIPVisionModel layout), spelled once.
// Names are relative to the tower's root, which differs per checkpoint layout
// ("vision_tower.", "vision_tower.vision_model.", "model.vision_tower.vision_model.", ...):
// callers prepend it.
#pragma once
#include <cstdint>
#include <string>

#include <fmt/format.h>

namespace lowbit::clip_names {

enum class Role { ln1, ln2, q_proj, k_proj, v_proj, out_proj, fc1, fc2 };

inline const char* role_suffix(Role r) {
  switch (r) {
    case Role::ln1: return "layer_norm1";
    case Role::ln2: return "layer_norm2";
    case Role::q_proj: return "self_attn.q_proj";
    case Role::k_proj: return "self_attn.k_proj";
    case Role::v_proj: return "self_attn.v_proj";
    case Role::out_proj: return "self_attn.out_proj";
    case Role::fc1: return "mlp.fc1";
    case Role::fc2: return "mlp.fc2";
  }
  return "?";
}

// Module name of an encoder layer's part, e.g. "<root>encoder.layers.3.self_attn.q_proj".
inline std::string module(const std::string& root, int64_t layer, Role r) {
  return fmt::format("{}encoder.layers.{}.{}", root, layer, role_suffix(r));
}

inline constexpr const char* kClassEmbedding = "embeddings.class_embedding";        // [d]
inline constexpr const char* kPatchEmbedding = "embeddings.patch_embedding";        // conv [d, C, p, p]
inline constexpr const char* kPositionEmbedding = "embeddings.position_embedding";  // [P + 1, d]
inline constexpr const char* kPreNorm = "pre_layrnorm";  // (sic: HF's spelling)
inline constexpr const char* kPostNorm = "post_layernorm";

}  // namespace lowbit::clip_names
