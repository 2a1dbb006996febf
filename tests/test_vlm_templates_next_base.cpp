// The LLaVA-NeXT base-model conversation templates beyond Mistral-Instruct and Vicuna: chatml
// (llava-v1.6-34b, Nous-Hermes-2-Yi-34B) and llama3 (llama3-llava-next-8b). Their rendered strings,
// and --template auto choosing them from a chat template stored in chat_template.json or
// tokenizer_config.json of a copy of tiny-llava-next. tiny-llava-next's tokenizer has none of these
// special tokens, so the rendered text and the choice are tested, not the tokenization.
#include <gtest/gtest.h>

#include <filesystem>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "models/templates.h"
#include "testing.h"

using namespace lowbit;
using lowbit::test::read_file;
using lowbit::test::run_lowbit;
using lowbit::test::run_lowbit_json;
using lowbit::test::temp_dir;
using lowbit::test::write_file;
using json = nlohmann::json;
namespace fs = std::filesystem;

namespace {

const std::string kChatmlHead = "<|im_start|>system\nAnswer the questions.<|im_end|><|im_start|>user\n";
const std::string kChatmlTail = "<|im_end|><|im_start|>assistant\n";
const std::string kLlama3Head = "<|start_header_id|>user<|end_header_id|>\n\n";
const std::string kLlama3Tail = "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n";

// A full copy of a model directory (config, weights, tokenizer, processor) under root.
std::string copy_model(const std::string& model, const std::string& root) {
  fs::remove_all(root);
  fs::create_directories(root);
  for (const auto& e : fs::directory_iterator(model)) fs::copy_file(e.path(), fs::path(root) / e.path().filename());
  return root;
}

// ChatML (the shape of llava-v1.6-34b-hf's chat template, written here for the test).
const char* kChatmlTemplate =
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{% for c in message['content'] %}{% if c['type'] == 'image' %}{{ '<image>\\n' }}{% endif %}{% endfor %}"
    "{% for c in message['content'] %}{% if c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}"
    "{{ '<|im_end|>' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";
// LLaMA-3 headers (the shape of llama3-llava-next-8b-hf's chat template, written here for the test).
const char* kLlama3Template =
    "{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' }}"
    "{% for c in message['content'] %}{% if c['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}"
    "{% for c in message['content'] %}{% if c['type'] == 'text' %}{{ '\\n' + c['text'] + '<|eot_id|>' }}"
    "{% endif %}{% endfor %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}";

}  // namespace

TEST(VlmTemplatesNextBase, ChatmlRendersExactly) {
  // llava-hf/llava-v1.6-34b-hf model card prompt, "What is shown in this image?" with one image.
  EXPECT_EQ(render_prompt("chatml", "What is shown in this image?", 1),
            "<|im_start|>system\nAnswer the questions.<|im_end|><|im_start|>user\n<image>\nWhat is shown in this "
            "image?<|im_end|><|im_start|>assistant\n");
  EXPECT_EQ(render_prompt("chatml", "Compare.", 2), kChatmlHead + "<image>\n<image>\nCompare." + kChatmlTail);
  EXPECT_EQ(render_prompt("chatml", "Hi", 0), kChatmlHead + "Hi" + kChatmlTail);
  // User-placed placeholders stay where they are.
  EXPECT_EQ(render_prompt("chatml", "Left <image> right <image>", 2), kChatmlHead + "Left <image> right <image>" + kChatmlTail);
  EXPECT_THROW(render_prompt("chatml", "<image>", 2), ArgError);
  EXPECT_THROW(render_prompt("chatml", "<image><image>", 1), ArgError);
  EXPECT_STREQ(find_chat_template("chatml").name, "chatml");
}

