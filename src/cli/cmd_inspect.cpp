// lowbit inspect MODEL — architecture, sizes, dtypes, per-linear outlier statistics.
#include <nlohmann/json.hpp>

#include "cli/cli.h"
#include "eval/inspect.h"
#include "io/files.h"
#include "models/loader.h"

namespace lowbit::cli {

void add_inspect(CLI::App& app, Common& common, Runner* run) {
  auto* c = app.add_subcommand("inspect", "show a model's architecture and weight statistics");
  auto model = std::make_shared<std::string>();
  auto out = std::make_shared<std::string>();
  c->add_option("model", *model, "Hugging Face model directory")->required();
  c->add_option("--output-json,--output_json", *out, "write the report as JSON");
  c->add_option("--threads", common.threads, "CPU threads (0: all cores)")->check(CLI::Range(0, 4096));
  *run = [model, out, &common]() {
    apply_common(common);
    LlamaModel m = load_model(*model);
    nlohmann::json r = inspect_model(m);
    std::fputs(format_inspect(r).c_str(), stdout);
    if (!out->empty()) write_file_atomic(*out, r.dump(2) + "\n");
    return 0;
  };
}

}  // namespace lowbit::cli
