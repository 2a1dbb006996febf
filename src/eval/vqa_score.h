// From answer records to the numbers: the answer as scored, its score, results.json and
// accuracy.json, and the upload files of the official servers.
//
//   answer as scored   vqav2, textvqa: the generated text stripped (the evaluators normalize it);
//                      vizwiz: EvalAI's processor applied (what LLaVA writes to the upload file);
//                      scienceqa: the extracted letter (vqa_metrics.h C1-C4; "Z" = none).
//   score              vqav2, vizwiz: the official VQA accuracy (A1-A5); textvqa: EvalAI soft
//                      accuracy (B + A5); scienceqa: 1 if the letter is the truth, else 0.
//   accuracy.json      {"task", "accuracy" (mean score over the scored questions, in [0, 1]),
//                      "accuracy_percent" (100·accuracy rounded to 2 decimals, as the VQA
//                      evaluator prints), "questions", "skipped", "by": {group: {value:
//                      {"accuracy", "questions"}}}}: vqav2 by answer_type and question_type, vizwiz
//                      by answer_type and answerable, scienceqa by subject, context (image / text /
//                      no context) and grade (G1-6 / G7-12) where the file has them.
//                      Skipped questions (--skip-missing) are left out of the mean and counted.
#pragma once
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "eval/vqa_dataset.h"

namespace lowbit {

std::string vqa_answer_as_scored(VqaTask task, const VqaQuestion& q, const std::string& generated);
double vqa_score(VqaTask task, const VqaQuestion& q, const std::string& answer);

struct VqaReport {
  nlohmann::json results;   // {"task", "config", "questions": [...]} in dataset order
  nlohmann::json accuracy;  // null when the dataset has no ground truth
  nlohmann::json submission;  // vqav2: [{"question_id", "answer"}]; vizwiz: [{"image", "answer"}]; else null
};
// questions: the run's selection, each with a record in `records` (key → record).
VqaReport vqa_report(const VqaDataset& d, const std::vector<const VqaQuestion*>& questions,
                     const std::map<std::string, nlohmann::json>& records, const nlohmann::json& config);

}  // namespace lowbit
