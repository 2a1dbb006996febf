// Cross-backend table: every launcher of backend/cuda/kernels.h against its CPU reference
// (the CPU backend, fake_quant_act, Hadamard::apply, core/dtype conversions, and plain
// double-precision loops for nll_rows and causal_softmax_bf16).
//
// Each case: fresh seeded non-zero random inputs, the CPU reference on the host, the CUDA
// launcher on device buffers (on a non-default stream, outputs poisoned with NaN before the
// run so an element the kernel forgets to write fails), then a comparison whose tolerance is
// written next to the case with its reason. Without a CUDA device every test skips.
#include <gtest/gtest.h>

#include "backend/cuda_api.h"

#ifdef LOWBIT_HAVE_CUDA

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "backend/cuda/kernels.h"
#include "core/dtype.h"
#include "quant/hadamard.h"
#include "quant/qgrid.h"
#include "testing.h"

using namespace lowbit;
using lowbit::test::normalized_error;
namespace kc = lowbit::cuda;

namespace {

void ck(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(e));
}
#define CK(call) ck((call), #call)

// A device buffer of n T's (cudaMalloc'd, at least one element so the pointer is real).
template <class T>
class Dev {
 public:
  explicit Dev(size_t n) : n_(n) { CK(cudaMalloc(reinterpret_cast<void**>(&p_), std::max<size_t>(n, 1) * sizeof(T))); }
  explicit Dev(const std::vector<T>& h) : Dev(h.size()) { upload(h); }
  ~Dev() { cudaFree(p_); }
  Dev(const Dev&) = delete;
  Dev& operator=(const Dev&) = delete;
  T* get() const { return p_; }
  void upload(const std::vector<T>& h) {
    if (h.size() != n_) throw std::runtime_error("Dev::upload: size mismatch");
    CK(cudaMemcpy(p_, h.data(), n_ * sizeof(T), cudaMemcpyHostToDevice));
  }
  std::vector<T> download() const {
    std::vector<T> h(n_);
    CK(cudaMemcpy(h.data(), p_, n_ * sizeof(T), cudaMemcpyDeviceToHost));
    return h;
  }
  // All bytes 0xFF: NaN as f32, f64 and bf16/f16 bits.
  void poison() { CK(cudaMemset(p_, 0xFF, std::max<size_t>(n_, 1) * sizeof(T))); }

 private:
  size_t n_;
  T* p_ = nullptr;
};

std::vector<float> randu(size_t n, uint32_t seed, float lo, float hi) {
  std::mt19937 g(seed);
  std::uniform_real_distribution<float> u(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) {
    do x = u(g);
    while (x == 0.0f);  // non-zero
  }
  return v;
}

uint32_t bits_of(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
float float_of(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
// Distance in bf16 steps between two bf16 values (sign-magnitude → ordered integers; ±0 → 0).
int bf16_steps(uint16_t a, uint16_t b) {
  auto ord = [](uint16_t h) { return (h & 0x8000) ? -int(h & 0x7fff) : int(h); };
  return std::abs(ord(a) - ord(b));
}
std::vector<float> bf16_to_f32_vec(const std::vector<uint16_t>& h) {
  std::vector<float> f(h.size());
  for (size_t i = 0; i < h.size(); ++i) f[i] = bf16_to_f32(h[i]);
  return f;
}
// bf16 output checked two ways: normalized error vs the f32 reference (`tol`), and every
// element within one bf16 step of the reference rounded to bf16 (the only difference f32
// noise can make once both sides round). Returns the number of elements further off.
size_t bf16_far(const std::vector<uint16_t>& got, const std::vector<float>& ref) {
  size_t bad = 0;
  for (size_t i = 0; i < ref.size(); ++i)
    if (bf16_steps(got[i], f32_to_bf16(ref[i])) > 1) ++bad;
  return bad;
}

class CudaOps : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!kc::available()) GTEST_SKIP() << "no CUDA device: " << kc::unavailable_reason();
    CK(cudaStreamCreateWithFlags(&s_, cudaStreamNonBlocking));
  }
  void TearDown() override {
    if (s_) cudaStreamDestroy(s_);
  }
  // Waits for the stream and surfaces asynchronous kernel errors.
  void finish() {
    CK(cudaStreamSynchronize(s_));
    CK(cudaGetLastError());
  }
  cudaStream_t s_ = nullptr;
};

// ---- RMSNorm ------------------------------------------------------------------------------

