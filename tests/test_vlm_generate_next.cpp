// LLaVA-NeXT and SmolVLM / Idefics3 through the VLM CLI (issue 9): their conversation templates
// (mistral-instruct, idefics3) and --template auto, the golden prompts rendered and expanded to
// exactly the golden input_ids, `generate --image` with image_tokens equal to the golden's count,
// `eval ppl` / `inspect` on their directories, and the LlavaConfig family parameter.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/files.h"
#include "io/image.h"
#include "io/safetensors.h"
#include "io/json_util.h"
#include "io/tokenizer.h"
#include "models/idefics3.h"
#include "models/llava.h"
#include "models/llava_next.h"
#include "models/loader.h"
#include "models/templates.h"
#include "models/vlm.h"
#include "testing.h"

using namespace lowbit;
using lowbit::test::expect_error_line;
using lowbit::test::golden_ids;
using lowbit::test::read_file;
using lowbit::test::run_lowbit;
using lowbit::test::run_lowbit_json;
using lowbit::test::temp_dir;
using lowbit::test::write_file;
using json = nlohmann::json;
namespace fs = std::filesystem;

namespace {

// The golden's prompt, from its metadata ("...; prompt <P>").
std::string golden_prompt(const SafetensorsFile& g) {
  const std::string what = g.header().metadata.at("what");
  const std::string key = "; prompt ";
  const size_t at = what.find(key);
  EXPECT_NE(at, std::string::npos) << what;
  return at == std::string::npos ? "" : what.substr(at + key.size());
}

// A copy of a model directory's config.json (and nothing else) with a chat template file.
std::string dir_with_template(const std::string& model, const std::string& root, const std::string& tmpl) {
  fs::create_directories(root);
  fs::copy_file(model + "/config.json", root + "/config.json", fs::copy_options::overwrite_existing);
  if (!tmpl.empty()) write_file(root + "/chat_template.jinja", tmpl);
  return root;
}

}  // namespace

// ---- templates ------------------------------------------------------------------------------------

TEST(VlmTemplatesNext, RenderExactly) {
  EXPECT_EQ(render_prompt("mistral-instruct", "What is shown in this image?", 1),
            "[INST] <image>\nWhat is shown in this image? [/INST]");
  EXPECT_EQ(render_prompt("mistral-instruct", "Compare.", 2), "[INST] <image>\n<image>\nCompare. [/INST]");
  EXPECT_EQ(render_prompt("mistral-instruct", "Hi", 0), "[INST] Hi [/INST]");
  EXPECT_EQ(render_prompt("mistral-instruct", "a <image> b", 1), "[INST] a <image> b [/INST]");
  TemplateContext ctx;
  ctx.bos = "<|begin_of_text|>";
  EXPECT_EQ(render_prompt("idefics3", "What is unusual about this image?", 1, ctx),
            "<|begin_of_text|>User:<image>What is unusual about this image?<end_of_utterance>\nAssistant:");
  EXPECT_EQ(render_prompt("idefics3", "Compare.", 2), "User:<image><image>Compare.<end_of_utterance>\nAssistant:");
  EXPECT_EQ(render_prompt("idefics3", "Hi", 0), "User: Hi<end_of_utterance>\nAssistant:");
  EXPECT_EQ(render_prompt("idefics3", "Left <image> right", 1), "User: Left <image> right<end_of_utterance>\nAssistant:");
  EXPECT_THROW(render_prompt("idefics3", "<image><image>", 1), ArgError);
  EXPECT_THROW(render_prompt("mistral-instruct", "<image>", 0), ArgError);
  EXPECT_EQ(chat_template_names(), "raw, llava-1.5, vicuna_v1, mistral-instruct, chatml, llama3, idefics3");
}

