// Conversation templates for `lowbit generate --template`: the text a model family was trained
// to see around one user turn, rendered for a prompt and its images. The image placeholder is
// always the literal `<image>`; the model's processor expands each one into the image's tokens.
//
// Supported (kChatTemplates, one row per template; new families add a row):
//   raw        the prompt as is: the user writes `<image>` where each image goes.
//   llava-1.5  HF llava-hf chat template for one user turn (tiny-llava-1.5's chat_template.jinja,
//              llava-1.5-7b-hf's chat_template.json render the same):
//                "USER: " + "<image>\n" × n_images + prompt + " ASSISTANT:"
//   vicuna_v1  original LLaVA's conv_vicuna_v1 (SeparatorStyle.TWO, sep " ", sep2 "</s>"):
//                system + " USER: " + "<image>\n" × n_images + prompt + " ASSISTANT:"
//              with system = "A chat between a curious human and an artificial intelligence
//              assistant. The assistant gives helpful, detailed, and polite answers to the
//              human's questions."
// Named templates place one "<image>\n" per image before the text, as LLaVA's chat template and
// eval scripts do, unless the prompt already holds `<image>` placeholders: then they stay where
// the user put them (LLaVA's run_llava does the same) and their count must equal the images'.
//
// auto (resolve_template): chosen from the model directory:
//   * original LLaVA layout (LlavaLlamaForCausalLM)        → vicuna_v1
//   * LlavaForConditionalGeneration                         → llava-1.5, provided the directory's
//     chat template (chat_template.jinja, chat_template.json or tokenizer_config.json's
//     "chat_template") is absent or is recognised as LLaVA-1.5's ("USER"/"ASSISTANT:" roles,
//     `<image>` then newline); any other chat template is an error asking for --template NAME|raw
//   * text-only models (LLaMA family)                       → raw (the prompt as is, as before)
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace lowbit {

struct ChatTemplate {
  const char* name;
  const char* description;
  // The rendered text for one user turn with n_images images (the prompt already checked).
  std::string (*render)(const std::string& prompt, int64_t n_images);
};

// Every supported template, raw first.
const std::vector<ChatTemplate>& chat_templates();
// "raw, llava-1.5, vicuna_v1"
std::string chat_template_names();
// The template called `name`; ArgError naming --template and listing the supported names.
const ChatTemplate& find_chat_template(const std::string& name);

// The template name `--template auto` picks for model_dir (see above); ConfigError naming the
// file when a VLM's chat template is not one lowbit recognises.
std::string auto_template_name(const std::string& model_dir);
// `name` itself, or auto's choice when name == "auto".
std::string resolve_template(const std::string& name, const std::string& model_dir);

// Occurrences of the literal `<image>` in text.
int64_t count_image_placeholders(const std::string& text);

// Renders `prompt` with n_images through the template (placeholders as described above).
// raw: the prompt unchanged. ArgError when the placeholders and images do not match
// (counted after rendering; raw and user-placed placeholders must equal n_images).
std::string render_prompt(const std::string& template_name, const std::string& prompt, int64_t n_images);

}  // namespace lowbit
