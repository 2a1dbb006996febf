// Pointwise activations of the vision towers and projectors, by their HF config names:
//   quick_gelu                       x · σ(1.702 x)                       (CLIP)
//   gelu                             x · Φ(x) = x/2 · (1 + erf(x/√2))     (LLaVA projector)
//   gelu_pytorch_tanh | gelu_new     x/2 · (1 + tanh(√(2/π) (x + 0.044715 x³)))   (SigLIP)
// (The LLaMA decoder's SiLU·up lives in the backend as silu_mul.)
#pragma once
#include <cstdint>
#include <string>

namespace lowbit {

enum class Activation { quick_gelu, gelu, gelu_tanh };

// The activation named `name` in config key `key` of `path`; ConfigError naming all three otherwise.
Activation parse_activation(const std::string& name, const std::string& key, const std::string& path);
const char* activation_name(Activation a);
// x ← act(x), n values, in place.
void apply_activation(Activation a, float* x, int64_t n);

}  // namespace lowbit