TEST(VlmTemplatesNext, AutoFromModelFiles) {
  LOWBIT_REQUIRE_SHARED(next, "models/tiny-llava-next");
  LOWBIT_REQUIRE_SHARED(smol, "models/tiny-smolvlm");
  // tiny-llava-next has no chat template: LLaVA-NeXT's default, mistral-instruct.
  EXPECT_EQ(auto_template_name(next), "mistral-instruct");
  EXPECT_EQ(template_context(next).bos, "");
  // tiny-smolvlm's chat_template.jinja starts with <|begin_of_text|>.
  EXPECT_EQ(auto_template_name(smol), "idefics3");
  EXPECT_EQ(template_context(smol).bos, "<|begin_of_text|>");
  EXPECT_EQ(resolve_template("raw", smol), "raw");

  const std::string d = temp_dir("vlm_auto_next");
  // NeXT chat templates: [INST] → mistral-instruct, LLaVA-1.5's (llava-v1.6-vicuna) → llava-1.5, ChatML and
  // LLaMA-3 headers (test_vlm_templates_next_base.cpp), others (here Zephyr's <|user|>) refused.
  EXPECT_EQ(auto_template_name(dir_with_template(
                next, d + "/mistral",
                "{% for m in messages %}{% if m['role'] == 'user' %}{{ '[INST] ' }}{% for c in m['content'] %}"
                "{% if c['type'] == 'image' %}{{ '<image>\\n' }}{% endif %}{% endfor %}{{ ' [/INST]' }}{% endif %}"
                "{% endfor %}")),
            "mistral-instruct");
  EXPECT_EQ(auto_template_name(dir_with_template(
                next, d + "/vicuna",
                "{% for m in messages %}{{ m['role'].upper() + ': ' }}{{ '<image>\\n' }}{% endfor %}ASSISTANT:")),
            "llava-1.5");
  const std::string zephyr = dir_with_template(
      next, d + "/zephyr", "{% for m in messages %}<|{{ m['role'] }}|>\n{{ eos_token }}{% endfor %}<|assistant|>");
  try {
    auto_template_name(zephyr);
    FAIL() << "expected ConfigError";
  } catch (const ConfigError& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("chat_template.jinja"), std::string::npos) << m;
    EXPECT_NE(m.find("--template"), std::string::npos) << m;
  }
  EXPECT_THROW(auto_template_name(dir_with_template(smol, d + "/smol_other",
                                                    "{% for m in messages %}<|im_start|>{{ m['role'] }}{% endfor %}")),
               ConfigError);
  // The CLI refuses it with one line (exit 1: the model's files, not a flag).
  LOWBIT_REQUIRE_SHARED(photo, "data/images/waterview.jpg");
  expect_error_line(run_lowbit("generate --model " + zephyr + " --image " + photo + " --prompt hi"), "chat template", 1);
}

// ---- the golden prompts, rendered by --template auto and expanded -----------------------------------

