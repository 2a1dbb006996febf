// `lowbit eval vqa` (see vqa_eval.h).
#include "eval/vqa_eval.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <set>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "backend/backend.h"
#include "core/error.h"
#include "core/progress.h"
#include "eval/generate.h"
#include "eval/vqa_dataset.h"
#include "eval/vqa_prompt.h"
#include "eval/vqa_score.h"
#include "eval/vqa_store.h"
#include "io/files.h"
#include "io/image.h"
#include "io/json_util.h"
#include "io/tokenizer.h"
#include "models/llava.h"
#include "models/loader.h"
#include "models/templates.h"
#include "models/vlm.h"
#include "models/vlm_common.h"
#include "quant/checkpoint.h"
#include "quant/vlm_quant.h"

namespace lowbit {

using json = nlohmann::json;
namespace fs = std::filesystem;

void parse_vqa_shard(const std::string& s, int64_t* index, int64_t* count) {
  const size_t slash = s.find('/');
  bool ok = slash != std::string::npos && slash > 0 && slash + 1 < s.size();
  long long i = -1, n = -1;
  if (ok) {
    try {
      size_t u1 = 0, u2 = 0;
      i = std::stoll(s.substr(0, slash), &u1);
      n = std::stoll(s.substr(slash + 1), &u2);
      ok = u1 == slash && u2 == s.size() - slash - 1;
    } catch (const std::exception&) {
      ok = false;
    }
  }
  LOWBIT_CHECK(ok && n >= 1 && i >= 0 && i < n, ArgError,
               "--shard: expected i/n with 0 <= i < n (e.g. 0/4 … 3/4), got '{}'", s);
  *index = i;
  *count = n;
}

namespace {

// Identity of one .safetensors file: its size, its header (every tensor's name, dtype, shape and
// offsets) and a bounded sample of its data: the first and the last kWeightSample bytes after the
// header (the whole data when smaller). Bounded so that fingerprinting a 7B model reads ~8 MiB per
// shard, not 14 GB; two checkpoints of the same shapes (RTN vs GPTQ codes, a fine-tune) differ in
// practically every byte, so the sample tells them apart. A file whose header cannot be read is
// hashed by the same bounded sample of its bytes (the loader reports it later).
constexpr uint64_t kWeightSample = uint64_t(4) << 20;

std::string weights_identity(const fs::path& p) {
  std::FILE* f = std::fopen(p.c_str(), "rb");
  LOWBIT_CHECK(f != nullptr, IoError, "--model: cannot read {}", p.string());
  const uint64_t size = fs::file_size(p);
  const auto read_at = [&](uint64_t off, uint64_t n) {
    std::string b(size_t(n), '\0');
    if (n == 0) return b;
    const bool ok = std::fseek(f, long(off), SEEK_SET) == 0 && std::fread(b.data(), 1, b.size(), f) == b.size();
    if (!ok) {
      std::fclose(f);
      throw IoError(fmt::format("--model: cannot read {} ({} bytes at {})", p.string(), n, off));
    }
    return b;
  };
  uint64_t data = 0;  // where the tensor data begins
  if (size >= 8) {
    const std::string len = read_at(0, 8);
    uint64_t n = 0;
    for (int i = 7; i >= 0; --i) n = (n << 8) | uint8_t(len[size_t(i)]);  // little-endian u64
    if (n <= size - 8) data = 8 + n;
  }
  std::string bytes = fmt::format("{}:", size) + read_at(0, data);  // the header
  const uint64_t body = size - data;
  if (body <= 2 * kWeightSample) {
    bytes += read_at(data, body);
  } else {
    bytes += read_at(data, kWeightSample);
    bytes += read_at(size - kWeightSample, kWeightSample);
  }
  std::fclose(f);
  return fnv1a_hex(bytes);
}

// Content identity of a model directory: the hashes of its config, tokenizer, processor,
// template and lowbit_quant.json files and of each .safetensors file (weights_identity), for the
// directory and each of its immediate subdirectories (e.g. a vision_tower/ folder), keyed by
// relative path.
json dir_identity(const std::string& dir) {
  json id = json::object();
  if (dir.empty()) return id;
  std::vector<fs::path> dirs = {fs::path(dir)};
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec))
    if (e.is_directory()) dirs.push_back(e.path());
  std::sort(dirs.begin() + 1, dirs.end());
  for (const fs::path& d : dirs) {
    const std::string prefix = d == fs::path(dir) ? "" : d.filename().string() + "/";
    for (const char* f : {"config.json", "lowbit_quant.json", "tokenizer.json", "tokenizer.model",
                          "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                          "preprocessor_config.json", "processor_config.json", "chat_template.jinja",
                          "chat_template.json"}) {
      const fs::path p = d / f;
      if (fs::is_regular_file(p)) id[prefix + f] = fnv1a_hex(read_text_file(p.string()));
    }
    std::vector<fs::path> weights;
    for (const auto& e : fs::directory_iterator(d, ec))
      if (e.is_regular_file() && e.path().extension() == ".safetensors") weights.push_back(e.path());
    std::sort(weights.begin(), weights.end());
    for (const fs::path& w : weights) id[prefix + w.filename().string()] = weights_identity(w);
  }
  return id;
}

