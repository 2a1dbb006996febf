// The CUDA backend against the CPU one and the goldens. Every test skips (with the
// reason) where no GPU is usable — CI and the CPU machines — and runs on the device
// machine through scripts/device_check.sh.
//
// Tolerances are normalized errors ||cuda - ref|| / ||ref||:
//   f32 GEMM-based ops: 1e-5. Both sides are IEEE f32 (cuBLAS with TF32 off); only the
//     summation order differs, giving ~sqrt(K)·2^-24 ≈ 1e-6 for K ≤ 4096.
//   f64 ops: 1e-11 (same argument at 2^-53, with the conditioning of the Cholesky
//     family of our test matrices, cond ≈ 1e3).
//   whole f32 models vs HF goldens: 1e-5 (the CPU backend meets 1e-6; the device adds
//     its own summation order and device libm ulps in RoPE/softmax).
//   bf16 compute (tiny-llama3 on its native path): 3e-2. GEMM inputs rounded to bf16
//     (2^-9 relative each) through 2 layers of random weights give ~1e-2; a wrong
//     RoPE, mask or GQA mapping is O(1).
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "backend/backend.h"
#include "backend/cuda/cuda_llama.h"
#include "backend/cuda_api.h"
#include "core/dtype.h"
#include "core/error.h"
#include "eval/perplexity.h"
#include "io/safetensors.h"
#include "io/tokenizer.h"
#include "models/llama.h"
#include "quant/gptq_solver.h"
#include "quant/rotation.h"
#include "quant/runtime.h"
#include "testing.h"

using namespace lowbit;
using lowbit::test::normalized_error;

#define REQUIRE_GPU()                                                                  \
  if (!cuda::available()) GTEST_SKIP() << "no CUDA device: " << cuda::unavailable_reason(); \
  (void)0

namespace {

template <class T>
std::vector<T> randn(size_t n, uint64_t seed, double scale = 1.0) {
  std::mt19937_64 g(seed);
  std::normal_distribution<double> d(0.0, scale);
  std::vector<T> v(n);
  for (auto& x : v) x = T(d(g));
  return v;
}

double nerr(const std::vector<double>& a, const std::vector<double>& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    num += (a[i] - b[i]) * (a[i] - b[i]);
    den += b[i] * b[i];
  }
  return std::sqrt(num / std::max(den, 1e-300));
}

// SPD matrix A = XᵀX/rows + 0.1 I, n×n (cond ~ 1e2..1e3).
std::vector<double> spd(int64_t n, uint64_t seed) {
  const int64_t rows = 2 * n;
  auto X = randn<double>(size_t(rows * n), seed);
  std::vector<double> A(size_t(n * n), 0.0);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < n; ++j) A[size_t(i * n + j)] += X[size_t(r * n + i)] * X[size_t(r * n + j)] / double(rows);
  for (int64_t i = 0; i < n; ++i) A[size_t(i * n + i)] += 0.1;
  return A;
}

// Keeps the process default device as it was.
struct DeviceScope {
  explicit DeviceScope(Device d) : was(default_device()) { set_default_device(d); }
  ~DeviceScope() { set_default_device(was); }
  Device was;
};

}  // namespace

TEST(CudaBackend, GemmF32AllTransposesWithLeadingDims) {
  REQUIRE_GPU();
  Backend& gpu = cuda::backend();
  const int64_t M = 37, N = 53, K = 129;
  for (int ta = 0; ta < 2; ++ta)
    for (int tb = 0; tb < 2; ++tb) {
      const int64_t lda = (ta ? M : K) + 3, ldb = (tb ? K : N) + 5, ldc = N + 2;
      auto A = randn<float>(size_t((ta ? K : M) * lda), 1 + ta);
      auto B = randn<float>(size_t((tb ? N : K) * ldb), 3 + tb);
      auto C0 = randn<float>(size_t(M * ldc), 7);
      auto Cc = C0, Cg = C0;
      cpu_backend().gemm(ta, tb, M, N, K, 0.7f, A.data(), lda, B.data(), ldb, 0.3f, Cc.data(), ldc);
      gpu.gemm(ta, tb, M, N, K, 0.7f, A.data(), lda, B.data(), ldb, 0.3f, Cg.data(), ldc);
      EXPECT_LT(normalized_error(Cg, Cc), 1e-5) << "transA " << ta << " transB " << tb;
      // the padding between rows (columns N..ldc) is not the GEMM's to write
      for (int64_t m = 0; m < M; ++m)
        for (int64_t j = N; j < ldc; ++j) ASSERT_EQ(Cg[size_t(m * ldc + j)], C0[size_t(m * ldc + j)]);
    }
}

