#include "core/dtype.h"

#include <cmath>

#include "core/error.h"

namespace lowbit {

size_t dtype_size(DType t) {
  switch (t) {
    case DType::F32: return 4;
    case DType::F16: return 2;
    case DType::BF16: return 2;
    case DType::F64: return 8;
    case DType::I8: return 1;
    case DType::U8: return 1;
    case DType::I16: return 2;
    case DType::I32: return 4;
    case DType::I64: return 8;
    case DType::BOOL: return 1;
  }
  return 0;
}

const char* dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "f32";
    case DType::F16: return "f16";
    case DType::BF16: return "bf16";
    case DType::F64: return "f64";
    case DType::I8: return "i8";
    case DType::U8: return "u8";
    case DType::I16: return "i16";
    case DType::I32: return "i32";
    case DType::I64: return "i64";
    case DType::BOOL: return "bool";
  }
  return "?";
}

const char* dtype_safetensors_name(DType t) {
  switch (t) {
    case DType::F32: return "F32";
    case DType::F16: return "F16";
    case DType::BF16: return "BF16";
    case DType::F64: return "F64";
    case DType::I8: return "I8";
    case DType::U8: return "U8";
    case DType::I16: return "I16";
    case DType::I32: return "I32";
    case DType::I64: return "I64";
    case DType::BOOL: return "BOOL";
  }
  return "?";
}

bool dtype_from_safetensors(std::string_view s, DType* out) {
  static const struct { const char* n; DType t; } table[] = {
      {"F32", DType::F32}, {"F16", DType::F16}, {"BF16", DType::BF16}, {"F64", DType::F64},
      {"I8", DType::I8},   {"U8", DType::U8},   {"I16", DType::I16},   {"I32", DType::I32},
      {"I64", DType::I64}, {"BOOL", DType::BOOL}};
  for (auto& e : table)
    if (s == e.n) { *out = e.t; return true; }
  return false;
}

bool dtype_is_float(DType t) {
  return t == DType::F32 || t == DType::F16 || t == DType::BF16 || t == DType::F64;
}

// IEEE binary16 <-> binary32, exact for every half value, RNE on the way down.
float f16_to_f32(uint16_t h) {
  uint32_t sign = uint32_t(h & 0x8000) << 16;
  uint32_t exp = (h >> 10) & 0x1f;
  uint32_t man = h & 0x3ff;
  uint32_t u;
  if (exp == 0) {
    if (man == 0) {
      u = sign;
    } else {  // subnormal: renormalize
      int e = -1;
      do { man <<= 1; ++e; } while (!(man & 0x400));
      u = sign | uint32_t(127 - 15 - e) << 23 | (man & 0x3ff) << 13;
    }
  } else if (exp == 31) {
    u = sign | 0x7f800000u | man << 13;
  } else {
    u = sign | (exp + 127 - 15) << 23 | man << 13;
  }
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

uint16_t f32_to_f16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  uint32_t sign = (u >> 16) & 0x8000;
  uint32_t absu = u & 0x7fffffff;
  if (absu > 0x7f800000u) return uint16_t(sign | 0x7e00);  // NaN
  if (absu >= 0x477ff000u) return uint16_t(sign | 0x7c00);  // overflow -> inf (rounds up past 65504)
  if (absu < 0x38800000u) {                                 // subnormal or zero in half
    // value = absu as float; half subnormal unit is 2^-24
    float a;
    std::memcpy(&a, &absu, 4);
    float scaled = a * 16777216.0f;  // / 2^-24
    uint32_t m = uint32_t(std::nearbyint(scaled));  // default rounding mode is RNE
    return uint16_t(sign | m);
  }
  uint32_t exp = ((absu >> 23) - 127 + 15);
  uint32_t man = absu & 0x7fffff;
  uint32_t h = exp << 10 | man >> 13;
  uint32_t rest = man & 0x1fff;
  if (rest > 0x1000 || (rest == 0x1000 && (h & 1))) ++h;  // RNE (carry into exponent is correct)
  return uint16_t(sign | h);
}

// Element i of type T at p, by memcpy: mmap'd tensors of other tools' files need not be
// aligned to their element type (a cast-and-load there is undefined behaviour).
template <class T>
static inline T load_at(const void* p, size_t i) {
  T v;
  std::memcpy(&v, static_cast<const char*>(p) + i * sizeof(T), sizeof(T));
  return v;
}

void convert_to_f32(DType t, const void* src, float* dst, size_t n) {
  switch (t) {
    case DType::F32: std::memcpy(dst, src, n * 4); return;
    case DType::BF16: for (size_t i = 0; i < n; ++i) dst[i] = bf16_to_f32(load_at<uint16_t>(src, i)); return;
    case DType::F16: for (size_t i = 0; i < n; ++i) dst[i] = f16_to_f32(load_at<uint16_t>(src, i)); return;
    case DType::F64: for (size_t i = 0; i < n; ++i) dst[i] = float(load_at<double>(src, i)); return;
    case DType::I8: for (size_t i = 0; i < n; ++i) dst[i] = load_at<int8_t>(src, i); return;
    case DType::U8: for (size_t i = 0; i < n; ++i) dst[i] = load_at<uint8_t>(src, i); return;
    case DType::BOOL: for (size_t i = 0; i < n; ++i) dst[i] = load_at<uint8_t>(src, i) ? 1.f : 0.f; return;
    case DType::I16: for (size_t i = 0; i < n; ++i) dst[i] = load_at<int16_t>(src, i); return;
    case DType::I32: for (size_t i = 0; i < n; ++i) dst[i] = float(load_at<int32_t>(src, i)); return;
    case DType::I64: for (size_t i = 0; i < n; ++i) dst[i] = float(load_at<int64_t>(src, i)); return;
  }
  throw DTypeError(fmt::format("convert_to_f32: unsupported dtype {}", dtype_name(t)));
}

template <class T>
static void from_f32_int(const float* s, void* d, size_t n) {
  auto o = static_cast<T*>(d);
  for (size_t i = 0; i < n; ++i) o[i] = T(std::nearbyint(s[i]));
}

void convert_from_f32(DType t, const float* src, void* dst, size_t n) {
  switch (t) {
    case DType::F32: std::memcpy(dst, src, n * 4); return;
    case DType::BF16: { auto d = static_cast<uint16_t*>(dst); for (size_t i = 0; i < n; ++i) d[i] = f32_to_bf16(src[i]); return; }
    case DType::F16: { auto d = static_cast<uint16_t*>(dst); for (size_t i = 0; i < n; ++i) d[i] = f32_to_f16(src[i]); return; }
    case DType::F64: { auto d = static_cast<double*>(dst); for (size_t i = 0; i < n; ++i) d[i] = src[i]; return; }
    case DType::I8: from_f32_int<int8_t>(src, dst, n); return;
    case DType::U8: from_f32_int<uint8_t>(src, dst, n); return;
    case DType::BOOL: { auto d = static_cast<uint8_t*>(dst); for (size_t i = 0; i < n; ++i) d[i] = src[i] != 0.f; return; }
    case DType::I16: from_f32_int<int16_t>(src, dst, n); return;
    case DType::I32: from_f32_int<int32_t>(src, dst, n); return;
    case DType::I64: from_f32_int<int64_t>(src, dst, n); return;
  }
  throw DTypeError(fmt::format("convert_from_f32: unsupported dtype {}", dtype_name(t)));
}

}  // namespace lowbit
