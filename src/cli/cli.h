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
};

using Runner = std::function<int()>;
// Each registers a subcommand on `app` and sets `*run` to its body (called when selected).
void add_eval(CLI::App& app, Common& common, Runner* run);
void add_generate(CLI::App& app, Common& common, Runner* run);
void add_inspect(CLI::App& app, Common& common, Runner* run);
void add_synth(CLI::App& app, Common& common, Runner* run);
void add_quantize(CLI::App& app, Common& common, Runner* run);

void apply_common(const Common& c);  // threads, quiet

}  // namespace lowbit::cli
