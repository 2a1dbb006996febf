// GPTQ / GPTAQ on the device: lowbit::cuda::gptq_quantize (backend/cuda_api.h), the same
// contract and result as lowbit::gptq_quantize (quant/gptq_solver.cpp) — read that file
// first; this one follows it step by step and says only where the device differs.
//
// Host (exactly the CPU's code paths): argument checks, dead inputs, damping, the act_order
// permutation, per-channel / static grids (weight_params), g_idx, GPTAQ's permuted dXXᵀ.
// Device, all in f64:
//   U = upper Cholesky factor of (Hp + λI)⁻¹ the way the CPU backend gets it
//       (inverse_cholesky_upper): with J the reversal, J(Hp+λI)J = L Lᵀ (cusolverDnDpotrf),
//       L⁻¹ (cublasDtrsm against I), U = J L⁻¹ J (a kernel). λ raised ×10 while potrf fails.
//   P = α·triu(D·Uᵀ, 1)·U (GPTAQ, two cublasDgemm);
//   the column loop: per lazy block one kernel (a thread per row, gptq_kernels.h), then
//       W[:, i2:] -= Err·U[i1:i2, i2:]  (+ Wj·P[i1:i2, i2:]) as cublasDgemm.
// Device layouts: W, Err, Wj, codes, scales, zeros are stored column-major over rows
// ([cols][out]) so the kernel's per-row threads coalesce; U, P, D, M are row-major n x n
// as on the CPU. A row-major matrix is the column-major transpose: the cuBLAS / cuSOLVER
// calls below say in each case which view they use.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include <fmt/format.h>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/cuda_context.h"
#include "backend/cuda/gptq_kernels.h"
#include "backend/cuda_api.h"
#include "core/error.h"
#include "core/progress.h"
#include "quant/rtn_quant.h"

