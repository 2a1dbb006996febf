// lowbit export — a (fake-)quantized model as a plain Hugging Face checkpoint (quant/export_hf.h).
#include "cli/cli.h"
#include "cli/quant_common.h"
#include "cli/quant_flags.h"
#include "core/error.h"
#include "core/progress.h"
#include "models/loader.h"
#include "quant/checkpoint.h"
#include "quant/export_hf.h"

namespace lowbit::cli {

void add_export(CLI::App& app, Common& common, Runner* run) {
  auto* c = app.add_subcommand(
      "export", "write a quantized checkpoint (or a model + quantization flags) in another format");
  struct Opts {
    std::string model, out, format, tokenizer = "auto";
    QuantFlags flags;
  };
  auto o = std::make_shared<Opts>();
  c->add_option("--model", o->model, "lowbit quantized checkpoint, or a Hugging Face model with quantization flags")
      ->required();
  c->add_option("--out", o->out, "output directory (must not exist or be empty)")->required();
  c->add_option("--format", o->format,
                "hf-dequantized: the fake-quantized weights as a plain f32 HF checkpoint (weight-only quantization)")
      ->required()
      ->check(CLI::IsMember({"hf-dequantized"}));
  c->add_option("--tokenizer", o->tokenizer, "auto | json | spm (calibration text, with quantization flags)")
      ->capture_default_str();
  c->add_option("--threads", common.threads, "CPU threads (0: all cores)")->check(CLI::Range(0, 4096));
  add_device_option(c, common);
  c->add_flag("--quiet", common.quiet, "no progress output");
  o->flags.add(c);
  *run = [o, &common]() {
    apply_common(common);
    LlamaModel model = load_model(o->model);
    QuantConfig qc = o->flags.resolve(model.cfg.max_position);
    if (qc.any()) {
      LOWBIT_CHECK(!is_quantized_checkpoint(o->model), ArgError,
                   "{} is already quantized; quantization flags apply to full-precision models", o->model);
      // Refuse before calibrating when the flags ask for what has to run online.
      LOWBIT_CHECK(!qc.quantizes_acts() && !qc.quantizes_kv() && qc.lm_head_a_bits >= 16, ArgError,
                   "--format hf-dequantized cannot export activation or K/V quantization (--a_bits {} --k_bits {} "
                   "--v_bits {}): a plain HF checkpoint holds weights only",
                   qc.a_bits, qc.k_bits, qc.v_bits);
      // --rotate always leaves online Hadamards (R4 on down_proj's input, R2 across o_proj's heads).
      LOWBIT_CHECK(!qc.rotate, ArgError,
                   "--format hf-dequantized cannot export --rotate: QuaRot's online Hadamards (down_proj, o_proj "
                   "inputs) have no place in a plain HF checkpoint");
      check_no_vlm_settings(qc, o->model, "export --format hf-dequantized writes a language model only");
      auto tok = load_tokenizer(o->model, o->tokenizer);
      quantize_in_memory(model, qc, *tok);
    }
    export_hf_dequantized(model, o->model, o->out);
    std::printf("wrote %s (hf-dequantized, f32%s)\n", o->out.c_str(),
                qc.any() ? (", " + qc.summary()).c_str() : "");
    return 0;
  };
}

}  // namespace lowbit::cli
