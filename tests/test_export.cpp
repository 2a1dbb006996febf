// lowbit export --format hf-dequantized (quant/export_hf.h): the exported plain checkpoint,
// loaded back, computes what the in-memory fake-quantized model computes; online pieces
// are refused by name.
#include <cstring>
#include <filesystem>

#include "core/error.h"
#include "models/loader.h"
#include "quant/checkpoint.h"
#include "quant/driver.h"
#include "quant/export_hf.h"
#include "testing.h"

using namespace lowbit;
namespace fs = std::filesystem;

namespace {
std::vector<int32_t> some_ids() {
  std::vector<int32_t> ids = {1};
  for (int i = 0; i < 40; ++i) ids.push_back(int32_t((i * 37 + 11) % 500 + 3));
  return ids;
}
}  // namespace

TEST(ExportHf, RtnW4RoundTripsThroughAPlainCheckpoint) {
  LOWBIT_REQUIRE_SHARED(dir, "models/stories260K");
  LlamaModel m = LlamaModel::load(dir);
  QuantConfig cfg;
  cfg.w_bits = 4;
  cfg.w_rtn = true;
  cfg.w_asym = true;      // zero points exercised
  cfg.w_groupsize = 32;   // several groups per row (d = 64, f = 172 is not a multiple: the tail group)
  quantize_model(m, cfg, {});
  ASSERT_TRUE(m.layers[0].q_proj.quantized());
  EXPECT_TRUE(export_blockers(m).empty());
  const std::string out = test::temp_dir("export") + "/hf";
  export_hf_dequantized(m, dir, out);
  EXPECT_FALSE(is_quantized_checkpoint(out));  // a plain HF directory, no lowbit metadata
  for (const char* f : {"config.json", "model.safetensors", "tokenizer.model", "tokenizer.json"})
    EXPECT_TRUE(fs::exists(fs::path(out) / f)) << f;

  LlamaModel e = load_model(out);
  EXPECT_FALSE(e.layers[0].q_proj.quantized());
  // The exported weight is the dequantized codes, stored in f32: exact.
  Tensor wq = m.layers[2].down_proj.weight_f32(), we = e.layers[2].down_proj.weight_f32();
  ASSERT_EQ(wq.numel(), we.numel());
  EXPECT_EQ(0, std::memcmp(wq.raw(), we.raw(), size_t(wq.numel()) * 4));
  // Logits: the in-memory model dequantizes its packed codes into the same f32 values
  // before each product (the same CPU GEMM), so the export's logits are bit-equal.
  const auto ids = some_ids();
  Tensor a = m.forward(ids.data(), int64_t(ids.size()));
  Tensor b = e.forward(ids.data(), int64_t(ids.size()));
  EXPECT_EQ(test::normalized_error(b.f32(), a.f32(), size_t(a.numel())), 0.0);
  // ... and they are not the full-precision logits (the export is the quantized model).
  LlamaModel fp = LlamaModel::load(dir);
  Tensor c = fp.forward(ids.data(), int64_t(ids.size()));
  EXPECT_GT(test::normalized_error(c.f32(), a.f32(), size_t(a.numel())), 1e-3);
}

TEST(ExportHf, OnlinePiecesAreRefusedByName) {
  LOWBIT_REQUIRE_SHARED(dir, "models/stories260K");
  LlamaModel m = LlamaModel::load(dir);
  QuantConfig cfg;
  cfg.w_bits = 4;
  cfg.w_rtn = true;
  cfg.rotate = true;  // QuaRot: R4 (down_proj) and the cross-head part of R2 stay online
  quantize_model(m, cfg, {});
  auto why = export_blockers(m);
  ASSERT_FALSE(why.empty());
  EXPECT_NE(why[0].find("online Hadamard on the input of model.layers.0."), std::string::npos) << why[0];
  const std::string out = test::temp_dir("export-rot") + "/hf";
  try {
    export_hf_dequantized(m, dir, out);
    FAIL() << "exported a model with online rotations";
  } catch (const ArgError& e) {
    EXPECT_NE(std::string(e.what()).find("online Hadamard"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(fs::exists(out));  // nothing half-written
}

TEST(ExportHf, Cli) {
  LOWBIT_REQUIRE_SHARED(dir, "models/stories260K");
  const std::string tmp = test::temp_dir("export-cli");
  // A quantized checkpoint exports; its plain copy evaluates to the same perplexity.
  auto r = test::run_lowbit("quantize --model " + dir + " --w_bits 3 --w_rtn --out " + tmp + "/q --quiet");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  r = test::run_lowbit("export --model " + tmp + "/q --out " + tmp + "/hf --format hf-dequantized --quiet");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  LlamaModel q = load_model(tmp + "/q"), e = load_model(tmp + "/hf");
  const auto ids = some_ids();
  Tensor a = q.forward(ids.data(), int64_t(ids.size()));
  Tensor b = e.forward(ids.data(), int64_t(ids.size()));
  EXPECT_EQ(test::normalized_error(b.f32(), a.f32(), size_t(a.numel())), 0.0);
  // Refusals: one line each.
  r = test::run_lowbit("export --model " + dir + " --out " + tmp + "/a8 --format hf-dequantized --w_bits 4 --w_rtn --a_bits 8");
  test::expect_error_line(r, "cannot export activation or K/V quantization", 2);
  r = test::run_lowbit("export --model " + dir + " --out " + tmp + "/hf --format hf-dequantized --w_bits 4 --w_rtn");
  test::expect_error_line(r, "is not an empty directory", 2);
  r = test::run_lowbit("export --model " + dir + " --out " + tmp + "/x --format gguf");
  test::expect_error_line(r, "--format", 2);
}