namespace lowbit::cuda {
namespace {

// C = α op(A) op(B) + β C, column-major (cuBLAS's own convention).
void dgemm(cublasOperation_t ta, cublasOperation_t tb, int64_t m, int64_t n, int64_t k, double alpha,
           const double* A, int64_t lda, const double* B, int64_t ldb, double beta, double* C, int64_t ldc) {
  LOWBIT_CUBLAS_CHECK(cublasDgemm(cublas(), ta, tb, int(m), int(n), int(k), &alpha, A, int(lda), B, int(ldb), &beta,
                                  C, int(ldc)));
}

// U ← upper Cholesky factor of (Hp + λI)⁻¹ (row-major, lower triangle zero), computed as the
// CPU backend's inverse_cholesky_upper does; A is n x n scratch. false when potrf finds the
// matrix not positive definite.
bool inverse_cholesky_upper(const std::vector<double>& Hp, int64_t n, double lambda, DeviceBuffer<double>& A,
                            DeviceBuffer<double>& U) {
  // Arev = J (Hp + λI) J: reversing both indices of a row-major matrix reverses its storage.
  {
    std::vector<double> Arev(Hp.rbegin(), Hp.rend());
    for (int64_t j = 0; j < n; ++j) Arev[size_t(j * n + j)] += lambda;
    upload(A.get(), Arev.data(), A.bytes());
  }
  // Row-major Arev = L Lᵀ with L lower. The same bytes read column-major are Arevᵀ = Arev,
  // and cuSOLVER's UPPER factor there (Arev = Ucᵀ Uc, in the column-major upper triangle)
  // is, read row-major, L = Ucᵀ in the row-major lower triangle.
  const int ni = int(n);
  int lwork = 0;
  LOWBIT_CUSOLVER_CHECK(cusolverDnDpotrf_bufferSize(cusolver(), CUBLAS_FILL_MODE_UPPER, ni, A.get(), ni, &lwork));
  DeviceBuffer<double> work(size_t(std::max(lwork, 1)));
  DeviceBuffer<int> info(1);
  LOWBIT_CUSOLVER_CHECK(
      cusolverDnDpotrf(cusolver(), CUBLAS_FILL_MODE_UPPER, ni, A.get(), ni, work.get(), lwork, info.get()));
  int h_info = 0;
  download(&h_info, info.get(), sizeof(int));
  if (h_info > 0) return false;
  LOWBIT_CHECK(h_info == 0, DeviceError, "cusolverDnDpotrf: invalid argument {}", -h_info);
  // X = Uc⁻¹ (column-major upper) by solving Uc X = I; read row-major, X is (Ucᵀ)⁻¹ = L⁻¹
  // (lower; its upper part is never read below).
  gptq::set_identity(U.get(), n, stream());
  const double one = 1.0;
  LOWBIT_CUBLAS_CHECK(cublasDtrsm(cublas(), CUBLAS_SIDE_LEFT, CUBLAS_FILL_MODE_UPPER, CUBLAS_OP_N,
                                  CUBLAS_DIAG_NON_UNIT, ni, ni, &one, A.get(), ni, U.get(), ni));
  // U = J L⁻¹ J (upper), the lower triangle zeroed; A holds it, then the buffers swap.
  gptq::reverse_to_upper(U.get(), A.get(), n, stream());
  std::swap(A, U);
  return true;
}

}  // namespace

GptqResult gptq_quantize(const float* Wf, int64_t out, int64_t in, const HessianAccumulator& st,
                         const GptqConfig& cfg, const std::string& name) {
  // Nothing to do on a device for an empty weight (and zero-sized launches / cuBLAS calls
  // are not worth special-casing): the CPU gives the same (trivial) result and errors.
  if (out <= 0 || in <= 0) return lowbit::gptq_quantize(Wf, out, in, st, cfg, name);
  GptqSetup su = gptq_setup(Wf, out, in, st, cfg, name);  // checks, dead inputs, order, g_idx: as the CPU
  const QuantSpec& s = cfg.spec;
  const int64_t n = in, gs = su.gs, ngroups = su.ngroups;
  const bool dynamic_groups = su.dynamic_groups;
  const std::vector<int64_t>& perm = su.perm;
  QuantizedWeight& q = su.q;
  std::vector<double>& W = su.W;
  cudaStream_t strm = stream();

  // U on the device; λ raised while not PD (same messages as the CPU).
  DeviceBuffer<double> dA(size_t(n * n)), dU(size_t(n * n));
  const double pd =
      gptq_damped(su, cfg, name, [&](double lambda) { return inverse_cholesky_upper(su.Hp, n, lambda, dA, dU); });
  std::vector<double>().swap(su.Hp);

  std::vector<int32_t> gj(static_cast<size_t>(n));  // group of processing column j
  for (int64_t j = 0; j < n; ++j) gj[size_t(j)] = q.g_idx[size_t(perm[size_t(j)])];

  // Device state: W in processing order, [n][out].
  DeviceBuffer<double> dW(size_t(out * n));
  {
    std::vector<double> Wt(size_t(out * n));
#pragma omp parallel for schedule(static)
    for (int64_t j = 0; j < n; ++j) {
      const int64_t c = perm[size_t(j)];
      for (int64_t r = 0; r < out; ++r) Wt[size_t(j * out + r)] = W[size_t(r * n + c)];
    }
    upload(dW.get(), Wt.data(), dW.bytes());
  }
  std::vector<double>().swap(W);
  // Per channel / static groups: every grid fitted up front on the device (weight_params'
  // arithmetic; the MSE clip search was the whole solve's cost on the host). Dynamic groups
  // are fitted inside the column loop.
  DeviceBuffer<float> dScales(size_t(out * ngroups)), dZeros(size_t(out * ngroups));
  if (!dynamic_groups) {
    LOWBIT_CHECK(ngroups <= 65535, ArgError, "{}: {} groups per row is more than the device fit handles", name, ngroups);
    std::vector<int32_t> cmap(static_cast<size_t>(n));  // original column → processing position
    for (int64_t j = 0; j < n; ++j) cmap[size_t(perm[size_t(j)])] = int32_t(j);
    DeviceBuffer<int32_t> dCmap(static_cast<size_t>(n));
    upload(dCmap.get(), cmap.data(), dCmap.bytes());
    gptq::fit_static(dW.get(), out, n, gs, ngroups, dCmap.get(), s.sym, s.bits, s.clip_ratio, s.mse_clip,
                     dScales.get(), dZeros.get(), strm);
    sync();  // dCmap goes back to the cache
  }
  DeviceBuffer<int32_t> dGj(static_cast<size_t>(n)), dCodes(size_t(out * n));
  upload(dGj.get(), gj.data(), dGj.bytes());
  DeviceBuffer<double> dLoss(static_cast<size_t>(out));
  {
    std::vector<double> zero(size_t(out), 0.0);
    upload(dLoss.get(), zero.data(), dLoss.bytes());
  }

  // GPTAQ: P = α·triu(D·Uᵀ, 1)·U, D = dXXᵀ in processing order (columns of dead inputs zeroed).
  DeviceBuffer<double> dP;
  if (cfg.use_v2) {
    {
      const std::vector<double> D = gptaq_dxxt(su, st);
      upload(dA.get(), D.data(), dA.bytes());  // dA is free once U is made
    }
    DeviceBuffer<double> dM(size_t(n * n));
    dP = DeviceBuffer<double>(size_t(n * n));
    // Column-major views of the row-major buffers: dU holds Uᵀ, dA holds Dᵀ, dM will hold Mᵀ.
    // Mᵀ = (D·Uᵀ)ᵀ = U·Dᵀ = (Uᵀ)ᵀ·Dᵀ: op T on dU, op N on dA.
    dgemm(CUBLAS_OP_T, CUBLAS_OP_N, n, n, n, 1.0, dU.get(), n, dA.get(), n, 0.0, dM.get(), n);
    gptq::keep_strict_upper(dM.get(), n, strm);  // row-major strict triu of M
    // Pᵀ = (α M U)ᵀ = α Uᵀ Mᵀ: op N on both.
    dgemm(CUBLAS_OP_N, CUBLAS_OP_N, n, n, n, cfg.alpha, dU.get(), n, dM.get(), n, 0.0, dP.get(), n);
  }
  dA.reset();

  const int64_t B = std::max<int64_t>(1, cfg.blocksize);
  DeviceBuffer<double> dErr(size_t(out * B));                        // [B][out]
  DeviceBuffer<double> dWj(cfg.use_v2 ? size_t(out * B) : size_t(0));  // [B][out]
  gptq::BlockArgs a;
  a.W = dW.get();
  a.U = dU.get();
  a.P = cfg.use_v2 ? dP.get() : nullptr;
  a.gj = dGj.get();
  a.scales = dScales.get();
  a.zeros = dZeros.get();
  a.codes = dCodes.get();
  a.err = dErr.get();
  a.wj = cfg.use_v2 ? dWj.get() : nullptr;
  a.loss = dLoss.get();
  a.out = out;
  a.n = n;
  a.gs = gs;
  a.dynamic_groups = dynamic_groups;
  a.sym = s.sym;
  a.bits = s.bits;
  a.clip_ratio = s.clip_ratio;
  a.mse_clip = s.mse_clip;
  for (int64_t i1 = 0, i2 = 0; i1 < n; i1 = i2) {
    i2 = gptq_block_end(su, i1, B);  // as on the CPU
    const int64_t cnt = i2 - i1;
    a.i1 = i1;
    a.i2 = i2;
    gptq::block(a, strm);
    // Lazy batch: W[:, i2:] -= Err · U[i1:i2, i2:]  (GPTAQ: += Wj · P[i1:i2, i2:]).
    // W[:, i2:] is column-major out x (n-i2) at dW + i2·out; Err is column-major out x cnt.
    // U[i1:i2, i2:] (row-major, at U + i1·n + i2, row stride n) read column-major with
    // ld n is its transpose (n-i2) x cnt: op T.
    if (i2 < n) {
      dgemm(CUBLAS_OP_N, CUBLAS_OP_T, out, n - i2, cnt, -1.0, dErr.get(), out, dU.get() + i1 * n + i2, n, 1.0,
            dW.get() + i2 * out, out);
      if (cfg.use_v2)
        dgemm(CUBLAS_OP_N, CUBLAS_OP_T, out, n - i2, cnt, 1.0, dWj.get(), out, dP.get() + i1 * n + i2, n, 1.0,
              dW.get() + i2 * out, out);
    }
  }

  // Results back: codes to [out, in] in the original column order, grids to [out, ngroups].
  {
    std::vector<int32_t> codes(size_t(out * n));
    download(codes.data(), dCodes.get(), dCodes.bytes());
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < out; ++r)
      for (int64_t j = 0; j < n; ++j) q.codes[size_t(r * n + perm[size_t(j)])] = codes[size_t(j * out + r)];
  }
  {  // grids back ([ngroups][out] on the device)
    std::vector<float> sc(size_t(out * ngroups)), ze(size_t(out * ngroups));
    download(sc.data(), dScales.get(), dScales.bytes());
    download(ze.data(), dZeros.get(), dZeros.bytes());
    for (int64_t r = 0; r < out; ++r)
      for (int64_t k = 0; k < ngroups; ++k) {
        q.scales[size_t(r * ngroups + k)] = sc[size_t(k * out + r)];
        q.zeros[size_t(r * ngroups + k)] = ze[size_t(k * out + r)];
      }
  }
  double loss = 0;
  {
    std::vector<double> rows(static_cast<size_t>(out));
    download(rows.data(), dLoss.get(), dLoss.bytes());
    for (double v : rows) loss += v;
  }
  GptqResult res;
  res.weight = std::move(q);
  res.loss = loss / 2;
  res.percdamp_used = pd;
  return res;
}