TEST_F(CudaOps, RmsNorm) {
  struct Case {
    int64_t rows, dim;
    bool weight;
    float eps;
  };
  // 4096: the 7B hidden size (registers hold the row); 4099: odd; 7: tiny, one warp;
  // 20000: longer than 1024 threads × 16 values, the re-read remainder path; no weight.
  const Case cases[] = {{3, 4096, true, 1e-5f}, {5, 4099, true, 1e-6f}, {1, 7, false, 1e-5f},
                        {2, 20000, true, 1e-5f}, {4, 128, false, 1e-6f}};
  uint32_t seed = 100;
  for (const Case& c : cases) {
    SCOPED_TRACE(testing::Message() << "rows " << c.rows << " dim " << c.dim << " weight " << c.weight);
    const size_t n = size_t(c.rows * c.dim);
    auto x = randu(n, seed++, -3.0f, 3.0f);
    auto w = randu(size_t(c.dim), seed++, 0.5f, 1.5f);
    std::vector<float> ref(n);
    cpu_backend().rmsnorm(x.data(), c.weight ? w.data() : nullptr, ref.data(), c.rows, c.dim, c.eps);
    Dev<float> dx(x), dw(w), dy(n);
    Dev<uint16_t> dyb(n);
    dy.poison();
    dyb.poison();
    kc::rmsnorm(dx.get(), c.weight ? dw.get() : nullptr, dy.get(), c.rows, c.dim, c.eps, s_);
    kc::rmsnorm_bf16(dx.get(), c.weight ? dw.get() : nullptr, dyb.get(), c.rows, c.dim, c.eps, s_);
    finish();
    // 1e-6: same formula (double sum of squares, f32 inv, w·(x·inv)); only the order of the
    // double sum differs, so inv can differ by one f32 ulp (6e-8 relative).
    EXPECT_LE(normalized_error(dy.download(), ref), 1e-6);
    // 4e-3: bf16 keeps 8 significant bits (relative rounding error <= 2^-9 ≈ 2e-3).
    const auto yb = dyb.download();
    EXPECT_LE(normalized_error(bf16_to_f32_vec(yb), ref), 4e-3);
    EXPECT_EQ(bf16_far(yb, ref), 0u);
  }
}

// ---- RoPE ---------------------------------------------------------------------------------

TEST_F(CudaOps, Rope) {
  struct Case {
    int64_t T, H, D;
  };
  const Case cases[] = {{5, 4, 64}, {3, 2, 128}, {1, 32, 128}, {7, 3, 96}};
  const int32_t positions[] = {0, 1, 17, 1000, 4095, 2, 3};
  uint32_t seed = 200;
  for (const Case& c : cases) {
    SCOPED_TRACE(testing::Message() << "T " << c.T << " H " << c.H << " D " << c.D);
    const size_t n = size_t(c.T * c.H * c.D);
    auto x = randu(n, seed++, -2.0f, 2.0f);
    std::vector<int32_t> pos(positions + (c.T == 1 ? 3 : 0), positions + (c.T == 1 ? 4 : c.T));
    ASSERT_EQ(int64_t(pos.size()), c.T);
    std::vector<float> inv_freq(size_t(c.D / 2));
    for (int64_t j = 0; j < c.D / 2; ++j)
      inv_freq[size_t(j)] = float(1.0 / std::pow(10000.0, double(2 * j) / double(c.D)));
    std::vector<float> ref = x;
    cpu_backend().rope(ref.data(), c.T, c.H, c.D, pos.data(), inv_freq.data());
    Dev<float> dx(x), dfreq(inv_freq);
    Dev<int32_t> dpos(pos);
    kc::rope(dx.get(), c.T, c.H, c.D, dpos.get(), dfreq.get(), s_);
    finish();
    // 1e-6: the same f32 angle, cos/sin in double rounded to f32 on both sides; only the
    // contraction of a·c - b·s into an FMA can differ (one f32 ulp).
    EXPECT_LE(normalized_error(dx.download(), ref), 1e-6);
  }
}

// ---- SiLU·up, add -------------------------------------------------------------------------

