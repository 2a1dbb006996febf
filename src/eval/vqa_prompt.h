// VQA prompts: the seed tools' prompts per task and model family (../shared/docs/seed-protocols.md),
// and the task's instruction text under any conversation template (--template).
//
// --template default (the seeds' prompts; "<image>" is expanded by the model's processor):
//   vqav2     LLaVA-1.5 (llava-hf layout), GPTQ/QuIP-for-VLMs eval_vqav2, verbatim:
//               "USER:<image>\n{question} Answer with a single word or phrase.\nASSISTANT:"
//             other families: "{question} Answer with a single word or phrase." in the model's
//             conversation template (--template auto's choice).
//   textvqa   LLaVA-1.5 (both layouts), AutoRound's TextVQA eval: conv vicuna_v1 with
//             "<image>\n" + the file's "text" (question, OCR tokens, instruction);
//             other families: the file's "text" in the model's template.
//   vizwiz    LLaVA-1.5 (both layouts), QSVD's VizWiz eval: vicuna_v1 with "<image>\n" + "text";
//             other families: "text" in the model's template.
//   scienceqa text T = (hint + "\n" if the hint is non-empty) + question + "\n{L}. {option}" per
//             option + "\nAnswer with the option's letter from the given choices directly."
//             (QSVD through VLMEvalKit's LLaVA prompt); LLaVA's converted file: its human turn
//             (<image> removed) + that last sentence, as LLaVA's --single-pred-prompt adds it.
//             LLaVA-1.5 (both layouts), QSVD verbatim (two spaces before <image>, "human"):
//               "A chat between a curious human and an artificial intelligence assistant. The
//               assistant gives helpful, detailed, and polite answers to the human's questions.
//               USER:  <image> {T} ASSISTANT: "
//             (a text-only question: "USER: {T} ASSISTANT: ");
//             Idefics3/SmolVLM, QSVD's SmolVLM path (VLMEvalKit's MCQ prompt with its replacements):
//               ("Hint: {hint}\n") + "Question: {question}\nChoices:\nA. …\nB. …\nAnswer with the
//               letter." in the idefics3 template, then " Answer:" after "Assistant:";
//             LLaVA-NeXT: T in the model's template.
// --template auto | NAME: the same instruction text (vqav2: "{question} Answer with a single word
// or phrase."; textvqa / vizwiz: "text"; scienceqa: T) rendered by that conversation template;
// --template raw: "<image>\n" (when the question has an image) + the instruction text, as is.
//
// Decoding (greedy) stops at the tokenizer's EOS or the template's end-of-turn token
// (<end_of_utterance>, <|im_end|>, <|eot_id|> where the vocabulary has them) or after the task's
// answer-length limit: vqav2 32 new tokens (max_length = prompt + 32), textvqa 128, vizwiz 16,
// scienceqa 16 (--max-new-tokens overrides).
#pragma once
#include <cstdint>
#include <string>

#include "eval/vqa_dataset.h"
#include "models/templates.h"

namespace lowbit {

int64_t vqa_default_max_new_tokens(VqaTask task);

// The rendered prompt for q: one "<image>" when q has an image, none otherwise.
// architecture: the model's (Vlm::architecture()); template_name: "default", or an already
// resolved conversation template name (auto resolved by the caller) or "raw".
std::string vqa_prompt(VqaTask task, const VqaQuestion& q, const std::string& architecture,
                       const std::string& template_name, const std::string& auto_template, const TemplateContext& ctx);

}  // namespace lowbit
