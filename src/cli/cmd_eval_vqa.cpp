// lowbit eval vqa — a vision-language model answers VQAv2 / TextVQA / VizWiz / ScienceQA,
// resumably, scored as the official evaluators score (src/eval/vqa_*.h).
#include "cli/cli.h"
#include "cli/quant_flags.h"
#include "eval/vqa_eval.h"
#include "io/image.h"
#include "models/templates.h"

namespace lowbit::cli {

void add_eval_vqa(CLI::App* eval, Common& common, Runner* run) {
  auto* v = eval->add_subcommand("vqa", "visual question answering accuracy (VQAv2, TextVQA, VizWiz, ScienceQA)");
  struct Opts {
    VqaEvalOptions e;
    std::string shard;
    QuantFlags flags;
  };
  auto o = std::make_shared<Opts>();
  o->e.max_image_pixels = kDefaultMaxImagePixels;
  v->add_option("--model", o->e.model, "vision-language model directory (HF layout, or the original LLaVA layout)")
      ->required();
  v->add_option("--task", o->e.task, "vqav2 | textvqa | vizwiz | scienceqa")->required();
  v->add_option("--questions,--question-file,--question_file", o->e.questions,
                "questions file (VQAv2 questions JSON, LLaVA textvqa/vizwiz .jsonl, ScienceQA LLaVA JSON or "
                "problems.json)")
      ->required();
  v->add_option("--annotations,--annotation-file,--annotation_file", o->e.annotations,
                "ground truth (VQAv2 annotations, TextVQA_0.5.1_val.json, VizWiz val.json; ScienceQA problems.json: "
                "pid_splits.json)");
  v->add_option("--images", o->e.images, "image directory of the questions (not needed with --merge; --image_folder is the calibration images "
                "of the quantization flags)");
  v->add_option("--output", o->e.output, "output directory (answers.jsonl, results.json, accuracy.json)")->required();
  v->add_option("--limit", o->e.limit, "answer only the first N questions of the file (-1: all)")
      ->check(minus_one_or_at_least(1));
  v->add_option("--shard", o->shard, "i/n: answer the questions with index mod n == i (0 <= i < n) into OUTPUT/shard-i-of-n");
  v->add_flag("--merge", o->e.merge, "combine OUTPUT/shard-*-of-n into OUTPUT (no model run)");
  v->add_option("--template", o->e.template_name,
                "default (the seed tools' prompt per task and family), auto (the model's conversation template), raw, "
                "or a template name: " + chat_template_names())
      ->capture_default_str();
  auto* split = v->add_option("--split", o->e.split, "ScienceQA problems.json split (from pid_splits.json)")
                    ->capture_default_str();
  v->add_flag("--skip-missing,--skip_missing", o->e.skip_missing,
              "record questions whose image is missing as skipped instead of stopping");
  v->add_flag("--force", o->e.force, "replace answers from a different run in OUTPUT (moved to answers.jsonl.old)");
  v->add_option("--vision-tower,--vision_tower", o->e.vision_tower,
                "local CLIP vision tower directory (original LLaVA layout, LlavaLlamaForCausalLM)");
  v->add_option("--max-new-tokens,--max_new_tokens", o->e.max_new_tokens,
                "answer length limit (-1: the task's: vqav2 32, textvqa 128, vizwiz 16, scienceqa 16)")
      ->check(minus_one_or_at_least(1));
  v->add_option("--max-image-pixels,--max_image_pixels", o->e.max_image_pixels,
                "refuse images whose header claims more pixels (decompression bombs)")
      ->capture_default_str()
      ->check(CLI::Range(int64_t(1), int64_t(1) << 40));
  v->add_option("--tokenizer", o->e.tokenizer, "auto | json | spm")->capture_default_str();
  v->add_option("--threads", common.threads, "CPU threads (0: all cores)")->check(CLI::Range(0, 4096));
  v->add_flag("--quiet", common.quiet, "no progress output");
  o->flags.add(v);  // in-memory quantization of the whole VLM before answering (as eval ppl)
  *run = [o, &common, split]() {
    apply_common(common);
    o->e.split_given = split->count() > 0;
    if (!o->shard.empty()) parse_vqa_shard(o->shard, &o->e.shard_index, &o->e.shard_count);
    o->e.quant = [f = &o->flags](int64_t max_context) { return f->resolve(max_context); };
    return run_vqa_eval(o->e);
  };
}

}  // namespace lowbit::cli
