// GPTQ: quantize W column by column, each time pushing the rounding error onto
// the not-yet-quantized columns through the inverse Hessian (Optimal Brain
// Quantization), with H = 2/N Σ x xᵀ and Hinv = H⁻¹ = Uᵀ U (U upper Cholesky):
//
//   for each column j:   q_j = quant(w_j);   Err_j = (w_j - q_j) / U_jj
//                        W[:, j+1:] -= Err_j · U[j, j+1:]
//
// applied lazily in blocks of B columns (the trailing update is one GEMM per
// block). Options as in the reference: dead columns (H_jj = 0) are zeroed,
// damping λ = percdamp · mean(diag H) (raised ×10 with a warning while Cholesky
// fails), act_order (columns by descending diag H, undone at the end, g_idx
// records each column's group), groups fitted on the updated weights when a group
// starts, or static_groups fitted up front on W.
//
// GPTAQ ("asymmetric calibration"): the quantized layer sees inputs X from the
// already-quantized model but should reproduce W X̃ of the full-precision model:
//   min_Q ||Q X - W X̃||²,  X̃ = X + ΔX.
// Expanding with H = X Xᵀ, this is ||(Q - T) X||² + const with the target
//   T = W + W·(ΔX Xᵀ)·H⁻¹ = W + W·dXXᵀ·H⁻¹,
// so running GPTQ's sequential solver on T minimizes the asymmetric objective.
// The paper folds the same correction into the column loop; we apply it once up
// front, scaled by α (default 0.25, the paper's setting) to temper the
// correction estimated from a finite calibration set.
#include "quant/gptq_solver.h"

#include <algorithm>
#include <numeric>

#include "backend/backend.h"
#include "core/error.h"
#include "core/progress.h"