TEST(VlmPromptNext, LlavaNextGoldenInputIds) {
  LOWBIT_REQUIRE_SHARED(dir, "models/tiny-llava-next");
  LOWBIT_REQUIRE_SHARED(golden, "golden/tiny-llava-next_forward.safetensors");
  LOWBIT_REQUIRE_SHARED(photo, "data/images/waterview.jpg");
  auto g = SafetensorsFile::open(golden);
  const std::string tname = resolve_template("auto", dir);
  const std::string text = render_prompt(tname, "What is shown in this image?", 1, template_context(dir));
  EXPECT_EQ(text, golden_prompt(*g));
  const std::vector<int32_t> want = golden_ids(*g);
  const int64_t want_image_tokens = std::count(want.begin(), want.end(), 32001);
  EXPECT_EQ(want_image_tokens, 2144);
  auto tok = load_tokenizer(dir);
  // Through the model with the golden's image_sizes ...
  LlavaNextModel m = LlavaNextModel::load(dir);
  const Tensor sizes = g->get("image_sizes");
  const Resolution hw{sizes.data<int32_t>()[0], sizes.data<int32_t>()[1]};
  EXPECT_EQ(m.prompt_ids(*tok, text, {hw}), want);  // BOS, [INST], ▁, 2144 × <image>, ▁ \n What ...
  EXPECT_THROW(m.prompt_ids(*tok, text, {hw, hw}), ArgError);
  // ... and through the CLI's path: lowbit decodes the photo and counts its tokens itself.
  std::unique_ptr<Vlm> v = load_vlm(dir);
  EXPECT_EQ(v->set_images({decode_image(photo)}), std::vector<int64_t>{want_image_tokens});
  EXPECT_EQ(v->prompt_ids(*tok, text), want);
  // A feature/token mismatch names the per-image count (not LLaVA-1.5's 576).
  std::vector<int32_t> short_ids = want;
  short_ids.erase(std::find(short_ids.begin(), short_ids.end(), 32001));
  try {
    v->embed(short_ids);
    FAIL() << "expected ArgError";
  } catch (const ArgError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("2143 image tokens"), std::string::npos) << msg;
    EXPECT_NE(msg.find("2144 features"), std::string::npos) << msg;
    EXPECT_NE(msg.find("1000x667: 2144"), std::string::npos) << msg;
    EXPECT_EQ(msg.find("576"), std::string::npos) << msg;
  }
  // LlavaModel's own check, given the per-image counts, says them too.
  const std::vector<int64_t> per_image{2144};
  std::vector<float> x(short_ids.size() * size_t(m.cfg.llava.text.hidden_size));
  const Tensor feat = Tensor::zeros({2144, m.cfg.llava.text.hidden_size});
  try {
    m.llava.embed_multimodal(short_ids.data(), int64_t(short_ids.size()), feat, x.data(), &per_image);
    FAIL() << "expected ArgError";
  } catch (const ArgError& e) {
    EXPECT_NE(std::string(e.what()).find("needing 2144 image tokens"), std::string::npos) << e.what();
  }
}

TEST(VlmPromptNext, SmolVlmGoldenInputIds) {
  LOWBIT_REQUIRE_SHARED(dir, "models/tiny-smolvlm");
  LOWBIT_REQUIRE_SHARED(golden, "golden/tiny-smolvlm_forward.safetensors");
  LOWBIT_REQUIRE_SHARED(photo, "data/images/extreme_ironing.jpg");
  auto g = SafetensorsFile::open(golden);
  const std::string tname = resolve_template("auto", dir);
  const std::string text = render_prompt(tname, "What is unusual about this image?", 1, template_context(dir));
  EXPECT_EQ(text, golden_prompt(*g));
  const std::vector<int32_t> want = golden_ids(*g);
  const Idefics3Config cfg = Idefics3Config::load(dir);
  const int64_t want_image_tokens = std::count(want.begin(), want.end(), cfg.image_token_id);
  EXPECT_EQ(want_image_tokens, 7 * 64);  // 2 x 3 tiles + the global image, 64 tokens each
  auto tok = load_tokenizer(dir);
  std::unique_ptr<Vlm> v = load_vlm(dir);
  EXPECT_EQ(v->set_images({decode_image(photo)}), std::vector<int64_t>{want_image_tokens});
  // The template writes BOS as text; it is not added a second time.
  EXPECT_EQ(v->prompt_ids(*tok, text), want);
  EXPECT_THROW(v->prompt_ids(*tok, "no placeholder"), ArgError);
}

// ---- LlavaConfig's family ---------------------------------------------------------------------------

TEST(VlmPromptNext, LlavaConfigFamily) {
  LOWBIT_REQUIRE_SHARED(next, "models/tiny-llava-next");
  const std::string path = next + "/config.json";
  const json j = parse_json(read_text_file(path), path);
  EXPECT_THROW(LlavaConfig::from_json(j, path), ConfigError);  // default: LLaVA-1.5 only
  const LlavaConfig c = LlavaConfig::from_json(j, path, kLlavaNextFamily);
  EXPECT_EQ(c.architecture, "LlavaNextForConditionalGeneration");
  EXPECT_EQ(LlavaNextConfig::load(next).llava.architecture, "LlavaNextForConditionalGeneration");
  json bare = j;
  bare.erase("architectures");
  EXPECT_EQ(LlavaConfig::from_json(bare, path, kLlavaNextFamily).architecture, "LlavaNextForConditionalGeneration");
  EXPECT_THROW(LlavaConfig::from_json(bare, path), ConfigError);  // model_type llava_next is not llava
}

