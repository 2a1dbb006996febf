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
// GPTAQ ("asymmetric calibration", Li et al. 2025): the quantized layer sees inputs
// X from the already-quantized model but should reproduce W X̃ of the full-precision
// model, min_Q ||Q X - W X̃||² with dXXᵀ = 2/N Σ (x̃ - x) xᵀ. As in the paper's column
// loop, with (processing order) P = α · triu(dXXᵀ · Uᵀ, 1) · U:
//
//   for each column j:   W[:, j+1:] -= Err_j · U[j, j+1:]  -  w_j · P[j, j+1:]
//
// where w_j is column j just before rounding; α = 0.25 by default (the paper's).
// Blocks: when groups are fitted as they start (not static), a block ends where a
// group would start inside it and run past its end, so every group is fitted on
// fully updated weights and the result does not depend on the block size.
#include "quant/gptq_solver.h"

#include <algorithm>
#include <numeric>

#include "backend/backend.h"
#include "backend/cuda_api.h"
#include "core/error.h"
#include "core/progress.h"

namespace lowbit {

void HessianAccumulator::add(const float* X, int64_t rows) {
  if (rows == 0) return;
  // H ← H·t/(t+r) + 2/(t+r)·XᵀX  (running mean, as the reference does). XᵀX of one
  // batch (≤ a window) in f32 — the GPTQ reference accumulates all of H in f32 —
  // and the running sum over batches in f64.
  const double t = double(tokens), tot = double(tokens + rows);
  if (default_device() == Device::CUDA) {
    if (!dev) dev = cuda::make_device_hessian(n);
    cuda::device_hessian_add(*dev, X, rows, t / tot, 2.0 / tot);
    tokens += rows;
    return;
  }
  std::vector<float> G(static_cast<size_t>(n * n));
  default_backend().gram(X, rows, n, G.data());
  const double a = t / tot, b = 2.0 / tot;
  double* h = H.data();
  const float* g = G.data();
#pragma omp parallel for schedule(static) if (n > 256)
  for (int64_t i = 0; i < n * n; ++i) h[i] = h[i] * a + b * double(g[i]);
  tokens += rows;
}

void HessianAccumulator::finalize() {
  if (!dev) return;
  cuda::device_hessian_download(*dev, H.data());
  dev.reset();
}

void HessianAccumulator::add_v2(const float* X, const float* Xfp, int64_t rows) {
  if (rows == 0) return;
  if (dXXT.empty()) dXXT.assign(size_t(n * n), 0.0);
  const double t = double(tokens), tot = double(tokens + rows);
  std::vector<double> dX(size_t(rows * n)), Xd(X, X + rows * n);
  for (size_t i = 0; i < dX.size(); ++i) dX[i] = double(Xfp[i]) - double(X[i]);
  for (auto& v : dXXT) v *= t / tot;
  // dXXᵀ[a, b] += 2/N Σ_rows (x̃ - x)_a x_b
  default_backend().gemm(true, false, n, n, rows, 2.0 / tot, dX.data(), n, Xd.data(), n, 1.0, dXXT.data(), n);
  add(X, rows);
}

GptqSetup gptq_setup(const float* Wf, int64_t out, int64_t in, const HessianAccumulator& st, const GptqConfig& cfg,
                     const std::string& name) {
  const QuantSpec& s = cfg.spec;
  s.validate(in, name.c_str());
  LOWBIT_CHECK(st.n == in, ShapeError, "{}: Hessian is {}x{} but the weight has {} input columns", name, st.n, st.n,
               in);
  LOWBIT_CHECK(st.tokens > 0, ArgError, "{}: no calibration tokens reached this layer", name);
  LOWBIT_ASSERT(!st.pending_on_device());  // finalize() first
  LOWBIT_CHECK(!cfg.use_v2 || !st.dXXT.empty(), ArgError, "{}: GPTAQ needs dXXᵀ statistics (add_v2)", name);
  const int64_t n = in;
  GptqSetup su;
  su.out = out;
  su.n = n;
  su.W.assign(Wf, Wf + out * in);  // [out, in]
  std::vector<double> H = st.H;    // [in, in]
  for (double v : H) LOWBIT_CHECK(std::isfinite(v), NumericError, "{}: Hessian has NaN/Inf entries", name);

  // Dead inputs never fire: any weight is as good as another, make it 0.
  for (int64_t j = 0; j < n; ++j)
    if (H[size_t(j * n + j)] <= 0.0) {
      H[size_t(j * n + j)] = 1.0;
      for (int64_t r = 0; r < out; ++r) su.W[size_t(r * n + j)] = 0.0;
    }

  for (int64_t j = 0; j < n; ++j) su.mean_diag += H[size_t(j * n + j)];
  su.mean_diag /= double(n);
  // act_order: process columns by descending diag(H) (damping does not change the order).
  su.perm.resize(size_t(n));
  std::iota(su.perm.begin(), su.perm.end(), 0);
  if (cfg.act_order)
    std::stable_sort(su.perm.begin(), su.perm.end(),
                     [&](int64_t a, int64_t b) { return H[size_t(a * n + a)] > H[size_t(b * n + b)]; });
  su.Hp.resize(H.size());
#pragma omp parallel for schedule(static) if (n > 256)
  for (int64_t a = 0; a < n; ++a)
    for (int64_t b = 0; b < n; ++b) su.Hp[size_t(a * n + b)] = H[size_t(su.perm[size_t(a)] * n + su.perm[size_t(b)])];

  su.gs = s.groupsize > 0 ? s.groupsize : n;
  su.ngroups = (n + su.gs - 1) / su.gs;  // GPTQ convention: the last group may be shorter
  su.dynamic_groups = s.groupsize > 0 && !cfg.static_groups;
  QuantizedWeight& q = su.q;
  q.bits = s.bits;
  q.sym = s.sym;
  q.groupsize = s.groupsize;
  q.out = out;
  q.in = n;
  q.ngroups = su.ngroups;
  q.codes.assign(size_t(out * n), 0);
  q.scales.assign(size_t(out * su.ngroups), 1.0f);
  q.zeros.assign(size_t(out * su.ngroups), 0.0f);
  q.g_idx.assign(size_t(n), 0);
  for (int64_t j = 0; j < n; ++j) {  // each column's group (dynamic groups count in processing order)
    const int64_t c = su.perm[size_t(j)];
    q.g_idx[size_t(c)] = int32_t(s.groupsize <= 0 ? 0 : cfg.static_groups ? c / su.gs : j / su.gs);
  }
  return su;
}

double gptq_damped(const GptqSetup& su, const GptqConfig& cfg, const std::string& name,
                   const std::function<bool(double lambda)>& factor) {
  double pd = cfg.percdamp;
  for (int attempt = 0;; ++attempt) {
    if (factor(pd * su.mean_diag)) return pd;
    LOWBIT_CHECK(attempt < 6, NumericError,
                 "{}: Hessian is not positive definite even with percdamp {} (calibration data degenerate?)", name,
                 pd);
    log_warn(fmt::format("{}: Cholesky failed with percdamp {}, retrying with {}", name, pd, pd * 10));
    pd *= 10;
  }
}

int64_t gptq_block_end(const GptqSetup& su, int64_t i1, int64_t B) {
  const int64_t n = su.n, gs = su.gs;
  int64_t i2 = std::min(n, i1 + B);
  if (su.dynamic_groups)
    for (int64_t g0 = (i1 / gs + 1) * gs; g0 < i2; g0 += gs)
      if (std::min(n, g0 + gs) > i2) return g0;
  return i2;
}

std::vector<double> gptaq_dxxt(const GptqSetup& su, const HessianAccumulator& st) {
  const int64_t n = su.n;
  std::vector<double> D(size_t(n * n));
#pragma omp parallel for schedule(static) if (n > 256)
  for (int64_t a = 0; a < n; ++a)
    for (int64_t b = 0; b < n; ++b) {
      const int64_t pa = su.perm[size_t(a)], pb = su.perm[size_t(b)];
      D[size_t(a * n + b)] = st.H[size_t(pb * n + pb)] > 0.0 ? st.dXXT[size_t(pa * n + pb)] : 0.0;
    }
  return D;
}

GptqResult gptq_quantize(const float* Wf, int64_t out, int64_t in, const HessianAccumulator& st,
                         const GptqConfig& cfg, const std::string& name) {
  GptqSetup su = gptq_setup(Wf, out, in, st, cfg, name);
  const QuantSpec& s = cfg.spec;
  Backend& be = cpu_backend();
  const int64_t n = in, gs = su.gs, ngroups = su.ngroups;
  const bool dynamic_groups = su.dynamic_groups;
  std::vector<double>& W = su.W;
  const std::vector<int64_t>& perm = su.perm;
  QuantizedWeight& q = su.q;

  // U: upper Cholesky factor of (Hp + λI)⁻¹, i.e. (Hp + λI)⁻¹ = Uᵀ U; λ raised while not PD.
  std::vector<double> U;
  const double pd = gptq_damped(su, cfg, name, [&](double lambda) {
    U = su.Hp;
    for (int64_t j = 0; j < n; ++j) U[size_t(j * n + j)] += lambda;
    return be.inverse_cholesky_upper(U.data(), n);
  });
  std::vector<double>().swap(su.Hp);

  // grid of (row r, group) from that row's columns column_of(i), i < len
  auto fit_row = [&](int64_t r, int64_t group, int64_t len, auto&& column_of) {
    std::vector<float> v(static_cast<size_t>(len));
    for (int64_t i = 0; i < len; ++i) v[size_t(i)] = float(W[size_t(r * n + column_of(i))]);
    QParams p = weight_params(v.data(), len, s);
    q.scales[size_t(r * ngroups + group)] = p.scale;
    q.zeros[size_t(r * ngroups + group)] = p.zero;
  };
  if (!dynamic_groups)  // per channel, or static groups: fitted up front on W
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < out; ++r)
      for (int64_t k = 0; k < ngroups; ++k) fit_row(r, k, std::min(gs, n - k * gs), [&](int64_t i) { return k * gs + i; });
  if (cfg.act_order) {  // W in processing order
    std::vector<double> Wp(W.size());
    for (int64_t r = 0; r < out; ++r)
      for (int64_t j = 0; j < n; ++j) Wp[size_t(r * n + j)] = W[size_t(r * n + perm[size_t(j)])];
    W.swap(Wp);
  }

