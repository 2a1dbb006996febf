// Vision-language generation (issue 9): conversation templates, the prompt's image-token
// expansion against the HF golden input_ids, the original LLaVA checkpoint layout (written here
// from tiny-llava-1.5: there is no such asset in ../shared) against the HF layout, and the CLI
// (`generate --image`, `eval ppl` / `inspect` on a VLM directory, one-line errors).
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/image.h"
#include "io/safetensors.h"
#include "io/tokenizer.h"
#include "models/llava.h"
#include "models/loader.h"
#include "models/templates.h"
#include "testing.h"
#include "vision/clip_processor.h"

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

const char* kVicunaSystem =
    "A chat between a curious human and an artificial intelligence assistant. The assistant gives helpful, detailed, "
    "and polite answers to the human's questions.";

// The original LLaVA layout of tiny-llava-1.5 (tests/testing.h).
using OriginalLayout = lowbit::test::LlavaOriginalLayout;
OriginalLayout write_original_layout(const std::string& hf_dir, const std::string& root,
                                     const std::string& aspect = "pad") {
  return lowbit::test::write_llava_original_layout(hf_dir, root, aspect);
}

// PNG's chunk CRC (ISO 3309 / zlib crc32).
uint32_t crc32(const std::string& bytes) {
  uint32_t c = 0xFFFFFFFFu;
  for (unsigned char b : bytes) {
    c ^= b;
    for (int k = 0; k < 8; ++k) c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1u)));
  }
  return c ^ 0xFFFFFFFFu;
}

}  // namespace

// ---- templates ------------------------------------------------------------------------------------

TEST(VlmTemplates, RenderExactly) {
  // tiny-llava-1.5/chat_template.jinja for one user turn [image, text] (and the golden's prompt).
  EXPECT_EQ(render_prompt("llava-1.5", "What is unusual about this image?", 1),
            "USER: <image>\nWhat is unusual about this image? ASSISTANT:");
  EXPECT_EQ(render_prompt("llava-1.5", "Compare.", 2), "USER: <image>\n<image>\nCompare. ASSISTANT:");
  EXPECT_EQ(render_prompt("llava-1.5", "Hi", 0), "USER: Hi ASSISTANT:");
  EXPECT_EQ(render_prompt("vicuna_v1", "Describe.", 1),
            std::string(kVicunaSystem) + " USER: <image>\nDescribe. ASSISTANT:");
  // Placeholders the user wrote stay where they are.
  EXPECT_EQ(render_prompt("llava-1.5", "Left <image> right <image>?", 2),
            "USER: Left <image> right <image>? ASSISTANT:");
  EXPECT_EQ(render_prompt("raw", "x <image> y", 1), "x <image> y");
  // Placeholder and image counts must agree.
  EXPECT_THROW(render_prompt("raw", "no placeholder", 1), ArgError);
  EXPECT_THROW(render_prompt("raw", "<image><image>", 1), ArgError);
  EXPECT_THROW(render_prompt("llava-1.5", "<image> one", 2), ArgError);
  EXPECT_THROW(render_prompt("vicuna_v1", "<image>", 0), ArgError);
  try {
    find_chat_template("zephyr");
    FAIL() << "expected ArgError";
  } catch (const ArgError& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("zephyr"), std::string::npos) << m;
    EXPECT_NE(m.find("raw, llava-1.5, vicuna_v1"), std::string::npos) << m;
  }
}

TEST(VlmTemplates, AutoFromModelFiles) {
  LOWBIT_REQUIRE_SHARED(llava, "models/tiny-llava-1.5");
  EXPECT_EQ(auto_template_name(llava), "llava-1.5");
  EXPECT_EQ(resolve_template("auto", llava), "llava-1.5");
  EXPECT_EQ(resolve_template("raw", llava), "raw");
  const std::string d = temp_dir("vlm_auto");
  // A LLaVA directory whose chat template is something else: an error, not a guess.
  fs::create_directories(d + "/other");
  fs::copy_file(llava + "/config.json", d + "/other/config.json");
  write_file(d + "/other/chat_template.jinja", "{% for m in messages %}<|im_start|>{{ m['role'] }}{% endfor %}");
  EXPECT_THROW(auto_template_name(d + "/other"), ConfigError);
  // The original layout → vicuna_v1; a text-only model → raw.
  fs::create_directories(d + "/orig");
  write_file(d + "/orig/config.json", R"({"architectures": ["LlavaLlamaForCausalLM"], "model_type": "llava"})");
  EXPECT_EQ(auto_template_name(d + "/orig"), "vicuna_v1");
  fs::create_directories(d + "/text");
  write_file(d + "/text/config.json", R"({"architectures": ["LlamaForCausalLM"], "model_type": "llama"})");
  EXPECT_EQ(auto_template_name(d + "/text"), "raw");
}

