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

std::string render_raw(const std::string& prompt, int64_t) { return prompt; }

// tiny-llava-1.5/chat_template.jinja for messages = [{role: user, content: [image × n, text]}]:
// "{ROLE}: " + per content (image → "<image>\n", text → text) + " ", then "ASSISTANT:".
std::string render_llava15(const std::string& prompt, int64_t n_images) {
  return "USER: " + images_then_text(prompt, n_images) + " ASSISTANT:";
}

// LLaVA conv_vicuna_v1 (SeparatorStyle.TWO, sep " ", sep2 "</s>"), messages [USER: q, ASSISTANT: None]:
// system + sep + "USER: " + q + sep + "ASSISTANT:".
constexpr const char* kVicunaSystem =
    "A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions.";
std::string render_vicuna_v1(const std::string& prompt, int64_t n_images) {
  return std::string(kVicunaSystem) + " USER: " + images_then_text(prompt, n_images) + " ASSISTANT:";
}

// --template auto by architecture (config.json's architectures[0], else model_type). VLM
// families add their row here; a VLM not listed is an error rather than a guess.
struct AutoRule {
  const char* architecture;
  const char* model_type;  // matched when the config names no architecture
  const char* template_name;
  bool check_chat_template;  // the directory's HF chat template must be recognised as this one
};
constexpr AutoRule kAutoRules[] = {
    {"LlavaLlamaForCausalLM", nullptr, "vicuna_v1", false},
    {"LlavaForConditionalGeneration", "llava", "llava-1.5", true},
};
// Architectures that take images but have no conversation template here yet.
constexpr const char* kVlmWithoutTemplate[] = {"LlavaNextForConditionalGeneration", "Idefics3ForConditionalGeneration"};

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

// LLaVA-1.5's template (llava-hf and tiny-llava-1.5 spell it differently, render it the same):
// upper-cased roles, `<image>` placeholders, ends with "ASSISTANT:".
bool looks_like_llava15(const std::string& t) {
  return t.find(".upper()") != std::string::npos && t.find("<image>") != std::string::npos &&
         t.find("ASSISTANT:") != std::string::npos;
}

}  // namespace

const std::vector<ChatTemplate>& chat_templates() {
  static const std::vector<ChatTemplate> k = {
      {"raw", "the prompt as is; write <image> where each image goes", render_raw},
      {"llava-1.5", "USER: <image>\\n{prompt} ASSISTANT: (llava-hf LLaVA-1.5 chat template)", render_llava15},
      {"vicuna_v1", "{system} USER: <image>\\n{prompt} ASSISTANT: (original LLaVA conv_vicuna_v1)",
       render_vicuna_v1},
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
  for (const AutoRule& r : kAutoRules) {
    if (!(arch == r.architecture || (arch.empty() && r.model_type && type == r.model_type))) continue;
    if (r.check_chat_template) {
      const auto [text, file] = read_chat_template(dir);
      LOWBIT_CHECK(text.empty() || looks_like_llava15(text), ConfigError,
                   "{}: chat template not recognised as {} (--template auto); pass --template NAME "
                   "(supported: {}) or --template raw with the whole prompt",
                   file, r.template_name, chat_template_names());
    }
    return r.template_name;
  }
  for (const char* a : kVlmWithoutTemplate)
    LOWBIT_CHECK(arch != a, ConfigError,
                 "{}: no conversation template for {} yet (--template auto); pass --template raw with the whole "
                 "prompt (supported: {})",
                 cfg_path, arch, chat_template_names());
  return "raw";  // text-only models: the prompt as is
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

std::string render_prompt(const std::string& template_name, const std::string& prompt, int64_t n_images) {
  const ChatTemplate& t = find_chat_template(template_name);
  const std::string s = t.render(prompt, n_images);
  const int64_t n = count_image_placeholders(s);
  LOWBIT_CHECK(n == n_images, ArgError,
               "--prompt has {} <image> placeholder(s) but {} --image given (template {}); each image needs one "
               "<image>{}",
               n, n_images, t.name,
               std::string(t.name) == "raw" ? "" : " (or none: the template then puts one per image before the text)");
  return s;
}

}  // namespace lowbit
