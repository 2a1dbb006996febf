// lowbit inspect MODEL — architecture, sizes, dtypes, per-linear outlier statistics.
#include <nlohmann/json.hpp>

#include "cli/cli.h"
#include "core/error.h"
#include "eval/inspect.h"
#include "io/files.h"
#include "models/idefics3.h"
#include "models/llava.h"
#include "models/llava_next.h"
#include "models/loader.h"
#include "quant/checkpoint.h"
#include "quant/vlm_quant.h"

namespace lowbit::cli {

void add_inspect(CLI::App& app, Common& common, Runner* run) {
  auto* c = app.add_subcommand("inspect", "show a model's architecture and weight statistics");
  auto model = std::make_shared<std::string>();
  auto out = std::make_shared<std::string>();
  auto tower = std::make_shared<std::string>();
  c->add_option("model", *model, "Hugging Face model directory")->required();
  c->add_option("--output-json,--output_json", *out, "write the report as JSON");
  c->add_option("--vision-tower,--vision_tower", *tower,
                "local CLIP vision tower directory (original LLaVA layout, LlavaLlamaForCausalLM)");
  c->add_option("--threads", common.threads, "CPU threads (0: all cores)")->check(CLI::Range(0, 4096));
  *run = [model, out, tower, &common]() {
    apply_common(common);
    if (!out->empty()) check_output_file(*out, "--output-json");
    const bool vlm = is_vlm_dir(*model);  // a quantized VLM checkpoint too (its packed codes)
    LOWBIT_CHECK(vlm || tower->empty(), ArgError,
                 "--vision-tower is only for the original LLaVA layout (LlavaLlamaForCausalLM); {} is not one", *model);
    // A VLM shows its towers (vision encoder, projector or connector, decoder), each linear with
    // its statistics.
    LOWBIT_CHECK(tower->empty() || is_llava_original_dir(*model), ArgError,
                 "--vision-tower is only for the original LLaVA layout (LlavaLlamaForCausalLM); {} is not one", *model);
    nlohmann::json r;
    const PackedSource packed = vlm && is_quantized_checkpoint(*model) ? quantized_packed_source(*model) : PackedSource{};
    if (!vlm)
      r = inspect_model(load_model(*model));
    else if (is_llava_next_dir(*model))
      r = inspect_llava_next(
          LlavaNextModel::from_store(LlavaNextConfig::load(*model), WeightStore::open_dir(*model), *model, packed));
    else if (is_idefics3_dir(*model))
      r = inspect_idefics3(
          Idefics3Model::from_store(Idefics3Config::load(*model), WeightStore::open_dir(*model), *model, packed));
    else if (is_quantized_checkpoint(*model) && is_llava_original_dir(*model)) {  // its tower inside
      LOWBIT_CHECK(tower->empty(), ArgError, "--vision-tower: {} is a lowbit quantized checkpoint with its tower inside",
                   *model);
      r = inspect_llava(LlavaModel::load(*model, quantized_vision_tower_dir(*model), packed));
    } else
      r = inspect_llava(LlavaModel::load(*model, *tower, packed));
    std::fputs(format_inspect(r).c_str(), stdout);
    if (!out->empty()) write_file_atomic(*out, r.dump(2) + "\n");
    return 0;
  };
}

}  // namespace lowbit::cli