// The language model's context (max_position_embeddings, HF's default when left out) from
// config.json, without loading the model; -1 when the file does not say.
int64_t language_context(const std::string& dir) {
  const fs::path p = fs::path(dir) / "config.json";
  if (!fs::is_regular_file(p)) return -1;
  const json j = json::parse(read_text_file(p.string()), nullptr, false);
  if (!j.is_object()) return -1;
  const json t = j.contains("text_config") && j["text_config"].is_object() ? llama_text_config(j["text_config"]) : j;
  if (t.contains("max_position_embeddings") && t["max_position_embeddings"].is_number_integer())
    return t["max_position_embeddings"].get<int64_t>();
  return -1;
}

// Token ids of the end-of-turn tokens the templates write, where the vocabulary has them.
std::vector<int32_t> stop_tokens(const Tokenizer& tok) {
  std::vector<int32_t> ids;
  for (const char* t : {"<end_of_utterance>", "<|im_end|>", "<|eot_id|>"}) {
    const int32_t id = tok.token_to_id(t);
    if (id >= 0) ids.push_back(id);
  }
  return ids;
}

struct Selection {
  std::vector<const VqaQuestion*> questions;
};

Selection select(const VqaDataset& d, int64_t limit, int64_t shard_index, int64_t shard_count) {
  Selection s;
  const int64_t n = limit < 0 ? int64_t(d.questions.size()) : std::min<int64_t>(limit, int64_t(d.questions.size()));
  for (int64_t k = 0; k < n; ++k)
    if (k % shard_count == shard_index) s.questions.push_back(&d.questions[size_t(k)]);
  return s;
}

std::string shard_dir(const std::string& out, int64_t i, int64_t n) {
  return (fs::path(out) / fmt::format("shard-{}-of-{}", i, n)).string();
}

// results.json, accuracy.json, submission.json into dir; the summary line on stdout.
void write_reports(const VqaDataset& d, const Selection& sel, const std::map<std::string, json>& records,
                   const json& config, const std::string& dir, int64_t answered_now, double seconds) {
  const VqaReport r = vqa_report(d, sel.questions, records, config);
  const auto dump = [](const json& j) { return j.dump(2, ' ', false, json::error_handler_t::replace) + "\n"; };
  write_file_atomic((fs::path(dir) / "results.json").string(), dump(r.results));
  if (!r.accuracy.is_null()) write_file_atomic((fs::path(dir) / "accuracy.json").string(), dump(r.accuracy));
  if (!r.submission.is_null()) write_file_atomic((fs::path(dir) / "submission.json").string(), dump(r.submission));
  const std::string rate =
      answered_now > 0 ? fmt::format(", {} answered now in {:.1f}s ({:.2f} answers/s)", answered_now, seconds,
                                     double(answered_now) / std::max(seconds, 1e-9))
                       : "";
  if (r.accuracy.is_null()) {
    std::printf("%s: %zu answers in %s%s (no ground truth given: not scored)\n", vqa_task_name(d.task),
                sel.questions.size(), dir.c_str(), rate.c_str());
  } else {
    const int64_t skipped = r.accuracy["skipped"].get<int64_t>();
    std::printf("%s accuracy %.4f (%.2f%%) over %lld questions%s%s -> %s\n", vqa_task_name(d.task),
                r.accuracy["accuracy"].get<double>(), r.accuracy["accuracy_percent"].get<double>(),
                (long long)r.accuracy["questions"].get<int64_t>(),
                skipped ? fmt::format(" ({} skipped: missing images)", skipped).c_str() : "", rate.c_str(), dir.c_str());
  }
  std::fflush(stdout);
}

