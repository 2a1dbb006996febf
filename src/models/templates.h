// Conversation templates for `lowbit generate --template`: the text a model family was trained
// to see around one user turn, rendered for a prompt and its images. The image placeholder is
// always the literal `<image>`; the model's processor expands each one into the image's tokens.
//
// Supported (chat_templates(), one row per template; new families add a row):
//   raw        the prompt as is: the user writes `<image>` where each image goes.
//   llava-1.5  HF llava-hf chat template for one user turn (tiny-llava-1.5's chat_template.jinja,
//              llava-1.5-7b-hf's chat_template.json render the same):
//                "USER: " + "<image>\n" × n_images + prompt + " ASSISTANT:"
//   vicuna_v1  original LLaVA's conv_vicuna_v1 (SeparatorStyle.TWO, sep " ", sep2 "</s>"):
//                system + " USER: " + "<image>\n" × n_images + prompt + " ASSISTANT:"
//              with system = "A chat between a curious human and an artificial intelligence
//              assistant. The assistant gives helpful, detailed, and polite answers to the
//              human's questions."
//   mistral-instruct  LLaVA-NeXT on Mistral-7B-Instruct (llava-hf/llava-v1.6-mistral-7b-hf's chat
//              template; the tiny-llava-next golden's prompt):
//                "[INST] " + "<image>\n" × n_images + prompt + " [/INST]"
//              (BOS comes from the tokenizer, as with llava-1.5.)
//   chatml     LLaVA-NeXT on Nous-Hermes-2-Yi-34B (llava-v1.6-34b; original LLaVA's
//              conv_chatml_direct): the prompt of the llava-hf/llava-v1.6-34b-hf model card,
//                "<|im_start|>system\nAnswer the questions.<|im_end|><|im_start|>user\n"
//                + "<image>\n" × n_images + prompt + "<|im_end|><|im_start|>assistant\n"
//              (no newline after <|im_end|>). Note: that repository's chat_template.json renders a
//              user-only conversation without the system turn and with "<|im_end|>\n"; lowbit
//              renders the model card's (training) form. BOS as the tokenizer says.
//   llama3     LLaVA-NeXT on Meta-Llama-3-8B-Instruct (llava-hf/llama3-llava-next-8b-hf's
//              chat_template.json, one user turn plus the generation prompt; no system turn):
//                "<|start_header_id|>user<|end_header_id|>\n\n" + "<image>" × n_images + "\n"
//                + prompt + "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
//              (the images with nothing between them, then "\n" and the text, as that template
//              writes them). The template writes no <|begin_of_text|>: the tokenizer's BOS is
//              added to the ids (LlavaModel::prompt_ids), so there is exactly one, as with HF's
//              processor on the rendered chat template.
//   idefics3   Idefics3 / SmolVLM (HuggingFaceM4/Idefics3-8B-Llama3, SmolVLM-Instruct):
//                bos + "User:" + "<image>" × n_images + prompt + "<end_of_utterance>\nAssistant:"
//              and "User: " + prompt when there is no image (their templates write ":" before
//              image-first content, ": " otherwise, then the contents with nothing between).
//              bos is TemplateContext::bos: the literal text the directory's chat template starts
//              with ("<|begin_of_text|>" in Idefics3 and tiny-smolvlm, "<|im_start|>" in SmolVLM);
//              empty without a chat template (the tokenizer's BOS is then added to the ids).
//              Note: tiny-smolvlm's chat_template.jinja writes " " before every text part
//              ("User:<image> What..."); its golden prompt, SmolVLM's and Idefics3's templates do not,
//              and lowbit renders the golden's form.
// Named templates place the images before the text (one "<image>\n" each for the LLaVA family,
// one "<image>" each for idefics3 and llama3), as the families' chat templates and eval scripts do, unless
// the prompt already holds `<image>` placeholders: then they stay where the user put them
// (LLaVA's run_llava does the same) and their count must equal the images'.
//
// auto (resolve_template): chosen from the model directory by config.json's architectures[0]
// (or model_type when it names none), then checked against the directory's HF chat template
// (chat_template.jinja, chat_template.json or tokenizer_config.json's "chat_template"):
//   * original LLaVA layout (LlavaLlamaForCausalLM)        → vicuna_v1
//   * LlavaForConditionalGeneration (llava)                → llava-1.5; a chat template must be
//     absent or recognised as LLaVA-1.5's (".upper()" roles, `<image>`, "ASSISTANT:")
//   * LlavaNextForConditionalGeneration (llava_next)      → by its chat template: "[INST]" and
//     "[/INST]" → mistral-instruct; LLaVA-1.5's form (llava-v1.6-vicuna-*) → llava-1.5;
//     "<|im_start|>" (llava-v1.6-34b) → chatml; "<|start_header_id|>" (llama3-llava-next-8b) →
//     llama3; no chat template → mistral-instruct (the tiny-llava-next golden's format; the llava-hf NeXT
//     checkpoints all ship a chat template, so this default only applies to bare directories)
//   * Idefics3ForConditionalGeneration (idefics3)         → idefics3; a chat template must be
//     absent or hold "<end_of_utterance>" and "Assistant:"
//   * text-only models (LLaMA family)                       → raw (the prompt as is, as before)
// Any other chat template of a VLM (e.g. ChatML on a LlavaForConditionalGeneration, Zephyr's
// "<|user|>" on LLaVA-NeXT) is a ConfigError naming the file and asking for --template NAME|raw: never a guess.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace lowbit {

// What a template takes from the model directory besides the prompt.
struct TemplateContext {
  std::string bos;  // idefics3: the literal text the chat template starts with (see above)
};

struct ChatTemplate {
  const char* name;
  const char* description;
  // The rendered text for one user turn with n_images images (the prompt already checked).
  std::string (*render)(const std::string& prompt, int64_t n_images, const TemplateContext& ctx);
};

// Every supported template, raw first.
const std::vector<ChatTemplate>& chat_templates();
// "raw, llava-1.5, vicuna_v1, mistral-instruct, chatml, llama3, idefics3"
std::string chat_template_names();
// The template called `name`; ArgError naming --template and listing the supported names.
const ChatTemplate& find_chat_template(const std::string& name);

// The template name `--template auto` picks for model_dir (see above); ConfigError naming the
// file when a VLM's chat template is not one lowbit recognises.
std::string auto_template_name(const std::string& model_dir);
// `name` itself, or auto's choice when name == "auto".
std::string resolve_template(const std::string& name, const std::string& model_dir);

// The context of model_dir's templates: bos = the literal text before the first "{" of its chat
// template (empty without one, or when it starts with a Jinja tag).
TemplateContext template_context(const std::string& model_dir);

// Occurrences of the literal `<image>` in text.
int64_t count_image_placeholders(const std::string& text);

// Renders `prompt` with n_images through the template (placeholders as described above).
// raw: the prompt unchanged. ArgError when the placeholders and images do not match
// (counted after rendering; raw and user-placed placeholders must equal n_images).
std::string render_prompt(const std::string& template_name, const std::string& prompt, int64_t n_images,
                          const TemplateContext& ctx = {});

}  // namespace lowbit