TEST_F(CudaOps, SiluMul) {
  // 4097: vector body + scalar tail; 1048579: many blocks, grid-stride; offset 1: pointers
  // not 16-byte aligned (scalar path); alias: out == gate (the forward's in-place use).
  struct Case {
    int64_t n;
    int64_t offset;
    bool alias;
  };
  const Case cases[] = {{4097, 0, false}, {(1 << 20) + 3, 0, false}, {1001, 1, false}, {4096, 0, true},
                        {33, 1, true}};
  uint32_t seed = 300;
  for (const Case& c : cases) {
    SCOPED_TRACE(testing::Message() << "n " << c.n << " offset " << c.offset << " alias " << c.alias);
    const size_t n = size_t(c.n), off = size_t(c.offset);
    auto g = randu(n + off, seed++, -8.0f, 8.0f);
    auto u = randu(n + off, seed++, -2.0f, 2.0f);
    std::vector<float> ref(n);
    cpu_backend().silu_mul(g.data() + off, u.data() + off, ref.data(), c.n);
    // f32 output
    {
      Dev<float> dg(g), du(u), dout(n + off);
      dout.poison();
      float* out = c.alias ? dg.get() + off : dout.get() + off;
      kc::silu_mul(dg.get() + off, du.get() + off, out, c.n, s_);
      finish();
      auto got = c.alias ? dg.download() : dout.download();
      std::vector<float> o(got.begin() + std::ptrdiff_t(off), got.end());
      // 1e-6: same formula; CUDA expf (<= 2 ulp) vs glibc exp (<= 1 ulp).
      EXPECT_LE(normalized_error(o, ref), 1e-6);
    }
    // bf16 output (never aliased: different element type)
    {
      Dev<float> dg(g), du(u);
      Dev<uint16_t> dout(n + off);
      dout.poison();
      kc::silu_mul_bf16(dg.get() + off, du.get() + off, dout.get() + off, c.n, s_);
      finish();
      auto got = dout.download();
      std::vector<uint16_t> o(got.begin() + std::ptrdiff_t(off), got.end());
      // 4e-3: bf16 rounding (<= 2^-9 relative); plus every element within one bf16 step.
      EXPECT_LE(normalized_error(bf16_to_f32_vec(o), ref), 4e-3);
      EXPECT_EQ(bf16_far(o, ref), 0u);
    }
  }
}

TEST_F(CudaOps, AddInplace) {
  const int64_t sizes[] = {4097, (1 << 20) + 1, 10};
  const int64_t offsets[] = {0, 0, 1};
  for (int k = 0; k < 3; ++k) {
    const size_t n = size_t(sizes[k]), off = size_t(offsets[k]);
    SCOPED_TRACE(testing::Message() << "n " << n << " offset " << off);
    auto x = randu(n + off, 400 + k, -5.0f, 5.0f);
    auto y = randu(n + off, 410 + k, -5.0f, 5.0f);
    Dev<float> dx(x), dy(y);
    kc::add_inplace(dx.get() + off, dy.get() + off, int64_t(n), s_);
    finish();
    auto got = dx.download();
    // Exact: one IEEE f32 addition per element.
    size_t bad = 0;
    for (size_t i = 0; i < n + off; ++i) {
      const float want = i < off ? x[i] : x[i] + y[i];
      if (bits_of(got[i]) != bits_of(want)) ++bad;
    }
    EXPECT_EQ(bad, 0u);
  }
}

// ---- conversions --------------------------------------------------------------------------

// Random values over a wide exponent range plus the edge cases of both formats.
std::vector<float> conversion_inputs(uint32_t seed) {
  std::vector<float> v = {0.0f, -0.0f, 1.0f, -1.0f, 65504.0f, 65519.99f, 65520.0f, -65520.0f, 1e-8f,
                          std::ldexp(1.0f, -24), std::ldexp(1.0f, -25), 3 * std::ldexp(1.0f, -26),
                          std::ldexp(1.0f, -14), std::ldexp(1023.0f, -24), 1.0f + std::ldexp(1.0f, -8),
                          1.0f + 3 * std::ldexp(1.0f, -8), 1.0f + std::ldexp(1.0f, -11),
                          1.0f + 3 * std::ldexp(1.0f, -11), 1e30f, -1e-30f, 3.4e38f,
                          std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::infinity(),
                          std::numeric_limits<float>::quiet_NaN(), float_of(0x7f800001u), float_of(0xffc12345u),
                          std::numeric_limits<float>::denorm_min()};
  std::mt19937 g(seed);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::uniform_int_distribution<int> e(-30, 30);
  while (v.size() < 4099) v.push_back(std::ldexp(u(g), e(g)));
  return v;
}

