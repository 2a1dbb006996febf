#include "models/templates.h"

#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "io/files.h"
#include "io/json_util.h"

namespace lowbit {

using json = nlohmann::json;

namespace {

constexpr const char* kImage = "<image>";

// "<image>\n" × n before the prompt, unless the user already placed placeholders.
std::string images_then_text(const std::string& prompt, int64_t n_images) {
  if (count_image_placeholders(prompt) > 0) return prompt;
  std::string s;
  for (int64_t i = 0; i < n_images; ++i) s += std::string(kImage) + "\n";
  return s + prompt;
}

std::string render_raw(const std::string& prompt, int64_t, const TemplateContext&) { return prompt; }

// tiny-llava-1.5/chat_template.jinja for messages = [{role: user, content: [image × n, text]}]:
// "{ROLE}: " + per content (image → "<image>\n", text → text) + " ", then "ASSISTANT:".
std::string render_llava15(const std::string& prompt, int64_t n_images, const TemplateContext&) {
  return "USER: " + images_then_text(prompt, n_images) + " ASSISTANT:";
}

// LLaVA conv_vicuna_v1 (SeparatorStyle.TWO, sep " ", sep2 "</s>"), messages [USER: q, ASSISTANT: None]:
// system + sep + "USER: " + q + sep + "ASSISTANT:".
constexpr const char* kVicunaSystem =
    "A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions.";
std::string render_vicuna_v1(const std::string& prompt, int64_t n_images, const TemplateContext&) {
  return std::string(kVicunaSystem) + " USER: " + images_then_text(prompt, n_images) + " ASSISTANT:";
}

// llava-v1.6-mistral-7b-hf: "[INST] " + images ("<image>\n" each) + text + " [/INST]".
std::string render_mistral_instruct(const std::string& prompt, int64_t n_images, const TemplateContext&) {
  return "[INST] " + images_then_text(prompt, n_images) + " [/INST]";
}

// llava-v1.6-34b (Nous-Hermes-2-Yi-34B, original LLaVA's conv_chatml_direct): the prompt of the
// llava-hf/llava-v1.6-34b-hf model card, system turn included, no newline after <|im_end|>:
// "<|im_start|>system\nAnswer the questions.<|im_end|><|im_start|>user\n" + images ("<image>\n"
// each) + text + "<|im_end|><|im_start|>assistant\n".
std::string render_chatml(const std::string& prompt, int64_t n_images, const TemplateContext&) {
  return "<|im_start|>system\nAnswer the questions.<|im_end|><|im_start|>user\n" + images_then_text(prompt, n_images) +
         "<|im_end|><|im_start|>assistant\n";
}

// llama3-llava-next-8b (llava-hf/llama3-llava-next-8b-hf's chat_template.json, one user turn and the
// generation prompt): "<|start_header_id|>user<|end_header_id|>\n\n" + "<image>" × n + "\n" + text +
// "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n". No system turn; the template writes
// no <|begin_of_text|>: LlavaModel::prompt_ids adds the tokenizer's BOS, so the ids hold exactly one.
// User-placed placeholders are the text itself.
std::string render_llama3(const std::string& prompt, int64_t n_images, const TemplateContext&) {
  std::string images;
  if (count_image_placeholders(prompt) == 0)
    for (int64_t i = 0; i < n_images; ++i) images += kImage;
  return "<|start_header_id|>user<|end_header_id|>\n\n" + images + "\n" + prompt +
         "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n";
}

// Idefics3 / SmolVLM: bos + "User" + (":" before image-first content, ": " otherwise) + the
// contents ("<image>" each, then the text) + "<end_of_utterance>\n" + "Assistant:".
std::string render_idefics3(const std::string& prompt, int64_t n_images, const TemplateContext& ctx) {
  std::string content;
  if (count_image_placeholders(prompt) > 0) {
    content = prompt;
  } else {
    for (int64_t i = 0; i < n_images; ++i) content += kImage;
    content += prompt;
  }
  const bool image_first = content.rfind(kImage, 0) == 0;
  return ctx.bos + "User" + (image_first ? ":" : ": ") + content + "<end_of_utterance>\nAssistant:";
}

// The HF chat template stored in the directory, with the file it came from; empty if none.
std::pair<std::string, std::string> read_chat_template(const std::filesystem::path& dir) {
  const auto jinja = dir / "chat_template.jinja";
  if (std::ifstream(jinja).good()) return {read_text_file(jinja.string()), jinja.string()};
  for (const char* f : {"chat_template.json", "tokenizer_config.json"}) {
    const auto p = dir / f;
    if (!std::ifstream(p).good()) continue;
    const json j = parse_json(read_text_file(p.string()), p.string());
    if (j.is_object() && j.contains("chat_template") && j["chat_template"].is_string())
      return {j["chat_template"].get<std::string>(), p.string()};
  }
  return {};
}

bool has(const std::string& t, const char* s) { return t.find(s) != std::string::npos; }

// LLaVA-1.5's template (llava-hf and tiny-llava-1.5 spell it differently, render it the same):
// upper-cased roles, `<image>` placeholders, ends with "ASSISTANT:".
bool looks_like_llava15(const std::string& t) { return has(t, ".upper()") && has(t, "<image>") && has(t, "ASSISTANT:"); }
bool looks_like_mistral_instruct(const std::string& t) { return has(t, "[INST]") && has(t, "[/INST]"); }
bool looks_like_chatml(const std::string& t) { return has(t, "<|im_start|>"); }
bool looks_like_llama3(const std::string& t) { return has(t, "<|start_header_id|>"); }
bool looks_like_idefics3(const std::string& t) { return has(t, "<end_of_utterance>") && has(t, "Assistant:"); }

// --template auto by architecture (config.json's architectures[0], else model_type). VLM
// families add their row here; a VLM not listed is an error rather than a guess.
struct Recognised {
  bool (*matches)(const std::string& chat_template);
  const char* template_name;
};
struct AutoRule {
  const char* architecture;
  const char* model_type;     // matched when the config names no architecture
  const char* template_name;  // without a chat template (or when `recognised` is empty)
  std::vector<Recognised> recognised;  // non-empty: the directory's chat template must match one
};
const std::vector<AutoRule>& auto_rules() {
  static const std::vector<AutoRule> k = {
      {"LlavaLlamaForCausalLM", nullptr, "vicuna_v1", {}},
      {"LlavaForConditionalGeneration", "llava", "llava-1.5", {{looks_like_llava15, "llava-1.5"}}},
      {"LlavaNextForConditionalGeneration",
       "llava_next",
       "mistral-instruct",
       {{looks_like_mistral_instruct, "mistral-instruct"},
        {looks_like_llava15, "llava-1.5"},
        {looks_like_chatml, "chatml"},
        {looks_like_llama3, "llama3"}}},
      {"Idefics3ForConditionalGeneration", "idefics3", "idefics3", {{looks_like_idefics3, "idefics3"}}},
  };
  return k;
}

}  // namespace

const std::vector<ChatTemplate>& chat_templates() {
  static const std::vector<ChatTemplate> k = {
      {"raw", "the prompt as is; write <image> where each image goes", render_raw},
      {"llava-1.5", "USER: <image>\\n{prompt} ASSISTANT: (llava-hf LLaVA-1.5 chat template)", render_llava15},
      {"vicuna_v1", "{system} USER: <image>\\n{prompt} ASSISTANT: (original LLaVA conv_vicuna_v1)",
       render_vicuna_v1},
      {"mistral-instruct", "[INST] <image>\\n{prompt} [/INST] (LLaVA-NeXT on Mistral-7B-Instruct)",
       render_mistral_instruct},
      {"chatml",
       "<|im_start|>system\\nAnswer the questions.<|im_end|><|im_start|>user\\n<image>\\n{prompt}<|im_end|>"
       "<|im_start|>assistant\\n (LLaVA-NeXT on Nous-Hermes-2-Yi-34B)",
       render_chatml},
      {"llama3",
       "<|start_header_id|>user<|end_header_id|>\\n\\n<image>\\n{prompt}<|eot_id|>"
       "<|start_header_id|>assistant<|end_header_id|>\\n\\n (llama3-llava-next-8b)",
       render_llama3},
      {"idefics3", "{bos}User:<image>{prompt}<end_of_utterance>\\nAssistant: (Idefics3 / SmolVLM)", render_idefics3},
  };
  return k;
}

std::string chat_template_names() {
  std::string s;
  for (const ChatTemplate& t : chat_templates()) s += (s.empty() ? "" : ", ") + std::string(t.name);
  return s;
}

const ChatTemplate& find_chat_template(const std::string& name) {
  for (const ChatTemplate& t : chat_templates())
    if (name == t.name) return t;
  throw ArgError(fmt::format("--template: unknown template '{}' (supported: auto, {})", name, chat_template_names()));
}

std::string auto_template_name(const std::string& model_dir) {
  const std::filesystem::path dir(model_dir);
  const std::string cfg_path = (dir / "config.json").string();
  LOWBIT_CHECK(std::ifstream(cfg_path).good(), IoError, "cannot open {}", cfg_path);
  const json j = parse_json(read_text_file(cfg_path), cfg_path);
  LOWBIT_CHECK(j.is_object(), ConfigError, "{}: config must be a JSON object", cfg_path);
  std::string arch;
  if (j.contains("architectures") && j["architectures"].is_array() && !j["architectures"].empty() &&
      j["architectures"][0].is_string())
    arch = j["architectures"][0].get<std::string>();
  const std::string type = j.contains("model_type") && j["model_type"].is_string() ? j["model_type"].get<std::string>() : "";
  for (const AutoRule& r : auto_rules()) {
    if (!(arch == r.architecture || (arch.empty() && r.model_type && type == r.model_type))) continue;
    if (r.recognised.empty()) return r.template_name;
    const auto [text, file] = read_chat_template(dir);
    if (text.empty()) return r.template_name;
    for (const Recognised& c : r.recognised)
      if (c.matches(text)) return c.template_name;
    std::string known;
    for (const Recognised& c : r.recognised) known += (known.empty() ? "" : ", ") + std::string(c.template_name);
    throw ConfigError(fmt::format(
        "{}: chat template not recognised for {} (--template auto knows: {}); pass --template NAME "
        "(supported: {}) or --template raw with the whole prompt",
        file, arch.empty() ? type : arch, known, chat_template_names()));
  }
  return "raw";  // text-only models: the prompt as is
}

TemplateContext template_context(const std::string& model_dir) {
  TemplateContext ctx;
  const std::string t = read_chat_template(std::filesystem::path(model_dir)).first;
  const size_t brace = t.find('{');
  if (brace != std::string::npos && brace > 0) ctx.bos = t.substr(0, brace);
  return ctx;
}

std::string resolve_template(const std::string& name, const std::string& model_dir) {
  if (name == "auto") return auto_template_name(model_dir);
  return find_chat_template(name).name;
}

int64_t count_image_placeholders(const std::string& text) {
  int64_t n = 0;
  for (size_t p = text.find(kImage); p != std::string::npos; p = text.find(kImage, p + 1)) ++n;
  return n;
}

std::string render_prompt(const std::string& template_name, const std::string& prompt, int64_t n_images,
                          const TemplateContext& ctx) {
  const ChatTemplate& t = find_chat_template(template_name);
  const std::string s = t.render(prompt, n_images, ctx);
  const int64_t n = count_image_placeholders(s);
  LOWBIT_CHECK(n == n_images, ArgError,
               "--prompt has {} <image> placeholder(s) but {} --image given (template {}); each image needs one "
               "<image>{}",
               n, n_images, t.name,
               std::string(t.name) == "raw" ? "" : " (or none: the template then puts one per image before the text)");
  return s;
}

}  // namespace lowbit
