// Orthonormal Hadamard transforms of any size n, for QuaRot rotations.
//
// Math. A Hadamard matrix of order K is a ±1 matrix with H Hᵀ = K·I; H/√K is
// orthogonal with every entry of magnitude 1/√K, the smallest possible, which is
// what spreads outliers evenly over all coordinates ("incoherence" 1). Such a
// matrix can only exist for K = 1, 2 or K ≡ 0 (mod 4). Constructions used here:
//   * Sylvester, K = 2^m: H[i][j] = (-1)^popcount(i & j); x ↦ x·H is the fast
//     Walsh–Hadamard transform (FWHT), m butterfly passes, O(K log K).
//   * Paley I, K = q+1 with q a prime power ≡ 3 (mod 4). χ is the quadratic
//     character of GF(q) (χ(0) = 0, χ(a) = +1 on nonzero squares, −1 else) and
//     the Jacobsthal matrix Q[a][b] = χ(a − b) is skew (χ(−1) = −1) with
//     Q Qᵀ = q·I − J and zero row sums. S = [[0, 1ᵀ], [−1, Q]] is then skew with
//     S Sᵀ = q·I, so H = I + S has H Hᵀ = (q+1)·I.
//   * Paley II, K = 2(q+1) with q a prime power ≡ 1 (mod 4). Now χ(−1) = +1, Q is
//     symmetric and C = [[0, 1ᵀ], [1, Q]] is a symmetric conference matrix,
//     C² = q·I. H = C ⊗ [[1,1],[1,−1]] + I ⊗ [[1,−1],[−1,−1]] has H Hᵀ = 2(q+1)·I
//     (the cross terms C ⊗ (P Mᵀ + M Pᵀ) cancel).
//   * Williamson, K = 4p, p an odd prime: symmetric circulant ±1 matrices A, B, C, D
//     of order p with A² + B² + C² + D² = 4p·I plugged into the array
//       [[ A,  B,  C,  D], [−B,  A, −D,  C], [−C,  D,  A, −B], [−D, −C,  B,  A]].
//     They are found by a short exhaustive search restricted to sequences that are
//     constant on the cosets of a subgroup S ∋ −1 of GF(p)* (then the periodic
//     autocorrelations, which must sum to 0 at every nonzero shift, only need
//     checking at one shift per coset). This covers K = 172 (p = 43), which no Paley
//     construction reaches.
//   * Kronecker products: (A ⊗ B)(A ⊗ B)ᵀ = (A Aᵀ) ⊗ (B Bᵀ).
// Orders ≤ 200 not reached by these rules: 92, 116, 156, 184, 188 (matrices exist,
// but need constructions not implemented here).
// GF(p^k) is built as GF(p)[x]/(f) with f the first monic irreducible polynomial of
// degree k found by trial division; χ(a) comes from the table of squares.
//
// Any size n. Write n = K·2^m, taking the largest m for which order K has a ±1
// construction (K = 1 when n is a power of two). Index i of a length-n row vector
// is split as i = k·2^m + j (k < K, j < 2^m), and the transform is
//     H = (H_K ⊗ H_{2^m}) / √n,   H[k·P + j][k'·P + j'] = H_K[k][k']·H_P[j][j'] / √n,
// with P = 2^m. On the row viewed as a K×P matrix X, x·H = H_Kᵀ·X·H_P / √n: an FWHT
// on each of the K contiguous length-P blocks, then a dense K×K mix across blocks.
// E.g. 11008 = 172·64 (Williamson; 344·32 via Paley I over GF(7³) would also do),
// 14336 = 28·512 (Paley I over GF(27)), 192 = 12·16, 112 = 28·4.
// When no K has a construction (n odd > 1, n = 2·odd, ...), K is the odd part of n
// and H_K is a random orthogonal matrix (QR of a seeded Gaussian, Box–Muller over
// std::mt19937_64, so identical on every platform): still orthogonal, but not a
// ±1 Hadamard (construction "random(seed=..)", incoherence > 1).
// Row-vector convention: apply() computes x ← x·H; apply_transpose() undoes it.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace lowbit {

struct Hadamard {                   // orthonormal transform of size n: y = x · H (row vectors), H Hᵀ = I
  int64_t n = 0, pow2 = 1, K = 1;  // n = K * pow2
  std::string construction;        // e.g. "sylvester(4096)", "paley1(q=343) x sylvester(32)", "random(seed=7) x sylvester(2)"
  bool pm1 = false;                // true for a ±1 Hadamard (scaled), false for the random fallback
  std::vector<float> HK;           // K×K, row-major, already divided by sqrt(K) (orthonormal)
  std::vector<float> HKt;          // HKᵀ, row-major (used by apply())
  std::vector<double> HK64;        // HK in double (dense(), incoherence())

  double incoherence() const;                          // max|H_ij| * sqrt(n) of the full orthonormal matrix (1.0 for a true Hadamard)
  void apply(float* x, int64_t rows) const;            // x[rows, n] <- x · H in place
  void apply_transpose(float* x, int64_t rows) const;  // x <- x · Hᵀ (inverse)
  std::vector<double> dense() const;                   // full n×n H (for tests and small fused rotations), row-major
};

// Throws ArgError for n < 1, and when the random fallback would need an odd part K > 2047.
// `seed` only matters for the random fallback.
Hadamard make_hadamard(int64_t n, uint64_t seed = 0);

void fwht(float* x, int64_t n);  // unnormalized in-place FWHT of one vector, n power of two
void fwht(double* x, int64_t n);
// In-place FWHT of each row of x[rows, n] (n power of two), times 1/sqrt(n) when normalize.
void fwht_rows(float* x, int64_t rows, int64_t n, bool normalize = true);

// A known ±1 construction of order K (never random); the description goes to *construction.
bool hadamard_matrix_exists(int64_t K, std::string* construction);
// The K×K ±1 matrix of that construction (row-major, unscaled); throws ArgError if none.
std::vector<int8_t> hadamard_pm1_matrix(int64_t K);

// Random Hadamard (QuaRot R1): Q = diag(s) · H with seeded random signs s ∈ {±1}^n. Dense n×n, row-major, double.
std::vector<double> random_hadamard_matrix(int64_t n, uint64_t seed);

}  // namespace lowbit
