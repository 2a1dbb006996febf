// Pointwise activations (see activation.h). Each is evaluated in double and rounded once,
// so the result is the correctly rounded f32 of the formula for an f32 input.
#include "nn/activation.h"

#include <cmath>

#include "core/error.h"

namespace lowbit {

Activation parse_activation(const std::string& name, const std::string& key, const std::string& path) {
  if (name == "quick_gelu") return Activation::quick_gelu;
  if (name == "gelu") return Activation::gelu;
  if (name == "gelu_pytorch_tanh" || name == "gelu_new") return Activation::gelu_tanh;
  throw ConfigError(fmt::format("{}: unsupported {} '{}' (supported: quick_gelu, gelu, gelu_pytorch_tanh, gelu_new)",
                                path, key, name));
}

const char* activation_name(Activation a) {
  switch (a) {
    case Activation::quick_gelu: return "quick_gelu";
    case Activation::gelu: return "gelu";
    case Activation::gelu_tanh: return "gelu_pytorch_tanh";
  }
  return "?";
}

void apply_activation(Activation a, float* x, int64_t n) {
  switch (a) {
    case Activation::quick_gelu:
#pragma omp parallel for schedule(static) if (n > (1 << 16))
      for (int64_t i = 0; i < n; ++i) {
        const double v = x[i];
        x[i] = float(v / (1.0 + std::exp(-1.702 * v)));  // x · σ(1.702 x)
      }
      return;
    case Activation::gelu:
#pragma omp parallel for schedule(static) if (n > (1 << 16))
      for (int64_t i = 0; i < n; ++i) {
        const double v = x[i];
        x[i] = float(0.5 * v * (1.0 + std::erf(v * 0.70710678118654752440)));
      }
      return;
    case Activation::gelu_tanh:
#pragma omp parallel for schedule(static) if (n > (1 << 16))
      for (int64_t i = 0; i < n; ++i) {
        const double v = x[i];
        x[i] = float(0.5 * v * (1.0 + std::tanh(0.79788456080286535588 * (v + 0.044715 * v * v * v))));
      }
      return;
  }
}

}  // namespace lowbit
