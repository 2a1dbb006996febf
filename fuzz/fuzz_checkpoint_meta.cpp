// libFuzzer target: the metadata of a quantized checkpoint (lowbit_quant.json text)
// through parse_quant_meta — what load_quantized reads first — and then, for each
// linear it lists, PackedWeight::validate and dequantize on small synthetic tensors
// built from the listed bits/sym and the config's groupsize (as load_quantized does
// with the tensors of model.safetensors). A hash of the linear's name picks one
// corruption of the tensors (wrong shape, dtype, g_idx / zero point out of range,
// a non-finite scale) or none, so fuzzed names reach every rejection in validate.
// Malformed input must end in a lowbit::Error — never another exception, a crash, a
// hang, a huge allocation or a sanitizer report (ASan/UBSan on).
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <limits>
#include <string>
#include <string_view>
#include <vector>

#include "core/error.h"
#include "core/tensor.h"
#include "nn/linear.h"
#include "quant/checkpoint_meta.h"

namespace {

using lowbit::DType;
using lowbit::PackedWeight;
using lowbit::Tensor;

// One synthetic [out, in] packed weight for a listed linear, corrupted by `how` (0: not at all).
PackedWeight make_weight(int bits, bool sym, int64_t groupsize, int how) {
  PackedWeight p;
  p.bits = bits;
  p.sym = sym;
  p.groupsize = groupsize;
  p.out = 3;
  p.in = 10;
  const int64_t gs = groupsize > 0 && groupsize <= p.in ? groupsize : p.in;
  p.ngroups = (p.in + gs - 1) / gs;
  p.qweight = Tensor::zeros({p.out, p.row_bytes() + (how == 1 ? 1 : 0)}, DType::U8);
  uint8_t* q = p.qweight.data<uint8_t>();
  for (int64_t i = 0; i < p.qweight.numel(); ++i) q[i] = uint8_t(37 * i + 11);
  p.scales = Tensor::zeros({p.out, p.ngroups}, how == 2 ? DType::I32 : DType::F32);
  p.qzeros = Tensor::zeros({p.out, p.ngroups}, DType::I32);
  p.g_idx = Tensor::zeros({p.in + (how == 3 ? 1 : 0)}, DType::I32);
  int32_t* g = p.g_idx.data<int32_t>();
  for (int64_t c = 0; c < p.g_idx.numel(); ++c) g[c] = int32_t(c / gs);
  if (how == 4) g[p.in - 1] = int32_t(p.ngroups);
  if (how == 5) g[0] = -1;
  int32_t* z = p.qzeros.data<int32_t>();
  for (int64_t i = 0; i < p.qzeros.numel(); ++i) z[i] = int32_t(i % 3);
  if (how == 6) z[0] = 1 << bits;
  if (how == 7) z[0] = -1;
  if (p.scales.dtype() == DType::F32) {
    float* s = p.scales.data<float>();
    for (int64_t i = 0; i < p.scales.numel(); ++i) s[i] = 0.01f * float(i + 1);
    if (how == 8) s[0] = std::numeric_limits<float>::quiet_NaN();
    if (how == 9) s[0] = std::numeric_limits<float>::infinity();
  }
  return p;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  try {
    lowbit::QuantCheckpointMeta m = lowbit::parse_quant_meta(text, "fuzz/lowbit_quant.json");
    if (m.rotated != m.cfg.rotate) __builtin_trap();
    int n = 0;
    for (const auto& [name, bs] : m.qlin) {
      if (bs.first < 2 || bs.first > 8) __builtin_trap();  // parse_quant_meta promises 2..8
      if (++n > 16) break;
      const int how = int(std::hash<std::string>{}(name) % 12);  // 10, 11: intact
      PackedWeight p = make_weight(bs.first, bs.second, m.cfg.w_groupsize, how < 10 ? how : 0);
      try {
        p.validate(name);
      } catch (const lowbit::Error&) {
        if (how == 0 || how >= 10) __builtin_trap();  // an intact weight must pass
        continue;
      }
      if (how != 0 && how < 10) __builtin_trap();  // every corruption must be caught
      std::vector<float> W(size_t(p.out * p.in));
      p.dequantize(W.data());
      for (float w : W)
        if (!std::isfinite(w)) __builtin_trap();
    }
  } catch (const lowbit::Error&) {
  }
  return 0;
}