// ---- prompt ids against the golden -------------------------------------------------------------

// The golden's prompt through the llava-1.5 template and lowbit's expansion gives exactly the
// golden input_ids (BOS, 576 image tokens 32001, the text around them).
TEST(VlmPrompt, ExpansionEqualsGoldenInputIds) {
  LOWBIT_REQUIRE_SHARED(dir, "models/tiny-llava-1.5");
  LOWBIT_REQUIRE_SHARED(golden, "golden/tiny-llava-1.5_forward.safetensors");
  auto g = SafetensorsFile::open(golden);
  const std::string what = g->header().metadata.at("what");  // "HF LlavaForConditionalGeneration; prompt <P>"
  const std::string key = "; prompt ";
  ASSERT_NE(what.find(key), std::string::npos) << what;
  const std::string golden_prompt = what.substr(what.find(key) + key.size());
  const std::string text = render_prompt("llava-1.5", "What is unusual about this image?", 1);
  EXPECT_EQ(text, golden_prompt);
  LlavaModel m = LlavaModel::load(dir);
  auto tok = load_tokenizer(dir);
  const std::vector<int32_t> ids = m.prompt_ids(*tok, text, 1);
  EXPECT_EQ(ids, golden_ids(*g));
  EXPECT_THROW(m.prompt_ids(*tok, text, 2), ArgError);
}

// ---- the original LLaVA layout -----------------------------------------------------------------

TEST(LlavaOriginal, SameLogitsAsHfLayout) {
  LOWBIT_REQUIRE_SHARED(hf_dir, "models/tiny-llava-1.5");
  LOWBIT_REQUIRE_SHARED(golden, "golden/tiny-llava-1.5_forward.safetensors");
  const OriginalLayout o = write_original_layout(hf_dir, temp_dir("llava_orig"));
  EXPECT_TRUE(is_llava_dir(o.llava));
  EXPECT_TRUE(is_llava_original_dir(o.llava));
  EXPECT_FALSE(is_llava_original_dir(hf_dir));

  // Without the tower: a usage error saying what is missing and how to pass it.
  try {
    LlavaModel::load(o.llava);
    FAIL() << "expected ArgError";
  } catch (const ArgError& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("--vision-tower"), std::string::npos) << m;
    EXPECT_NE(m.find("openai/clip-vit-large-patch14-336"), std::string::npos) << m;
  }
  EXPECT_THROW(LlavaModel::load(hf_dir, o.clip), ArgError);  // a tower the HF layout would ignore

  LlavaModel hf = LlavaModel::load(hf_dir);
  LlavaModel orig = LlavaModel::load(o.llava, o.clip);
  EXPECT_TRUE(orig.cfg.original_layout);
  EXPECT_TRUE(orig.cfg.pad_to_square);
  EXPECT_EQ(orig.cfg.features_per_image(), hf.cfg.features_per_image());
  EXPECT_EQ(orig.cfg.image_token_index, kOriginalImageTokenIndex);

  // The same prompt: LLaVA's tokenizer_image_token gives the golden ids with -200 for the image.
  auto g = SafetensorsFile::open(golden);
  const std::vector<int32_t> hf_ids = golden_ids(*g);
  std::vector<int32_t> orig_ids = hf_ids;
  std::replace(orig_ids.begin(), orig_ids.end(), hf.cfg.image_token_index, kOriginalImageTokenIndex);
  auto tok = load_tokenizer(o.llava);
  EXPECT_EQ(orig.prompt_ids(*tok, "USER: <image>\nWhat is unusual about this image? ASSISTANT:", 1), orig_ids);

  // Same pixel_values → the same logits, bit for bit (same weights, same arithmetic).
  const Tensor px = g->get("pixel_values");
  const int64_t T = int64_t(hf_ids.size());
  const Tensor a = hf.forward(hf_ids.data(), T, px);
  const Tensor b = orig.forward(orig_ids.data(), T, px);
  ASSERT_EQ(a.shape(), b.shape());
  EXPECT_EQ(std::memcmp(a.raw(), b.raw(), a.nbytes()), 0) << "max |diff| "
                                                          << lowbit::test::normalized_error(b.to_vector(), a.to_vector());
  // Names stay those of the file (what quantization and its checkpoints will use).
  EXPECT_EQ(orig.projector.linear_1.name, "model.mm_projector.0");
  EXPECT_EQ(orig.vision.layers[0].q_proj.name, "vision_model.encoder.layers.0.self_attn.q_proj");

  // The language model alone (eval ppl): no tower needed, equal to the HF layout's.
  LlamaModel lang = load_model(o.llava);
  const std::vector<int32_t> text_ids = {1, 3148, 1001, 29901, 1724, 338, 297, 445};
  const Tensor c = lang.forward(text_ids.data(), 8);
  const Tensor d = hf.language.forward(text_ids.data(), 8);
  EXPECT_EQ(std::memcmp(c.raw(), d.raw(), c.nbytes()), 0);
}

