// Hadamard transforms of any size; the math is in hadamard.h.
#include "quant/hadamard.h"

#include <omp.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <map>
#include <mutex>
#include <numbers>
#include <random>

#include "backend/cuda_api.h"
#include "core/error.h"
#include "core/rng.h"

namespace lowbit {
namespace {

// ---- number theory ----------------------------------------------------------------

bool is_prime(int64_t n) {
  if (n < 2) return false;
  for (int64_t d = 2; d * d <= n; ++d)
    if (n % d == 0) return false;
  return true;
}

// q = p^k with p prime.
bool prime_power(int64_t q, int64_t* p, int64_t* k) {
  if (q < 2) return false;
  int64_t d = 2;
  while (d * d <= q && q % d != 0) ++d;
  if (q % d != 0) d = q;  // q itself is prime
  int64_t e = 0, r = q;
  while (r % d == 0) r /= d, ++e;
  if (r != 1) return false;
  *p = d;
  *k = e;
  return true;
}

int64_t mod(int64_t a, int64_t p) { return ((a % p) + p) % p; }

// ---- polynomials over GF(p): coefficient vectors, lowest degree first --------------------

// Remainder of a modulo the monic polynomial m (deg m >= 1).
std::vector<int64_t> poly_rem(std::vector<int64_t> a, const std::vector<int64_t>& m, int64_t p) {
  const size_t dm = m.size() - 1;
  for (size_t t = a.size(); t-- > dm;) {
    const int64_t c = mod(a[t], p);
    a[t] = 0;
    if (c == 0) continue;
    for (size_t i = 0; i < dm; ++i) a[t - dm + i] = mod(a[t - dm + i] - c * m[i], p);
  }
  a.resize(std::min(a.size(), dm));
  for (auto& v : a) v = mod(v, p);
  return a;
}

// Monic polynomial of degree deg whose lower coefficients are the base-p digits of code.
std::vector<int64_t> monic_from_code(int64_t code, int64_t deg, int64_t p) {
  std::vector<int64_t> f(size_t(deg + 1), 0);
  for (int64_t i = 0; i < deg; ++i, code /= p) f[size_t(i)] = code % p;
  f[size_t(deg)] = 1;
  return f;
}

// f monic of degree k is irreducible iff no monic polynomial of degree 1..k/2 divides it.
bool irreducible(const std::vector<int64_t>& f, int64_t p) {
  const int64_t k = int64_t(f.size()) - 1;
  for (int64_t d = 1; 2 * d <= k; ++d) {
    int64_t count = 1;
    for (int64_t i = 0; i < d; ++i) count *= p;
    for (int64_t code = 0; code < count; ++code) {
      auto r = poly_rem(f, monic_from_code(code, d, p), p);
      if (std::all_of(r.begin(), r.end(), [](int64_t v) { return v == 0; })) return false;
    }
  }
  return true;
}

// GF(q), q = p^k, as GF(p)[x]/(f). Element e <-> polynomial with base-p digits of e.
struct GaloisField {
  int64_t p = 0, k = 0, q = 0;
  std::vector<int64_t> f;       // monic irreducible, degree k
  std::vector<int64_t> digits;  // [q, k]
  std::vector<int8_t> chi;      // quadratic character

  explicit GaloisField(int64_t q_) : q(q_) {
    LOWBIT_ASSERT(prime_power(q, &p, &k));
    for (int64_t code = 0; code < q; ++code) {  // the p^k choices of lower coefficients
      auto cand = monic_from_code(code, k, p);
      if (k > 1 && cand[0] == 0) continue;  // divisible by x
      if (irreducible(cand, p)) {
        f = std::move(cand);
        break;
      }
    }
    LOWBIT_ASSERT(!f.empty());
    digits.resize(size_t(q * k));
    for (int64_t e = 0; e < q; ++e) {
      int64_t v = e;
      for (int64_t i = 0; i < k; ++i, v /= p) digits[size_t(e * k + i)] = v % p;
    }
    chi.assign(size_t(q), -1);
    chi[0] = 0;
    for (int64_t x = 1; x < q; ++x) chi[size_t(mul(x, x))] = 1;
  }

