// lowbit quarot — the QuaRot-family `fake_quant/main.py` (spcl/QuaRot, GPTAQ's with
// --use_v2/--asym_calibrate and --enable_aq_calibration, the skew-based one's --a_auto_asym)
// as one command, with those scripts' flags under their own names:
//
//   load --model → [--rotate: QuaRot rotation, online Hadamards]
//   → weights: GPTQ / GPTAQ (calibration: --nsamples windows of the model's seqlen from
//     --cal_dataset's train split) or RTN (--w_rtn), or --load_qmodel_path
//   → activation / K / V quantizers (--a_*, --k_*, --v_*; --a_auto_asym decides per linear)
//   → perplexity on --eval_dataset's test split at the model's seqlen
//     (seqlen = min(2048, context), QuaRot's model.seqlen = 2048 capped by the context)
//   → --lm_eval: zero-shot --tasks, and the seed's printed dict {task: acc_norm or acc, acc_avg}.
//
// Dataset names resolve to files in --data_dir (default $LOWBIT_SHARED/data/text, else
// ../shared/data/text); a path to an existing file is also accepted (lowbit's extension).
// Seed flags lowbit does not implement are refused by name (exit 2), never ignored.
#include <cctype>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <map>

#include <nlohmann/json.hpp>

#include "cli/cli.h"
#include "cli/quant_common.h"
#include "cli/quant_flags.h"
#include "core/error.h"
#include "core/progress.h"
#include "eval/perplexity.h"
#include "eval/zeroshot.h"
#include "io/files.h"
#include "io/tokenizer.h"
#include "quant/checkpoint.h"
#include "quant/checkpoint_meta.h"

