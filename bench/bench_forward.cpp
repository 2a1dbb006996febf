// Forward throughput of lowbit's CPU path (Google Benchmark). The PyTorch twin of
// every case is bench/torch_forward.py; bench/run_forward.sh runs both and prints
// the side-by-side table that BENCHMARKS.md records.
//
//   BM_Stories260K_Prefill/512   one forward of 512 fixed token ids (all logits) through
//                                the real stories260K (../shared/models/stories260K)
//   BM_Stories260K_Decode/256    KV-cache greedy decode from BOS, one token per forward
//   BM_Llama7BLayer/T            one LLaMA-2-7B-shaped decoder layer (hidden 4096, FFN 11008,
//                                32 heads, 32 KV heads, head_dim 128), f32 weights N(0, 0.02)
//                                made here with NormalRng, T in {128, 512, 2048}
//
// Environment: LOWBIT_THREADS (default 2) -> cpu_backend().set_threads(n);
// LOWBIT_SHARED (default <source>/../shared) locates the shared model assets.
//
// Timing is wall clock (UseRealTime: the work runs on several threads). Each case
// runs once untimed before measuring (page faults, OpenBLAS buffers, thread pools)
// and reports the median over repetitions; counters are per wall-clock second.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "models/llama.h"
#include "models/synth.h"

extern "C" char* openblas_get_corename(void);

