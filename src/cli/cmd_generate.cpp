// lowbit generate — text continuation with the KV cache; with --image, a vision-language model
// (LLaVA-1.5 in either layout, LLaVA-NeXT, Idefics3 / SmolVLM: models/vlm.h) answers about the
// images: the prompt rendered by --template, each <image> expanded to the image's tokens as the
// family's HF processor does, the image features written into their embeddings.
#include <chrono>
#include <nlohmann/json.hpp>

#include "cli/cli.h"
#include "core/error.h"
#include "eval/generate.h"
#include "io/files.h"
#include "io/image.h"
#include "io/tokenizer.h"
#include "models/llava.h"
#include "models/vlm.h"
#include "models/loader.h"
#include "models/templates.h"

namespace lowbit::cli {

void add_generate(CLI::App& app, Common& common, Runner* run) {
  auto* g = app.add_subcommand("generate", "generate text (greedy at temperature 0)");
  struct Opts {
    std::string model, prompt, output_json, tokenizer = "auto", template_name = "auto", vision_tower;
    std::vector<std::string> images;
    int64_t max_new_tokens = 64, max_image_pixels = kDefaultMaxImagePixels;
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
  g->add_option("--image", o->images, "image file (JPEG/PNG) for a vision-language model; repeat for several");
  g->add_option("--template", o->template_name,
                "conversation template: auto (from the model's files), raw (the prompt as is), or a name: " +
                    chat_template_names())
      ->capture_default_str();
  g->add_option("--vision-tower,--vision_tower", o->vision_tower,
                "local CLIP vision tower directory (original LLaVA layout, LlavaLlamaForCausalLM)");
  g->add_option("--max-image-pixels,--max_image_pixels", o->max_image_pixels,
                "refuse images whose header claims more pixels (decompression bombs)")
      ->capture_default_str()
      ->check(CLI::Range(int64_t(1), int64_t(1) << 40));
  g->add_option("--threads", common.threads, "CPU threads (0: all cores)")->check(CLI::Range(0, 4096));
  add_device_option(g, common);
  g->add_flag("--quiet", common.quiet, "no progress output");
  *run = [o, &common]() {
    apply_common(common);
    if (!o->output_json.empty()) check_output_file(o->output_json, "--output-json");
    if (o->template_name != "auto") find_chat_template(o->template_name);  // unknown name: usage error
    const bool vlm = is_vlm_dir(o->model);
    const int64_t n_images = int64_t(o->images.size());
    LOWBIT_CHECK(vlm || n_images == 0, ArgError,
                 "--image: {} is a text-only model; images need a vision-language model (LLaVA-1.5, LLaVA-NeXT, "
                 "Idefics3/SmolVLM)",
                 o->model);
    LOWBIT_CHECK(o->vision_tower.empty() || is_llava_original_dir(o->model), ArgError,
                 "--vision-tower is only for the original LLaVA layout (LlavaLlamaForCausalLM); {} is not one",
                 o->model);
    const std::string tname = resolve_template(o->template_name, o->model);
    // The prompt actually used; a text-only model's raw prompt is taken as is (<image> is just text there).
    const std::string text = !vlm && tname == "raw" ? o->prompt
                                                    : render_prompt(tname, o->prompt, n_images, template_context(o->model));
    std::vector<Image> images;  // decoded (and checked) before any model is loaded
    for (const std::string& f : o->images) images.push_back(decode_image(f, o->max_image_pixels));

    GenOptions go;
    go.max_new_tokens = o->max_new_tokens;
    go.temperature = o->temperature;
    go.top_p = o->top_p;
    go.seed = o->seed;
    std::unique_ptr<Tokenizer> tok;  // loaded after the model, whose errors come first
    std::vector<int32_t> prompt, ids;
    int64_t image_tokens = 0;
    double secs = 0;
    if (vlm) {
      std::unique_ptr<Vlm> m = load_vlm(o->model, o->vision_tower);
      tok = load_tokenizer(o->model, o->tokenizer);
      for (int64_t k : m->set_images(images)) image_tokens += k;
      prompt = m->prompt_ids(*tok, text);
      LOWBIT_CHECK(!prompt.empty(), ArgError, "empty --prompt and the tokenizer has no BOS token to start from");
      go.eos_id = tok->eos_id() >= 0 ? tok->eos_id() : m->language().cfg.eos_token_id;
      auto t0 = std::chrono::steady_clock::now();
      if (n_images == 0) {
        ids = generate(m->language(), prompt, go);
      } else {
        const std::vector<float> x = m->embed(prompt);
        ids = generate_from_embeds(m->language(), x, int64_t(prompt.size()), go);
      }
      secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    } else {
      LlamaModel model = load_model(o->model);
      tok = load_tokenizer(o->model, o->tokenizer);
      prompt = tok->encode(text);
      int32_t bos = tok->bos_id() >= 0 ? tok->bos_id() : model.cfg.bos_token_id;
      if (bos >= 0 && (tok->add_bos() || prompt.empty())) prompt.insert(prompt.begin(), bos);
      LOWBIT_CHECK(!prompt.empty(), ArgError, "empty --prompt and the tokenizer has no BOS token to start from");
      go.eos_id = tok->eos_id() >= 0 ? tok->eos_id() : model.cfg.eos_token_id;
      auto t0 = std::chrono::steady_clock::now();
      ids = generate(model, prompt, go);
      secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    }
    std::string out_text = tok->decode(ids);
    std::printf("%s%s\n", text.c_str(), out_text.c_str());
    if (!o->output_json.empty()) {
      nlohmann::json j = {{"ids", ids},          {"text", out_text},     {"prompt", text},
                          {"prompt_ids", prompt}, {"model", o->model},    {"seconds", secs},
                          {"temperature", o->temperature}, {"top_p", o->top_p}, {"seed", o->seed},
                          {"template", tname},   {"images", o->images},  {"image_tokens", image_tokens}};
      write_file_atomic(o->output_json, j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n");
    }
    return 0;
  };
}

}  // namespace lowbit::cli
