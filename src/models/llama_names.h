// Every tensor name of the LLaMA family (HF LlamaForCausalLM layout), spelled once.
#pragma once
#include <cstdint>
#include <string>

#include <fmt/format.h>

namespace lowbit::llama_names {

enum class Role { attn_norm, mlp_norm, q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj };

inline const char* role_suffix(Role r) {
  switch (r) {
    case Role::attn_norm: return "input_layernorm";
    case Role::mlp_norm: return "post_attention_layernorm";
    case Role::q_proj: return "self_attn.q_proj";
    case Role::k_proj: return "self_attn.k_proj";
    case Role::v_proj: return "self_attn.v_proj";
    case Role::o_proj: return "self_attn.o_proj";
    case Role::gate_proj: return "mlp.gate_proj";
    case Role::up_proj: return "mlp.up_proj";
    case Role::down_proj: return "mlp.down_proj";
  }
  return "?";
}

// Module name of a layer's part, e.g. "model.layers.3.self_attn.q_proj" (append ".weight" for the tensor).
inline std::string module(int64_t layer, Role r) { return fmt::format("model.layers.{}.{}", layer, role_suffix(r)); }
// The K-cache activation site of a layer (auto-asym statistics, decisions in checkpoints).
inline std::string k_cache_site(int64_t layer) { return fmt::format("model.layers.{}.self_attn.k_cache", layer); }

inline constexpr const char* kEmbed = "model.embed_tokens.weight";
inline constexpr const char* kFinalNorm = "model.norm.weight";
inline constexpr const char* kLmHead = "lm_head";

}  // namespace lowbit::llama_names