  // GPTAQ: P = α·triu(dXXᵀ·Uᵀ, 1)·U in processing order (columns of dead inputs zeroed).
  std::vector<double> P;
  if (cfg.use_v2) {
    std::vector<double> D = gptaq_dxxt(su, st), M(size_t(n * n));
    be.gemm(false, true, n, n, n, 1.0, D.data(), n, U.data(), n, 0.0, M.data(), n);  // dXXᵀ·Uᵀ
    for (int64_t a = 0; a < n; ++a) std::fill(M.data() + a * n, M.data() + a * n + a + 1, 0.0);  // strict triu
    P.assign(size_t(n * n), 0.0);
    be.gemm(false, false, n, n, n, cfg.alpha, M.data(), n, U.data(), n, 0.0, P.data(), n);
  }

  const int qmin = s.qmin(), qmax = s.qmax();
  const int64_t B = std::max<int64_t>(1, cfg.blocksize);
  double loss = 0;
  std::vector<double> Err(static_cast<size_t>(out * B));  // [out, B]
  std::vector<double> Wj(cfg.use_v2 ? static_cast<size_t>(out * B) : 0);  // [out, B] w_j before rounding
  for (int64_t i1 = 0, i2 = 0; i1 < n; i1 = i2) {
    i2 = gptq_block_end(su, i1, B);
    const int64_t cnt = i2 - i1;
    // Within a block the rows are independent: each row runs the column loop on its own.
#pragma omp parallel for schedule(static) reduction(+ : loss)
    for (int64_t r = 0; r < out; ++r) {
      double* w = W.data() + r * n;
      for (int64_t j = i1; j < i2; ++j) {
        const int64_t c = perm[size_t(j)];  // original column
        const int64_t group = q.g_idx[size_t(c)];
        if (dynamic_groups && j % gs == 0) fit_row(r, group, std::min(gs, n - j), [&](int64_t i) { return j + i; });
        const double d = U[size_t(j * n + j)];
        QParams p{q.scales[size_t(r * ngroups + group)], q.zeros[size_t(r * ngroups + group)]};
        const float code = quantize_code(float(w[j]), p, qmin, qmax);
        q.codes[size_t(r * n + c)] = int32_t(code);
        const double e = (w[j] - double(dequantize_code(code, p))) / d;
        loss += e * e;
        Err[size_t(r * B + (j - i1))] = e;
        const double* u = U.data() + j * n;
        if (cfg.use_v2) {  // GPTAQ: W[:, k] -= e·U[j, k] - w_j·P[j, k]
          const double wj = w[j], *pj = P.data() + j * n;
          Wj[size_t(r * B + (j - i1))] = wj;
          for (int64_t k = j + 1; k < i2; ++k) w[k] -= e * u[k] - wj * pj[k];
        } else {
          for (int64_t k = j + 1; k < i2; ++k) w[k] -= e * u[k];  // in-block update
        }
      }
    }
    // lazy batch: W[:, i2:] -= Err · U[i1:i2, i2:]  (GPTAQ: += W_j · P[i1:i2, i2:])
    if (i2 < n) {
      be.gemm(false, false, out, n - i2, cnt, -1.0, Err.data(), B, U.data() + i1 * n + i2, n, 1.0, W.data() + i2, n);
      if (cfg.use_v2)
        be.gemm(false, false, out, n - i2, cnt, 1.0, Wj.data(), B, P.data() + i1 * n + i2, n, 1.0, W.data() + i2, n);
    }
  }
  GptqResult res;
  res.weight = std::move(q);
  res.loss = loss / 2;
  res.percdamp_used = pd;
  return res;
}

}  // namespace lowbit