TEST(CudaBackend, GemmF64) {
  REQUIRE_GPU();
  const int64_t M = 64, N = 48, K = 200;
  auto A = randn<double>(size_t(K * M), 11), B = randn<double>(size_t(K * N), 12);
  std::vector<double> Cc(size_t(M * N), 1.0), Cg = Cc;
  cpu_backend().gemm(true, false, M, N, K, -1.0, A.data(), M, B.data(), N, 1.0, Cc.data(), N);
  cuda::backend().gemm(true, false, M, N, K, -1.0, A.data(), M, B.data(), N, 1.0, Cg.data(), N);
  EXPECT_LT(nerr(Cg, Cc), 1e-12);
}

TEST(CudaBackend, LinearEveryWeightDtypeWithBias) {
  REQUIRE_GPU();
  const int64_t M = 19, N = 70, K = 96;
  auto X = randn<float>(size_t(M * K), 21);
  auto bias = randn<float>(size_t(N), 22);
  Tensor W32 = Tensor::from_vector(randn<float>(size_t(N * K), 23, 0.1), {N, K});
  for (DType dt : {DType::F32, DType::F16, DType::BF16}) {
    Tensor W = W32.to(dt);
    std::vector<float> Yc(size_t(M * N)), Yg(size_t(M * N), NAN);
    cpu_backend().linear(X.data(), M, W, Yc.data(), bias.data());
    cuda::backend().linear(X.data(), M, W, Yg.data(), bias.data());
    EXPECT_LT(normalized_error(Yg, Yc), 1e-5) << dtype_name(dt);
  }
}

// The device weight cache must notice a weight changed in place (same tensor, same address).
TEST(CudaBackend, WeightCacheSeesInPlaceChanges) {
  REQUIRE_GPU();
  const int64_t M = 4, N = 32, K = 64;
  auto X = randn<float>(size_t(M * K), 31);
  Tensor W = Tensor::from_vector(randn<float>(size_t(N * K), 32), {N, K});
  std::vector<float> Y1(size_t(M * N)), Y2(size_t(M * N)), Yc(size_t(M * N));
  cuda::backend().linear(X.data(), M, W, Y1.data());
  for (int64_t i = 0; i < N * K; ++i) W.data<float>()[i] *= -2.0f;
  cuda::backend().linear(X.data(), M, W, Y2.data());
  cpu_backend().linear(X.data(), M, W, Yc.data());
  EXPECT_LT(normalized_error(Y2, Yc), 1e-5);
  EXPECT_GT(normalized_error(Y1, Y2), 1.0);
}

TEST(CudaBackend, AttentionPrefillAndDecodeGqa) {
  REQUIRE_GPU();
  struct Case { int64_t T, S, Hq, Hkv, D, off; };
  for (Case c : {Case{33, 33, 4, 2, 16, 0}, Case{1, 20, 4, 2, 16, 19}, Case{70, 70, 8, 8, 64, 0}, Case{5, 45, 6, 2, 128, 40}}) {
    auto q = randn<float>(size_t(c.T * c.Hq * c.D), 41), k = randn<float>(size_t(c.S * c.Hkv * c.D), 42),
         v = randn<float>(size_t(c.S * c.Hkv * c.D), 43);
    std::vector<float> oc(q.size()), og(q.size(), NAN);
    const float scale = float(1.0 / std::sqrt(double(c.D)));
    cpu_backend().attention(q.data(), k.data(), v.data(), oc.data(), c.T, c.S, c.Hq, c.Hkv, c.D, c.off, scale);
    cuda::backend().attention(q.data(), k.data(), v.data(), og.data(), c.T, c.S, c.Hq, c.Hkv, c.D, c.off, scale);
    EXPECT_LT(normalized_error(og, oc), 1e-5) << "T " << c.T << " S " << c.S << " D " << c.D;
  }
}