TEST_F(CudaOps, ConvertFromF32) {
  auto x = conversion_inputs(500);
  const size_t n = x.size();
  for (size_t off : {size_t(0), size_t(1)}) {
    SCOPED_TRACE(testing::Message() << "offset " << off);
    const size_t m = n - off;
    Dev<float> dx(x);
    Dev<uint16_t> db(n), dh(n);
    db.poison();
    dh.poison();
    kc::f32_to_bf16(dx.get() + off, db.get() + off, int64_t(m), s_);
    kc::f32_to_f16(dx.get() + off, dh.get() + off, int64_t(m), s_);
    finish();
    auto b = db.download(), h = dh.download();
    // Exact: integer bit manipulation, the same as core/dtype (RNE, NaN kept, f16 overflow to inf).
    size_t bad_b = 0, bad_h = 0;
    for (size_t i = off; i < n; ++i) {
      if (b[i] != f32_to_bf16(x[i])) ++bad_b;
      if (h[i] != f32_to_f16(x[i])) ++bad_h;
    }
    EXPECT_EQ(bad_b, 0u);
    EXPECT_EQ(bad_h, 0u);
  }
}

TEST_F(CudaOps, ConvertToF32AndRoundF16) {
  // Every 16-bit pattern as bf16 and as f16; random f32 bit patterns (NaNs included) as f32.
  std::vector<uint16_t> all(65536);
  for (uint32_t i = 0; i < 65536; ++i) all[i] = uint16_t(i);
  std::vector<float> f32(5001);
  std::mt19937 g(600);
  for (auto& f : f32) f = float_of(uint32_t(g()));
  Dev<uint16_t> dall(all);
  Dev<float> df(f32), yb(65536), yh(65536), yf(f32.size());
  yb.poison();
  yh.poison();
  yf.poison();
  kc::to_f32(dall.get(), kc::WType::BF16, yb.get(), 65536, s_);
  kc::to_f32(dall.get(), kc::WType::F16, yh.get(), 65536, s_);
  kc::to_f32(df.get(), kc::WType::F32, yf.get(), int64_t(f32.size()), s_);
  finish();
  // Exact: widening is exact for every value.
  auto b = yb.download(), h = yh.download(), f = yf.download();
  size_t bad = 0;
  for (uint32_t i = 0; i < 65536; ++i) {
    if (bits_of(b[i]) != bits_of(bf16_to_f32(uint16_t(i)))) ++bad;
    if (bits_of(h[i]) != bits_of(f16_to_f32(uint16_t(i)))) ++bad;
  }
  for (size_t i = 0; i < f32.size(); ++i)
    if (bits_of(f[i]) != bits_of(f32[i])) ++bad;
  EXPECT_EQ(bad, 0u);

  auto x = conversion_inputs(601);
  Dev<float> dx(x);
  kc::round_f16_inplace(dx.get(), int64_t(x.size()), s_);
  finish();
  auto r = dx.download();
  size_t bad_r = 0;
  for (size_t i = 0; i < x.size(); ++i)
    if (bits_of(r[i]) != bits_of(f16_to_f32(f32_to_f16(x[i])))) ++bad_r;
  EXPECT_EQ(bad_r, 0u);  // exact, as above
}

// ---- embedding ----------------------------------------------------------------------------

TEST_F(CudaOps, Embed) {
  const int64_t vocab = 50;
  const std::vector<int32_t> ids = {0, 49, 7, 7, 13, 0, 31, 2, 48};
  const int64_t T = int64_t(ids.size());
  struct TypeCase {
    kc::WType w;
    DType d;
  };
  const TypeCase types[] = {{kc::WType::F32, DType::F32}, {kc::WType::F16, DType::F16},
                            {kc::WType::BF16, DType::BF16}};
  uint32_t seed = 700;
  for (int64_t d : {int64_t(67), int64_t(4096)})
    for (const TypeCase& tc : types) {
      SCOPED_TRACE(testing::Message() << "d " << d << " type " << dtype_name(tc.d));
      auto tf = randu(size_t(vocab * d), seed++, -1.0f, 1.0f);
      std::vector<char> table(size_t(vocab * d) * dtype_size(tc.d));
      convert_from_f32(tc.d, tf.data(), table.data(), tf.size());
      std::vector<float> ref(size_t(T * d));
      for (int64_t t = 0; t < T; ++t)
        convert_to_f32(tc.d, table.data() + size_t(ids[size_t(t)] * d) * dtype_size(tc.d), ref.data() + t * d,
                       size_t(d));
      Dev<char> dtable(table);
      Dev<int32_t> dids(ids);
      Dev<float> dx(size_t(T * d));
      dx.poison();
      kc::embed(dtable.get(), tc.w, dids.get(), T, d, dx.get(), s_);
      finish();
      auto got = dx.download();
      size_t bad = 0;  // exact: a gather and an exact widening
      for (size_t i = 0; i < got.size(); ++i)
        if (bits_of(got[i]) != bits_of(ref[i])) ++bad;
      EXPECT_EQ(bad, 0u);
    }
}

