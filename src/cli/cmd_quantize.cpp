// lowbit quantize — writes a self-contained quantized checkpoint.
#include <chrono>

#include "cli/cli.h"
#include "cli/quant_common.h"
#include "cli/quant_flags.h"
#include "core/error.h"
#include "core/progress.h"
#include "io/files.h"
#include "models/llava.h"
#include "models/loader.h"
#include "models/vlm.h"
#include "quant/vlm_quant.h"
#include "quant/checkpoint.h"

namespace lowbit::cli {

void add_quantize(CLI::App& app, Common& common, Runner* run) {
  auto* c = app.add_subcommand("quantize", "quantize a model (RTN / GPTQ / GPTAQ, QuaRot, activations, KV cache)");
  struct Opts {
    std::string model, out, report_json, tokenizer = "auto", vision_tower;
    QuantFlags flags;
  };
  auto o = std::make_shared<Opts>();
  c->add_option("--model", o->model, "Hugging Face model directory")->required();
  c->add_option("--out,--save_qmodel_path", o->out, "output directory for the quantized checkpoint")->required();
  c->add_option("--vision-tower,--vision_tower", o->vision_tower,
                "local CLIP vision tower directory (original LLaVA layout, LlavaLlamaForCausalLM); the quantized "
                "tower is written into OUT/vision_tower");
  c->add_option("--report-json", o->report_json, "also write the quantization report (per-layer errors, timings)");
  c->add_option("--tokenizer", o->tokenizer, "auto | json | spm")->capture_default_str();
  c->add_option("--threads", common.threads, "CPU threads (0: all cores)")->check(CLI::Range(0, 4096));
  add_device_option(c, common);
  c->add_flag("--quiet", common.quiet, "no progress output");
  o->flags.add(c);
  *run = [o, &common]() {
    apply_common(common);
    check_output_dir(o->out);  // before minutes of compute, not after
    if (!o->report_json.empty()) check_output_file(o->report_json, "--report-json");
    LOWBIT_CHECK(!is_quantized_checkpoint(o->model), ArgError,
                 "{} is already a lowbit quantized checkpoint; quantize the full-precision model", o->model);
    QuantizedModel q;
    QuantConfig cfg;
    LOWBIT_CHECK(o->vision_tower.empty() || is_llava_original_dir(o->model), ArgError,
                 "--vision-tower is only for the original LLaVA layout (LlavaLlamaForCausalLM); {} is not one",
                 o->model);
    if (is_vlm_dir(o->model)) {  // tower by tower (quant/vlm_quant.h)
      std::unique_ptr<Vlm> v = load_vlm(o->model, o->vision_tower);
      cfg = o->flags.resolve(v->language().cfg.max_position);
      LOWBIT_CHECK(cfg.any(), ArgError, "nothing to do: give --recipe or some of --w_bits/--wbits/--a_bits/--k_bits/--v_bits/--rotate");
      auto tok = load_tokenizer(o->model, o->tokenizer);
      q = quantize_vlm_in_memory(*v, cfg, *tok, o->model);
      save_quantized_vlm(*v, q, o->model, o->out);
    } else {
      LlamaModel m = LlamaModel::load(o->model);
      cfg = o->flags.resolve(m.cfg.max_position);
      check_no_vlm_settings(cfg, o->model);
      LOWBIT_CHECK(cfg.any(), ArgError, "nothing to do: give --recipe or some of --w_bits/--a_bits/--k_bits/--v_bits/--rotate");
      auto tok = load_tokenizer(o->model, o->tokenizer);
      q = quantize_in_memory(m, cfg, *tok);
      save_quantized(m, q, o->model, o->out);
    }
    if (!o->report_json.empty()) write_file_atomic(o->report_json, q.report.dump(2) + "\n");
    std::printf("wrote %s (%s) in %.1fs\n", o->out.c_str(), cfg.summary().c_str(), q.report["seconds"].get<double>());
    return 0;
  };
}

}  // namespace lowbit::cli
