// VQA prompts per task and family (the table is in vqa_prompt.h).
#include "eval/vqa_prompt.h"

#include "core/error.h"

namespace lowbit {

namespace {

constexpr const char* kVicunaSystem =
    "A chat between a curious human and an artificial intelligence assistant. The assistant gives helpful, detailed, "
    "and polite answers to the human's questions.";
constexpr const char* kLetterInstruction = "Answer with the option's letter from the given choices directly.";

bool is_llava15(const std::string& arch) {
  return arch == "LlavaForConditionalGeneration" || arch == "LlavaLlamaForCausalLM";
}
bool is_idefics3(const std::string& arch) { return arch == "Idefics3ForConditionalGeneration"; }

// ScienceQA's T (see the header).
std::string scienceqa_text(const VqaQuestion& q) {
  if (!q.llava_text.empty()) {
    if (q.llava_text.find(kLetterInstruction) != std::string::npos) return q.llava_text;
    return q.llava_text + "\n" + kLetterInstruction;
  }
  std::string t = q.hint.empty() ? q.text : q.hint + "\n" + q.text;
  for (const auto& [letter, opt] : q.options) t += "\n" + letter + ". " + opt;
  return t + "\n" + kLetterInstruction;
}

// VLMEvalKit's MCQ prompt with SmolVLM's replacements ("\nOptions:" → "\nChoices:",
// "Please select the correct answer from the options above." → "Answer with the letter."), stripped.
std::string scienceqa_smolvlm_text(const VqaQuestion& q) {
  if (!q.llava_text.empty()) return q.llava_text + "\nAnswer with the letter.";
  std::string t;
  if (!q.hint.empty()) t += "Hint: " + q.hint + "\n";
  t += "Question: " + q.text + "\nChoices:\n";
  for (const auto& [letter, opt] : q.options) t += letter + ". " + opt + "\n";
  return t + "Answer with the letter.";
}

std::string instruction(VqaTask task, const VqaQuestion& q) {
  switch (task) {
    case VqaTask::VQAv2: return q.text + " Answer with a single word or phrase.";
    case VqaTask::TextVQA:
    case VqaTask::VizWiz: return q.text;
    case VqaTask::ScienceQA: return scienceqa_text(q);
  }
  return q.text;
}

}  // namespace

int64_t vqa_default_max_new_tokens(VqaTask task) {
  switch (task) {
    case VqaTask::VQAv2: return 32;
    case VqaTask::TextVQA: return 128;
    case VqaTask::VizWiz: return 16;
    case VqaTask::ScienceQA: return 16;
  }
  return 32;
}

std::string vqa_prompt(VqaTask task, const VqaQuestion& q, const std::string& arch, const std::string& template_name,
                       const std::string& auto_template, const TemplateContext& ctx) {
  const int64_t n = q.image.empty() ? 0 : 1;
  if (template_name == "raw") return (n ? "<image>\n" : "") + instruction(task, q);
  if (template_name != "default") return render_prompt(template_name, instruction(task, q), n, ctx);
  switch (task) {
    case VqaTask::VQAv2:
      if (arch == "LlavaForConditionalGeneration")
        return std::string("USER:") + (n ? "<image>\n" : "") + q.text + " Answer with a single word or phrase.\nASSISTANT:";
      break;
    case VqaTask::TextVQA:
    case VqaTask::VizWiz:
      if (is_llava15(arch)) return render_prompt("vicuna_v1", q.text, n, ctx);
      break;
    case VqaTask::ScienceQA:
      if (is_llava15(arch))
        return std::string(kVicunaSystem) + (n ? " USER:  <image> " : " USER: ") + scienceqa_text(q) + " ASSISTANT: ";
      if (is_idefics3(arch)) return render_prompt("idefics3", scienceqa_smolvlm_text(q), n, ctx) + " Answer:";
      break;
  }
  return render_prompt(auto_template, instruction(task, q), n, ctx);
}

}  // namespace lowbit
