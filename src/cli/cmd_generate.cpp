// lowbit generate — text continuation with the KV cache.
#include <chrono>
#include <nlohmann/json.hpp>

#include "cli/cli.h"
#include "core/error.h"
#include "eval/generate.h"
#include "io/files.h"
#include "io/tokenizer.h"
#include "models/loader.h"

namespace lowbit::cli {

void add_generate(CLI::App& app, Common& common, Runner* run) {
  auto* g = app.add_subcommand("generate", "generate text (greedy at temperature 0)");
  struct Opts {
    std::string model, prompt, output_json, tokenizer = "auto";
    int64_t max_new_tokens = 64;
    double temperature = 0.0, top_p = 1.0;
    uint64_t seed = 0;
  };
  auto o = std::make_shared<Opts>();
  g->add_option("--model", o->model, "Hugging Face model directory")->required();
  g->add_option("--prompt", o->prompt, "prompt text (empty: start from BOS)");
  g->add_option("--max-new-tokens,--max_new_tokens", o->max_new_tokens, "tokens to generate")
      ->capture_default_str()
      ->check(CLI::Range(int64_t(1), int64_t(1) << 24));
  g->add_option("--temperature", o->temperature, "0: greedy")->capture_default_str()->check(CLI::Range(0.0, 100.0));
  g->add_option("--top-p,--top_p", o->top_p, "nucleus sampling mass")
      ->capture_default_str()
      ->check(CLI::Range(1e-6, 1.0));
  g->add_option("--seed", o->seed, "sampling seed")->capture_default_str();
  g->add_option("--output-json,--output_json", o->output_json, "write ids and text as JSON");
  g->add_option("--tokenizer", o->tokenizer, "auto | json | spm")->capture_default_str();
  g->add_option("--threads", common.threads, "CPU threads (0: all cores)")->check(CLI::Range(0, 4096));
  add_device_option(g, common);
  g->add_flag("--quiet", common.quiet, "no progress output");
  *run = [o, &common]() {
    apply_common(common);
    if (!o->output_json.empty()) check_output_file(o->output_json, "--output-json");
    LlamaModel model = load_model(o->model);
    auto tok = load_tokenizer(o->model, o->tokenizer);
    std::vector<int32_t> prompt = tok->encode(o->prompt);
    int32_t bos = tok->bos_id() >= 0 ? tok->bos_id() : model.cfg.bos_token_id;
    if (bos >= 0 && (tok->add_bos() || prompt.empty())) prompt.insert(prompt.begin(), bos);
    LOWBIT_CHECK(!prompt.empty(), ArgError, "empty --prompt and the tokenizer has no BOS token to start from");
    GenOptions go;
    go.max_new_tokens = o->max_new_tokens;
    go.temperature = o->temperature;
    go.top_p = o->top_p;
    go.seed = o->seed;
    go.eos_id = tok->eos_id() >= 0 ? tok->eos_id() : model.cfg.eos_token_id;
    auto t0 = std::chrono::steady_clock::now();
    std::vector<int32_t> ids = generate(model, prompt, go);
    double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::string text = tok->decode(ids);
    std::printf("%s%s\n", o->prompt.c_str(), text.c_str());
    if (!o->output_json.empty()) {
      nlohmann::json j = {{"ids", ids},          {"text", text},         {"prompt", o->prompt},
                          {"prompt_ids", prompt}, {"model", o->model},    {"seconds", secs},
                          {"temperature", o->temperature}, {"top_p", o->top_p}, {"seed", o->seed}};
      write_file_atomic(o->output_json, j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n");
    }
    return 0;
  };
}

}  // namespace lowbit::cli
