#include "nn/linear.h"

#include <cmath>
#include <cstring>

#include "core/error.h"
#include "quant/qgrid.h"

namespace lowbit {

void ActQuant::apply(float* x, int64_t rows, int64_t cols) const {
  if (on()) fake_quant_act(x, rows, cols, bits, groupsize, asym, clip);
}

Tensor Linear::weight_f32() const {
  if (W.defined()) return W.dtype() == DType::F32 ? W : W.to(DType::F32);
  LOWBIT_ASSERT(qw != nullptr);
  Tensor t = Tensor::empty({n_out, n_in});
  qw->dequantize(t.f32());
  return t;
}

const float* linear_input(const Linear& lin, const float* x, int64_t rows, bool act_quant, std::vector<float>& buf) {
  const bool q = act_quant && lin.aq.on();
  if (!lin.rot && !q) return x;
  buf.assign(x, x + rows * lin.in());
  if (lin.rot) lin.rot(buf.data(), rows, lin.in());
  if (q) lin.aq.apply(buf.data(), rows, lin.in());
  return buf.data();
}

void linear_product(Backend& be, const Linear& lin, const float* xin, int64_t rows, float* y) {
  const float* b = lin.bias.defined() ? lin.bias.data<float>() : nullptr;
  if (lin.W.defined()) {
    be.linear(xin, rows, lin.W, y, b);
    return;
  }
  // Packed: dequantize the whole weight into a reused scratch buffer (one layer's worth).
  LOWBIT_ASSERT(lin.qw != nullptr);
  thread_local std::vector<float> scratch;
  scratch.resize(size_t(lin.out() * lin.in()));
  lin.qw->dequantize(scratch.data());
  be.linear(xin, rows, Tensor::wrap(scratch.data(), {lin.out(), lin.in()}, DType::F32, nullptr), y, b);
}

}  // namespace lowbit
