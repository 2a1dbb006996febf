// VQA datasets in the files users already have, read into one question list.
//
//   vqav2     --questions v2_OpenEnded_mscoco_<subtype>_questions.json
//               {"data_subtype": "val2014", "questions": [{"image_id", "question", "question_id"}]}
//             --annotations v2_mscoco_<subtype>_annotations.json (optional: without it nothing is scored)
//               {"annotations": [{"question_id", "answers": [{"answer", ...}] × 10, "answer_type",
//                 "question_type", ...}]}
//             image: <images>/COCO_<data_subtype>_<image_id as %012d>.jpg (the COCO naming).
//   textvqa   --questions llava_textvqa_val_v051_ocr.jsonl, one {"question_id", "image", "text"} per
//             line; LLaVA writes the TextVQA image_id as question_id, and "text" is the question,
//             "Reference OCR token: …" and the instruction, one per line.
//             --annotations TextVQA_0.5.1_val.json {"data": [{"image_id", "question", "answers"}]},
//             matched as LLaVA's eval_textvqa.py does: (question_id, the question line of "text",
//             lower-cased) against (image_id, question lower-cased); the question line is the
//             first line, or the second when "text" starts with "Reference OCR token:".
//             image: <images>/<image>.
//   vizwiz    --questions llava_test.jsonl-style, one {"question_id", "image", "text"} per line.
//             --annotations (optional) the VizWiz val.json: [{"image", "question", "answers":
//             [{"answer", "answer_confidence"}], "answer_type", "answerable"}], matched by image.
//   scienceqa --questions either LLaVA's converted test file (llava_test_CQM-A.json: [{"id",
//             "image"?, "conversations": [{"from": "human", "value"}, {"from": "gpt", "value"}]}];
//             the truth is the gpt turn's letter ("X", "X. …" or "… The answer is X."), the options
//             are the human turn's "X. text" lines or "(X) text" items), or ScienceQA's problems.json
//             ({pid: {"question", "choices", "answer" (index), "hint", "image", "subject", "grade",
//             …}}) with pid_splits.json (--annotations, else the file of that name beside
//             problems.json) choosing the split (--split, default test).
//             image: <images>/<image> (LLaVA file) or <images>/<pid>/<image> (problems.json); a
//             question without an image is asked as text alone.
//             Breakdowns: subject and grade band (G1-6, G7-12; problems.json only) and context as
//             ScienceQA's evaluator defines it, overlapping: has_text (a non-empty hint; in the
//             LLaVA file a "Context: " line other than "N/A"), has_image, no_context (neither).
//
// Every question gets a key unique in the file: its question id as a string ("id" or pid for
// ScienceQA); an id repeated in the file gets "#2", "#3", … on its later occurrences (LLaVA's
// TextVQA file repeats image ids). Keys index answers.jsonl, resuming and sharding.
#pragma once
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace lowbit {

enum class VqaTask { VQAv2, TextVQA, VizWiz, ScienceQA };
VqaTask parse_vqa_task(const std::string& name);  // ArgError naming --task
const char* vqa_task_name(VqaTask t);

struct VqaQuestion {
  std::string key;               // unique (see above)
  nlohmann::json question_id;    // as written in the file
  std::string text;              // vqav2: the question; textvqa/vizwiz: "text" as is; scienceqa: the question
  std::string image;             // path relative to --images; empty: no image
  // Ground truth (has_truth false: not scored).
  bool has_truth = false;
  std::vector<std::string> answers;          // human answers (vqav2, textvqa, vizwiz)
  std::string answer_letter;                 // scienceqa
  // ScienceQA prompt pieces.
  std::string hint;                          // problems.json "hint" (context)
  std::map<std::string, std::string> options;  // letter → option text
  std::string llava_text;                    // LLaVA file: the human turn, <image> removed, stripped
  // Breakdown groups, e.g. {"answer_type": "yes/no"}, {"subject": "natural science"}; a question
  // may be in several values of one group (ScienceQA's context: has_text and has_image overlap).
  std::multimap<std::string, std::string> groups;
};

struct VqaDataset {
  VqaTask task;
  std::string data_subtype;  // vqav2
  bool scored = false;       // ground truth available
  std::vector<VqaQuestion> questions;
  bool split_used = false;   // the split chose the questions (scienceqa problems.json)
};

// Reads the files (IoError naming a missing file, FormatError naming the file and the entry at
// fault). split: scienceqa problems.json only.
VqaDataset load_vqa_dataset(VqaTask task, const std::string& questions, const std::string& annotations,
                            const std::string& split = "test");

}  // namespace lowbit
