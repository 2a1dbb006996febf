// lowbit eval zeroshot — lm-eval-harness zero-shot tasks (eval/zeroshot.h).
#include <cstdlib>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "cli/cli.h"
#include "cli/quant_common.h"
#include "cli/quant_flags.h"
#include "core/error.h"
#include "core/progress.h"
#include "eval/zeroshot.h"
#include "io/files.h"
#include "io/tokenizer.h"
#include "models/loader.h"
#include "quant/checkpoint.h"

namespace lowbit::cli {

namespace {
std::vector<std::string> split_tasks(const std::string& s) {
  std::vector<std::string> out;
  size_t b = 0;
  while (b <= s.size()) {
    size_t e = s.find(',', b);
    if (e == std::string::npos) e = s.size();
    std::string t = s.substr(b, e - b);
    while (!t.empty() && t.front() == ' ') t.erase(t.begin());
    while (!t.empty() && t.back() == ' ') t.pop_back();
    LOWBIT_CHECK(!t.empty(), ArgError, "--tasks '{}': empty task name", s);
    out.push_back(t);
    b = e + 1;
  }
  return out;
}

std::string fmt_num(const nlohmann::json& r, const char* key) {
  return r.contains(key) ? fmt::format("{:.4f}", r[key].get<double>()) : std::string("-");
}
}  // namespace

void add_eval_zeroshot(CLI::App* eval, Common& common, Runner* run) {
  auto* zs = eval->add_subcommand("zeroshot", "zero-shot tasks scored as lm-eval-harness scores them");
  struct Opts {
    std::string model, tasks, tasks_dir, output_json, tokenizer = "auto", vision_tower;
    int64_t limit = -1, batch_size = ZeroShotOptions{}.batch_size;
    bool no_prefix_reuse = false, log_samples = false;
    QuantFlags flags;
  };
  auto o = std::make_shared<Opts>();
  zs->add_option("--model", o->model, "Hugging Face model directory or lowbit quantized checkpoint")->required();
  zs->add_option("--tasks", o->tasks,
                 "comma-separated: arc_easy, arc_challenge, piqa, openbookqa, siqa, winogrande, lambada_openai")
      ->required();
  zs->add_option("--tasks-dir,--tasks_dir", o->tasks_dir,
                 "folder with <task>.jsonl (default: $LOWBIT_SHARED/data/tasks, else ../shared/data/tasks)");
  zs->add_option("--limit", o->limit, "score the first N items of each task (-1: all)")
      ->check(minus_one_or_at_least(1));
  zs->add_option("--output-json,--output_json", o->output_json, "write lm-eval-shaped results as JSON");
  zs->add_flag("--log-samples,--log_samples", o->log_samples,
               "add each item's loglikelihoods to --output-json (under \"samples\")");
  zs->add_flag("--no-prefix-reuse", o->no_prefix_reuse,
               "run every choice from the first token (slower; the same numbers up to rounding)");
  zs->add_option("--batch-size,--batch_size", o->batch_size,
                 "requests per batched forward (items longest first; the linears see the stacked rows); 1: "
                 "one item at a time in file order (the same numbers up to rounding)")
      ->capture_default_str()
      ->check(CLI::Range(int64_t(1), int64_t(1) << 20));
  add_text_eval_options(zs, common, o->tokenizer, o->vision_tower);
  o->flags.add(zs);
  *run = [o, &common]() {
    apply_common(common);
    if (!o->output_json.empty()) check_output_file(o->output_json, "--output-json");
    LOWBIT_CHECK(!o->log_samples || !o->output_json.empty(), ArgError,
                 "--log-samples writes into --output-json; give --output-json too");
    const std::vector<std::string> tasks = split_tasks(o->tasks);
    for (const auto& t : tasks) task_kind(t);  // unknown names: one error before loading the model
    ZeroShotOptions zo;
    zo.tasks_dir = o->tasks_dir;
    if (zo.tasks_dir.empty()) {
      const char* env = std::getenv("LOWBIT_SHARED");
      zo.tasks_dir = std::string(env && *env ? env : "../shared") + "/data/tasks";
    }
    for (const auto& t : tasks) {
      const std::string f = zo.tasks_dir + "/" + t + ".jsonl";
      LOWBIT_CHECK(std::filesystem::is_regular_file(f), IoError, "task '{}': {} not found (--tasks-dir names the folder with {}.jsonl)",
                   t, f, t);
    }
    zo.limit = o->limit;
    zo.prefix_reuse = !o->no_prefix_reuse;
    zo.batch_size = o->batch_size;
    zo.log_samples = o->log_samples;
    TextEvalModel tm = load_text_eval_model(o->model, o->tokenizer, o->vision_tower, o->flags);
    LlamaModel& model = tm.model;
    const QuantConfig& qc = tm.qc;
    const std::unique_ptr<Tokenizer>& tok = tm.tok;
    const nlohmann::json& qreport = tm.qreport;
    nlohmann::json j = eval_zeroshot(model, *tok, tasks, zo);
    std::printf("%-16s %6s %8s %8s %8s %8s %10s %10s\n", "task", "n", "acc", "±", "acc_norm", "±", "ppl", "±");
    for (const auto& t : tasks) {
      const auto& r = j["results"][t];
      std::printf("%-16s %6lld %8s %8s %8s %8s %10s %10s\n", t.c_str(),
                  (long long)j["n-samples"][t]["effective"].get<int64_t>(), fmt_num(r, "acc").c_str(),
                  fmt_num(r, "acc_stderr").c_str(), fmt_num(r, "acc_norm").c_str(),
                  fmt_num(r, "acc_norm_stderr").c_str(), fmt_num(r, "perplexity").c_str(),
                  fmt_num(r, "perplexity_stderr").c_str());
    }
    if (!o->output_json.empty()) {
      j["config"]["model"] = o->model;
      j["config"]["threads"] = cpu_backend().threads();
      if (qc.any()) j["quantization"] = {{"config", qc.to_json()}, {"summary", qc.summary()}, {"report", qreport}};
      write_file_atomic(o->output_json, j.dump(2) + "\n");
    }
    return 0;
  };
}

}  // namespace lowbit::cli
