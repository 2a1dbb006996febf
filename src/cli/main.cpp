// lowbit: one binary, subcommands. Library errors become one line on stderr and exit 1;
// command-line errors exit 2.
#include <cstdio>
#include <vector>

#include "backend/backend.h"
#include "cli/cli.h"
#include "core/error.h"
#include "core/progress.h"

namespace lowbit::cli {
void apply_common(const Common& c) {
  set_quiet(c.quiet);
  cpu_backend().set_threads(c.threads);
}
}  // namespace lowbit::cli

int main(int argc, char** argv) {
  using namespace lowbit::cli;
  CLI::App app{"lowbit — post-training quantization and evaluation of LLMs", "lowbit"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "lowbit 0.1.0");
  Common common;
  std::vector<std::pair<CLI::App*, Runner>> cmds;
  Runner r;
  auto reg = [&](auto add) {
    size_t before = app.get_subcommands({}).size();
    add(app, common, &r);
    cmds.push_back({app.get_subcommands({})[before], r});
  };
  reg(add_eval);
  reg(add_generate);
  reg(add_inspect);
  reg(add_quantize);
  reg(add_synth);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    for (auto& [sub, run] : cmds)
      if (sub->parsed()) return run();
    return 2;
  } catch (const lowbit::Error& e) {
    std::fflush(stdout);
    std::fprintf(stderr, "lowbit: error: %s\n", e.what());
    return 1;
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "lowbit: error: out of memory\n");
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "lowbit: error: %s\n", e.what());
    return 1;
  }
}