TEST(CudaBackend, GramMatchesCpu) {
  REQUIRE_GPU();
  const int64_t rows = 300, n = 96;
  auto X = randn<float>(size_t(rows * n), 51);
  std::vector<float> Cc(size_t(n * n)), Cg(size_t(n * n), NAN);
  cpu_backend().gram(X.data(), rows, n, Cc.data());
  cuda::backend().gram(X.data(), rows, n, Cg.data());
  EXPECT_LT(normalized_error(Cg, Cc), 1e-5);
}

TEST(CudaBackend, CholeskyFamily) {
  REQUIRE_GPU();
  const int64_t n = 120;
  const auto A = spd(n, 61);
  {
    auto c = A, g = A;
    ASSERT_TRUE(cpu_backend().cholesky(c.data(), n));
    ASSERT_TRUE(cuda::backend().cholesky(g.data(), n));
    EXPECT_LT(nerr(g, c), 1e-11);
    std::vector<float> cf(A.begin(), A.end()), gf = cf;
    ASSERT_TRUE(cpu_backend().cholesky(cf.data(), n));
    ASSERT_TRUE(cuda::backend().cholesky(gf.data(), n));
    EXPECT_LT(normalized_error(gf, cf), 1e-5);
  }
  {
    auto c = A, g = A;
    ASSERT_TRUE(cpu_backend().spd_inverse(c.data(), n));
    ASSERT_TRUE(cuda::backend().spd_inverse(g.data(), n));
    EXPECT_LT(nerr(g, c), 1e-11);
  }
  {
    auto c = A, g = A;
    ASSERT_TRUE(cpu_backend().inverse_cholesky_upper(c.data(), n));
    ASSERT_TRUE(cuda::backend().inverse_cholesky_upper(g.data(), n));
    EXPECT_LT(nerr(g, c), 1e-11);
  }
  auto bad = A;
  bad[0] = -1.0;  // not positive definite
  EXPECT_FALSE(cuda::backend().inverse_cholesky_upper(bad.data(), n));
}

TEST(CudaBackend, DeviceHessianEqualsHost) {
  REQUIRE_GPU();
  const int64_t n = 80;
  HessianAccumulator host(n), dev(n);
  std::vector<std::vector<float>> batches = {randn<float>(size_t(40 * n), 71), randn<float>(size_t(17 * n), 72),
                                             randn<float>(size_t(33 * n), 73)};
  for (auto& b : batches) host.add(b.data(), int64_t(b.size()) / n);
  {
    DeviceScope on(Device::CUDA);
    for (auto& b : batches) dev.add(b.data(), int64_t(b.size()) / n);
  }
  EXPECT_TRUE(dev.pending_on_device());
  dev.finalize();
  EXPECT_FALSE(dev.pending_on_device());
  EXPECT_EQ(dev.tokens, host.tokens);
  EXPECT_LT(nerr(dev.H, host.H), 1e-6);
}

// ---- whole models ---------------------------------------------------------------------------

namespace {

struct Golden {
  std::vector<int32_t> ids;
  std::vector<float> logits;
};
Golden read_golden(const std::string& path) {
  auto g = SafetensorsFile::open(path);
  Tensor ids_t = g->get("input_ids");
  const int64_t T = ids_t.size(1);
  return {std::vector<int32_t>(ids_t.data<int32_t>(), ids_t.data<int32_t>() + T), g->get("logits").to_vector()};
}

}  // namespace

TEST(CudaModel, RunnerStories260KEqualsGoldenAndCpu) {
  REQUIRE_GPU();
  LOWBIT_REQUIRE_SHARED(model_dir, "models/stories260K");
  LOWBIT_REQUIRE_SHARED(golden, "golden/stories260K_forward.safetensors");
  Golden g = read_golden(golden);
  LlamaModel m = LlamaModel::load(model_dir);
  cuda::LlamaRunner r(m);
  std::vector<float> got = r.logits(g.ids.data(), int64_t(g.ids.size()));
  const double e = normalized_error(got, g.logits);
  std::printf("  stories260K runner vs HF golden: %.3g\n", e);
  EXPECT_LT(e, 1e-5);
  Tensor cpu = m.forward(g.ids.data(), int64_t(g.ids.size()));
  EXPECT_LT(normalized_error(got, cpu.to_vector()), 1e-5);
}