  int64_t encode(const std::vector<int64_t>& d) const {
    int64_t e = 0;
    for (size_t i = d.size(); i-- > 0;) e = e * p + d[i];
    return e;
  }
  int64_t mul(int64_t a, int64_t b) const {
    std::vector<int64_t> prod(size_t(2 * k - 1), 0);
    for (int64_t i = 0; i < k; ++i)
      for (int64_t j = 0; j < k; ++j) prod[size_t(i + j)] += digits[size_t(a * k + i)] * digits[size_t(b * k + j)];
    auto r = poly_rem(prod, f, p);
    r.resize(size_t(k), 0);
    return encode(r);
  }
  int64_t sub(int64_t a, int64_t b) const {
    int64_t e = 0;
    for (int64_t i = k; i-- > 0;) e = e * p + mod(digits[size_t(a * k + i)] - digits[size_t(b * k + i)], p);
    return e;
  }
};

// ---- ±1 constructions (row-major, K×K, unscaled) ---------------------------------------

using Pm1 = std::vector<int8_t>;

Pm1 sylvester(int64_t K) {
  Pm1 H(size_t(K * K));
  for (int64_t i = 0; i < K; ++i)
    for (int64_t j = 0; j < K; ++j) H[size_t(i * K + j)] = (std::popcount(uint64_t(i & j)) & 1) ? -1 : 1;
  return H;
}

// K = q + 1, q ≡ 3 (mod 4): H = I + [[0, 1ᵀ], [-1, Q]], Q[a][b] = χ(a - b).
Pm1 paley1(int64_t q) {
  GaloisField F(q);
  const int64_t K = q + 1;
  Pm1 H(size_t(K * K));
  for (int64_t j = 0; j < K; ++j) H[size_t(j)] = 1;
  for (int64_t a = 0; a < q; ++a) {
    H[size_t((a + 1) * K)] = -1;
    for (int64_t b = 0; b < q; ++b)
      H[size_t((a + 1) * K + b + 1)] = int8_t(a == b ? 1 : F.chi[size_t(F.sub(a, b))]);
  }
  return H;
}

// K = 2(q + 1), q ≡ 1 (mod 4): H = C ⊗ [[1,1],[1,-1]] + I ⊗ [[1,-1],[-1,-1]],
// C = [[0, 1ᵀ], [1, Q]] symmetric conference matrix.
Pm1 paley2(int64_t q) {
  GaloisField F(q);
  const int64_t m = q + 1, K = 2 * m;
  std::vector<int8_t> C(size_t(m * m), 0);
  for (int64_t j = 1; j < m; ++j) C[size_t(j)] = C[size_t(j * m)] = 1;
  for (int64_t a = 0; a < q; ++a)
    for (int64_t b = 0; b < q; ++b) C[size_t((a + 1) * m + b + 1)] = F.chi[size_t(F.sub(a, b))];
  static const int P[2][2] = {{1, 1}, {1, -1}}, M[2][2] = {{1, -1}, {-1, -1}};
  Pm1 H(size_t(K * K));
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < m; ++j)
      for (int u = 0; u < 2; ++u)
        for (int v = 0; v < 2; ++v)
          H[size_t((2 * i + u) * K + 2 * j + v)] =
              int8_t(C[size_t(i * m + j)] * P[u][v] + (i == j ? M[u][v] : 0));
  return H;
}

Pm1 kronecker(const Pm1& A, int64_t a, const Pm1& B, int64_t b) {
  const int64_t K = a * b;
  Pm1 H(size_t(K * K));
  for (int64_t i = 0; i < a; ++i)
    for (int64_t k = 0; k < a; ++k)
      for (int64_t j = 0; j < b; ++j)
        for (int64_t l = 0; l < b; ++l)
          H[size_t((i * b + j) * K + k * b + l)] = int8_t(A[size_t(i * a + k)] * B[size_t(j * b + l)]);
  return H;
}

// Williamson: four symmetric ±1 sequences of odd prime length p, constant on the
// cosets of the subgroup of GF(p)* of order s (which contains -1 since s is even).
// Bit 0 of a mask is the entry at 0, bit 1 + c the entry on coset g^c·S (set = -1).
struct WilliamsonSolution {
  int64_t p = 0, s = 0;
  std::array<uint32_t, 4> mask{};
};

int64_t primitive_root(int64_t p) {
  for (int64_t g = 2;; ++g) {
    int64_t x = 1, order = 0;
    do {
      x = x * g % p;
      ++order;
    } while (x != 1);
    if (order == p - 1) return g;
  }
}

struct CosetIndex {
  int64_t g = 0, t = 0;
  std::vector<int64_t> coset;  // coset[i] = log_g(i) mod t for i in 1..p-1
  CosetIndex(int64_t p, int64_t s) : g(primitive_root(p)), t((p - 1) / s), coset(size_t(p), -1) {
    int64_t x = 1;
    for (int64_t e = 0; e < p - 1; ++e, x = x * g % p) coset[size_t(x)] = e % t;
  }
  std::vector<int> sequence(int64_t p, uint32_t m) const {
    std::vector<int> a(static_cast<size_t>(p));
    a[0] = (m & 1u) ? -1 : 1;
    for (int64_t i = 1; i < p; ++i) a[size_t(i)] = ((m >> (1 + coset[size_t(i)])) & 1u) ? -1 : 1;
    return a;
  }
};

constexpr int64_t kWilliamsonMaxCosets = 8;
constexpr int64_t kWilliamsonMaxP = 5000;

bool williamson_search(int64_t p, WilliamsonSolution* out) {
  if (p < 3 || p > kWilliamsonMaxP || !is_prime(p)) return false;
  for (int64_t t = 1; t <= kWilliamsonMaxCosets; ++t) {
    if ((p - 1) % t != 0) continue;
    const int64_t s = (p - 1) / t;
    if (s % 2 != 0) continue;
    CosetIndex ci(p, s);
    const uint32_t N = 1u << (t + 1);
    using Key = std::array<int, kWilliamsonMaxCosets>;
    std::vector<Key> paf(N, Key{});
    for (uint32_t m = 0; m < N; ++m) {
      auto a = ci.sequence(p, m);
      int64_t d = 1;  // shifts g^c, one per coset
      for (int64_t c = 0; c < t; ++c, d = d * ci.g % p) {
        int acc = 0;
        for (int64_t i = 0; i < p; ++i) acc += a[size_t(i)] * a[size_t((i + d) % p)];
        paf[m][size_t(c)] = acc;
      }
    }
    // Meet in the middle: PAF_A + PAF_B = -(PAF_C + PAF_D) at every coset shift.
    std::map<Key, std::pair<uint32_t, uint32_t>> pairs;
    for (uint32_t a = 0; a < N; ++a)
      for (uint32_t b = a; b < N; ++b) {
        Key k{};
        for (int64_t c = 0; c < t; ++c) k[size_t(c)] = paf[a][size_t(c)] + paf[b][size_t(c)];
        pairs.emplace(k, std::make_pair(a, b));
      }
    for (const auto& [k, ab] : pairs) {
      Key neg{};
      for (int64_t c = 0; c < t; ++c) neg[size_t(c)] = -k[size_t(c)];
      auto it = pairs.find(neg);
      if (it == pairs.end()) continue;
      out->p = p;
      out->s = s;
      out->mask = {ab.first, ab.second, it->second.first, it->second.second};
      return true;
    }
  }
  return false;
}

Pm1 williamson(const WilliamsonSolution& w) {
  const int64_t p = w.p, K = 4 * p;
  CosetIndex ci(p, w.s);
  std::array<std::vector<int>, 4> seq;
  for (int i = 0; i < 4; ++i) seq[size_t(i)] = ci.sequence(p, w.mask[size_t(i)]);
  // [[ A,  B,  C,  D], [-B,  A, -D,  C], [-C,  D,  A, -B], [-D, -C,  B,  A]]
  static const int which[4][4] = {{0, 1, 2, 3}, {1, 0, 3, 2}, {2, 3, 0, 1}, {3, 2, 1, 0}};
  static const int sign[4][4] = {{1, 1, 1, 1}, {-1, 1, -1, 1}, {-1, 1, 1, -1}, {-1, -1, 1, 1}};
  Pm1 H(size_t(K * K));
  for (int R = 0; R < 4; ++R)
    for (int C = 0; C < 4; ++C) {
      const auto& x = seq[size_t(which[R][C])];
      for (int64_t r = 0; r < p; ++r)
        for (int64_t c = 0; c < p; ++c)  // circulant: entry (r, c) = x[c - r mod p]
          H[size_t((R * p + r) * K + C * p + c)] = int8_t(sign[R][C] * x[size_t(mod(c - r, p))]);
    }
  return H;
}

// ---- which construction for which order (memoized) -------------------------------------

struct Plan {
  enum Kind { None, Sylvester, Paley1, Paley2, Williamson, Kron } kind = None;
  int64_t q = 0, a = 0, b = 0;  // Paley q; Kronecker factors a·b
  WilliamsonSolution w;
  std::string desc;
};

std::recursive_mutex g_plan_mu;
std::map<int64_t, Plan> g_plans;

const Plan& resolve(int64_t K) {
  std::lock_guard<std::recursive_mutex> lock(g_plan_mu);
  auto it = g_plans.find(K);
  if (it != g_plans.end()) return it->second;
  Plan pl;
  int64_t p = 0, e = 0;
  if (K >= 1 && (K & (K - 1)) == 0) {
    pl.kind = Plan::Sylvester;
    pl.desc = fmt::format("sylvester({})", K);
  } else if (K < 4 || K % 4 != 0) {
    // no Hadamard matrix of this order exists
  } else if (prime_power(K - 1, &p, &e) && (K - 1) % 4 == 3) {
    pl.kind = Plan::Paley1;
    pl.q = K - 1;
    pl.desc = fmt::format("paley1(q={})", pl.q);
  } else if (prime_power(K / 2 - 1, &p, &e) && (K / 2 - 1) % 4 == 1) {
    pl.kind = Plan::Paley2;
    pl.q = K / 2 - 1;
    pl.desc = fmt::format("paley2(q={})", pl.q);
  } else if (williamson_search(K / 4, &pl.w)) {
    pl.kind = Plan::Williamson;
    pl.desc = fmt::format("williamson(p={})", K / 4);
  } else {
    for (int64_t a = 2; a * a <= K; ++a) {
      if (K % a != 0) continue;
      const int64_t b = K / a;
      if (resolve(a).kind != Plan::None && resolve(b).kind != Plan::None) {
        pl.kind = Plan::Kron;
        pl.a = a;
        pl.b = b;
        pl.desc = resolve(a).desc + " x " + resolve(b).desc;
        break;
      }
    }
  }
  return g_plans.emplace(K, pl).first->second;
}

Pm1 build(int64_t K) {
  Plan pl;
  {
    std::lock_guard<std::recursive_mutex> lock(g_plan_mu);
    pl = resolve(K);
  }
  switch (pl.kind) {
    case Plan::Sylvester: return sylvester(K);
    case Plan::Paley1: return paley1(pl.q);
    case Plan::Paley2: return paley2(pl.q);
    case Plan::Williamson: return williamson(pl.w);
    case Plan::Kron: return kronecker(build(pl.a), pl.a, build(pl.b), pl.b);
    case Plan::None: break;
  }
  throw ArgError(fmt::format("no known ±1 Hadamard construction of order {}", K));
}

// ---- seeded random orthogonal matrix ------------------------------------------------------

// Standard normals by Box–Muller over mt19937_64 (bit-identical across standard libraries,
// unlike std::normal_distribution).
struct Gaussian {
  std::mt19937_64 eng;
  bool have = false;
  double spare = 0;
  explicit Gaussian(uint64_t seed) : eng(seed) {}
  double uniform01_open() { return (double(eng() >> 11) + 0.5) * 0x1.0p-53; }  // (0, 1)
  double operator()() {
    if (have) {
      have = false;
      return spare;
    }
    const double u1 = uniform01_open(), u2 = uniform01_open();
    const double r = std::sqrt(-2.0 * std::log(u1)), th = 2.0 * std::numbers::pi * u2;
    spare = r * std::sin(th);
    have = true;
    return r * std::cos(th);
  }
};

// Rows of a K×K Gaussian orthonormalized by Gram–Schmidt (twice per row): the Q of a QR
// with positive R diagonal, i.e. Haar-distributed.
std::vector<double> random_orthogonal(int64_t K, uint64_t seed) {
  Gaussian gauss(seed);
  std::vector<double> Q(size_t(K * K));
  for (auto& v : Q) v = gauss();
  for (int64_t i = 0; i < K; ++i) {
    double* v = &Q[size_t(i * K)];
    for (int pass = 0; pass < 2; ++pass)
      for (int64_t j = 0; j < i; ++j) {
        const double* u = &Q[size_t(j * K)];
        double r = 0;
        for (int64_t c = 0; c < K; ++c) r += u[c] * v[c];
        for (int64_t c = 0; c < K; ++c) v[c] -= r * u[c];
      }
    double nrm = 0;
    for (int64_t c = 0; c < K; ++c) nrm += v[c] * v[c];
    nrm = std::sqrt(nrm);
    LOWBIT_CHECK(nrm > 1e-12, NumericError, "random orthogonal {}x{}: degenerate Gaussian draw", K, K);
    for (int64_t c = 0; c < K; ++c) v[c] /= nrm;
  }
  return Q;
}

constexpr int64_t kMaxRandomOrder = 2047;

// ---- the transform ------------------------------------------------------------------------

template <class T>
void fwht_impl(T* x, int64_t n) {
  LOWBIT_ASSERT(n >= 1 && (n & (n - 1)) == 0);
  for (int64_t h = 1; h < n; h *= 2)
    for (int64_t i = 0; i < n; i += 2 * h) {
      T* a = x + i;
      T* b = a + h;
#pragma omp simd
      for (int64_t j = 0; j < h; ++j) {
        const T u = a[j], v = b[j];
        a[j] = u + v;
        b[j] = u - v;
      }
    }
}

bool parallel_worthwhile(int64_t rows, int64_t n) {
  return rows > 1 && rows * n >= (int64_t(1) << 16) && !omp_in_parallel();
}

// One row, viewed as the K×P matrix X: FWHT of each row of X, then the K×K mix,
// x ← M·X·H_P / √P with M = HKᵀ (apply) or HK (apply_transpose).
void transform_row(float* x, int64_t K, int64_t P, const float* M, float* buf) {
  for (int64_t k = 0; k < K; ++k) fwht_impl(x + k * P, P);
  const float s = float(1.0 / std::sqrt(double(P)));
  if (P >= 16) {
    for (int64_t kp = 0; kp < K; ++kp) {
      float* y = buf + kp * P;
      std::fill(y, y + P, 0.0f);
      const float* m = M + kp * K;
      for (int64_t k = 0; k < K; ++k) {
        const float a = m[k] * s;
        const float* xk = x + k * P;
#pragma omp simd
        for (int64_t j = 0; j < P; ++j) y[j] += a * xk[j];
      }
    }
    std::copy(buf, buf + K * P, x);
  } else {
    // buf = Xᵀ [P, K]; y[k'][j] = <M row k', buf row j>
    for (int64_t k = 0; k < K; ++k)
      for (int64_t j = 0; j < P; ++j) buf[j * K + k] = x[k * P + j];
    for (int64_t j = 0; j < P; ++j) {
      const float* t = buf + j * K;
      for (int64_t kp = 0; kp < K; ++kp) {
        const float* m = M + kp * K;
        float acc = 0;
#pragma omp simd reduction(+ : acc)
        for (int64_t k = 0; k < K; ++k) acc += m[k] * t[k];
        x[kp * P + j] = acc * s;
      }
    }
  }
}

// Below this many elements the copies to and from the GPU cost more than the transform.
constexpr int64_t kDeviceMinElements = int64_t(1) << 16;

void apply_impl(const Hadamard& h, float* x, int64_t rows, bool transpose) {
  LOWBIT_ASSERT(h.n >= 1 && h.K * h.pow2 == h.n);
  if (rows <= 0) return;
  // --device cuda: large activations (the calibration and evaluation forwards) go to the GPU.
  if (default_device() == Device::CUDA && rows * h.n >= kDeviceMinElements) {
    cuda::hadamard_rows_host(x, rows, h.n, h.pow2, h.K, h.K > 1 ? (transpose ? h.HK.data() : h.HKt.data()) : nullptr);
    return;
  }
  if (h.K == 1) {
    fwht_rows(x, rows, h.n, true);
    return;
  }
  LOWBIT_ASSERT(int64_t(h.HK.size()) == h.K * h.K && int64_t(h.HKt.size()) == h.K * h.K);
  const float* M = transpose ? h.HK.data() : h.HKt.data();
  const int64_t n = h.n;
#pragma omp parallel for schedule(static) if (parallel_worthwhile(rows, n))
  for (int64_t r = 0; r < rows; ++r) {
    thread_local std::vector<float> buf;
    if (int64_t(buf.size()) < n) buf.resize(size_t(n));
    transform_row(x + r * n, h.K, h.pow2, M, buf.data());
  }
}

}  // namespace