// ---- attention ----------------------------------------------------------------------------

TEST_F(CudaOps, Attention) {
  struct Case {
    int64_t T, S, Hq, Hkv, D, off;
  };
  const Case cases[] = {
      {7, 7, 4, 2, 64, 0},       // prefill, GQA 2:1, one partial query tile
      {1, 37, 4, 2, 128, 36},    // decode: one query at position 36 sees all 37 keys
      {70, 100, 4, 1, 128, 30},  // prefill after a cached prefix, GQA 4:1, partial key tiles
      {4, 50, 2, 2, 64, 10},     // cache longer than needed: keys 14..49 are NaN and must not be read
      {33, 33, 2, 2, 256, 0},    // D = 256 (shared memory above 48 KiB)
      {5, 9, 3, 1, 80, 4},       // D not a multiple of 32, odd head count
      {300, 300, 2, 1, 64, 0},   // large: the CPU takes its blocked-GEMM path
  };
  uint32_t seed = 800;
  for (const Case& c : cases) {
    SCOPED_TRACE(testing::Message() << "T " << c.T << " S " << c.S << " Hq " << c.Hq << " Hkv " << c.Hkv << " D "
                                    << c.D << " q_offset " << c.off);
    const size_t nq = size_t(c.T * c.Hq * c.D), nk = size_t(c.S * c.Hkv * c.D);
    auto q = randu(nq, seed++, -2.0f, 2.0f);
    auto k = randu(nk, seed++, -2.0f, 2.0f);
    auto v = randu(nk, seed++, -1.0f, 1.0f);
    const float nan = std::numeric_limits<float>::quiet_NaN();
    for (size_t i = size_t((c.off + c.T) * c.Hkv * c.D); i < nk; ++i) k[i] = v[i] = nan;  // beyond the last query
    const float scale = float(1.0 / std::sqrt(double(c.D)));
    std::vector<float> ref(nq);
    cpu_backend().attention(q.data(), k.data(), v.data(), ref.data(), c.T, c.S, c.Hq, c.Hkv, c.D, c.off, scale);
    Dev<float> dq(q), dk(k), dv(v), dout(nq);
    dout.poison();
    kc::attention(dq.get(), dk.get(), dv.get(), dout.get(), c.T, c.S, c.Hq, c.Hkv, c.D, c.off, scale, s_);
    finish();
    // 1e-5: f32 throughout; dot products summed in another order (<= 256 terms), the
    // online softmax rescaling, and expf vs the CPU's exp_approx (both ~2 ulp). Expected ~1e-6.
    EXPECT_LE(normalized_error(dout.download(), ref), 1e-5);
  }
}

// ---- fused bf16 flash attention ------------------------------------------------------------