// config: the run's config without "images" (merging needs no images).
int merge_shards(const VqaEvalOptions& o, const VqaDataset& d, const json& config) {
  // Find OUT/shard-*-of-N.
  int64_t n = -1;
  std::error_code ec;
  LOWBIT_CHECK(fs::is_directory(o.output), IoError, "--merge: --output {} is not a directory", o.output);
  for (const auto& e : fs::directory_iterator(o.output, ec)) {
    long long i = 0, m = 0;
    char tail = 0;
    if (!e.is_directory() || std::sscanf(e.path().filename().c_str(), "shard-%lld-of-%lld%c", &i, &m, &tail) != 2)
      continue;
    LOWBIT_CHECK(n < 0 || n == m, ArgError, "--merge: {} holds shards of different counts ({} and {})", o.output, n, m);
    n = m;
  }
  LOWBIT_CHECK(n >= 1, IoError, "--merge: no shard-i-of-n directories in {}", o.output);
  std::map<std::string, json> records;
  std::map<std::string, int64_t> shard_of;  // key → the shard that answered it
  // Each shard's run used its own --images path (shards may run on other machines): a shard's
  // records carry the fingerprint of this config with that shard's "images".
  std::set<std::string> fingerprints, images;
  for (int64_t i = 0; i < n; ++i) {
    const std::string dir = shard_dir(o.output, i, n);
    const std::string path = (fs::path(dir) / "answers.jsonl").string();
    LOWBIT_CHECK(fs::is_regular_file(path), IoError, "--merge: shard {}/{} is missing ({} not found)", i, n, path);
    const std::string run_json = (fs::path(dir) / "run.json").string();
    LOWBIT_CHECK(fs::is_regular_file(run_json), IoError, "--merge: shard {}/{}: {} not found", i, n, run_json);
    const json sr = parse_json(read_text_file(run_json), run_json);
    LOWBIT_CHECK(sr.is_object() && sr.contains("config") && sr["config"].is_object() &&
                     sr["config"].contains("images") && sr["config"]["images"].is_string(),
                 FormatError, "--merge: {} has no config.images (written by another lowbit version?)", run_json);
    json shard_config = config;
    shard_config["images"] = sr["config"]["images"];
    const std::string shard_fp = fnv1a_hex(shard_config.dump());
    fingerprints.insert(shard_fp);
    images.insert(sr["config"]["images"].get<std::string>());
    size_t line = 0;
    for (json& r : read_vqa_answers(path)) {
      ++line;
      LOWBIT_CHECK(r.value("fingerprint", "") == shard_fp, ArgError,
                   "--merge: {} line {} is from a different run (model, task, questions or decoding differ)", path,
                   line);
      const std::string key = r["key"].get<std::string>();
      // A skipped record answered later in the same shard (a resumed --skip-missing run) is superseded.
      const bool supersedes = records.count(key) && shard_of[key] == i && records[key].value("skipped", false);
      LOWBIT_CHECK(!records.count(key) || supersedes, FormatError,
                   "--merge: question {} is answered twice ({} line {})", key, path, line);
      records[key] = std::move(r);
      shard_of[key] = i;
    }
    const Selection part = select(d, o.limit, i, n);
    int64_t missing = 0;
    std::string first;
    for (const VqaQuestion* q : part.questions)
      if (!records.count(q->key) && missing++ == 0) first = q->key;
    LOWBIT_CHECK(missing == 0, ArgError, "--merge: shard {}/{} is incomplete: {} of its {} questions unanswered "
                 "(first: {}); finish it with --shard {}/{}",
                 i, n, missing, part.questions.size(), first, i, n);
  }
  const Selection all = select(d, o.limit, 0, 1);
  // OUT/answers.jsonl: the records in dataset order, as an unsharded run would have them.
  const std::string out_answers = (fs::path(o.output) / "answers.jsonl").string();
  // The merged run: as an unsharded run with the shards' --images when they agree; else with the
  // list of them (a run on OUT with any one --images is then a different run).
  json merged = config;
  if (images.size() == 1) {
    merged["images"] = *images.begin();
  } else {
    merged["images"] = json::array();
    for (const std::string& im : images) merged["images"].push_back(im);
  }
  const std::string merged_fp = fnv1a_hex(merged.dump());
  fingerprints.insert(merged_fp);
  if (fs::is_regular_file(out_answers) && !o.force)
    for (const json& r : read_vqa_answers(out_answers))
      LOWBIT_CHECK(fingerprints.count(r.value("fingerprint", "")), ArgError,
                   "--merge: {} holds answers from a different run; use --force to replace it", out_answers);
  std::string text;
  for (const VqaQuestion* q : all.questions) {
    json r = records.at(q->key);
    r["fingerprint"] = merged_fp;
    text += r.dump(-1, ' ', false, json::error_handler_t::replace) + "\n";
  }
  write_file_atomic(out_answers, text);
  write_file_atomic((fs::path(o.output) / "run.json").string(),
                    json{{"fingerprint", merged_fp}, {"config", merged}, {"merged_shards", n}}.dump(2) + "\n");
  write_reports(d, all, records, merged, o.output, 0, 0.0);
  return 0;
}

}  // namespace

