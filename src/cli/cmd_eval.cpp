// lowbit eval ppl — perplexity by the GPTQ/QuaRot protocol.
#include <nlohmann/json.hpp>

#include "cli/cli.h"
#include "cli/quant_common.h"
#include "cli/quant_flags.h"
#include "models/loader.h"
#include "quant/checkpoint.h"
#include "models/vlm.h"
#include "quant/vlm_quant.h"
#include "core/error.h"
#include "core/progress.h"
#include "eval/perplexity.h"
#include "io/files.h"
#include "io/tokenizer.h"

namespace lowbit::cli {

void add_text_eval_options(CLI::App* c, Common& common, std::string& tokenizer, std::string& vision_tower) {
  c->add_option("--tokenizer", tokenizer, "auto | json | spm")->capture_default_str();
  c->add_option("--vision-tower,--vision_tower", vision_tower,
                "original LLaVA layout: its CLIP directory, to quantize the whole model in memory "
                "(with quantization flags)");
  c->add_option("--threads", common.threads, "CPU threads (0: all cores)")->check(CLI::Range(0, 4096));
  add_device_option(c, common);
  c->add_flag("--quiet", common.quiet, "no progress output");
}

namespace {
void add_eval_ppl(CLI::App* eval, Common& common, Runner* run) {
  auto* ppl = eval->add_subcommand("ppl", "perplexity over non-overlapping windows (GPTQ/QuaRot protocol)");
  struct Opts {
    std::string model, data, output_json, tokenizer = "auto", vision_tower;
    int64_t seqlen = -1, max_windows = -1, data_begin = 0, data_end = -1;
    QuantFlags flags;
  };
  auto o = std::make_shared<Opts>();
  ppl->add_option("--model", o->model, "Hugging Face model directory")->required();
  ppl->add_option("--data", o->data, "raw text file to evaluate")->required();
  ppl->add_option("--data-begin,--data_begin", o->data_begin,
                  "evaluate from this character (Unicode code point) of the file on")
      ->check(CLI::NonNegativeNumber);
  ppl->add_option("--data-end,--data_end", o->data_end, "stop before this character (-1: end of file)")
      ->check(minus_one_or_at_least(0));
  ppl->add_option("--seqlen", o->seqlen, "window length in tokens (default: 2048, or the model's context if shorter)")
      ->check(CLI::Range(int64_t(2), int64_t(1) << 24));
  ppl->add_option("--max-windows,--max_windows", o->max_windows, "evaluate at most this many windows (-1: all)")
      ->check(minus_one_or_at_least(1));
  ppl->add_option("--output-json,--output_json", o->output_json, "write the result as JSON");
  add_text_eval_options(ppl, common, o->tokenizer, o->vision_tower);
  o->flags.add(ppl);
  *run = [o, &common]() {
    apply_common(common);
    if (!o->output_json.empty()) check_output_file(o->output_json, "--output-json");
    LOWBIT_CHECK(o->data_end < 0 || o->data_end > o->data_begin, ArgError,
                 "--data-end {} must be greater than --data-begin {}", o->data_end, o->data_begin);
    TextEvalModel tm = load_text_eval_model(o->model, o->tokenizer, o->vision_tower, o->flags);
    LlamaModel& model = tm.model;
    const QuantConfig& qc = tm.qc;
    const std::unique_ptr<Tokenizer>& tok = tm.tok;
    const nlohmann::json& qreport = tm.qreport;
    if (o->seqlen < 0) o->seqlen = std::min<int64_t>(2048, model.cfg.max_position);
    LOWBIT_CHECK(o->seqlen <= model.cfg.max_position, ArgError,
                 "--seqlen {} is larger than the model's context ({} max_position_embeddings)", o->seqlen,
                 model.cfg.max_position);
    std::string text = read_text_file(o->data);
    LOWBIT_CHECK(!text.empty(), ArgError, "--data {} is empty", o->data);
    if (o->data_begin != 0 || o->data_end >= 0) text = utf8_slice(text, o->data_begin, o->data_end);
    LOWBIT_CHECK(!text.empty(), ArgError, "--data {}: the selected character range is empty", o->data);
    std::vector<int32_t> ids = tokenize_stream(*tok, text, model.cfg.bos_token_id);
    log_info(fmt::format("{}: {} tokens, {} windows of {}", o->data, ids.size(),
                         int64_t(ids.size()) / o->seqlen, o->seqlen));
    PplOptions po;
    po.seqlen = o->seqlen;
    po.max_windows = o->max_windows;
    PplResult r = perplexity(model, ids, po);
    std::printf("ppl %.4f  (nll %.6f, %lld windows of %lld tokens, %.1fs)\n", r.ppl, r.nll,
                (long long)r.windows, (long long)r.seqlen, r.seconds);
    if (!o->output_json.empty()) {
      nlohmann::json j = {{"ppl", r.ppl},           {"nll", r.nll},     {"tokens", r.tokens},
                          {"windows", r.windows},   {"seqlen", r.seqlen}, {"model", o->model},
                          {"data", o->data},        {"data_begin", o->data_begin}, {"data_end", o->data_end}, {"seconds", r.seconds},
                          {"tokens_per_second", double(r.windows * r.seqlen) / r.seconds},
                          {"threads", cpu_backend().threads()}, {"device", r.path}};
      if (qc.any()) j["quantization"] = {{"config", qc.to_json()}, {"summary", qc.summary()}, {"report", qreport}};
      write_file_atomic(o->output_json, j.dump(2) + "\n");
    }
    return 0;
  };
}
}  // namespace

// `eval` and its subcommands: each add_eval_* registers one and sets its runner; the eval
// runner calls the one that was parsed.
void add_eval(CLI::App& app, Common& common, Runner* run) {
  auto* eval = app.add_subcommand("eval", "evaluate a model");
  eval->require_subcommand(1);
  auto subs = std::make_shared<std::vector<std::pair<CLI::App*, Runner>>>();
  auto add = [&](void (*add_sub)(CLI::App*, Common&, Runner*)) {
    Runner r;
    size_t before = eval->get_subcommands({}).size();
    add_sub(eval, common, &r);
    subs->push_back({eval->get_subcommands({})[before], r});
  };
  add(add_eval_ppl);
  add(add_eval_zeroshot);
  add(add_eval_vqa);
  *run = [subs]() {
    for (auto& [sub, r] : *subs)
      if (sub->parsed()) return r();
    return 2;
  };
}

}  // namespace lowbit::cli