// ---- CLI ----------------------------------------------------------------------------------------------

TEST(VlmCliNext, GenerateLlavaNextWithImage) {
  LOWBIT_REQUIRE_SHARED(m, "models/tiny-llava-next");
  LOWBIT_REQUIRE_SHARED(photo, "data/images/waterview.jpg");
  const std::string d = temp_dir("vlm_cli_next");
  const json j = run_lowbit_json("generate --model " + m + " --image " + photo +
                      " --prompt 'What is shown in this image?' --max-new-tokens 4", d + "/g.json");
  EXPECT_EQ(j["template"], "mistral-instruct");
  EXPECT_EQ(j["prompt"], "[INST] <image>\nWhat is shown in this image? [/INST]");
  EXPECT_EQ(j["images"], json::array({photo}));
  EXPECT_EQ(j["image_tokens"], 2144);
  EXPECT_EQ(j["prompt_ids"].size(), 2162u);
  EXPECT_EQ(j["ids"].size(), 4u);
  EXPECT_EQ(run_lowbit_json("generate --model " + m + " --image " + photo +
                       " --prompt 'What is shown in this image?' --max-new-tokens 4", d + "/h.json")["ids"], j["ids"]);  // greedy: deterministic
  // Sampling, raw template.
  const json sj = run_lowbit_json("generate --model " + m + " --image " + photo +
                       " --template raw --prompt '<image>\nWhat is this?' --max-new-tokens 2 --temperature 0.8 --seed 3", d + "/s.json");
  EXPECT_EQ(sj["image_tokens"], 2144);
  EXPECT_EQ(sj["template"], "raw");
  // Two such images (2 x 2144 tokens) do not fit tiny-llava-next's 4096-token context: one line.
  expect_error_line(run_lowbit("generate --model " + m + " --image " + photo + " --image " + photo +
                          " --prompt 'Compare.' --max-new-tokens 2"),
               "context", 2);
  // Text alone on the VLM directory.
  const json t = run_lowbit_json("generate --model " + m + " --prompt 'Hello' --max-new-tokens 2", d + "/t.json");
  EXPECT_EQ(t["prompt"], "[INST] Hello [/INST]");
  EXPECT_EQ(t["image_tokens"], 0);
  // Errors: placeholders vs images, --vision-tower on a checkpoint that holds its tower.
  expect_error_line(run_lowbit("generate --model " + m + " --image " + photo + " --image " + photo +
                          " --prompt 'one <image> only'"),
               "placeholder", 2);
  expect_error_line(run_lowbit("generate --model " + m + " --vision-tower " + m + " --image " + photo + " --prompt hi"),
               "--vision-tower", 2);
}

TEST(VlmCliNext, GenerateSmolVlmWithImage) {
  LOWBIT_REQUIRE_SHARED(m, "models/tiny-smolvlm");
  LOWBIT_REQUIRE_SHARED(photo, "data/images/extreme_ironing.jpg");
  const std::string d = temp_dir("vlm_cli_smol");
  const json j = run_lowbit_json("generate --model " + m + " --image " + photo +
                      " --prompt 'What is unusual about this image?' --max-new-tokens 4", d + "/g.json");
  EXPECT_EQ(j["template"], "idefics3");
  EXPECT_EQ(j["prompt"], "<|begin_of_text|>User:<image>What is unusual about this image?<end_of_utterance>\nAssistant:");
  EXPECT_EQ(j["image_tokens"], 448);
  EXPECT_EQ(j["prompt_ids"].size(), 489u);
  EXPECT_EQ(j["ids"].size(), 4u);
  EXPECT_EQ(run_lowbit_json("generate --model " + m + " --image " + photo +
                       " --prompt 'What is unusual about this image?' --max-new-tokens 4 --temperature 0.7 --seed 5", d + "/s.json")["image_tokens"], 448);
  const json t = run_lowbit_json("generate --model " + m + " --prompt 'Hello' --max-new-tokens 2", d + "/t.json");
  EXPECT_EQ(t["prompt"], "<|begin_of_text|>User: Hello<end_of_utterance>\nAssistant:");
  EXPECT_EQ(t["prompt_ids"][0], 0);  // one BOS
  EXPECT_NE(t["prompt_ids"][1], 0);
  expect_error_line(run_lowbit("generate --model " + m + " --template raw --image " + photo + " --prompt 'no placeholder'"),
               "placeholder", 2);
}