int run_vqa_eval(const VqaEvalOptions& o) {
  const VqaTask task = parse_vqa_task(o.task);
  if (o.template_name != "default" && o.template_name != "auto" && o.template_name != "raw")
    find_chat_template(o.template_name);  // unknown name: usage error
  LOWBIT_CHECK(is_vlm_dir(o.model), ArgError,
               "--model {}: not a vision-language model directory (LLaVA-1.5, LLaVA-NeXT, Idefics3/SmolVLM)", o.model);
  LOWBIT_CHECK(o.vision_tower.empty() || is_llava_original_dir(o.model), ArgError,
               "--vision-tower is only for the original LLaVA layout (LlavaLlamaForCausalLM); {} is not one", o.model);
  LOWBIT_CHECK(!o.merge || o.shard_count == 1, ArgError, "--merge combines the shards; give it without --shard");
  LOWBIT_CHECK(o.merge || !o.images.empty(), ArgError, "--images DIR is required (the questions' image directory)");
  LOWBIT_CHECK(o.merge || fs::is_directory(o.images), IoError, "--images {}: no such directory", o.images);

  const VqaDataset d = load_vqa_dataset(task, o.questions, o.annotations, o.split);
  LOWBIT_CHECK(!d.questions.empty(), FormatError, "--questions {}: no questions", o.questions);
  if (o.split_given && !d.split_used)
    log_warn(fmt::format("--split has no effect: only ScienceQA's problems.json has splits ({} is a {} questions file)",
                         o.questions, vqa_task_name(task)));
  const std::string tname = o.template_name == "auto" ? resolve_template("auto", o.model) : o.template_name;
  const int64_t max_new = o.max_new_tokens > 0 ? o.max_new_tokens : vqa_default_max_new_tokens(task);
  QuantConfig qc;
  if (o.quant) qc = o.quant(language_context(o.model));
  LOWBIT_CHECK(!qc.any() || !is_quantized_checkpoint(o.model), ArgError,
               "{} is already quantized; quantization flags apply to full-precision models", o.model);

  // What determines the answers (fingerprinted): contents, not paths, except the image directory
  // (its absolute path: resuming with another --images is another run; --merge, which needs no
  // images, accepts shards run with different ones, see merge_shards).
  json config = {{"task", vqa_task_name(task)},
                 {"model", dir_identity(o.model)},
                 {"vision_tower", dir_identity(o.vision_tower)},
                 {"questions", fnv1a_hex(read_text_file(o.questions))},
                 {"template", tname},
                 {"max_new_tokens", max_new},
                 {"tokenizer", o.tokenizer},
                 {"decoding", "greedy"},
                 {"quantization", qc.any() ? qc.to_json() : json(nullptr)}};
  if (d.split_used) config["split"] = o.split;
  if (o.merge) return merge_shards(o, d, config);
  config["images"] = fs::absolute(o.images).lexically_normal().string();
  const std::string fingerprint = fnv1a_hex(config.dump());

  const Selection sel = select(d, o.limit, o.shard_index, o.shard_count);
  const std::string dir = o.shard_count > 1 ? shard_dir(o.output, o.shard_index, o.shard_count) : o.output;
  VqaAnswerStore store(dir, config, fingerprint, o.force);

  // To answer: questions without a record, and those recorded as skipped (--skip-missing) whose
  // image now exists (the new record supersedes the skipped one, see vqa_store.h).
  const auto image_path = [&](const VqaQuestion* q) {
    return q->image.empty() ? std::string() : (fs::path(o.images) / q->image).string();
  };
  std::vector<const VqaQuestion*> todo;
  for (const VqaQuestion* q : sel.questions) {
    if (!store.has(q->key)) {
      todo.push_back(q);
    } else if (store.records().at(q->key).value("skipped", false)) {
      const std::string path = image_path(q);
      if (path.empty() || fs::is_regular_file(path)) todo.push_back(q);
    }
  }
  // Missing images: an error naming the question before any model is loaded, or (--skip-missing)
  // a skipped record.
  std::vector<const VqaQuestion*> run;
  for (const VqaQuestion* q : todo) {
    const std::string path = image_path(q);
    if (path.empty() || fs::is_regular_file(path)) {
      run.push_back(q);
      continue;
    }
    LOWBIT_CHECK(o.skip_missing, IoError,
                 "question {}: image {} not found (--skip-missing records such questions as skipped)", q->key, path);
    store.append({{"key", q->key}, {"question_id", q->question_id}, {"skipped", true},
                  {"reason", "image not found: " + q->image}});
  }

  double seconds = 0;
  if (!run.empty()) {
    std::unique_ptr<Vlm> m = load_vlm(o.model, o.vision_tower);
    std::unique_ptr<Tokenizer> tok = load_tokenizer(o.model, o.tokenizer);
    if (qc.any()) {  // the whole VLM, tower by tower, in memory
      log_info(fmt::format("quantizing {} in memory: {}", o.model, qc.summary()));
      quantize_vlm_in_memory(*m, qc, *tok, o.model);
    }
    const std::string arch = m->architecture();
    const std::string auto_t = resolve_template("auto", o.model);
    const TemplateContext ctx = template_context(o.model);
    GenOptions go;
    go.max_new_tokens = max_new;
    go.eos_id = tok->eos_id() >= 0 ? tok->eos_id() : m->language().cfg.eos_token_id;
    go.stop_ids = stop_tokens(*tok);
    log_info(fmt::format("{}: {} questions selected, {} answered before, {} to answer ({}, template {}, {} new tokens "
                         "max, {} threads)",
                         vqa_task_name(task), sel.questions.size(), sel.questions.size() - todo.size(), run.size(),
                         arch, tname, max_new, cpu_backend().threads()));
    Progress prog("vqa", int64_t(run.size()));
    const auto t_start = std::chrono::steady_clock::now();
    int64_t done = 0;
    for (const VqaQuestion* q : run) {
      const auto t0 = std::chrono::steady_clock::now();
      std::vector<Image> images;
      if (!q->image.empty()) {
        const std::string path = (fs::path(o.images) / q->image).string();
        images.push_back(o.max_image_pixels > 0 ? decode_image(path, o.max_image_pixels) : decode_image(path));
      }
      const std::string prompt = vqa_prompt(task, *q, arch, tname, auto_t, ctx);
      m->set_images(images);
      const std::vector<int32_t> ids = m->prompt_ids(*tok, prompt);
      std::vector<int32_t> out;
      if (images.empty()) {
        out = generate(m->language(), ids, go);
      } else {
        const std::vector<float> x = m->embed(ids);
        out = generate_from_embeds(m->language(), x, int64_t(ids.size()), go);
      }
      std::vector<int32_t> body = out;  // the text without the stop token
      if (!body.empty() && (body.back() == go.eos_id ||
                            std::find(go.stop_ids.begin(), go.stop_ids.end(), body.back()) != go.stop_ids.end()))
        body.pop_back();
      const std::string text = tok->decode(body);
      const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      store.append({{"key", q->key},
                    {"question_id", q->question_id},
                    {"prompt", prompt},
                    {"text", text},
                    {"answer", vqa_answer_as_scored(task, *q, text)},
                    {"prompt_tokens", ids.size()},
                    {"new_tokens", out.size()},
                    {"seconds", secs}});
      ++done;
      seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
      prog.update(done, fmt::format("{:.2f} answers/s", double(done) / std::max(seconds, 1e-9)));
    }
    prog.finish(fmt::format("{:.2f} answers/s", double(done) / std::max(seconds, 1e-9)));
  }
  write_reports(d, sel, store.records(), config, dir, int64_t(run.size()), seconds);
  return 0;
}

}  // namespace lowbit