TEST(CudaModel, RunnerTinyLlama3F32AndBf16) {
  REQUIRE_GPU();
  LOWBIT_REQUIRE_SHARED(model_dir, "models/tiny-llama3");
  LOWBIT_REQUIRE_SHARED(golden, "golden/tiny-llama3_forward.safetensors");
  Golden g = read_golden(golden);
  LlamaModel m = LlamaModel::load(model_dir);
  cuda::RunnerOptions f32;
  f32.f32_compute = true;
  cuda::LlamaRunner exact(m, f32);
  const double e32 = normalized_error(exact.logits(g.ids.data(), int64_t(g.ids.size())), g.logits);
  cuda::LlamaRunner native(m);  // bf16 GEMMs and tensor-core attention
  const double e16 = normalized_error(native.logits(g.ids.data(), int64_t(g.ids.size())), g.logits);
  std::printf("  tiny-llama3 vs HF golden: f32 compute %.3g, bf16 compute %.3g\n", e32, e16);
  EXPECT_LT(e32, 1e-5);
  EXPECT_LT(e16, 3e-2);
}

// Longer than one query tile (256) of the tensor-core attention, GQA: the native bf16
// runner against the f32 runner on the same model (positions up to 600).
TEST(CudaModel, RunnerBf16TiledAttentionAcrossTiles) {
  REQUIRE_GPU();
  LOWBIT_REQUIRE_SHARED(model_dir, "models/tiny-llama3");
  LlamaModel m = LlamaModel::load(model_dir);
  const int64_t T = std::min<int64_t>(600, m.cfg.max_position);
  std::vector<int32_t> ids(static_cast<size_t>(T));
  for (int64_t t = 0; t < T; ++t) ids[size_t(t)] = int32_t((t * 7919 + 13) % m.cfg.vocab_size);
  cuda::RunnerOptions f32;
  f32.f32_compute = true;
  cuda::LlamaRunner exact(m, f32), native(m);
  const auto a = exact.logits(ids.data(), T), b = native.logits(ids.data(), T);
  const double e = normalized_error(b, a);
  std::printf("  tiny-llama3 T=%lld bf16 vs f32 runner: %.3g\n", (long long)T, e);
  EXPECT_LT(e, 3e-2);
  // and the f32 runner equals the CPU
  Tensor cpu = m.forward(ids.data(), T);
  EXPECT_LT(normalized_error(a, cpu.to_vector()), 1e-5);
}

TEST(CudaModel, GenericBackendForwardEqualsGolden) {
  REQUIRE_GPU();
  LOWBIT_REQUIRE_SHARED(model_dir, "models/stories260K");
  LOWBIT_REQUIRE_SHARED(golden, "golden/stories260K_forward.safetensors");
  Golden g = read_golden(golden);
  DeviceScope on(Device::CUDA);
  LlamaModel m = LlamaModel::load(model_dir);
  ASSERT_EQ(m.backend, &cuda::backend());
  Tensor logits = m.forward(g.ids.data(), int64_t(g.ids.size()));
  EXPECT_LT(normalized_error(logits.to_vector(), g.logits), 1e-5);
}

TEST(CudaModel, PerplexityEqualsCpu) {
  REQUIRE_GPU();
  LOWBIT_REQUIRE_SHARED(model_dir, "models/stories260K");
  LOWBIT_REQUIRE_SHARED(text, "data/text/tinystories_val.txt");
  LlamaModel cpu_model = LlamaModel::load(model_dir);
  auto tok = load_tokenizer(model_dir);
  const std::string all = lowbit::test::read_file(text);
  const auto ids = tokenize_stream(*tok, all.substr(all.find('\n', all.size() / 2) + 1), cpu_model.cfg.bos_token_id);
  PplOptions po;
  po.seqlen = 256;
  po.max_windows = 20;
  po.progress = false;
  const PplResult c = perplexity(cpu_model, ids, po);
  DeviceScope on(Device::CUDA);
  LlamaModel gpu_model = LlamaModel::load(model_dir);
  const PplResult g = perplexity(gpu_model, ids, po);
  EXPECT_EQ(g.path, "cuda (device-resident)");
  std::printf("  ppl cpu %.6f cuda %.6f\n", c.ppl, g.ppl);
  EXPECT_NEAR(g.ppl, c.ppl, 1e-5 * c.ppl);
}

