// Round-to-nearest weight quantization: every (row, group) gets its own grid
// from its own values (optionally the --w_clip search), no error feedback.
#pragma once
#include "quant/qgrid.h"

namespace lowbit {

// W: [out, in] f32.
QuantizedWeight quantize_rtn(const float* W, int64_t out, int64_t in, const QuantSpec& spec);

}  // namespace lowbit
