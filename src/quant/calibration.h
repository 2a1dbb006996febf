// Calibration data: `nsamples` random windows of `seqlen` tokens from a text
// (GPTQ/QuaRot protocol: the text is tokenized once with BOS in front, each
// window starts at a uniformly random offset drawn from a seeded generator).
#pragma once
#include <cstdint>
#include <vector>

namespace lowbit {

// Throws ArgError when the stream holds fewer than nsamples × seqlen tokens.
std::vector<std::vector<int32_t>> sample_calibration(const std::vector<int32_t>& tokens, int64_t nsamples,
                                                     int64_t seqlen, uint64_t seed);

}  // namespace lowbit
