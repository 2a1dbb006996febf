// lowbit: one binary, subcommands. Every error is one line on stderr: exit 2 for
// command-line (usage) errors, 1 for everything else.
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
  // Before any model is loaded: models and solvers take the default backend when built.
  set_default_device(c.device == "cuda" ? Device::CUDA : Device::CPU);
}
void add_device_option(CLI::App* c, Common& common) {
  c->add_option("--device", common.device,
                "cpu, or cuda (the GPU backend: build with nvcc present; see README 'CUDA backend')")
      ->check(CLI::IsMember({"cpu", "cuda"}))
      ->capture_default_str();
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
  reg(add_export);
  reg(add_generate);
  reg(add_inspect);
  reg(add_quantize);
  reg(add_quarot);
  reg(add_synth);
  // Error contract: every failure is one line "lowbit: error: ..." on stderr; exit 2 for
  // usage errors (flags, arguments), 1 for everything else.
  // A message quoting file contents may hold newlines; the contract is one line.
  auto one_line = [](std::string msg) {
    for (char& ch : msg)
      if (ch == '\n' || ch == '\r') ch = ' ';
    return msg;
  };
  auto usage_error = [](const std::string& msg) {
    std::fflush(stdout);
    std::fprintf(stderr, "lowbit: error: %s\n", msg.c_str());
    return 2;
  };
  if (argc > 1 && argv[1][0] != '-') {
    const std::string c = argv[1];
    bool known = false;
    for (auto& [sub, run] : cmds) known |= sub->get_name() == c;
    if (!known) return usage_error("unknown command '" + c + "' (commands: eval, export, generate, inspect, quantize, quarot, synth)");
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help, --version
    std::string msg = e.what();
    for (char& ch : msg)
      if (ch == '\n') ch = ' ';
    return usage_error(msg + " (see --help)");
  }
  try {
    for (auto& [sub, run] : cmds)
      if (sub->parsed()) return run();
    return 2;
  } catch (const lowbit::ArgError& e) {
    return usage_error(one_line(e.what()));
  } catch (const lowbit::Error& e) {
    std::fflush(stdout);
    std::fprintf(stderr, "lowbit: error: %s\n", one_line(e.what()).c_str());
    return 1;
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "lowbit: error: out of memory\n");
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "lowbit: error: %s\n", one_line(e.what()).c_str());
    return 1;
  }
}