TEST_F(CudaOps, FlashAttentionBf16) {
  struct Case {
    int64_t T, S, Hq, Hkv, D, off;
  };
  const Case cases[] = {
      {2048, 2048, 32, 32, 128, 0},  // the 7B prefill shape: 32 query tiles × up to 32 key tiles
      {300, 300, 8, 2, 64, 0},       // GQA 4:1, partial last query and key tiles
      {1, 77, 4, 4, 128, 76},        // decode: one query at position 76 sees all 77 keys
      {100, 250, 4, 1, 64, 150},     // after a cached prefix not a tile multiple, GQA 4:1
      {17, 17, 2, 1, 128, 0},        // smaller than one tile
      {4, 50, 2, 1, 64, 10},         // cache longer than needed: keys 14..49 are NaN and must not be read
  };
  uint32_t seed = 850;
  for (const Case& c : cases) {
    SCOPED_TRACE(testing::Message() << "T " << c.T << " S " << c.S << " Hq " << c.Hq << " Hkv " << c.Hkv << " D "
                                    << c.D << " q_offset " << c.off);
    const size_t nq = size_t(c.T * c.Hq * c.D), nk = size_t(c.S * c.Hkv * c.D);
    auto q = randu(nq, seed++, -2.0f, 2.0f);
    auto k = randu(nk, seed++, -2.0f, 2.0f);
    auto v = randu(nk, seed++, -1.0f, 1.0f);
    const float nan = std::numeric_limits<float>::quiet_NaN();
    for (size_t i = size_t((c.off + c.T) * c.Hkv * c.D); i < nk; ++i) k[i] = v[i] = nan;  // beyond the last query
    // The kernel's inputs are bf16: the reference gets the same rounded values.
    std::vector<uint16_t> q16(nq), k16(nk), v16(nk);
    for (size_t i = 0; i < nq; ++i) q[i] = bf16_to_f32(q16[i] = f32_to_bf16(q[i]));
    for (size_t i = 0; i < nk; ++i) {
      k[i] = bf16_to_f32(k16[i] = f32_to_bf16(k[i]));
      v[i] = bf16_to_f32(v16[i] = f32_to_bf16(v[i]));
    }
    const float scale = float(1.0 / std::sqrt(double(c.D)));
    std::vector<float> ref(nq);
    cpu_backend().attention(q.data(), k.data(), v.data(), ref.data(), c.T, c.S, c.Hq, c.Hkv, c.D, c.off, scale);
    Dev<uint16_t> dq(q16), dk(k16), dv(v16), dout(nq);
    dout.poison();
    kc::flash_attention_bf16(dq.get(), dk.get(), dv.get(), dout.get(), c.T, c.S, c.Hq, c.Hkv, c.D, c.off, scale,
                             s_);
    finish();
    const auto got = bf16_to_f32_vec(dout.download());
    size_t nans = 0;
    for (float x : got) nans += std::isnan(x) ? 1 : 0;
    EXPECT_EQ(nans, 0u);
    // 1.5e-2: the inputs are the same bf16 values on both sides; the kernel rounds P
    // (unnormalized probabilities) to bf16 for the P·V MMA and the output to bf16 once,
    // each ~2^-9 ≈ 2e-3 relative (an emulation of the kernel gives ~2e-3 in all); the f32
    // dot products and online softmax add ~1e-6. A wrong mask, tile edge or GQA map is O(1).
    EXPECT_LE(normalized_error(got, ref), 1.5e-2);
  }
}

// ---- causal softmax → bf16 ----------------------------------------------------------------

TEST_F(CudaOps, CausalSoftmaxBf16) {
  struct Case {
    int64_t B, rows, cols, ld, row_offset;
  };
  const Case cases[] = {
      {3, 5, 37, 40, 32},      // padded ld, the last rows of a 37-key cache
      {2, 64, 64, 64, 0},      // square causal tile
      {1, 7, 300, 301, 293},   // odd ld
      {2, 1, 1, 1, 0},         // a single column
      {2, 3, 40, 48, 10},      // rows see 11, 12, 13 of 40 columns
      {1, 2, 9000, 9001, 8998},  // longer than 1024 threads × 8 values: the re-read path
  };
  uint32_t seed = 900;
  const float nan = std::numeric_limits<float>::quiet_NaN();
  for (const Case& c : cases) {
    SCOPED_TRACE(testing::Message() << "B " << c.B << " rows " << c.rows << " cols " << c.cols << " ld " << c.ld
                                    << " row_offset " << c.row_offset);
    const size_t n = size_t(c.B * c.rows * c.ld);
    auto sc = randu(n, seed++, -8.0f, 8.0f);
    const float scale = 0.35f;
    std::vector<double> ref(n, 0.0);
    std::vector<char> visible(n, 0);
    for (int64_t b = 0; b < c.B; ++b)
      for (int64_t r = 0; r < c.rows; ++r) {
        const size_t base = size_t((b * c.rows + r) * c.ld);
        const int64_t nv = std::min(c.cols, c.row_offset + r + 1);
        double mx = -INFINITY, sum = 0;
        for (int64_t j = 0; j < nv; ++j) mx = std::max(mx, double(scale * sc[base + size_t(j)]));
        for (int64_t j = 0; j < nv; ++j) sum += std::exp(double(scale * sc[base + size_t(j)]) - mx);
        for (int64_t j = 0; j < nv; ++j) {
          ref[base + size_t(j)] = std::exp(double(scale * sc[base + size_t(j)]) - mx) / sum;
          visible[base + size_t(j)] = 1;
        }
        for (int64_t j = nv; j < c.ld; ++j) sc[base + size_t(j)] = nan;  // masked / padding: never read
      }
    Dev<float> dsc(sc);
    Dev<uint16_t> dp(n);
    dp.poison();
    kc::causal_softmax_bf16(dsc.get(), dp.get(), c.B, c.rows, c.cols, c.ld, c.row_offset, scale, s_);
    finish();
    auto got = dp.download();
    std::vector<float> g32, r32;
    std::vector<uint16_t> gvis;
    size_t masked_bad = 0;
    for (size_t i = 0; i < n; ++i) {
      if (visible[i]) {
        g32.push_back(bf16_to_f32(got[i]));
        gvis.push_back(got[i]);
        r32.push_back(float(ref[i]));
      } else if (got[i] != 0) {
        ++masked_bad;  // masked and padding columns must be exactly +0
      }
    }
    EXPECT_EQ(masked_bad, 0u);
    // 4e-3: bf16 output (<= 2^-9 relative); the f32 softmax itself is ~1e-6 off the double one.
    EXPECT_LE(normalized_error(g32, r32), 4e-3);
    EXPECT_EQ(bf16_far(gvis, r32), 0u);
  }
}

