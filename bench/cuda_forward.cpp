// GPU forward benchmark: the device-resident LLaMA forward (the one `lowbit eval ppl
// --device cuda` runs) on a LLaMA-2-7B-shaped model with random bf16 weights made on the
// GPU, over the GPTQ perplexity loop, plus the GPU's measured bf16 GEMM peak. The
// PyTorch twin is bench/torch_llama_forward.py; scripts/device_check.sh runs both and
// BENCHMARKS.md records the numbers (measured runs only).
//
//   cuda_forward [--layers 32] [--hidden 4096] [--intermediate 11008] [--heads 32] [--kv-heads 32]
//                [--vocab 32000] [--windows 40] [--seqlen 2048] [--flash 0|1] [--output-json F]
//
// --flash 1: attention by the fused tensor-core kernel (RunnerOptions::flash_attention)
// instead of the tiled cuBLAS path; the JSON records "attention": "flash" | "tiled".
//
// Token ids are uniform random (seeded): the model is random, so its perplexity means
// nothing; tokens/s and the linear layers' share of the GEMM peak are what is measured.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <nlohmann/json.hpp>

#include "backend/cuda/cuda_context.h"
#include "backend/cuda/cuda_llama.h"
#include "backend/cuda/runner_kernels.h"
#include "backend/cuda_api.h"
#include "core/error.h"

using namespace lowbit;

