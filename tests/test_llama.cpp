// LLaMA forward against Hugging Face transformers goldens (../shared/golden).
//
// Tolerance: normalized error ||ours - hf|| / ||hf|| < 1e-6 for every hidden
// state and the logits. Both sides compute in f32; the only differences are
// summation order inside GEMMs/reductions and libm ulps in RoPE, which give
// errors of order sqrt(K)·2^-24 ≈ 1e-7 — 1e-6 leaves 10x headroom while still
// catching any real bug (a wrong RoPE angle or norm shows up at 1e-3 or more).
#include <gtest/gtest.h>

#include "core/error.h"
#include "io/safetensors.h"
#include "models/llama.h"
#include "testing.h"

using namespace lowbit;
using lowbit::test::normalized_error;

namespace {

void check_against_golden(const std::string& model_dir, const std::string& golden_path, double tol) {
  LlamaModel m = LlamaModel::load(model_dir);
  auto g = SafetensorsFile::open(golden_path);
  Tensor ids_t = g->get("input_ids");  // [1, T] i32
  const int64_t T = ids_t.size(1);
  std::vector<int32_t> ids(ids_t.data<int32_t>(), ids_t.data<int32_t>() + T);

  std::vector<std::vector<float>> hidden(static_cast<size_t>(m.cfg.num_layers + 1));
  ForwardOptions fo;
  fo.hidden_hook = [&](int64_t l, const float* h, int64_t rows, int64_t d) {
    hidden[size_t(l)].assign(h, h + rows * d);
  };
  Tensor logits = m.forward(ids.data(), T, nullptr, fo);
  for (int64_t l = 0; l <= m.cfg.num_layers; ++l) {
    std::vector<float> want = g->get("hidden_states." + std::to_string(l)).to_vector();
    double err = normalized_error(hidden[size_t(l)], want);
    EXPECT_LT(err, tol) << "hidden_states." << l;
    std::printf("  hidden_states.%lld  normalized error %.3g\n", (long long)l, err);
  }
  std::vector<float> want = g->get("logits").to_vector();
  double err = normalized_error(logits.to_vector(), want);
  std::printf("  logits           normalized error %.3g\n", err);
  EXPECT_LT(err, tol) << "logits";
}

}  // namespace

TEST(LlamaGolden, Stories260KFp32) {
  LOWBIT_REQUIRE_SHARED(model, "models/stories260K");
  LOWBIT_REQUIRE_SHARED(golden, "golden/stories260K_forward.safetensors");
  check_against_golden(model, golden, 1e-6);
}

TEST(LlamaGolden, TinyLlama3Bf16Llama3RopeTied) {
  LOWBIT_REQUIRE_SHARED(model, "models/tiny-llama3");
  LOWBIT_REQUIRE_SHARED(golden, "golden/tiny-llama3_forward.safetensors");
  check_against_golden(model, golden, 1e-6);
}

// Prefill of the whole sequence must equal token-by-token decoding with the KV cache.
TEST(LlamaForward, KvCacheMatchesPrefill) {
  LOWBIT_REQUIRE_SHARED(model_dir, "models/tiny-llama3");
  LlamaModel m = LlamaModel::load(model_dir);
  std::vector<int32_t> ids;
  for (int i = 0; i < 40; ++i) ids.push_back((i * 37 + 5) % int(m.cfg.vocab_size));
  Tensor full = m.forward(ids.data(), int64_t(ids.size()));
  KVCache cache = m.make_cache(int64_t(ids.size()));
  // prefill 25, then 15 single steps
  Tensor a = m.forward(ids.data(), 25, &cache);
  std::vector<float> got = a.to_vector();
  for (size_t t = 25; t < ids.size(); ++t) {
    Tensor s = m.forward(&ids[t], 1, &cache);
    auto v = s.to_vector();
    got.insert(got.end(), v.begin(), v.end());
  }
  EXPECT_EQ(cache.len, int64_t(ids.size()));
  EXPECT_LT(normalized_error(got, full.to_vector()), 1e-6);
}

TEST(LlamaForward, RejectsTooLongSequenceAndBadIds) {
  LOWBIT_REQUIRE_SHARED(model_dir, "models/stories260K");
  LlamaModel m = LlamaModel::load(model_dir);
  std::vector<int32_t> ids(static_cast<size_t>(m.cfg.max_position + 1), 5);
  EXPECT_THROW(m.forward(ids.data(), int64_t(ids.size())), ArgError);
  int32_t bad = int32_t(m.cfg.vocab_size);
  EXPECT_THROW(m.forward(&bad, 1), ArgError);
}
