// VQA answer normalization and per-question scores, as the official evaluators compute them.
// Every rule below was read from the evaluator named with it; lowbit reimplements them.
//
// (A) The official VQA evaluator (GT-Vision-Lab/VQA PythonEvaluationTools/vqaEvaluation/vqaEval.py,
//     the revision vendored by the GPTQ/QuIP-for-VLMs seed, bitshrine/quipvlm vqav2/; see
//     ../shared/docs/seed-protocols.md §3). Used for VQAv2 and VizWiz.
//   A1. Prediction and each ground-truth answer: '\n' and '\t' become ' ', then leading/trailing
//       whitespace is stripped.
//   A2. Condition: only when the ground-truth answers are NOT all identical (after A1) are the
//       ground truths and the prediction normalized by A3+A4. When all answers are identical the
//       stripped prediction must equal them exactly (case-sensitive, punctuation kept).
//       (An older revision of the same file normalized the prediction always and the ground truth
//       by A3 only; lowbit follows the revision the seed runs.)
//   A3. processPunctuation(text): for each p of  ; / [ ] " { } ( ) = + \ _ - > < @ ` , ? !
//       (in that order): if the ORIGINAL text contains p followed by a space, or a space followed
//       by p, or anywhere a digit-comma-digit ("(\d)(,)(\d)"), every p is deleted; otherwise every
//       p is replaced by a space. Then periods are stripped by the pattern "(?!<=\d)(\.)(?!\d)":
//       its "lookbehind" is a typo (a lookahead for the two characters "<=" + digit, always true at
//       a '.'), so it deletes every '.' NOT followed by a digit ("3.5" keeps its point); and the
//       evaluator passes re.UNICODE (= 32) as re.sub's count, so at most the first 32 such
//       periods are deleted.
//   A4. processDigitArticle(text): lower-case, split on whitespace; each word: number words
//       none/zero→0, one→1 … ten→10; the articles a, an, the are dropped; then each remaining word
//       found in the contraction table (kContractions in vqa_metrics.cpp; e.g. dont→don't,
//       whats→what's) is replaced; words joined by one space. The table's capitalised keys
//       (Id've, I'dve, Im, Ive) can never match a lower-cased word: "im" stays "im".
//   A5. Accuracy of a prediction against n (=10) answers: for each answer i, the other n-1 answers
//       are a subset; acc_i = min(1, #{j != i : answer_j == prediction} / 3); the question's
//       accuracy is the mean of the n acc_i (the evaluator removes answer i by its dict, whose
//       answer_id is unique, so exactly one answer is left out).
//
// (B) EvalAI's answer processor (LLaVA llava/eval/m4c_evaluator.py EvalAIAnswerProcessor, from
//     facebookresearch/mmf pythia/tasks/processors.py). Used by TextVQA (both sides) and for the
//     VizWiz upload answers. In order:
//   B1. word_tokenize: lower-case; delete every ',' and '?'; "'s" → " 's"; strip.
//   B2. '\n', '\t' → ' '; strip.
//   B3. processPunctuation as A3, except the digit-comma-digit condition is "(?<=\d)(\,)+(?=\d)"
//       (one or more commas) — moot in practice, B1 already deleted every comma.
//   B4. processDigitArticle as A4.
//   TextVQA accuracy (TextVQAAccuracyEvaluator): the prediction and all 10 ground-truth answers go
//   through B; then A5 (without A2's condition). (The evaluator asserts exactly 10 answers.)
//
// (C) ScienceQA option extraction (VLMEvalKit vlmeval/utils/matching_util.py can_infer, as
//     QSVD's ScienceQA_TEST evaluation runs it with exact matching; seed-protocols.md §1):
//   C1. If the text contains one of VLMEvalKit's refusal phrases ("Sorry, I can't help with images
//       of people yet.", "I can't process this file.", "I'm sorry, but without the image
//       provided", "Cannot determine the answer") the answer is 'Z' (wrong).
//   C2. Each of  . ( ) [ ] , : ; ! * # { }  is replaced by a space; the text is split on
//       whitespace. If exactly one of the question's option letters appears as a whole token, it
//       is the answer. If none appears and a token "Z" does, the answer is 'Z'.
//   C3. Otherwise (no letter, or several): lower-cased option texts are searched as substrings of
//       the lower-cased output; exactly one option matching gives its letter.
//   C4. Otherwise 'Z' (wrong: no judge model under exact matching).
//   (Later VLMEvalKit revisions also require that single letter to be among the last 5 tokens, and
//   with VERBOSE set refuse a lone "A" in a text of more than 3 tokens; lowbit follows the rule as
//   seed-protocols.md records it for the revision QSVD pins: any position, no VERBOSE switch.)
//
// Text handling: Python's str.lower/split/strip are Unicode-aware; lowbit lower-cases ASCII and
// Latin-1 letters (UTF-8 À..Þ) and treats ASCII whitespace (space, \t \n \v \f \r, \x1c-\x1f) as
// whitespace; digits are ASCII 0-9.
#pragma once
#include <map>
#include <string>
#include <vector>

namespace lowbit {

// A3 (comma_plus = false) / B3 (comma_plus = true).
std::string vqa_process_punctuation(const std::string& text, bool comma_plus = false);
// A4 / B4.
std::string vqa_process_digit_article(const std::string& text);
// B1..B4.
std::string evalai_normalize(const std::string& text);

// A1..A5: the official VQA accuracy of `prediction` against the human answers, in [0, 1].
double vqa_official_accuracy(const std::string& prediction, const std::vector<std::string>& answers);
// A5 alone on already normalized strings (exposed for tests).
double leave_one_out_accuracy(const std::string& prediction, const std::vector<std::string>& answers);
// B then A5: the TextVQA (EvalAI) soft accuracy, in [0, 1].
double textvqa_accuracy(const std::string& prediction, const std::vector<std::string>& answers);

// C1..C4: the option letter ("A".."Z" key of `options`) read from `text`, or "Z" when none can
// be inferred. options: letter → option text.
std::string scienceqa_extract_letter(const std::string& text, const std::map<std::string, std::string>& options);

}  // namespace lowbit
