// lowbit synth — writes a small deterministic random model (and text) for demos and CI.
#include "cli/cli.h"
#include "core/error.h"
#include "core/progress.h"
#include "io/files.h"
#include "models/synth.h"

namespace lowbit::cli {

void add_synth(CLI::App& app, Common& common, Runner* run) {
  auto* c = app.add_subcommand("synth", "write a synthetic random LLaMA model (numbers from it mean nothing)");
  struct Opts {
    std::string out, text;
    SynthSpec spec;
    int64_t text_bytes = 200000;
    std::string dtype = "f32";
  };
  auto o = std::make_shared<Opts>();
  c->add_option("--out", o->out, "output model directory")->required();
  c->add_option("--text", o->text, "also write synthetic text to this file");
  c->add_option("--text-bytes", o->text_bytes, "size of the synthetic text")->capture_default_str();
  c->add_option("--hidden", o->spec.hidden)->capture_default_str();
  c->add_option("--ffn", o->spec.ffn)->capture_default_str();
  c->add_option("--layers", o->spec.layers)->capture_default_str();
  c->add_option("--heads", o->spec.heads)->capture_default_str();
  c->add_option("--kv-heads", o->spec.kv_heads)->capture_default_str();
  c->add_option("--context", o->spec.context)->capture_default_str();
  c->add_option("--seed", o->spec.seed)->capture_default_str();
  c->add_option("--dtype", o->dtype, "f32 | f16 | bf16")->check(CLI::IsMember({"f32", "f16", "bf16"}));
  *run = [o, &common]() {
    apply_common(common);
    o->spec.dtype = o->dtype == "bf16" ? DType::BF16 : o->dtype == "f16" ? DType::F16 : DType::F32;
    write_synthetic_model(o->out, o->spec);
    if (!o->text.empty()) write_file_atomic(o->text, synthetic_text(o->text_bytes, o->spec.seed));
    std::printf("wrote synthetic model to %s (random weights: its numbers mean nothing)\n", o->out.c_str());
    return 0;
  };
}

}  // namespace lowbit::cli