namespace lowbit::cli {

namespace fs = std::filesystem;

namespace {

// The seed's dataset names and the files that hold their splits. Calibration reads the
// train split as QuaRot's data_utils does (random windows of the whole joined text), the
// perplexity the test split (C4: the validation shard, first 256 windows).
struct DatasetFiles {
  const char* name;
  const char* train;  // nullptr: calibration not implemented for this dataset
  const char* test;
};
constexpr DatasetFiles kDatasets[] = {
    {"wikitext2", "wikitext2_train.txt", "wikitext2_test.txt"},  // "\n\n".join of the HF rows
    {"ptb", "ptb.train.txt", "ptb.test.txt"},                    // " ".join of the sentences
    {"c4", nullptr, "c4_validation.txt"},  // ' '.join of the first 1100 en validation documents
};

std::string default_data_dir() {
  const char* s = std::getenv("LOWBIT_SHARED");
  return (fs::path(s && *s ? s : "../shared") / "data" / "text").string();
}

// A seed dataset name → its split's file in data_dir (IoError naming the expected file when
// missing); anything else must be an existing file (lowbit's extension).
std::string resolve_dataset(const std::string& v, bool train, const std::string& data_dir, const char* flag) {
  for (const DatasetFiles& d : kDatasets) {
    if (v != d.name) continue;
    if (train && !d.train)
      throw ArgError(fmt::format("{} {}: calibration on C4 (per-document random windows) is not implemented in "
                                 "lowbit; use wikitext2, ptb or a text file",
                                 flag, v));
    const fs::path p = fs::path(data_dir) / (train ? d.train : d.test);
    LOWBIT_CHECK(fs::is_regular_file(p), IoError,
                 "{} {}: expected the {} split at {} (set --data_dir, or pass a text file)", flag, v,
                 train ? "train" : "test", p.string());
    return p.string();
  }
  LOWBIT_CHECK(fs::is_regular_file(v), IoError, "{} {}: not a dataset name (wikitext2, ptb, c4) nor an existing file",
               flag, v);
  return v;
}

// Seed flags lowbit does not implement: given on the command line, each is refused by name.
struct Refused {
  const char* names;  // CLI11 names (the --no- form of a boolean is its default and accepted)
  bool takes_value;
  const char* why;
};
constexpr Refused kRefused[] = {
    {"--wandb", false, "Weights & Biases logging is not implemented in lowbit (use --output-json)"},
    {"--wandb_id", true, "Weights & Biases logging is not implemented in lowbit (use --output-json)"},
    {"--wandb_project", true, "Weights & Biases logging is not implemented in lowbit (use --output-json)"},
    {"--hf_token", true, "lowbit reads local model directories only (no Hugging Face Hub download)"},
    {"--distribute", false, "multi-GPU model distribution is not implemented in lowbit"},
    {"--capture_layer_io", false, "dumping a layer's inputs/outputs is not implemented in lowbit"},
    {"--layer_idx", true, "it selects the layer for --capture_layer_io, which lowbit does not implement"},
    {"--save_name", true, "the seed's experiments/<model>/<save_name> log folder is not implemented (use --output-json)"},
    {"--rotation_seed", true, "QuaRot parses it but never uses it; lowbit's --rotate_seed seeds R1 (default: --seed)"},
    {"--k_pre_rope", false, "pre-RoPE K quantization is not implemented (QuaRot raises NotImplementedError too)"},
};

// The settings a --load_qmodel_path checkpoint fixes: the command line may not contradict them.
void check_loaded_config(const QuantConfig& saved, const QuantConfig& asked, const std::string& path,
                         const CLI::App* sub) {
  const nlohmann::json s = saved.to_json(), a = asked.to_json();
  for (const char* section : {"weights", "activations", "kv_cache", "rotation"})
    for (auto& [key, val] : s.at(section).items()) {
      const std::string flag = "--" + key;
      if (!sub->get_option_no_throw(flag) || sub->count(flag) == 0) continue;  // only what was given
      LOWBIT_CHECK(a.at(section).at(key) == val, ArgError,
                   "--load_qmodel_path {} was quantized with {} {}, the command line says {}", path, flag, val.dump(),
                   a.at(section).at(key).dump());
    }
}

}  // namespace

void add_quarot(CLI::App& app, Common& common, Runner* run) {
  auto* c = app.add_subcommand(
      "quarot", "QuaRot / GPTAQ / skew-based main.py: quantize, WikiText-2 perplexity, zero-shot (--lm_eval)");
  struct Opts {
    std::string model, eval_dataset = "wikitext2", data_dir, save_qmodel_path, load_qmodel_path, output_json,
        tasks_dir, tokenizer = "auto";
    int64_t bsz = 32, lm_eval_batch_size = 128, seqlen = -1, max_windows = -1, eval_begin = 0, eval_end = -1,
            limit = -1;
    bool lm_eval = false;
    std::vector<std::string> tasks{"piqa", "hellaswag", "arc_easy", "arc_challenge", "winogrande", "lambada"};
    std::vector<std::pair<const Refused*, CLI::Option*>> refused;
    std::vector<std::string> refused_values;
    QuantFlags flags;
  };
  auto o = std::make_shared<Opts>();
  o->refused_values.resize(std::size(kRefused));
  c->add_option("--model", o->model, "model directory (the seed takes a Hub name)")->required();
  c->add_option("--eval_dataset", o->eval_dataset, "wikitext2 | ptb | c4, or a text file")->capture_default_str();
  c->add_option("--data_dir", o->data_dir, "folder of the dataset files (default: $LOWBIT_SHARED/data/text or "
                                           "../shared/data/text)");
  c->add_option("--bsz", o->bsz, "the seed's PPL batch size: accepted; lowbit runs windows one at a time and the "
                                 "perplexity does not depend on it")
      ->check(CLI::Range(int64_t(1), int64_t(1) << 20));
  c->add_option("--save_qmodel_path", o->save_qmodel_path, "write the quantized model (a lowbit checkpoint directory)");
  c->add_option("--load_qmodel_path", o->load_qmodel_path, "evaluate a lowbit checkpoint written by --save_qmodel_path");
  c->add_flag("--lm_eval", o->lm_eval, "also run the zero-shot --tasks");
  c->add_option("--tasks", o->tasks, "zero-shot tasks (space- or comma-separated)")->delimiter(',');
  c->add_option("--lm_eval_batch_size", o->lm_eval_batch_size,
                "the seed's lm-eval batch size: requests per batched zero-shot forward (as eval zeroshot "
                "--batch-size; default: eval zeroshot's); accuracies do not depend on it")
      ->check(CLI::Range(int64_t(1), int64_t(1) << 20));
  // lowbit's own additions
  c->add_option("--seqlen", o->seqlen, "lowbit: model seqlen for calibration and perplexity (default: min(2048, "
                                       "context), as QuaRot)")
      ->check(CLI::Range(int64_t(2), int64_t(1) << 24));
  c->add_option("--eval_begin", o->eval_begin, "lowbit: first character of the evaluation text")
      ->check(CLI::NonNegativeNumber);
  c->add_option("--eval_end", o->eval_end, "lowbit: end character of the evaluation text (-1: end)")
      ->check(minus_one_or_at_least(0));
  c->add_option("--max_windows", o->max_windows, "lowbit: evaluate at most this many windows (-1: all)")
      ->check(minus_one_or_at_least(1));
  c->add_option("--tasks_dir", o->tasks_dir, "lowbit: folder of <task>.jsonl (default: ../shared/data/tasks)");
  c->add_option("--limit", o->limit, "lowbit: first N items of each zero-shot task (-1: all)")
      ->check(minus_one_or_at_least(1));
  c->add_option("--output-json,--output_json", o->output_json, "lowbit: write the results as JSON");
  c->add_option("--tokenizer", o->tokenizer, "auto | json | spm")->capture_default_str();
  c->add_option("--threads", common.threads, "CPU threads (0: all cores)")->check(CLI::Range(0, 4096));
  add_device_option(c, common);
  c->add_flag("--quiet", common.quiet, "no progress output");
  for (size_t i = 0; i < std::size(kRefused); ++i) {
    const Refused& r = kRefused[i];
    CLI::Option* opt = r.takes_value ? c->add_option(std::string(r.names), o->refused_values[i])
                                     : c->add_flag(std::string(r.names));
    opt->description(std::string("refused: ") + r.why)->group("Seed flags lowbit refuses");
    o->refused.push_back({&r, opt});
    if (!r.takes_value)  // --no-X is the seed's default: accepted, it asks for nothing
      c->add_flag(std::string("--no-") + (r.names + 2))->description("the default")->group("Seed flags lowbit refuses");
  }
  o->flags.add(c);
  *run = [o, &common, c]() {
    apply_common(common);
    for (auto& [r, opt] : o->refused)
      LOWBIT_CHECK(opt->count() == 0, ArgError, "{} is not supported: {}", r->names, r->why);
    if (!o->output_json.empty()) check_output_file(o->output_json, "--output-json");
    // Zero-shot tasks (lowbit eval zeroshot's scoring): names and files checked before any work.
    ZeroShotOptions zo;
    if (o->lm_eval) {
      zo.tasks_dir = o->tasks_dir;
      if (zo.tasks_dir.empty()) {
        const char* env = std::getenv("LOWBIT_SHARED");
        zo.tasks_dir = (fs::path(env && *env ? env : "../shared") / "data" / "tasks").string();
      }
      zo.limit = o->limit;
      LOWBIT_CHECK(!o->tasks.empty(), ArgError, "--tasks: no task given");
      for (const std::string& t : o->tasks) task_kind(t);  // ArgError naming an unknown task (listing the known)
      for (const std::string& t : o->tasks) {
        const fs::path f = fs::path(zo.tasks_dir) / (t + ".jsonl");
        LOWBIT_CHECK(fs::is_regular_file(f), IoError, "--tasks {}: {} not found (--tasks_dir names the folder)", t,
                     f.string());
      }
    } else {
      LOWBIT_CHECK(c->count("--tasks") == 0 && c->count("--limit") == 0 && c->count("--tasks_dir") == 0, ArgError,
                   "--tasks / --limit / --tasks_dir select zero-shot tasks: give --lm_eval too");
    }
    LOWBIT_CHECK(o->load_qmodel_path.empty() || o->save_qmodel_path.empty(), ArgError,
                 "--save_qmodel_path and --load_qmodel_path exclude each other (the seed: \"Cannot save a quantized "
                 "model if it is already loaded!\")");
    if (!o->save_qmodel_path.empty()) check_output_dir(o->save_qmodel_path);
    LOWBIT_CHECK(o->eval_end < 0 || o->eval_end > o->eval_begin, ArgError,
                 "--eval_end {} must be greater than --eval_begin {}", o->eval_end, o->eval_begin);
    if (c->count("--bsz"))
      log_info("--bsz: windows are evaluated one at a time; the perplexity is the same for every batch size");
    if (c->count("--lm_eval_batch_size")) {
      if (o->lm_eval)
        zo.batch_size = o->lm_eval_batch_size;  // eval zeroshot's --batch-size
      else
        log_info("--lm_eval_batch_size: no zero-shot tasks run without --lm_eval; it changes nothing");
    }
    const std::string data_dir = o->data_dir.empty() ? default_data_dir() : o->data_dir;
    LOWBIT_CHECK(!is_quantized_checkpoint(o->model), ArgError,
                 "--model {} is a lowbit quantized checkpoint; give the full-precision model (and the checkpoint as "
                 "--load_qmodel_path)",
                 o->model);
    // Eval data first: a missing file is reported before minutes of quantization.
    const std::string eval_file = resolve_dataset(o->eval_dataset, false, data_dir, "--eval_dataset");

    LlamaModel m = LlamaModel::load(o->model);
    const int64_t seqlen = o->seqlen > 0 ? o->seqlen : std::min<int64_t>(2048, m.cfg.max_position);
    LOWBIT_CHECK(seqlen <= m.cfg.max_position, ArgError, "--seqlen {} is larger than the model's context ({})", seqlen,
                 m.cfg.max_position);
    QuantConfig qc = o->flags.resolve(m.cfg.max_position);
    check_no_vlm_settings(qc, o->model, "lowbit quarot quantizes LLaMA-family language models");
    if (c->count("--cal_seqlen") == 0) qc.cal_seqlen = seqlen;
    // QuaRot without --fp32_had runs its online Hadamards in the model's dtype: f16 models
    // round their input and output to f16, f32 models compute them in f32.
    if (c->count("--fp32_had") == 0 && c->count("--no-fp32_had") == 0)
      qc.fp32_had = m.layers.empty() || m.layers[0].q_proj.W.dtype() != DType::F16;
    auto tok = load_tokenizer(o->model, o->tokenizer);
    nlohmann::json out = {{"model", o->model}, {"seqlen", seqlen}};

    if (!o->load_qmodel_path.empty()) {
      const std::string qpath = (fs::path(o->load_qmodel_path) / "lowbit_quant.json").string();
      LOWBIT_CHECK(is_quantized_checkpoint(o->load_qmodel_path), IoError,
                   "--load_qmodel_path {}: not a lowbit quantized checkpoint (no {})", o->load_qmodel_path, qpath);
      const QuantCheckpointMeta meta = parse_quant_meta(read_text_file(qpath), qpath);
      check_loaded_config(meta.cfg, qc, o->load_qmodel_path, c);
      m = load_quantized(o->load_qmodel_path);
      qc = meta.cfg;
      log_info(fmt::format("loaded {} ({})", o->load_qmodel_path, qc.summary()));
    } else if (qc.any()) {
      if (qc.needs_calibration()) {
        const bool dflt = qc.cal_dataset.empty();  // the seed's default calibration set
        qc.cal_dataset = resolve_dataset(dflt ? "wikitext2" : qc.cal_dataset, true, data_dir,
                                         dflt ? "--cal_dataset (default)" : "--cal_dataset");
        qc.validate();
      }
      QuantizedModel q = quantize_in_memory(m, qc, *tok);
      out["quantization"] = {{"config", qc.to_json()}, {"summary", qc.summary()}, {"report", q.report}};
      if (!o->save_qmodel_path.empty()) {
        save_quantized(m, q, o->model, o->save_qmodel_path);
        log_info("saved the quantized model to " + o->save_qmodel_path);
        out["save_qmodel_path"] = o->save_qmodel_path;
      }
    } else {
      LOWBIT_CHECK(o->save_qmodel_path.empty(), ArgError,
                   "--save_qmodel_path: nothing is quantized (give --w_bits / --a_bits / --k_bits / --v_bits / "
                   "--rotate)");
    }

    // Perplexity: eval ppl's protocol (one BOS, non-overlapping windows, tail dropped);
    // C4 as QuaRot: the first 256 windows.
    std::string text = read_text_file(eval_file);
    if (o->eval_begin != 0 || o->eval_end >= 0) text = utf8_slice(text, o->eval_begin, o->eval_end);
    LOWBIT_CHECK(!text.empty(), ArgError, "--eval_dataset {} ({}): the selected text is empty", o->eval_dataset,
                 eval_file);
    const std::vector<int32_t> ids = tokenize_stream(*tok, text, m.cfg.bos_token_id);
    PplOptions po;
    po.seqlen = seqlen;
    po.max_windows = o->max_windows;
    if (o->eval_dataset == "c4" && (po.max_windows < 0 || po.max_windows > 256)) po.max_windows = 256;
    const PplResult r = perplexity(m, ids, po);
    // The seed's line ("WIKITEXT2 PPL: 5.472"), then lowbit's detail.
    std::string shown = o->eval_dataset;
    for (const DatasetFiles& d : kDatasets)
      if (shown == d.name)
        for (char& ch : shown) ch = char(std::toupper((unsigned char)ch));
    std::printf("%s PPL: %.3f\n", shown.c_str(), r.ppl);
    std::printf("ppl %.4f  (nll %.6f, %lld windows of %lld tokens from %s, %.1fs)\n", r.ppl, r.nll,
                (long long)r.windows, (long long)r.seqlen, eval_file.c_str(), r.seconds);
    out["eval_dataset"] = o->eval_dataset;
    out["eval_file"] = eval_file;
    out["eval_begin"] = o->eval_begin;
    out["eval_end"] = o->eval_end;
    out["ppl"] = r.ppl;
    out["nll"] = r.nll;
    out["tokens"] = r.tokens;
    out["windows"] = r.windows;

    if (o->lm_eval) {
      nlohmann::json z = eval_zeroshot(m, *tok, o->tasks, zo);
      // The seed prints {task: round(acc_norm, else acc, 4), ..., 'acc_avg': round(mean, 4)}.
      auto py_float = [](double v) {
        std::string t = fmt::format("{}", v);
        if (t.find_first_of(".en") == std::string::npos) t += ".0";
        return t;
      };
      nlohmann::json metric = nlohmann::json::object();
      std::string line = "{";
      double sum = 0;
      for (const std::string& t : o->tasks) {
        const nlohmann::json& r = z.at("results").at(t);
        const double v = std::round((r.contains("acc_norm") ? r.at("acc_norm") : r.at("acc")).get<double>() * 1e4) / 1e4;
        metric[t] = v;
        sum += v;
        line += fmt::format("'{}': {}, ", t, py_float(v));
      }
      const double avg = std::round(sum / double(o->tasks.size()) * 1e4) / 1e4;
      metric["acc_avg"] = avg;
      std::printf("%s'acc_avg': %s}\n", line.c_str(), py_float(avg).c_str());
      out["lm_eval"] = z;
      out["metric_vals"] = metric;
    }
    if (!o->output_json.empty()) write_file_atomic(o->output_json, out.dump(2) + "\n");
    return 0;
  };
}

}  // namespace lowbit::cli