namespace lowbit {

void HessianAccumulator::add(const float* X, int64_t rows) {
  if (rows == 0) return;
  // H ← H·t/(t+r) + 2/(t+r)·XᵀX  (running mean, as the reference does)
  const double t = double(tokens), tot = double(tokens + rows);
  std::vector<double> Xd(X, X + rows * n);
  for (auto& v : H) v *= t / tot;
  cpu_backend().gemm(true, false, n, n, rows, 2.0 / tot, Xd.data(), n, Xd.data(), n, 1.0, H.data(), n);
  tokens += rows;
}

void HessianAccumulator::add_v2(const float* X, const float* Xfp, int64_t rows) {
  if (rows == 0) return;
  if (dXXT.empty()) dXXT.assign(size_t(n * n), 0.0);
  const double t = double(tokens), tot = double(tokens + rows);
  std::vector<double> dX(size_t(rows * n)), Xd(X, X + rows * n);
  for (size_t i = 0; i < dX.size(); ++i) dX[i] = double(Xfp[i]) - double(X[i]);
  for (auto& v : dXXT) v *= t / tot;
  // dXXᵀ[a, b] += 2/N Σ_rows (x̃ - x)_a x_b
  cpu_backend().gemm(true, false, n, n, rows, 2.0 / tot, dX.data(), n, Xd.data(), n, 1.0, dXXT.data(), n);
  add(X, rows);
}

GptqResult gptq_quantize(const float* Wf, int64_t out, int64_t in, const HessianAccumulator& st,
                         const GptqConfig& cfg, const std::string& name) {
  const QuantSpec& s = cfg.spec;
  s.validate(in, name.c_str());
  LOWBIT_CHECK(st.n == in, ShapeError, "{}: Hessian is {}x{} but the weight has {} input columns", name, st.n, st.n,
               in);
  LOWBIT_CHECK(st.tokens > 0, ArgError, "{}: no calibration tokens reached this layer", name);
  LOWBIT_CHECK(!cfg.use_v2 || !st.dXXT.empty(), ArgError, "{}: GPTAQ needs dXXᵀ statistics (add_v2)", name);
  Backend& be = cpu_backend();
  const int64_t n = in;

  std::vector<double> W(Wf, Wf + out * in);  // [out, in]
  std::vector<double> H = st.H;              // [in, in]
  for (double v : H) LOWBIT_CHECK(std::isfinite(v), NumericError, "{}: Hessian has NaN/Inf entries", name);

  // Dead inputs never fire: any weight is as good as another, make it 0.
  for (int64_t j = 0; j < n; ++j)
    if (H[size_t(j * n + j)] <= 0.0) {
      H[size_t(j * n + j)] = 1.0;
      for (int64_t r = 0; r < out; ++r) W[size_t(r * n + j)] = 0.0;
    }

  // Damping, raised while H + λI is not positive definite.
  double mean_diag = 0;
  for (int64_t j = 0; j < n; ++j) mean_diag += H[size_t(j * n + j)];
  mean_diag /= double(n);
  double pd = cfg.percdamp;
  std::vector<double> Hinv;
  for (int attempt = 0;; ++attempt) {
    Hinv = H;
    for (int64_t j = 0; j < n; ++j) Hinv[size_t(j * n + j)] += pd * mean_diag;
    if (be.spd_inverse(Hinv.data(), n)) break;
    LOWBIT_CHECK(attempt < 6, NumericError,
                 "{}: Hessian is not positive definite even with percdamp {} (calibration data degenerate?)", name,
                 pd);
    log_warn(fmt::format("{}: Cholesky failed with percdamp {}, retrying with {}", name, pd, pd * 10));
    pd *= 10;
  }

  // GPTAQ target shift: W ← W + α·W·dXXᵀ·H⁻¹
  if (cfg.use_v2) {
    std::vector<double> WD(size_t(out * n)), shift(size_t(out * n));
    be.gemm(false, false, out, n, n, 1.0, W.data(), n, st.dXXT.data(), n, 0.0, WD.data(), n);
    be.gemm(false, false, out, n, n, cfg.alpha, WD.data(), n, Hinv.data(), n, 0.0, shift.data(), n);
    for (int64_t r = 0; r < out; ++r)
      for (int64_t j = 0; j < n; ++j)
        if (st.H[size_t(j * n + j)] > 0.0) W[size_t(r * n + j)] += shift[size_t(r * n + j)];
  }

  const int64_t gs = s.groupsize > 0 ? s.groupsize : n;
  const int64_t ngroups = (n + gs - 1) / gs;  // GPTQ convention: the last group may be shorter
  QuantizedWeight q;
  q.bits = s.bits;
  q.sym = s.sym;
  q.groupsize = s.groupsize;
  q.out = out;
  q.in = n;
  q.ngroups = ngroups;
  q.codes.assign(size_t(out * n), 0);
  q.scales.assign(size_t(out * ngroups), 1.0f);
  q.zeros.assign(size_t(out * ngroups), 0.0f);
  q.g_idx.assign(size_t(n), 0);
  // params of `group` for every row from columns column_of(i), i < len
  auto fit = [&](int64_t group, int64_t len, auto&& column_of) {
    std::vector<float> v(static_cast<size_t>(len));
    for (int64_t r = 0; r < out; ++r) {
      for (int64_t i = 0; i < len; ++i) v[size_t(i)] = float(W[size_t(r * n + column_of(i))]);
      QParams p = weight_params(v.data(), len, s);
      q.scales[size_t(r * ngroups + group)] = p.scale;
      q.zeros[size_t(r * ngroups + group)] = p.zero;
    }
  };
  if (s.groupsize <= 0 || cfg.static_groups)  // per channel, or static groups: fitted up front on (shifted) W
    for (int64_t k = 0; k < ngroups; ++k) fit(k, std::min(gs, n - k * gs), [&](int64_t i) { return k * gs + i; });

  // act_order: process columns by descending diag(H); the inverse of a permuted
  // matrix is the permuted inverse.
  std::vector<int64_t> perm(static_cast<size_t>(n));
  std::iota(perm.begin(), perm.end(), 0);
  if (cfg.act_order) {
    std::stable_sort(perm.begin(), perm.end(),
                     [&](int64_t a, int64_t b) { return H[size_t(a * n + a)] > H[size_t(b * n + b)]; });
    std::vector<double> Wp(W.size()), Hp(Hinv.size());
    for (int64_t r = 0; r < out; ++r)
      for (int64_t j = 0; j < n; ++j) Wp[size_t(r * n + j)] = W[size_t(r * n + perm[size_t(j)])];
    for (int64_t a = 0; a < n; ++a)
      for (int64_t b = 0; b < n; ++b) Hp[size_t(a * n + b)] = Hinv[size_t(perm[size_t(a)] * n + perm[size_t(b)])];
    W.swap(Wp);
    Hinv.swap(Hp);
  }
  // U: upper Cholesky factor of Hinv (Hinv = Uᵀ U) = transpose of the lower factor.
  LOWBIT_CHECK(be.cholesky(Hinv.data(), n), NumericError, "{}: Cholesky of H⁻¹ failed", name);
  std::vector<double> U(size_t(n * n), 0.0);
  for (int64_t a = 0; a < n; ++a)
    for (int64_t b = a; b < n; ++b) U[size_t(a * n + b)] = Hinv[size_t(b * n + a)];

  const int qmin = s.qmin(), qmax = s.qmax();
  const int64_t B = std::max<int64_t>(1, cfg.blocksize);
  double loss = 0;
  std::vector<double> Err(static_cast<size_t>(out * B));  // [out, B]
  for (int64_t i1 = 0; i1 < n; i1 += B) {
    const int64_t i2 = std::min(n, i1 + B), cnt = i2 - i1;
    for (int64_t j = i1; j < i2; ++j) {
      const int64_t c = perm[size_t(j)];  // original column
      int64_t group;
      if (s.groupsize <= 0) {
        group = 0;
      } else if (cfg.static_groups) {
        group = c / gs;
      } else {
        group = j / gs;
        if (j % gs == 0) fit(group, std::min(gs, n - j), [&](int64_t i) { return j + i; });
      }
      q.g_idx[size_t(c)] = int32_t(group);
      const double d = U[size_t(j * n + j)];
      for (int64_t r = 0; r < out; ++r) {
        const double w = W[size_t(r * n + j)];
        QParams p{q.scales[size_t(r * ngroups + group)], q.zeros[size_t(r * ngroups + group)]};
        const float code = quantize_code(float(w), p, qmin, qmax);
        q.codes[size_t(r * n + c)] = int32_t(code);
        const double e = (w - double(dequantize_code(code, p))) / d;
        loss += e * e;
        Err[size_t(r * B + (j - i1))] = e;
        // in-block update of the remaining columns of this block
        for (int64_t k = j + 1; k < i2; ++k) W[size_t(r * n + k)] -= e * U[size_t(j * n + k)];
      }
    }
    // lazy batch: W[:, i2:] -= Err · U[i1:i2, i2:]
    if (i2 < n)
      be.gemm(false, false, out, n - i2, cnt, -1.0, Err.data(), B, U.data() + i1 * n + i2, n, 1.0, W.data() + i2, n);
  }
  GptqResult res;
  res.weight = std::move(q);
  res.loss = loss / 2;
  res.percdamp_used = pd;
  return res;
}

}  // namespace lowbit