void fwht(float* x, int64_t n) { fwht_impl(x, n); }
void fwht(double* x, int64_t n) { fwht_impl(x, n); }

void fwht_rows(float* x, int64_t rows, int64_t n, bool normalize) {
  LOWBIT_CHECK(n >= 1 && (n & (n - 1)) == 0, ArgError, "fwht: length {} is not a power of two", n);
  const float s = float(1.0 / std::sqrt(double(n)));
#pragma omp parallel for schedule(static) if (parallel_worthwhile(rows, n))
  for (int64_t r = 0; r < rows; ++r) {
    float* row = x + r * n;
    fwht_impl(row, n);
    if (normalize && n > 1)
#pragma omp simd
      for (int64_t j = 0; j < n; ++j) row[j] *= s;
  }
}

bool hadamard_matrix_exists(int64_t K, std::string* construction) {
  if (K < 1) return false;
  std::string desc;
  bool ok;
  {
    std::lock_guard<std::recursive_mutex> lock(g_plan_mu);
    const Plan& pl = resolve(K);
    ok = pl.kind != Plan::None;
    desc = pl.desc;
  }
  if (ok && construction) *construction = desc;
  return ok;
}

std::vector<int8_t> hadamard_pm1_matrix(int64_t K) {
  LOWBIT_CHECK(K >= 1, ArgError, "Hadamard order must be >= 1, got {}", K);
  return build(K);
}