// Median TFLOP/s of a bf16 GEMM M×N×K (f32 accumulate) over `reps` timed runs.
static double gemm_peak_tflops(int64_t M, int64_t N, int64_t K, int reps) {
  cuda::DeviceBuffer<uint16_t> A(size_t(M * K)), B(size_t(K * N)), C(size_t(M * N));
  cuda::fill_uniform_bf16(A.get(), M * K, 1, 1.0f, cuda::stream());
  cuda::fill_uniform_bf16(B.get(), K * N, 2, 1.0f, cuda::stream());
  const float one = 1.0f, zero = 0.0f;
  auto run = [&] {
    LOWBIT_CUBLAS_CHECK(cublasGemmEx(cuda::cublas(), CUBLAS_OP_T, CUBLAS_OP_N, int(N), int(M), int(K), &one, B.get(),
                                     CUDA_R_16BF, int(K), A.get(), CUDA_R_16BF, int(K), &zero, C.get(), CUDA_R_16BF,
                                     int(N), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  };
  for (int i = 0; i < 3; ++i) run();
  cudaEvent_t a, b;
  LOWBIT_CUDA_CHECK(cudaEventCreate(&a));
  LOWBIT_CUDA_CHECK(cudaEventCreate(&b));
  std::vector<double> t;
  for (int i = 0; i < reps; ++i) {
    LOWBIT_CUDA_CHECK(cudaEventRecord(a, cuda::stream()));
    run();
    LOWBIT_CUDA_CHECK(cudaEventRecord(b, cuda::stream()));
    LOWBIT_CUDA_CHECK(cudaEventSynchronize(b));
    float ms = 0;
    LOWBIT_CUDA_CHECK(cudaEventElapsedTime(&ms, a, b));
    t.push_back(ms / 1e3);
  }
  std::sort(t.begin(), t.end());
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  return 2.0 * double(M) * double(N) * double(K) / t[t.size() / 2] / 1e12;
}

int main(int argc, char** argv) {
  LlamaConfig cfg;
  cfg.architecture = "LlamaForCausalLM";
  cfg.model_type = "llama";
  cfg.hidden_size = 4096;
  cfg.intermediate_size = 11008;
  cfg.num_layers = 32;
  cfg.num_heads = 32;
  cfg.num_kv_heads = 32;
  cfg.vocab_size = 32000;
  cfg.rms_eps = 1e-5;
  cfg.rope.theta = 10000.0;
  int64_t windows = 40, seqlen = 2048;
  std::string out_json;
  bool flash = false;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i], v = argv[i + 1];
    if (a == "--layers") cfg.num_layers = std::atoll(v.c_str());
    else if (a == "--hidden") cfg.hidden_size = std::atoll(v.c_str());
    else if (a == "--intermediate") cfg.intermediate_size = std::atoll(v.c_str());
    else if (a == "--heads") cfg.num_heads = std::atoll(v.c_str());
    else if (a == "--kv-heads") cfg.num_kv_heads = std::atoll(v.c_str());
    else if (a == "--vocab") cfg.vocab_size = std::atoll(v.c_str());
    else if (a == "--windows") windows = std::atoll(v.c_str());
    else if (a == "--seqlen") seqlen = std::atoll(v.c_str());
    else if (a == "--flash") flash = std::atoi(v.c_str()) != 0;
    else if (a == "--output-json") out_json = v;
    else {
      std::fprintf(stderr, "cuda_forward: unknown option %s\n", a.c_str());
      return 2;
    }
  }
  cfg.head_dim = cfg.hidden_size / cfg.num_heads;
  cfg.max_position = std::max<int64_t>(4096, seqlen);
  try {
    if (!cuda::available()) {
      std::fprintf(stderr, "cuda_forward: %s\n", cuda::unavailable_reason().c_str());
      return 1;
    }
    std::printf("device: %s\n", cuda::describe().c_str());
    const double peak = gemm_peak_tflops(8192, 8192, 8192, 10);
    std::printf("bf16 GEMM peak (8192^3, median of 10): %.1f TFLOP/s\n", peak);

    cuda::RunnerOptions ro;
    ro.flash_attention = flash;
    const char* attention = flash ? "flash" : "tiled";
    auto t_build = std::chrono::steady_clock::now();
    auto runner = cuda::LlamaRunner::random(cfg, 1234, ro);
    const double build_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_build).count();
    std::printf("model: %lld layers, %lld/%lld, %lld heads, vocab %lld; weights %.2f GB bf16 (made in %.1f s)\n",
                (long long)cfg.num_layers, (long long)cfg.hidden_size, (long long)cfg.intermediate_size,
                (long long)cfg.num_heads, (long long)cfg.vocab_size, double(runner->weight_bytes()) / 1e9, build_s);
    std::printf("attention: %s\n", attention);

    uint64_t st = 42;
    std::vector<int32_t> ids(size_t(windows * seqlen));
    for (auto& t : ids) {
      st = st * 6364136223846793005ull + 1442695040888963407ull;
      t = int32_t((st >> 33) % uint64_t(cfg.vocab_size));
    }
    for (int w = 0; w < 2; ++w) runner->window_nll(ids.data(), seqlen);  // warm-up
    cuda::reset_peak();
    double nll = 0;
    const auto t0 = std::chrono::steady_clock::now();
    for (int64_t w = 0; w < windows; ++w)
      for (double v : runner->window_nll(ids.data() + w * seqlen, seqlen)) nll += v;
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    // A second pass with events around every linear-layer GEMM (kept out of the timed
    // pass above): the GEMMs' share of the time and their TFLOP/s.
    runner->set_profile(true);
    for (int64_t w = 0; w < std::min<int64_t>(windows, 8); ++w) runner->window_nll(ids.data() + w * seqlen, seqlen);
    const double tok_s = double(windows * seqlen) / secs;
    const double lin_tflops = runner->linear_flops() / runner->linear_seconds() / 1e12;
    const cuda::MemStats ms = cuda::mem_stats();
    std::printf("forward: %lld windows x %lld tokens in %.2f s = %.0f tokens/s; ppl %.3f (random model)\n",
                (long long)windows, (long long)seqlen, secs, tok_s, std::exp(nll / double(windows * (seqlen - 1))));
    std::printf("linear layers: %.2f s of GEMM, %.1f TFLOP/s = %.1f%% of the measured peak; peak device memory %.2f GB\n",
                runner->linear_seconds(), lin_tflops, 100.0 * lin_tflops / peak, double(ms.peak) / 1e9);
    if (!out_json.empty()) {
      nlohmann::json j = {{"tool", "lowbit"},
                          {"device", cuda::describe()},
                          {"layers", cfg.num_layers},
                          {"hidden", cfg.hidden_size},
                          {"intermediate", cfg.intermediate_size},
                          {"heads", cfg.num_heads},
                          {"vocab", cfg.vocab_size},
                          {"windows", windows},
                          {"seqlen", seqlen},
                          {"attention", attention},
                          {"seconds", secs},
                          {"tokens_per_second", tok_s},
                          {"gemm_peak_tflops", peak},
                          {"linear_seconds", runner->linear_seconds()},
                          {"linear_tflops", lin_tflops},
                          {"linear_fraction_of_peak", lin_tflops / peak},
                          {"peak_device_bytes", ms.peak},
                          {"ppl_random_model", std::exp(nll / double(windows * (seqlen - 1)))}};
      std::ofstream(out_json) << j.dump(2) << "\n";
    }
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "cuda_forward: error: %s\n", e.what());
    return 1;
  }
}