// image_aspect_ratio pad: expand to a square of the mean colour, then the CLIP steps in the
// Slow (PIL) flavour; "square" skips the padding.
TEST(LlavaOriginal, PadToSquarePreprocessing) {
  LOWBIT_REQUIRE_SHARED(hf_dir, "models/tiny-llava-1.5");
  LOWBIT_REQUIRE_SHARED(photo, "data/images/extreme_ironing.jpg");
  const std::string root = temp_dir("llava_orig_pad");
  const OriginalLayout o = write_original_layout(hf_dir, root + "/pad");
  const OriginalLayout sq = write_original_layout(hf_dir, root + "/square", "square");
  const Image img = decode_image(photo);
  ASSERT_NE(img.width, img.height);
  ClipProcessorConfig pc = ClipProcessorConfig::load(o.clip);
  pc.flavor = ProcessorFlavor::Slow;
  const Tensor want_pad = clip_preprocess(expand_to_square(img, llava_pad_color(pc.image_mean)), pc);
  const Tensor want_sq = clip_preprocess(img, pc);
  const Tensor got_pad = LlavaModel::load(o.llava, o.clip).pixel_values({img});
  const Tensor got_sq = LlavaModel::load(sq.llava, sq.clip).pixel_values({img});
  EXPECT_EQ(got_pad.to_vector(), want_pad.to_vector());
  EXPECT_EQ(got_sq.to_vector(), want_sq.to_vector());
  EXPECT_NE(got_pad.to_vector(), got_sq.to_vector());
  // An unsupported aspect-ratio mode is refused, naming the key.
  json cfg = json::parse(read_file(o.llava + "/config.json"));
  cfg["image_aspect_ratio"] = "anyres";
  write_file(o.llava + "/config.json", cfg.dump());
  EXPECT_THROW(LlavaModel::load(o.llava, o.clip), ConfigError);
}

// ---- CLI -----------------------------------------------------------------------------------------