// ---- per-row NLL --------------------------------------------------------------------------

TEST_F(CudaOps, NllRows) {
  struct Case {
    int64_t T, V;
  };
  const Case cases[] = {{5, 32000}, {3, 1}, {4, 50257}, {2, 100}};
  uint32_t seed = 1000;
  for (const Case& c : cases) {
    SCOPED_TRACE(testing::Message() << "T " << c.T << " V " << c.V);
    auto logits = randu(size_t(c.T * c.V), seed++, -10.0f, 10.0f);
    for (int64_t i = 0; i < c.V; ++i) logits[size_t(i)] += 80.0f;  // row 0 far from 0: max subtraction matters
    std::mt19937 g(seed++);
    std::vector<int32_t> target(size_t(c.T));
    for (auto& t : target) t = int32_t(g() % uint32_t(c.V));
    target[0] = int32_t(c.V - 1);
    std::vector<double> ref(size_t(c.T));
    for (int64_t t = 0; t < c.T; ++t) {
      const float* row = logits.data() + t * c.V;
      double mx = -INFINITY, s = 0;
      for (int64_t i = 0; i < c.V; ++i) mx = std::max(mx, double(row[i]));
      for (int64_t i = 0; i < c.V; ++i) s += std::exp(double(row[i]) - mx);
      ref[size_t(t)] = std::log(s) + mx - double(row[target[size_t(t)]]);
    }
    Dev<float> dl(logits);
    Dev<int32_t> dt(target);
    Dev<double> dn(size_t(c.T));
    dn.poison();
    kc::nll_rows(dl.get(), dt.get(), c.T, c.V, dn.get(), s_);
    finish();
    auto got = dn.download();
    for (int64_t t = 0; t < c.T; ++t) {
      // 1e-5 + 1e-6·|nll|: f32 exp(x - max) terms (x - max rounded to f32, |x - max| <= 20
      // for the terms that matter: <= 2e-6 relative each) summed in double.
      const double r = ref[size_t(t)];
      EXPECT_NEAR(got[size_t(t)], r, 1e-5 + 1e-6 * std::fabs(r)) << "row " << t;
    }
  }
}

// ---- activation fake quantization ---------------------------------------------------------

