// Subcommand registration. Each cmd_*.cpp adds one subcommand to the app and
// returns the function that runs it after parsing.
#pragma once
#include <CLI/CLI.hpp>
#include <functional>
#include <string>

namespace lowbit::cli {

struct Common {
  int threads = 0;   // 0: all cores
  bool quiet = false;
  std::string device = "cpu";  // cpu | cuda
};
// Adds --device to a subcommand (cpu | cuda).
void add_device_option(CLI::App* c, Common& common);
// The options of the text evaluations (eval ppl, eval zeroshot): --tokenizer, --vision-tower,
// --threads, --device, --quiet.
void add_text_eval_options(CLI::App* c, Common& common, std::string& tokenizer, std::string& vision_tower);

using Runner = std::function<int()>;
// Each registers a subcommand on `app` and sets `*run` to its body (called when selected).
void add_eval(CLI::App& app, Common& common, Runner* run);
// `eval` subcommands (cmd_eval*.cpp), registered by add_eval.
void add_eval_zeroshot(CLI::App* eval, Common& common, Runner* run);
void add_eval_vqa(CLI::App* eval, Common& common, Runner* run);  // cmd_eval_vqa.cpp
// lowbit export (cmd_export.cpp).
void add_export(CLI::App& app, Common& common, Runner* run);
void add_generate(CLI::App& app, Common& common, Runner* run);
void add_inspect(CLI::App& app, Common& common, Runner* run);
void add_synth(CLI::App& app, Common& common, Runner* run);
void add_quantize(CLI::App& app, Common& common, Runner* run);
void add_quarot(CLI::App& app, Common& common, Runner* run);  // the QuaRot-family main.py

void apply_common(const Common& c);  // threads, quiet

// A validator for integer flags where -1 means "all / default": -1 or >= lo.
inline CLI::Validator minus_one_or_at_least(int64_t lo) {
  return CLI::Validator(
      [lo](std::string& v) -> std::string {
        try {
          size_t used = 0;
          const long long x = std::stoll(v, &used);
          if (used == v.size() && (x == -1 || x >= lo)) return "";
        } catch (const std::exception&) {
        }
        return "must be -1 or an integer >= " + std::to_string(lo) + ", got " + v;
      },
      "-1|>=" + std::to_string(lo));
}

}  // namespace lowbit::cli
