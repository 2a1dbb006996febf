#include "quant/calibration.h"

#include "core/error.h"
#include "core/rng.h"

namespace lowbit {

std::vector<std::vector<int32_t>> sample_calibration(const std::vector<int32_t>& tokens, int64_t nsamples,
                                                     int64_t seqlen, uint64_t seed) {
  LOWBIT_CHECK(nsamples > 0 && seqlen > 1, ArgError, "--nsamples {} and --cal_seqlen {} must be positive", nsamples,
               seqlen);
  const int64_t n = int64_t(tokens.size());
  LOWBIT_CHECK(n >= nsamples * seqlen, ArgError,
               "the calibration text has {} tokens, fewer than --nsamples {} × --cal_seqlen {} = {}", n, nsamples,
               seqlen, nsamples * seqlen);
  NormalRng rng(seed);
  std::vector<std::vector<int32_t>> out;
  out.reserve(static_cast<size_t>(nsamples));
  const uint64_t starts = uint64_t(n - seqlen + 1);
  for (int64_t s = 0; s < nsamples; ++s) {
    int64_t i = int64_t(rng.next_u64() % starts);
    out.emplace_back(tokens.begin() + i, tokens.begin() + i + seqlen);
  }
  return out;
}

}  // namespace lowbit