TEST_F(CudaOps, ActQuant) {
  struct Case {
    int64_t rows, cols;
    int bits;
    int64_t groupsize;
    bool asym;
    float clip;
  };
  const Case cases[] = {
      {4, 4096, 4, -1, false, 1.0f},   // per-token symmetric W4A4 style
      {3, 4096, 4, 128, true, 0.9f},   // per-group asymmetric with clipping
      {5, 96, 8, 32, false, 0.95f},    // small groups (one warp)
      {2, 11008, 3, -1, true, 1.0f},   // the 7B FFN width, asymmetric
      {3, 64, 2, 64, true, 1.0f},      // 2 bits
      {2, 300, 16, -1, false, 1.0f},   // 16 bits: no-op
  };
  uint32_t seed = 1100;
  for (const Case& c : cases) {
    SCOPED_TRACE(testing::Message() << "rows " << c.rows << " cols " << c.cols << " bits " << c.bits << " g "
                                    << c.groupsize << " asym " << c.asym << " clip " << c.clip);
    const size_t n = size_t(c.rows * c.cols);
    auto x = randu(n, seed++, -4.0f, 4.0f);
    const int64_t g = c.groupsize > 0 ? c.groupsize : c.cols;
    // Row 0's first group all zeros (zero range: scale 1), row 1 all positive (min forced to 0).
    std::fill(x.begin(), x.begin() + g, 0.0f);
    for (int64_t i = 0; i < c.cols; ++i) x[size_t(c.cols + i)] = std::fabs(x[size_t(c.cols + i)]);
    std::vector<float> ref = x;
    fake_quant_act(ref.data(), c.rows, c.cols, c.bits, c.groupsize, c.asym, c.clip);
    Dev<float> dx(x);
    kc::act_quant(dx.get(), c.rows, c.cols, c.bits, c.groupsize, c.asym, c.clip, s_);
    finish();
    auto got = dx.download();
    if (c.bits == 16) {
      size_t changed = 0;
      for (size_t i = 0; i < n; ++i) changed += bits_of(got[i]) != bits_of(x[i]);
      EXPECT_EQ(changed, 0u);
      continue;
    }
    // The kernel performs the same IEEE operations in the same order as fake_quant_act
    // (min/max, clip, scale, zero, rint(x/scale)+zero, clamp, scale·(q-zero); none of them
    // contractible into an FMA), so 0 differences are expected. Allowed: at most
    // 1 + n/10000 elements, each exactly one grid step off (a rounding tie at .5 flipped).
    QuantSpec spec;
    spec.bits = c.bits;
    spec.sym = !c.asym;
    size_t diff = 0, far = 0;
    for (int64_t r = 0; r < c.rows; ++r)
      for (int64_t c0 = 0; c0 < c.cols; c0 += g) {
        const size_t base = size_t(r * c.cols + c0);
        const QParams p = find_params(x.data() + base, g, spec, c.clip);
        for (int64_t i = 0; i < g; ++i) {
          const float a = got[base + size_t(i)], b = ref[base + size_t(i)];
          if (bits_of(a) == bits_of(b) || (a == 0.0f && b == 0.0f)) continue;
          ++diff;
          if (!(std::fabs(double(a) - double(b)) <= 1.001 * double(p.scale))) ++far;
        }
      }
    EXPECT_EQ(far, 0u);
    EXPECT_LE(diff, 1 + n / 10000);
  }
}

// ---- Hadamard -----------------------------------------------------------------------------

TEST_F(CudaOps, HadamardRows) {
  struct Case {
    int64_t n, rows, K, P;  // K, P: the layout make_hadamard must choose (checked)
    bool pm1;
  };
  const Case cases[] = {
      {4096, 3, 1, 4096, true},      // Sylvester only: the 7B hidden size
      {11008, 3, 172, 64, true},     // Williamson 172 × 64: the 7B FFN width
      {192, 5, 12, 16, true},        // Paley 12 × 16 (mix with P >= 16)
      {96, 4, 12, 8, true},          // 12 × 8: the mix's P < 16 rounding order
      {5, 3, 5, 1, false},           // odd: random orthogonal fallback, no FWHT (P = 1)
      {12, 2, 12, 1, true},          // ±1 of order 12 alone (P = 1)
      {28672, 2, 28, 1024, true},    // 28 × 1024: two segments per 2048-element FWHT block
      {16384, 2, 1, 16384, true},    // FWHT in 64 KiB of shared memory (opt-in)
      {65536, 2, 1, 65536, true},    // P > 16384: the global-memory multi-pass FWHT
      {393216, 2, 12, 32768, true},  // multi-pass FWHT then the mix
  };
  uint32_t seed = 1200;
  for (const Case& c : cases) {
    SCOPED_TRACE(testing::Message() << "n " << c.n << " rows " << c.rows);
    const Hadamard h = make_hadamard(c.n, 7);
    ASSERT_EQ(h.n, c.n);
    ASSERT_EQ(h.K, c.K);
    ASSERT_EQ(h.pow2, c.P);
    ASSERT_EQ(h.pm1, c.pm1);
    ASSERT_EQ(h.HKt.size(), size_t(c.K * c.K));
    const size_t n = size_t(c.rows * c.n);
    auto x = randu(n, seed++, -1.0f, 1.0f);
    std::vector<float> ref = x;
    h.apply(ref.data(), c.rows);
    Dev<float> dx(x), dtmp(n), dhk(h.HKt);
    dtmp.poison();
    kc::hadamard_rows(dx.get(), c.rows, c.n, h.pow2, h.K, dhk.get(), dtmp.get(), s_);
    finish();
    // 1e-5: the FWHT butterflies are the CPU's in the same order (bit-identical); the K-term
    // mix differs only by FMA contraction. Expected ~1e-7.
    EXPECT_LE(normalized_error(dx.download(), ref), 1e-5);
  }
}

}  // namespace

#else  // !LOWBIT_HAVE_CUDA

TEST(CudaOps, SkippedWithoutCuda) {
  GTEST_SKIP() << "built without the CUDA backend: " << lowbit::cuda::unavailable_reason();
}

#endif
