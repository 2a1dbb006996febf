// Stand-ins for the CUDA backend in a build without it (see backend/cuda_api.h).
#include "backend/cuda_api.h"
#include "core/error.h"

namespace lowbit::cuda {

static const char* kWhy = "this lowbit was built without the CUDA backend (no nvcc found; reconfigure with -DLOWBIT_CUDA=ON)";

bool compiled() { return false; }
bool available() { return false; }
std::string unavailable_reason() { return kWhy; }
std::string describe() { return "none"; }
Backend& backend() { throw DeviceError(kWhy); }
MemStats mem_stats() { return {}; }
void reset_peak() {}
GptqResult gptq_quantize(const float*, int64_t, int64_t, const HessianAccumulator&, const GptqConfig&,
                         const std::string&) {
  throw DeviceError(kWhy);
}

}  // namespace lowbit::cuda
