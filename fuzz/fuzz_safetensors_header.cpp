// libFuzzer target: the safetensors header parser must reject any malformed
// input with a lowbit::Error — never crash, hang or read out of bounds (ASan/UBSan on).
#include <cstddef>
#include <cstdint>

#include "core/error.h"
#include "io/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    lowbit::SafetensorsHeader h = lowbit::parse_safetensors_header(data, size, "fuzz.safetensors");
    // Every accepted tensor must lie inside the buffer.
    for (auto& [name, t] : h.tensors)
      if (h.data_start + t.end > size) __builtin_trap();
  } catch (const lowbit::Error&) {
  }
  return 0;
}