// RTN with the same device grid fit as GPTQ's static grids (the --w_clip MSE search is what
// makes RTN of a 7B model slow on the host): quantize_rtn's result, code for code.
QuantizedWeight quantize_rtn(const float* Wf, int64_t out, int64_t in, const QuantSpec& s) {
  if (out <= 0 || in <= 0) return lowbit::quantize_rtn(Wf, out, in, s);
  s.validate(in, "RTN weight");
  const int64_t n = in, gs = s.groupsize > 0 ? s.groupsize : in, ngroups = (in + gs - 1) / gs;
  LOWBIT_CHECK(ngroups <= 65535, ArgError, "RTN weight: {} groups per row is more than the device fit handles", ngroups);
  QuantizedWeight q;
  q.bits = s.bits;
  q.sym = s.sym;
  q.groupsize = s.groupsize;
  q.out = out;
  q.in = in;
  q.ngroups = ngroups;
  q.codes.resize(size_t(out * in));
  q.scales.resize(size_t(out * ngroups));
  q.zeros.resize(size_t(out * ngroups));
  q.g_idx.resize(size_t(in));
  for (int64_t c = 0; c < in; ++c) q.g_idx[size_t(c)] = int32_t(c / gs);
  DeviceBuffer<double> dW(size_t(out * n));
  DeviceBuffer<int32_t> dCmap(static_cast<size_t>(n)), dCodes(size_t(out * n));
  DeviceBuffer<float> dScales(size_t(out * ngroups)), dZeros(size_t(out * ngroups));
  {
    std::vector<double> Wt(size_t(out * n));  // [n][out]
#pragma omp parallel for schedule(static)
    for (int64_t c = 0; c < n; ++c)
      for (int64_t r = 0; r < out; ++r) Wt[size_t(c * out + r)] = double(Wf[r * n + c]);
    upload(dW.get(), Wt.data(), dW.bytes());
    std::vector<int32_t> ident(static_cast<size_t>(n));
    std::iota(ident.begin(), ident.end(), 0);
    upload(dCmap.get(), ident.data(), dCmap.bytes());
  }
  gptq::fit_static(dW.get(), out, n, gs, ngroups, dCmap.get(), s.sym, s.bits, s.clip_ratio, s.mse_clip, dScales.get(),
                   dZeros.get(), stream());
  gptq::rtn_codes(dW.get(), out, n, gs, dScales.get(), dZeros.get(), s.sym, s.bits, dCodes.get(), stream());
  std::vector<int32_t> codes(size_t(out * n));
  std::vector<float> sc(size_t(out * ngroups)), ze(size_t(out * ngroups));
  download(codes.data(), dCodes.get(), dCodes.bytes());
  download(sc.data(), dScales.get(), dScales.bytes());
  download(ze.data(), dZeros.get(), dZeros.bytes());
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < out; ++r) {
    for (int64_t c = 0; c < n; ++c) q.codes[size_t(r * n + c)] = codes[size_t(c * out + r)];
    for (int64_t k = 0; k < ngroups; ++k) {
      q.scales[size_t(r * ngroups + k)] = sc[size_t(k * out + r)];
      q.zeros[size_t(r * ngroups + k)] = ze[size_t(k * out + r)];
    }
  }
  return q;
}

}  // namespace lowbit::cuda
