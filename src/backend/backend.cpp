// The process-wide choice of backend (see backend.h).
#include "backend/backend.h"

#include "backend/cuda_api.h"
#include "core/error.h"

namespace lowbit {

namespace {
Device g_device = Device::CPU;
}

Backend& default_backend() { return g_device == Device::CUDA ? cuda::backend() : cpu_backend(); }
Device default_device() { return g_device; }
void set_default_device(Device d) {
  if (d == Device::CUDA && !cuda::available())  // one line naming the flag and why, in either build
    throw DeviceError("--device cuda: " + cuda::unavailable_reason());
  g_device = d;
}

}  // namespace lowbit
