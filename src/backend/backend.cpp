// The process-wide choice of backend (see backend.h).
#include "backend/backend.h"

#include "backend/cuda_api.h"

namespace lowbit {

namespace {
Device g_device = Device::CPU;
}

Backend& default_backend() { return g_device == Device::CUDA ? cuda::backend() : cpu_backend(); }
Device default_device() { return g_device; }
void set_default_device(Device d) {
  if (d == Device::CUDA) cuda::backend();  // throws DeviceError naming why CUDA is unusable
  g_device = d;
}

}  // namespace lowbit
