// Element types. Weights keep their file dtype in memory; compute is f32.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

namespace lowbit {

enum class DType : uint8_t { F32, F16, BF16, F64, I8, U8, I16, I32, I64, BOOL };

size_t dtype_size(DType t);
const char* dtype_name(DType t);             // "f32", "bf16", ...
const char* dtype_safetensors_name(DType t);  // "F32", "BF16", ...
// Parses a safetensors dtype string ("F32", "BF16", "I8", ...); false if unknown.
bool dtype_from_safetensors(std::string_view s, DType* out);
bool dtype_is_float(DType t);

// ---- scalar conversions ----------------------------------------------------
inline float bf16_to_f32(uint16_t h) {
  uint32_t u = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
// Round-to-nearest-even, NaN preserved (same as torch).
inline uint16_t f32_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40);
  u += 0x7fffu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}
float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);

// Converts n elements of type `t` at `src` to f32.
void convert_to_f32(DType t, const void* src, float* dst, size_t n);
// Converts n f32 values into type `t` (float types and integer types with rounding).
void convert_from_f32(DType t, const float* src, void* dst, size_t n);

}  // namespace lowbit