namespace {

using lowbit::LlamaModel;

std::string shared_dir() {
  if (const char* env = std::getenv("LOWBIT_SHARED"); env && *env) return env;
  return std::string(LOWBIT_SOURCE_DIR) + "/../shared";
}

int env_threads() {
  const char* env = std::getenv("LOWBIT_THREADS");
  if (!env || !*env) return 2;
  return std::atoi(env);
}

// ---- stories260K ---------------------------------------------------------------

struct Stories {
  std::unique_ptr<LlamaModel> model;
  std::string error;  // why it is unavailable
};

Stories& stories() {
  static Stories s = [] {
    Stories r;
    const std::string dir = shared_dir() + "/models/stories260K";
    if (!std::filesystem::exists(dir + "/model.safetensors")) {
      r.error = dir + " not found (set LOWBIT_SHARED)";
      return r;
    }
    try {
      r.model = std::make_unique<LlamaModel>(LlamaModel::load(dir));
    } catch (const std::exception& e) {
      r.error = std::string("loading stories260K: ") + e.what();
    }
    return r;
  }();
  return s;
}

// The fixed prompt both sides use: BOS then an LCG walk over the vocabulary
// (torch_forward.py: prefill_ids()).
std::vector<int32_t> prefill_ids(int64_t T, int64_t vocab, int32_t bos) {
  std::vector<int32_t> ids(static_cast<size_t>(T));
  for (int64_t t = 0; t < T; ++t) ids[size_t(t)] = t == 0 ? bos : int32_t(3 + (t * 7919 + 13) % (vocab - 3));
  return ids;
}

void BM_Stories260K_Prefill(benchmark::State& state) {
  Stories& s = stories();
  if (!s.model) {
    state.SkipWithError(s.error.c_str());
    return;
  }
  LlamaModel& m = *s.model;
  const int64_t T = state.range(0);
  const auto ids = prefill_ids(T, m.cfg.vocab_size, m.cfg.bos_token_id >= 0 ? m.cfg.bos_token_id : 1);
  benchmark::DoNotOptimize(m.forward(ids.data(), T).raw());  // warm-up
  for (auto _ : state) {
    lowbit::Tensor logits = m.forward(ids.data(), T);  // [T, vocab], like HF's full forward
    benchmark::DoNotOptimize(logits.raw());
  }
  state.counters["tokens/s"] = benchmark::Counter(double(T), benchmark::Counter::kIsIterationInvariantRate);
}

// Greedy decode from BOS: step i feeds one token at position i and takes the argmax.
void BM_Stories260K_Decode(benchmark::State& state) {
  Stories& s = stories();
  if (!s.model) {
    state.SkipWithError(s.error.c_str());
    return;
  }
  LlamaModel& m = *s.model;
  const int64_t steps = state.range(0);
  const int32_t bos = m.cfg.bos_token_id >= 0 ? m.cfg.bos_token_id : 1;
  lowbit::KVCache cache = m.make_cache(steps);
  lowbit::ForwardOptions last;
  last.last_only = true;
  auto run = [&] {
    cache.len = 0;
    int32_t tok = bos;
    for (int64_t i = 0; i < steps; ++i) {
      lowbit::Tensor logits = m.forward(&tok, 1, &cache, last);
      const float* p = logits.f32();
      tok = int32_t(std::max_element(p, p + m.cfg.vocab_size) - p);
    }
    return tok;
  };
  benchmark::DoNotOptimize(run());  // warm-up
  for (auto _ : state) benchmark::DoNotOptimize(run());
  state.counters["tokens/s"] = benchmark::Counter(double(steps), benchmark::Counter::kIsIterationInvariantRate);
}

// ---- one LLaMA-2-7B-shaped decoder layer ---------------------------------------------

constexpr int64_t k7bHidden = 4096, k7bFfn = 11008, k7bHeads = 32, k7bKvHeads = 32, k7bHeadDim = 128;

lowbit::Tensor random_tensor(const lowbit::Shape& shape, lowbit::NormalRng& rng, float std) {
  lowbit::Tensor t = lowbit::Tensor::empty(shape);
  float* p = t.f32();
  for (int64_t i = 0, n = t.numel(); i < n; ++i) p[i] = float(rng.normal()) * std;
  return t;
}

lowbit::Tensor ones(int64_t n) {
  lowbit::Tensor t = lowbit::Tensor::empty({n});
  std::fill(t.f32(), t.f32() + n, 1.0f);
  return t;
}

// Built once (about 0.8 GB of f32 weights), shared by every T.
LlamaModel& llama7b_layer() {
  static LlamaModel m = [] {
    LlamaModel r;
    lowbit::LlamaConfig& c = r.cfg;
    c.architecture = "LlamaForCausalLM";
    c.model_type = "llama";
    c.hidden_size = k7bHidden;
    c.intermediate_size = k7bFfn;
    c.num_layers = 1;
    c.num_heads = k7bHeads;
    c.num_kv_heads = k7bKvHeads;
    c.head_dim = k7bHeadDim;
    c.vocab_size = 32000;  // unused: one layer's forward only
    c.max_position = 4096;
    c.rms_eps = 1e-5;
    c.rope.theta = 10000.0;
    lowbit::NormalRng rng(7);
    const int64_t d = k7bHidden, f = k7bFfn, qd = k7bHeads * k7bHeadDim, kvd = k7bKvHeads * k7bHeadDim;
    auto lin = [&](const std::string& name, int64_t out, int64_t in) {
      lowbit::Linear l;
      l.name = "model.layers.0." + name;
      l.n_out = out;
      l.n_in = in;
      l.W = random_tensor({out, in}, rng, 0.02f);
      return l;
    };
    lowbit::LlamaLayer L = lowbit::LlamaLayer::shaped(c, 0);
    L.attn_norm = ones(d);
    L.mlp_norm = ones(d);
    L.q_proj = lin("self_attn.q_proj", qd, d);
    L.k_proj = lin("self_attn.k_proj", kvd, d);
    L.v_proj = lin("self_attn.v_proj", kvd, d);
    L.o_proj = lin("self_attn.o_proj", d, qd);
    L.gate_proj = lin("mlp.gate_proj", f, d);
    L.up_proj = lin("mlp.up_proj", f, d);
    L.down_proj = lin("mlp.down_proj", d, f);
    r.layers.push_back(std::move(L));
    return r;
  }();
  return m;
}

// Useful FLOPs of one layer on T tokens (the count torch_forward.py uses too):
//   linears   2·T·(d·qd + 2·d·kvd + qd·d + 3·d·f)      = 2·T·(4·4096² + 3·4096·11008) here
//   attention 2 matmuls · 2 FLOP · Hq·D · T²/2 (causal) = 2·T²·4096 here
// Norms, RoPE, softmax and SwiGLU are not counted. (lowbit's prefill attention
// computes the full T×T score matrix and zeroes the upper half, so it does twice
// the counted attention work.)
double layer_flops(int64_t T) {
  const double d = k7bHidden, f = k7bFfn, qd = k7bHeads * k7bHeadDim, kvd = k7bKvHeads * k7bHeadDim;
  const double lin = 2.0 * double(T) * (d * qd + 2 * d * kvd + qd * d + 3 * d * f);
  const double att = 2.0 * 2.0 * qd * double(T) * double(T) / 2.0;
  return lin + att;
}

void BM_Llama7BLayer(benchmark::State& state) {
  LlamaModel& m = llama7b_layer();
  const int64_t T = state.range(0), d = k7bHidden;
  lowbit::NormalRng rng(11);
  std::vector<float> x0(static_cast<size_t>(T * d));
  for (auto& v : x0) v = float(rng.normal());
  lowbit::BlockState x;
  x.T = T;
  x.x = x0;
  // Warm-up once per T (not once per repetition: T = 2048 takes seconds).
  static std::vector<int64_t> warmed;
  if (std::find(warmed.begin(), warmed.end(), T) == warmed.end()) {
    x.x = x0;
    m.layers[0].forward(x, {});
    warmed.push_back(T);
  }
  for (auto _ : state) {
    std::memcpy(x.x.data(), x0.data(), x0.size() * 4);  // the block updates the residual in place (~1 ms)
    m.layers[0].forward(x, {});
    benchmark::DoNotOptimize(x.x.data());
    benchmark::ClobberMemory();
  }
  state.counters["tokens/s"] = benchmark::Counter(double(T), benchmark::Counter::kIsIterationInvariantRate);
  state.counters["GFLOP/s"] =
      benchmark::Counter(layer_flops(T) * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

// Medians over repetitions; the console shows the aggregates, the JSON file keeps every run.
BENCHMARK(BM_Stories260K_Prefill)
    ->Arg(512)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond)
    ->MinTime(0.5)
    ->Repetitions(5)
    ->DisplayAggregatesOnly(true);
BENCHMARK(BM_Stories260K_Decode)
    ->Arg(256)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond)
    ->MinTime(0.5)
    ->Repetitions(5)
    ->DisplayAggregatesOnly(true);
BENCHMARK(BM_Llama7BLayer)
    ->Arg(128)
    ->Arg(512)
    ->Arg(616)  // LLaVA-1.5 prefill: 576 image tokens + ~40 text tokens (BENCHMARKS.md, eval vqa)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond)
    ->Iterations(1)
    ->Repetitions(5)
    ->DisplayAggregatesOnly(true);
BENCHMARK(BM_Llama7BLayer)
    ->Arg(2048)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond)
    ->Iterations(1)
    ->Repetitions(3)
    ->DisplayAggregatesOnly(true);

}  // namespace

int main(int argc, char** argv) {
  const int threads = env_threads();
  lowbit::cpu_backend().set_threads(threads);
  benchmark::AddCustomContext("lowbit_threads", std::to_string(lowbit::cpu_backend().threads()));
  benchmark::AddCustomContext("openblas_core", openblas_get_corename());
  benchmark::AddCustomContext("lowbit_shared", shared_dir());
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