TEST(VlmCli, GenerateWithImageWritesPromptAndImageTokens) {
  LOWBIT_REQUIRE_SHARED(m, "models/tiny-llava-1.5");
  LOWBIT_REQUIRE_SHARED(photo, "data/images/extreme_ironing.jpg");
  const std::string d = temp_dir("vlm_cli_gen");
  const json j = run_lowbit_json("generate --model " + m + " --image " + photo +
                      " --prompt 'What is unusual about this image?' --max-new-tokens 4", d + "/g.json");
  EXPECT_EQ(j["prompt"], "USER: <image>\nWhat is unusual about this image? ASSISTANT:");
  EXPECT_EQ(j["template"], "llava-1.5");
  EXPECT_EQ(j["image_tokens"], 576);
  EXPECT_EQ(j["prompt_ids"].size(), 595u);
  EXPECT_EQ(j["ids"].size(), 4u);
  // Greedy is deterministic; sampling takes its seed.
  EXPECT_EQ(run_lowbit_json("generate --model " + m + " --image " + photo +
                       " --prompt 'What is unusual about this image?' --max-new-tokens 4", d + "/h.json")["ids"], j["ids"]);
  const json s = run_lowbit_json("generate --model " + m + " --image " + photo + " --image " + photo +
                       " --template raw --prompt '<image> and <image>' --max-new-tokens 2 --temperature 0.8 --seed 3", d + "/s.json");
  EXPECT_EQ(s["prompt"], "<image> and <image>");
  EXPECT_EQ(s["image_tokens"], 1152);
  // A text-only model: image_tokens 0, prompt as given.
  LOWBIT_REQUIRE_SHARED(t, "models/stories260K");
  const json tj = run_lowbit_json("generate --model " + t + " --prompt 'Once upon' --max-new-tokens 2", d + "/t.json");
  EXPECT_EQ(tj["prompt"], "Once upon");
  EXPECT_EQ(tj["image_tokens"], 0);
}

TEST(VlmCli, OriginalLayoutNeedsVisionTower) {
  LOWBIT_REQUIRE_SHARED(hf_dir, "models/tiny-llava-1.5");
  LOWBIT_REQUIRE_SHARED(photo, "data/images/waterview.jpg");
  const std::string d = temp_dir("vlm_cli_orig");
  const OriginalLayout o = write_original_layout(hf_dir, d);
  expect_error_line(run_lowbit("generate --model " + o.llava + " --image " + photo + " --prompt hi"), "--vision-tower", 2);
  expect_error_line(run_lowbit("inspect " + o.llava), "--vision-tower", 2);
  expect_error_line(run_lowbit("generate --model " + hf_dir + " --vision-tower " + o.clip + " --image " + photo +
                          " --prompt hi"),
               "--vision-tower", 2);
  const json j = run_lowbit_json("generate --model " + o.llava + " --vision-tower " + o.clip + " --image " + photo +
                      " --prompt 'Describe the image.' --max-new-tokens 3", d + "/o.json");
  EXPECT_EQ(j["template"], "vicuna_v1");
  EXPECT_EQ(j["prompt"], std::string(kVicunaSystem) + " USER: <image>\nDescribe the image. ASSISTANT:");
  EXPECT_EQ(j["image_tokens"], 576);
  auto ri = run_lowbit("inspect " + o.llava + " --vision-tower " + o.clip);
  ASSERT_EQ(ri.exit_code, 0) << ri.out;
  EXPECT_NE(ri.out.find("model.mm_projector.2"), std::string::npos) << ri.out;
  EXPECT_NE(ri.out.find("vision_model.encoder.layers.2.mlp.fc2"), std::string::npos) << ri.out;
}

