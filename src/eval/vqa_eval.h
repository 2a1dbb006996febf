// `lowbit eval vqa`: a VLM answers a VQA dataset, resumably, and the answers are scored as the
// official evaluators score them (datasets: vqa_dataset.h, prompts: vqa_prompt.h, answer file:
// vqa_store.h, metrics: vqa_metrics.h, reports: vqa_score.h).
//
// Output directory (--output OUT):
//   answers.jsonl   one record per question: key, question_id, prompt, text (generated),
//                   answer (as scored), seconds, prompt_tokens, new_tokens, fingerprint; or
//                   {key, question_id, skipped: true, reason} for a missing image with --skip-missing
//   run.json        the run's config and fingerprint
//   results.json    per question (dataset order): key, question_id, answer, text, score
//   accuracy.json   {"accuracy" in [0, 1], ...} when the dataset has ground truth
//   submission.json vqav2: the official results format [{"question_id", "answer"}];
//                   vizwiz: the EvalAI upload format [{"image", "answer"}]
// results.json, accuracy.json and submission.json are written atomically once every selected
// question has a record.
// Selection: --limit N keeps the first N questions of the file; --shard i/n (0 <= i < n) keeps the
// questions whose index k (after --limit) has k mod n == i and writes to OUT/shard-i-of-n/;
// --merge reads OUT/shard-*-of-n/answers.jsonl (all n shards, complete, same fingerprint) and
// writes OUT/answers.jsonl and the reports as an unsharded run would.
// --skip-missing: a question whose image is missing gets a skipped record; a later run (resume)
// answers it once its image exists, the new record superseding the skipped one.
// Quantization flags are part of the fingerprint; the model is quantized only when questions remain
// to be answered (a rerun that only rescores loads nothing).
#pragma once
#include <cstdint>
#include <functional>
#include <string>

#include "quant/config.h"

namespace lowbit {

struct VqaEvalOptions {
  std::string task, model, vision_tower, questions, annotations, images, output;
  std::string template_name = "default";  // default | auto | raw | a conversation template name
  std::string tokenizer = "auto";
  std::string split = "test";             // scienceqa problems.json
  int64_t limit = -1;                     // -1: all
  int64_t max_new_tokens = -1;            // -1: the task's default
  int64_t max_image_pixels = 0;           // 0: the image decoder's default budget
  int64_t shard_index = 0, shard_count = 1;
  bool merge = false, skip_missing = false, force = false;
  bool split_given = false;               // --split was on the command line (warned about when unused)
  // In-memory quantization (the quantization flags, as `eval ppl` takes them): called with the
  // language model's context; a config with any() quantizes the whole VLM tower by tower
  // (quantize_vlm_in_memory) before answering. Empty: none.
  std::function<QuantConfig(int64_t max_context)> quant;
};

// "i/n" → (i, n); ArgError naming --shard unless 0 <= i < n.
void parse_vqa_shard(const std::string& s, int64_t* index, int64_t* count);

// Runs (or merges) and prints the summary line; returns the exit code (0).
int run_vqa_eval(const VqaEvalOptions& opt);

}  // namespace lowbit