TEST(VlmCliNext, EvalAndInspect) {
  LOWBIT_REQUIRE_SHARED(next, "models/tiny-llava-next");
  LOWBIT_REQUIRE_SHARED(smol, "models/tiny-smolvlm");
  LOWBIT_REQUIRE_SHARED(ts, "data/text/tinystories_val.txt");
  const std::string d = temp_dir("vlm_cli_next_eval");
  for (const std::string& m : {next, smol}) {
    EXPECT_TRUE(is_vlm_dir(m)) << m;
    const json p = run_lowbit_json("eval ppl --model " + m + " --data " + ts + " --data-end 20000 --seqlen 128 --max-windows 2",
                                 d + "/p.json");
    EXPECT_EQ(p["windows"], 2);
    EXPECT_GT(p["ppl"].get<double>(), 1.0);
  }
  // LLaVA-NeXT: CLIP tower, projector (+ image_newline), decoder.
  auto rn = run_lowbit("inspect " + next + " --output-json " + d + "/n.json");
  ASSERT_EQ(rn.exit_code, 0) << rn.out;
  for (const char* s : {"LlavaNextForConditionalGeneration", "[vision] CLIP ViT", "anyres", "[projector]",
                        "image_newline", "[language] LLaMA decoder", "multi_modal_projector.linear_2"})
    EXPECT_NE(rn.out.find(s), std::string::npos) << s << "\n" << rn.out;
  const json n = json::parse(read_file(d + "/n.json"));
  ASSERT_EQ(n["towers"].size(), 3u);
  EXPECT_EQ(n["towers"][0]["kind"], "clip_vit");
  EXPECT_EQ(n["towers"][1]["image_newline"], n["config"]["hidden_size"]);
  // SmolVLM: SigLIP tower (no class embedding, no pre-norm), connector, tied decoder.
  auto rs = run_lowbit("inspect " + smol + " --output-json " + d + "/s.json");
  ASSERT_EQ(rs.exit_code, 0) << rs.out;
  for (const char* s : {"Idefics3ForConditionalGeneration", "[vision] SigLIP ViT", "no class token", "[connector]",
                        "modality_projection", "[language] LLaMA decoder", "tied embeddings: yes"})
    EXPECT_NE(rs.out.find(s), std::string::npos) << s << "\n" << rs.out;
  const json s = json::parse(read_file(d + "/s.json"));
  ASSERT_EQ(s["towers"].size(), 3u);
  EXPECT_EQ(s["towers"][0]["kind"], "siglip");
  EXPECT_EQ(s["towers"][0]["class_token"], false);
  EXPECT_EQ(s["towers"][0]["pre_norm"], false);
  EXPECT_EQ(s["towers"][1]["name"], "connector");
  EXPECT_EQ(s["towers"][1]["linears"].size(), 1u);
  int64_t sum = 0, linears = 0;
  for (const json& t : s["towers"]) {
    sum += t["parameters"].get<int64_t>();
    linears += int64_t(t["linears"].size());
  }
  EXPECT_EQ(s["parameters"].get<int64_t>(), sum);
  EXPECT_EQ(int64_t(s["linears"].size()), linears);
  for (const json& l : s["linears"]) EXPECT_GT(l["std"].get<double>(), 0.0) << l["name"];
}