Hadamard make_hadamard(int64_t n, uint64_t seed) {
  LOWBIT_CHECK(n >= 1, ArgError, "Hadamard size must be >= 1, got {}", n);
  const int e = std::countr_zero(uint64_t(n));
  const int64_t odd = n >> e;
  Hadamard h;
  h.n = n;
  std::vector<double> Q;  // orthonormal K×K
  for (int m = e; m >= 0 && !h.pm1; --m) {
    const int64_t K = odd << (e - m);
    std::string desc;
    if (!hadamard_matrix_exists(K, &desc)) continue;
    h.K = K;
    h.pow2 = int64_t(1) << m;
    h.pm1 = true;
    if (K == 1)
      h.construction = fmt::format("sylvester({})", h.pow2);
    else
      h.construction = h.pow2 == 1 ? desc : fmt::format("{} x sylvester({})", desc, h.pow2);
    const Pm1 S = build(K);
    const double inv = 1.0 / std::sqrt(double(K));
    Q.resize(S.size());
    for (size_t i = 0; i < S.size(); ++i) Q[i] = S[i] * inv;
  }
  if (!h.pm1) {
    // The dense fallback costs O(K³) to build and K·n per row to apply.
    LOWBIT_CHECK(odd <= kMaxRandomOrder, ArgError,
                 "Hadamard size {}: no ±1 construction for any {}·2^j, and the odd part {} is too large "
                 "for the dense random orthogonal fallback (max {})",
                 n, odd, odd, kMaxRandomOrder);
    h.K = odd;
    h.pow2 = int64_t(1) << e;
    Q = random_orthogonal(odd, seed);
    h.construction = h.pow2 == 1 ? fmt::format("random(seed={})", seed)
                                 : fmt::format("random(seed={}) x sylvester({})", seed, h.pow2);
  }
  const int64_t K = h.K;
  h.HK64 = std::move(Q);
  h.HK.resize(h.HK64.size());
  h.HKt.resize(h.HK64.size());
  for (int64_t i = 0; i < K; ++i)
    for (int64_t j = 0; j < K; ++j) {
      h.HK[size_t(i * K + j)] = float(h.HK64[size_t(i * K + j)]);
      h.HKt[size_t(j * K + i)] = float(h.HK64[size_t(i * K + j)]);
    }
  return h;
}

