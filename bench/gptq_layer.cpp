// Whole-pipeline timing of GPTQ on one LLaMA-2-7B-shaped decoder layer — the C++
// side of the comparison with bench/torch_gptq_layer.py (see BENCHMARKS.md).
//
// The layer: hidden 4096, FFN 11008, 32 heads (MHA), head_dim 128, f32 weights
// N(0, 0.02) made by models/synth (written to a scratch directory, then loaded like
// any checkpoint). The work is exactly what `lowbit quantize --w_bits 4` does to a
// layer: N calibration windows of T tokens; for each true-sequential group
// (q/k/v → o → gate/up → down) a forward over all windows accumulating the group's
// Hessian, then the GPTQ solves (4-bit symmetric per channel, percdamp 0.01, block
// 128); finally the propagation forward.
//
//   gptq_layer [--nsamples 128] [--seqlen 2048] [--threads 2] [--output-json F] [--dir D]
//
// Prints seconds for the layer, split into GPTQ solves (independent of N) and
// forwards + statistics (linear in N), and the extrapolation to 128 × 2048 tokens
// from the measured per-window cost, so a short run predicts the full one (use
// whole 2048-token windows and at least 4 of them: per-layer fixed costs, such as
// writing back the dequantized weights, are counted as per-window cost here).
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>

#include <nlohmann/json.hpp>

#include "backend/backend.h"
#include "core/progress.h"
#include "io/files.h"
#include "models/llama.h"
#include "models/synth.h"
#include "quant/driver.h"

using namespace lowbit;

int main(int argc, char** argv) {
  int64_t nsamples = 128, seqlen = 2048;
  int threads = 2;
  std::string out_json, dir = (std::filesystem::temp_directory_path() / "lowbit_bench_7b_layer_ctx4096").string();
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string a = argv[i], v = argv[i + 1];
    if (a == "--nsamples") nsamples = std::atoll(v.c_str());
    else if (a == "--seqlen") seqlen = std::atoll(v.c_str());
    else if (a == "--threads") threads = std::atoi(v.c_str());
    else if (a == "--output-json") out_json = v;
    else if (a == "--dir") dir = v;
    else {
      std::fprintf(stderr, "gptq_layer: unknown option %s\n", a.c_str());
      return 2;
    }
  }
  try {
    cpu_backend().set_threads(threads);
    SynthSpec sp;
    sp.hidden = 4096;
    sp.ffn = 11008;
    sp.layers = 1;
    sp.heads = 32;
    sp.kv_heads = 32;
    sp.context = std::max<int64_t>(4096, seqlen);  // LLaMA-2's context; the cached model serves any seqlen up to it
    sp.seed = 7;
    if (!std::filesystem::exists(dir + "/model.safetensors")) {
      log_info("writing the synthetic 7B-shaped layer to " + dir);
      write_synthetic_model(dir, sp);
    }
    LlamaModel m = LlamaModel::load(dir);

    NormalRng rng(11);  // calibration token ids, uniform over the byte tokens
    std::vector<std::vector<int32_t>> calib(static_cast<size_t>(nsamples));
    for (auto& w : calib)
      for (int64_t t = 0; t < seqlen; ++t) w.push_back(int32_t(3 + rng.next_u64() % 256));

    QuantConfig c;
    c.w_bits = 4;  // GPTQ, symmetric per channel, percdamp 0.01, blocksize 128 (the defaults)
    c.nsamples = nsamples;
    c.cal_seqlen = seqlen;
    QuantizedModel q = quantize_model(m, c, calib);

    const auto& L = q.report["layers"][0];
    // total = solves + forwards/Hessians (∝ windows) + the error estimate's FP forwards
    // (on at most 8 samples, so it does not grow past them).
    const double total = L["seconds"], solve = L["solve_seconds"], err = L["error_report_seconds"];
    const double stats = total - solve - err;
    const double per_window = stats / double(nsamples);
    const double scale = 2048.0 / double(seqlen);
    const double extrap = solve + per_window * 128.0 * scale + err / double(std::min<int64_t>(nsamples, 8)) * 8.0 * scale;
    nlohmann::json r = {{"impl", "lowbit"},
                        {"threads", cpu_backend().threads()},
                        {"nsamples", nsamples},
                        {"seqlen", seqlen},
                        {"total_s", total},
                        {"stats_s", stats},
                        {"solve_s", solve},
                        {"error_report_s", err},
                        {"stats_s_per_sample", per_window},
                        {"extrapolated_total_s_128x2048", extrap},
                        {"rel_output_error", L["rel_error"]},
                        {"peak_rss_mb", q.report["peak_rss_mb"]},
                        {"linears", L["linears"]}};
    std::printf("lowbit 7B-shaped layer, %lld x %lld tokens, %d threads: %.1fs (GPTQ solves %.1fs, forwards+H %.1fs, "
                "error estimate %.1fs)\nextrapolated to 128 x 2048 tokens: %.1fs per layer; peak RSS %.0f MB\n",
                (long long)nsamples, (long long)seqlen, cpu_backend().threads(), total, solve, stats, err, extrap,
                q.report["peak_rss_mb"].get<double>());
    if (!out_json.empty()) write_file_atomic(out_json, r.dump(2) + "\n");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "gptq_layer: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