TEST(VlmTemplatesNextBase, Llama3RendersExactly) {
  // llama3-llava-next-8b-hf's chat template for [user: image, text] with the generation prompt.
  EXPECT_EQ(render_prompt("llama3", "What is shown in this image?", 1),
            "<|start_header_id|>user<|end_header_id|>\n\n<image>\nWhat is shown in this image?<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n");
  // Images with nothing between them, then "\n" and the text (as that template writes them).
  EXPECT_EQ(render_prompt("llama3", "Compare.", 2), kLlama3Head + "<image><image>\nCompare." + kLlama3Tail);
  EXPECT_EQ(render_prompt("llama3", "Hi", 0), kLlama3Head + "\nHi" + kLlama3Tail);
  EXPECT_EQ(render_prompt("llama3", "<image>\nLeft, <image>\nright", 2),
            kLlama3Head + "\n<image>\nLeft, <image>\nright" + kLlama3Tail);
  // No BOS text: the tokenizer adds <|begin_of_text|> (once), whatever TemplateContext holds.
  TemplateContext ctx;
  ctx.bos = "<|begin_of_text|>";
  EXPECT_EQ(render_prompt("llama3", "x", 1, ctx).rfind(kLlama3Head, 0), 0u);
  EXPECT_EQ(render_prompt("llama3", "x", 1).find("<|begin_of_text|>"), std::string::npos);
  EXPECT_THROW(render_prompt("llama3", "<image>", 0), ArgError);
  EXPECT_THROW(render_prompt("llama3", "a <image> b", 2), ArgError);
  EXPECT_STREQ(find_chat_template("llama3").name, "llama3");
}

TEST(VlmTemplatesNextBase, AutoFromChatTemplateJsonAndTokenizerConfig) {
  LOWBIT_REQUIRE_SHARED(next, "models/tiny-llava-next");
  const std::string d = temp_dir("vlm_tpl_next_base");

  // chat_template.json holding ChatML → chatml.
  const std::string chatml = copy_model(next, d + "/chatml");
  write_file(chatml + "/chat_template.json", json{{"chat_template", kChatmlTemplate}}.dump());
  EXPECT_EQ(auto_template_name(chatml), "chatml");
  EXPECT_EQ(resolve_template("auto", chatml), "chatml");
  EXPECT_EQ(template_context(chatml).bos, "");  // the template starts with a Jinja tag
  EXPECT_EQ(render_prompt(resolve_template("auto", chatml), "What is shown in this image?", 1, template_context(chatml)),
            kChatmlHead + "<image>\nWhat is shown in this image?" + kChatmlTail);

  // tokenizer_config.json's "chat_template" holding LLaMA-3 headers → llama3.
  const std::string llama3 = copy_model(next, d + "/llama3");
  json tc = json::parse(read_file(llama3 + "/tokenizer_config.json"));
  tc["chat_template"] = kLlama3Template;
  write_file(llama3 + "/tokenizer_config.json", tc.dump(2));
  EXPECT_EQ(auto_template_name(llama3), "llama3");
  EXPECT_EQ(template_context(llama3).bos, "");
  EXPECT_EQ(render_prompt(resolve_template("auto", llama3), "What is shown in this image?", 1, template_context(llama3)),
            kLlama3Head + "<image>\nWhat is shown in this image?" + kLlama3Tail);

  // Same LLaMA-3 template in chat_template.json (which wins over tokenizer_config.json).
  write_file(chatml + "/chat_template.json", json{{"chat_template", kLlama3Template}}.dump());
  EXPECT_EQ(auto_template_name(chatml), "llama3");

  // The existing rules hold: no template → mistral-instruct; named templates pass through.
  EXPECT_EQ(auto_template_name(next), "mistral-instruct");
  EXPECT_EQ(resolve_template("chatml", next), "chatml");
  EXPECT_EQ(resolve_template("llama3", next), "llama3");
}

TEST(VlmTemplatesNextBase, CliGenerateUsesAutoChatml) {
  LOWBIT_REQUIRE_SHARED(next, "models/tiny-llava-next");
  LOWBIT_REQUIRE_SHARED(photo, "data/images/waterview.jpg");
  const std::string d = temp_dir("vlm_tpl_next_base_cli");
  const std::string m = copy_model(next, d + "/chatml");
  write_file(m + "/chat_template.json", json{{"chat_template", kChatmlTemplate}}.dump());
  const json j = run_lowbit_json("generate --model " + m + " --image " + photo +
                      " --prompt 'What is shown in this image?' --max-new-tokens 1", d + "/g.json");
  EXPECT_EQ(j["template"], "chatml");
  EXPECT_EQ(j["prompt"], kChatmlHead + "<image>\nWhat is shown in this image?" + kChatmlTail);
  EXPECT_EQ(j["image_tokens"], 2144);
}