double Hadamard::incoherence() const {
  double mx = 0;
  for (double v : HK64) mx = std::max(mx, std::abs(v));
  return mx * std::sqrt(double(K));
}

void Hadamard::apply(float* x, int64_t rows) const { apply_impl(*this, x, rows, false); }
void Hadamard::apply_transpose(float* x, int64_t rows) const { apply_impl(*this, x, rows, true); }

std::vector<double> Hadamard::dense() const {
  const int64_t P = pow2;
  const double s = 1.0 / std::sqrt(double(P));
  std::vector<double> D(size_t(n * n));
#pragma omp parallel for schedule(static) if (n >= 256)
  for (int64_t k = 0; k < K; ++k)
    for (int64_t j = 0; j < P; ++j) {
      double* row = &D[size_t((k * P + j) * n)];
      for (int64_t kp = 0; kp < K; ++kp) {
        const double a = HK64[size_t(k * K + kp)] * s;
        for (int64_t jp = 0; jp < P; ++jp)
          row[kp * P + jp] = (std::popcount(uint64_t(j & jp)) & 1) ? -a : a;
      }
    }
  return D;
}

std::vector<double> random_hadamard_matrix(int64_t n, uint64_t seed) {
  Hadamard h = make_hadamard(n, seed);
  std::vector<double> Q = h.dense();
  uint64_t st = seed ^ 0x7261'6e64'6861'6431ull;
  for (int64_t i = 0; i < n; ++i)
    if (splitmix64(st) >> 63) {
      double* row = &Q[size_t(i * n)];
      for (int64_t j = 0; j < n; ++j) row[j] = -row[j];
    }
  return Q;
}

}  // namespace lowbit