// The fused flash-attention kernel (RunnerOptions::flash_attention) against the tiled
// cuBLAS path on the same random bf16 model, head_dim 64, GQA 2:1, T = 700 (11 query tiles
// of the kernel, 3 blocks of the tiled path, neither a multiple of its tile). Both round
// q/k/v, P and the attention output to bf16; they differ in where P is rounded (before vs
// after normalizing, each 2^-9 relative) and the summation order, ~1e-3 in the logits
// expected; 2e-2 still catches a wrong mask, tile edge or GQA map (O(1)).
TEST(CudaModel, RunnerFlashAttentionEqualsTiled) {
  REQUIRE_GPU();
  LlamaConfig cfg;
  cfg.architecture = "LlamaForCausalLM";
  cfg.model_type = "llama";
  cfg.hidden_size = 512;
  cfg.intermediate_size = 1024;
  cfg.num_layers = 2;
  cfg.num_heads = 8;
  cfg.num_kv_heads = 4;
  cfg.head_dim = 64;
  cfg.vocab_size = 1000;
  cfg.max_position = 1024;
  cfg.rms_eps = 1e-5;
  cfg.rope.theta = 10000.0;
  const int64_t T = 700;
  std::vector<int32_t> ids(static_cast<size_t>(T));
  for (int64_t t = 0; t < T; ++t) ids[size_t(t)] = int32_t((t * 7919 + 13) % cfg.vocab_size);
  cuda::RunnerOptions tiled_opt, flash_opt;
  flash_opt.flash_attention = true;
  auto tiled = cuda::LlamaRunner::random(cfg, 77, tiled_opt);
  auto flash = cuda::LlamaRunner::random(cfg, 77, flash_opt);
  const auto a = tiled->logits(ids.data(), T), b = flash->logits(ids.data(), T);
  size_t nans = 0;
  for (float x : b) nans += std::isnan(x) ? 1 : 0;
  EXPECT_EQ(nans, 0u);
  const double e = normalized_error(b, a);
  std::printf("  random 2-layer model T=%lld flash vs tiled attention: %.3g\n", (long long)T, e);
  EXPECT_LT(e, 2e-2);
  EXPECT_GT(e, 0.0);  // the two paths round P differently: identical logits mean the flash path did not run
}

