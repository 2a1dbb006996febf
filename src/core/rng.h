// Seeded pseudo-random streams, bit-identical on every platform and library
// version (no <random> distributions, whose output is implementation-defined).
//
// SplitMix64 (Steele, Lea & Flood 2014) on a 64-bit state s:
//   s ← s + 0x9E3779B97F4A7C15,  z ← (s ⊕ s≫30)·0xBF58476D1CE4E5B9,
//   z ← (z ⊕ z≫27)·0x94D049BB133111EB,  out = z ⊕ z≫31   (mod 2⁶⁴).
// uniform():     (out ≫ 11)·2⁻⁵³ ∈ [0, 1), all 53 mantissa bits random.
// NormalRng: standard normals by Box–Muller on two uniforms u1, u2 (u1 clamped
// to ≥ 1e-300): r = √(−2 ln u1), θ = 2π·u2, returns r·cos θ, then r·sin θ on the
// next call.
#pragma once
#include <cmath>
#include <cstdint>
#include <numbers>

namespace lowbit {

// One SplitMix64 step on a caller-held state word.
inline uint64_t splitmix64(uint64_t& s) {
  uint64_t z = (s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

class SplitMix64 {
 public:
  explicit SplitMix64(uint64_t seed) : s_(seed) {}
  uint64_t next_u64() { return splitmix64(s_); }
  double uniform() { return double(next_u64() >> 11) * 0x1.0p-53; }      // [0, 1)
  uint64_t state() const { return s_; }

 private:
  uint64_t s_;
};

// Standard normal stream over SplitMix64; next_u64()/uniform() draw from the same state.
class NormalRng {
 public:
  explicit NormalRng(uint64_t seed) : g_(seed) {}
  uint64_t next_u64() { return g_.next_u64(); }
  double uniform() { return g_.uniform(); }  // [0, 1)
  double normal() {
    if (have_) {
      have_ = false;
      return spare_;
    }
    double u1 = uniform(), u2 = uniform();
    if (u1 < 1e-300) u1 = 1e-300;
    const double r = std::sqrt(-2.0 * std::log(u1)), th = 2.0 * std::numbers::pi * u2;
    spare_ = r * std::sin(th);
    have_ = true;
    return r * std::cos(th);
  }

 private:
  SplitMix64 g_;
  bool have_ = false;
  double spare_ = 0;
};

}  // namespace lowbit