TEST(VlmCli, BadInputsGiveOneLineErrors) {
  LOWBIT_REQUIRE_SHARED(m, "models/tiny-llava-1.5");
  LOWBIT_REQUIRE_SHARED(t, "models/stories260K");
  LOWBIT_REQUIRE_SHARED(photo, "data/images/extreme_ironing.jpg");
  const std::string d = temp_dir("vlm_cli_err");
  const std::string gen = "generate --max-new-tokens 2 --model " + m;

  // An image for a text-only model.
  expect_error_line(run_lowbit("generate --model " + t + " --image " + photo + " --prompt hi"), "text-only", 2);
  // More images than placeholders, and the reverse.
  expect_error_line(run_lowbit(gen + " --template raw --image " + photo + " --prompt 'no placeholder'"), "placeholder", 2);
  expect_error_line(run_lowbit(gen + " --image " + photo + " --image " + photo + " --prompt 'one <image> only'"),
               "placeholder", 2);
  expect_error_line(run_lowbit(gen + " --template raw --prompt '<image> but no image'"), "placeholder", 2);
  // Unknown template: the supported names are listed.
  expect_error_line(run_lowbit(gen + " --template zephyr --prompt hi"), "llava-1.5, vicuna_v1", 2);
  // A truncated JPEG, a corrupt one, a text file named .jpg.
  const std::string jpg = read_file(photo);
  write_file(d + "/trunc.jpg", jpg.substr(0, jpg.size() / 2));
  expect_error_line(run_lowbit(gen + " --image " + d + "/trunc.jpg --prompt hi"), "trunc.jpg", 1);
  std::string bad = jpg;
  for (size_t i = bad.size() / 3; i < bad.size() / 3 + 4000; ++i) bad[i] = char(0xFF);
  write_file(d + "/corrupt.jpg", bad);
  expect_error_line(run_lowbit(gen + " --image " + d + "/corrupt.jpg --prompt hi"), "corrupt.jpg", 1);
  write_file(d + "/notes.jpg", "this is plain text, not a JPEG\n");
  expect_error_line(run_lowbit(gen + " --image " + d + "/notes.jpg --prompt hi"), "notes.jpg", 1);
  expect_error_line(run_lowbit(gen + " --image " + d + "/missing.jpg --prompt hi"), "missing.jpg", 1);
  // Too large: a PNG whose header claims 100000 x 100000 pixels (refused before allocating),
  // and a real photo over a small --max-image-pixels.
  auto chunk = [](const std::string& type, const std::string& data) {
    std::string c;
    for (int k = 3; k >= 0; --k) c += char((data.size() >> (8 * k)) & 0xFF);
    const uint32_t crc = crc32(type + data);
    c += type + data;
    for (int k = 3; k >= 0; --k) c += char((crc >> (8 * k)) & 0xFF);
    return c;
  };
  const std::string png = std::string("\x89PNG\r\n\x1a\n", 8) +
                          chunk("IHDR", std::string("\x00\x01\x86\xa0\x00\x01\x86\xa0\x08\x02\x00\x00\x00", 13)) +
                          chunk("IDAT", "") + chunk("IEND", "");
  write_file(d + "/bomb.png", png);
  expect_error_line(run_lowbit(gen + " --image " + d + "/bomb.png --prompt hi"), "pixel budget", 1);
  expect_error_line(run_lowbit(gen + " --image " + photo + " --max-image-pixels 1000 --prompt hi"), "pixel budget", 1);
  expect_error_line(run_lowbit(gen + " --image " + photo + " --max-image-pixels 0 --prompt hi"), "max-image-pixels", 2);
}

TEST(VlmCli, EvalAndInspectOnVlmDirectory) {
  LOWBIT_REQUIRE_SHARED(m, "models/tiny-llava-1.5");
  LOWBIT_REQUIRE_SHARED(ts, "data/text/tinystories_val.txt");
  const std::string d = temp_dir("vlm_cli_eval");
  // eval ppl on a VLM directory: its language model on text alone.
  const json p = run_lowbit_json("eval ppl --model " + m + " --data " + ts + " --data-end 20000 --seqlen 128 --max-windows 2",
                                 d + "/p.json");
  EXPECT_EQ(p["windows"], 2);
  EXPECT_GT(p["ppl"].get<double>(), 1.0);
  // inspect: the three towers, each with its linears' statistics.
  auto ri = run_lowbit("inspect " + m + " --output-json " + d + "/i.json");
  ASSERT_EQ(ri.exit_code, 0) << ri.out;
  for (const char* s : {"[vision] CLIP ViT", "[projector]", "[language] LLaMA decoder",
                        "vision_tower.embeddings.patch_embedding", "vision_tower.encoder.layers.2.self_attn.out_proj",
                        "multi_modal_projector.linear_1", "model.layers.1.mlp.down_proj", "lm_head"})
    EXPECT_NE(ri.out.find(s), std::string::npos) << s << "\n" << ri.out;
  const json j = json::parse(read_file(d + "/i.json"));
  ASSERT_EQ(j["towers"].size(), 3u);
  EXPECT_EQ(j["towers"][0]["linears"].size(), size_t(1 + 6 * 3));  // patch embedding + 6 per layer
  EXPECT_EQ(j["towers"][1]["linears"].size(), 2u);
  EXPECT_EQ(j["towers"][2]["linears"].size(), size_t(7 * 2 + 1));
  EXPECT_EQ(j["linears"].size(), size_t(19 + 2 + 15));
  for (const json& l : j["linears"]) {
    EXPECT_GT(l["std"].get<double>(), 0.0) << l["name"];
    EXPECT_GT(l["kurtosis"].get<double>(), 0.0) << l["name"];
  }
}
