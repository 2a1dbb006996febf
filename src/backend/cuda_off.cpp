// Stand-ins for the CUDA backend in a build without it (see backend/cuda_api.h).
#include "backend/cuda/cuda_llama.h"
#include "backend/cuda_api.h"
#include "core/error.h"

namespace lowbit::cuda {

const char* const kWhy = "this lowbit was built without the CUDA backend (no nvcc found; reconfigure with -DLOWBIT_CUDA=ON)";

bool compiled() { return false; }
bool available() { return false; }
std::string unavailable_reason() { return kWhy; }
std::string describe() { return "none"; }
Backend& backend() { throw DeviceError(kWhy); }
MemStats mem_stats() { return {}; }
void reset_peak() {}
void hadamard_rows_host(float*, int64_t, int64_t, int64_t, int64_t, const float*) { throw DeviceError(kWhy); }
void act_quant_host(float*, int64_t, int64_t, int, int64_t, bool, float) { throw DeviceError(kWhy); }
struct DeviceHessian {};
std::shared_ptr<DeviceHessian> make_device_hessian(int64_t) { throw DeviceError(kWhy); }
void device_hessian_add(DeviceHessian&, const float*, int64_t, double, double) { throw DeviceError(kWhy); }
void device_hessian_download(const DeviceHessian&, double*) { throw DeviceError(kWhy); }
QuantizedWeight quantize_rtn(const float*, int64_t, int64_t, const QuantSpec&) { throw DeviceError(kWhy); }
bool llama_advance(const LlamaLayer&, int, BlockState&, const BlockCtx&) { return false; }
bool block_group_gram(const Block&, int, const BlockState&, bool, DeviceHessian&, double, double) { return false; }
GptqResult gptq_quantize(const float*, int64_t, int64_t, const HessianAccumulator&, const GptqConfig&,
                         const std::string&) {
  throw DeviceError(kWhy);
}

}  // namespace lowbit::cuda

namespace lowbit::cuda {

struct LlamaRunner::Impl {};
std::string fast_path_unsupported(const LlamaModel&) { return kWhy; }
LlamaRunner::LlamaRunner(const LlamaModel&, const RunnerOptions&) { throw DeviceError(kWhy); }
std::unique_ptr<LlamaRunner> LlamaRunner::random(const LlamaConfig&, uint64_t, const RunnerOptions&) {
  throw DeviceError(kWhy);
}
LlamaRunner::~LlamaRunner() = default;
std::vector<float> LlamaRunner::logits(const int32_t*, int64_t) { throw DeviceError(kWhy); }
std::vector<double> LlamaRunner::window_nll(const int32_t*, int64_t) { throw DeviceError(kWhy); }
void LlamaRunner::begin_sequence(int64_t) { throw DeviceError(kWhy); }
std::vector<float> LlamaRunner::feed(const int32_t*, int64_t) { throw DeviceError(kWhy); }
double LlamaRunner::linear_seconds() const { return 0; }
double LlamaRunner::linear_flops() const { return 0; }
void LlamaRunner::reset_profile() {}
void LlamaRunner::set_profile(bool) {}
int64_t LlamaRunner::weight_bytes() const { return 0; }

}  // namespace lowbit::cuda