// The device-resident calibration steps (cuda_block.cpp) against LlamaLayer::advance on the
// CPU and the host group inputs: stories260K layer 1 with the QuaRot online transforms
// (cross-head before o_proj, H_f of order 172 = 43·4 before down_proj, per-head R3 on Q/K)
// and 4-bit activation / KV quantizers, with f32 and f16-rounded Hadamards.
// Tolerance: quantizers off 1e-5 (f32 on both sides, summation order only); on 3e-2: a value
// within an ulp of a rounding boundary may take the neighbouring 4-bit code on one side
// (one grid step, ~1/8 of that token's range), which then propagates through the layer.
TEST(CudaBlock, AdvanceAndGroupGramEqualHost) {
  REQUIRE_GPU();
  LOWBIT_REQUIRE_SHARED(model_dir, "models/stories260K");
  for (bool fp32_had : {true, false})
    for (bool aq : {false, true}) {
      LlamaModel m = LlamaModel::load(model_dir);
      QuantRuntime rt;
      rt.cfg.a_bits = 4;
      rt.cfg.k_bits = 4;
      rt.cfg.v_bits = 4;
      rt.cfg.k_asym = true;
      rt.cfg.fp32_had = fp32_had;
      rt.rotated = true;
      rt.rot = make_online_rotations(m.cfg, 0);
      install_runtime(m, rt);
      LlamaLayer& L = m.layers[1];
      ASSERT_TRUE(bool(L.o_proj.rot) && bool(L.down_proj.rot) && bool(L.qk_rot));
      const int64_t T = 37;
      BlockState st0;
      st0.T = T;
      st0.x = randn<float>(size_t(T * L.d), 81);
      BlockCtx ctx;
      ctx.act_quant = aq;
      const double tol = aq ? 3e-2 : 1e-5;
      BlockState h = st0, dv = st0;
      for (int g = 0; g < 4; ++g) {
        // group g's Hessian from the state at boundary g (equal on both sides so far, up to tol)
        const Linear& first = *L.groups()[size_t(g)].front();
        L.backend = &cpu_backend();
        std::vector<float> buf, pbuf;
        HessianAccumulator Hh(first.in()), Hd(first.in());
        Hh.add(linear_input(first, L.group_input(g, h, buf), T, aq, pbuf), T);
        Hd.dev = cuda::make_device_hessian(first.in());
        ASSERT_TRUE(cuda::block_group_gram(L, g, h, aq, *Hd.dev, 0.0, 2.0 / double(T)));
        Hd.tokens = T;
        Hd.finalize();
        const double eh = nerr(Hd.H, Hh.H);
        // the steps themselves
        L.advance(g, h, ctx);
        L.backend = &cuda::backend();
        // Called directly, so a device step that declines (and would leave the host path
        // to produce the same numbers) fails here instead of passing unnoticed.
        ASSERT_TRUE(cuda::llama_advance(L, g, dv, ctx)) << "group " << g << ": the device step declined";
        const double ex = normalized_error(dv.x, h.x);
        const double ea = h.a.empty() ? 0.0 : normalized_error(dv.a, h.a);
        std::printf("  fp32_had %d act_quant %d group %d: H %.3g, x %.3g, a %.3g\n", int(fp32_had), int(aq), g, eh, ex,
                    ea);
        EXPECT_LT(eh, tol) << "group " << g;
        EXPECT_LT(ex, tol) << "group " << g;
        EXPECT_EQ(dv.a.size(), h.a.size());
        EXPECT_LT(ea, tol) << "group " << g;
        dv = h;  // continue both from the host state, so each group is checked on its own
      }
    }
}

// Decoding with the device KV cache (LlamaRunner::feed) against the CPU prefill of the whole
// sequence: a 25-token prompt, then 15 single tokens. stories260K (f32) must agree to 1e-5;
// tiny-llama3 (bf16 weights: GEMM inputs rounded to bf16 on the device, f32 on the CPU) to 3e-2.
TEST(CudaModel, RunnerDecodeEqualsPrefill) {
  REQUIRE_GPU();
  for (const char* name : {"models/stories260K", "models/tiny-llama3"}) {
    LOWBIT_REQUIRE_SHARED(model_dir, name);
    LlamaModel m = LlamaModel::load(model_dir);
    std::vector<int32_t> ids;
    for (int i = 0; i < 40; ++i) ids.push_back(int32_t((i * 37 + 5) % m.cfg.vocab_size));
    const int64_t V = m.cfg.vocab_size;
    const std::vector<float> full = m.forward(ids.data(), int64_t(ids.size())).to_vector();  // [40, V] on the CPU
    cuda::LlamaRunner r(m);
    r.begin_sequence(40);
    std::vector<float> got = r.feed(ids.data(), 25), want(full.begin() + 24 * V, full.begin() + 25 * V);
    for (size_t t = 25; t < ids.size(); ++t) {
      std::vector<float> s = r.feed(&ids[t], 1);
      got.insert(got.end(), s.begin(), s.end());
      want.insert(want.end(), full.begin() + int64_t(t) * V, full.begin() + int64_t(t + 1) * V);
    }
    const double e = normalized_error(got, want);
    std::printf("  %s decode vs CPU prefill: %.3g\n", name, e);
    EXPECT_LT(e, std::string(name).find("llama3") != std::string::npos ? 3e-2 : 1e-5) << name;
    EXPECT_THROW(r.feed(ids.data(), 1), ArgError);  // the cache is full
  }
}
