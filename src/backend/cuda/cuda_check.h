// Checked CUDA / cuBLAS / cuSOLVER calls. Includable from nvcc and g++ alike (no fmt
// here: .cu files stay free of the host formatting library); a failure throws
// lowbit::DeviceError naming the call, the error and file:line.
#pragma once
#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <cusolverDn.h>

namespace lowbit::cuda {

[[noreturn]] void fail(const char* lib, int code, const char* errname, const char* call, const char* file, int line);

inline void check_cuda(cudaError_t e, const char* call, const char* file, int line) {
  if (e != cudaSuccess) fail("CUDA", int(e), cudaGetErrorString(e), call, file, line);
}
inline void check_cublas(cublasStatus_t e, const char* call, const char* file, int line) {
  if (e != CUBLAS_STATUS_SUCCESS) fail("cuBLAS", int(e), cublasGetStatusString(e), call, file, line);
}
inline void check_cusolver(cusolverStatus_t e, const char* call, const char* file, int line) {
  if (e != CUSOLVER_STATUS_SUCCESS) fail("cuSOLVER", int(e), "cusolver status", call, file, line);
}

}  // namespace lowbit::cuda

#define LOWBIT_CUDA_CHECK(call) ::lowbit::cuda::check_cuda((call), #call, __FILE__, __LINE__)
#define LOWBIT_CUBLAS_CHECK(call) ::lowbit::cuda::check_cublas((call), #call, __FILE__, __LINE__)
#define LOWBIT_CUSOLVER_CHECK(call) ::lowbit::cuda::check_cusolver((call), #call, __FILE__, __LINE__)
// After every kernel launch: launch-configuration errors surface here, at their file:line.
#define LOWBIT_CUDA_LAUNCHED() LOWBIT_CUDA_CHECK(cudaGetLastError())
