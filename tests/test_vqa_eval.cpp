// `lowbit eval vqa` end to end (issue 10): small datasets written here in each official format
// (the two photos of ../shared/data/images under the names the formats use), answered by the tiny
// VLMs (random weights: the answers are meaningless, the plumbing is what is tested). Scores are
// checked against ground truth written from the first run's answers so that the expected
// accuracy is known by hand (e.g. an answer given by 2 of 10 annotators scores 0.6); resume after
// an interrupted run (torn last line, lost lines) gives exactly the uninterrupted records; shards
// merged equal the unsharded run; bad inputs fail with one line naming the question / line.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "eval/vqa_dataset.h"
#include "eval/vqa_metrics.h"
#include "testing.h"

using lowbit::test::expect_error_line;
using lowbit::test::read_file;
using lowbit::test::RunResult;
using lowbit::test::run_lowbit;
using lowbit::test::temp_dir;
using lowbit::test::write_file;
using json = nlohmann::json;
namespace fs = std::filesystem;

namespace {

const char* kVicuna =
    "A chat between a curious human and an artificial intelligence assistant. The assistant gives helpful, detailed, "
    "and polite answers to the human's questions.";

// Records of OUT/answers.jsonl by key, without the timing field.
std::map<std::string, json> records(const std::string& out) {
  std::map<std::string, json> r;
  std::ifstream f(out + "/answers.jsonl");
  std::string line;
  while (std::getline(f, line)) {
    json j = json::parse(line);
    j.erase("seconds");
    r[j["key"].get<std::string>()] = j;
  }
  return r;
}
json load(const std::string& path) { return json::parse(read_file(path)); }

struct Assets {
  std::string model, smol, images;
};

// The photos under the names the datasets use (COCO naming for VQAv2).
Assets assets(const std::string& root) {
  Assets a;
  a.model = lowbit::test::shared_path("models/tiny-llava-1.5");
  a.smol = lowbit::test::shared_path("models/tiny-smolvlm");
  const std::string photos = lowbit::test::shared_path("data/images");
  if (a.model.empty() || photos.empty()) return {};
  a.images = root + "/images";
  fs::create_directories(a.images + "/7");
  const std::string iron = photos + "/extreme_ironing.jpg", water = photos + "/waterview.jpg";
  for (const auto& [name, src] : std::vector<std::pair<std::string, std::string>>{
           {"COCO_val2014_000000000001.jpg", iron},
           {"COCO_val2014_000000000002.jpg", water},
           {"iron.jpg", iron},
           {"VizWiz_val_00000000.jpg", water},
           {"VizWiz_val_00000001.jpg", iron},
           {"7/image.png", water}})
    fs::copy_file(src, a.images + "/" + name, fs::copy_options::overwrite_existing);
  return a;
}

std::string args(const std::string& model, const std::string& task, const std::string& q, const std::string& images,
                 const std::string& out, const std::string& extra = "") {
  return "eval vqa --model " + model + " --task " + task + " --questions " + q + " --images " + images + " --output " +
         out + " --threads 1 --quiet --max-new-tokens 3 " + extra;
}

// VQAv2: 6 questions on images 1 and 2, subtype val2014.
void write_vqav2_questions(const std::string& path) {
  json qs = json::array();
  const std::vector<std::tuple<int, int, const char*>> q = {{11, 1, "What is the man doing?"},
                                                            {12, 1, "Is it raining?"},
                                                            {13, 1, "What color is the taxi?"},
                                                            {21, 2, "What is in the water?"},
                                                            {22, 2, "How many boats are there?"},
                                                            {23, 2, "Is it sunny?"}};
  for (const auto& [qid, img, text] : q) qs.push_back({{"question_id", qid}, {"image_id", img}, {"question", text}});
  write_file(path, json{{"info", {{"version", "2.0"}}}, {"task_type", "Open-Ended"}, {"data_type", "mscoco"},
                        {"data_subtype", "val2014"}, {"questions", qs}}
                       .dump());
}

// Ten human answers in the official annotation shape.
json answers10(const std::vector<std::string>& a) {
  json out = json::array();
  for (size_t i = 0; i < a.size(); ++i)
    out.push_back({{"answer", a[i]}, {"answer_confidence", "yes"}, {"answer_id", int(i + 1)}});
  return out;
}
std::vector<std::string> with(const std::string& ans, int k, const std::string& other = "zzz unrelated") {
  std::vector<std::string> v(size_t(k), ans);
  v.resize(10, other);
  return v;
}

class VqaEval : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    root_ = new std::string(temp_dir("vqa_eval"));
    a_ = new Assets(assets(*root_));
    if (a_->model.empty()) return;
    q_ = new std::string(*root_ + "/v2_OpenEnded_mscoco_val2014_questions.json");
    write_vqav2_questions(*q_);
    ref_ = new std::string(*root_ + "/ref");
    ref_run_ = new RunResult(run_lowbit(args(a_->model, "vqav2", *q_, a_->images, *ref_)));
  }
  void SetUp() override {
    if (a_->model.empty()) GTEST_SKIP() << "../shared models/images not found (set LOWBIT_SHARED)";
    ASSERT_EQ(ref_run_->exit_code, 0) << ref_run_->out;
  }
  static std::string* root_;
  static Assets* a_;
  static std::string *q_, *ref_;
  static RunResult* ref_run_;
};
std::string* VqaEval::root_ = nullptr;
Assets* VqaEval::a_ = nullptr;
std::string* VqaEval::q_ = nullptr;
std::string* VqaEval::ref_ = nullptr;
RunResult* VqaEval::ref_run_ = nullptr;

}  // namespace

// VQAv2 end to end: the seed's prompt verbatim, COCO image names, one record per question, the
// official results file; then scored against annotations written from the answers.
TEST_F(VqaEval, Vqav2AnswersAndScores) {
  const auto rec = records(*ref_);
  ASSERT_EQ(rec.size(), 6u);
  EXPECT_EQ(rec.at("11")["prompt"], "USER:<image>\nWhat is the man doing? Answer with a single word or phrase.\nASSISTANT:");
  EXPECT_EQ(rec.at("11")["question_id"], 11);
  EXPECT_LE(rec.at("11")["new_tokens"].get<int>(), 3);
  EXPECT_NE(ref_run_->out.find("not scored"), std::string::npos) << ref_run_->out;
  EXPECT_FALSE(fs::exists(*ref_ + "/accuracy.json"));
  const json sub = load(*ref_ + "/submission.json");
  ASSERT_EQ(sub.size(), 6u);
  EXPECT_EQ(sub[0]["question_id"], 11);
  EXPECT_EQ(sub[0]["answer"], rec.at("11")["answer"]);

  // Ground truth from the answers: q11 given by 2 of 10 annotators → 0.6, q12 by none → 0,
  // q13 by all ten (identical: compared raw) → 1, q21 by 1 → 0.3, q22 by 3 → 0.9, q23 by 4 → 1.
  // Mean = (0.6 + 0 + 1 + 0.3 + 0.9 + 1) / 6 = 3.8 / 6. Answer types: yes/no = q11, q12, q23 →
  // (0.6 + 0 + 1) / 3 = 1.6 / 3; other = q13, q21, q22 → (1 + 0.3 + 0.9) / 3 = 2.2 / 3.
  const std::map<int, std::pair<int, const char*>> plan = {{11, {2, "yes/no"}}, {12, {0, "yes/no"}}, {13, {10, "other"}},
                                                            {21, {1, "other"}},  {22, {3, "other"}},  {23, {4, "yes/no"}}};
  json anns = json::array();
  for (const auto& [qid, p] : plan) {
    const std::string ans = rec.at(std::to_string(qid))["answer"].get<std::string>();
    anns.push_back({{"question_id", qid}, {"image_id", qid / 10}, {"answer_type", p.second},
                    {"question_type", "what"}, {"multiple_choice_answer", ans},
                    {"answers", answers10(with(ans, p.first))}});
  }
  const std::string ann = *root_ + "/v2_mscoco_val2014_annotations.json";
  write_file(ann, json{{"annotations", anns}, {"data_subtype", "val2014"}}.dump());
  const std::string scored = *root_ + "/scored";
  fs::create_directories(scored);
  fs::copy(*ref_ + "/answers.jsonl", scored + "/answers.jsonl");
  const RunResult r = run_lowbit(args(a_->model, "vqav2", *q_, a_->images, scored, "--annotations " + ann));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_EQ(r.out.find("answered now"), std::string::npos) << "nothing should be re-answered: " << r.out;
  const json acc = load(scored + "/accuracy.json");
  EXPECT_NEAR(acc["accuracy"].get<double>(), 3.8 / 6, 1e-12);
  EXPECT_DOUBLE_EQ(acc["accuracy_percent"].get<double>(), 63.33);
  EXPECT_EQ(acc["questions"], 6);
  EXPECT_NEAR(acc["by"]["answer_type"]["yes/no"]["accuracy"].get<double>(), 1.6 / 3, 1e-12);
  EXPECT_NEAR(acc["by"]["answer_type"]["other"]["accuracy"].get<double>(), 2.2 / 3, 1e-12);
  const json res = load(scored + "/results.json");
  EXPECT_NEAR(res["questions"][0]["score"].get<double>(), 0.6, 1e-12);
  EXPECT_NE(r.out.find("vqav2 accuracy 0.6333"), std::string::npos) << r.out;
}

// Interrupted runs (a torn last line as kill -9 mid-write leaves, lost lines) resume to exactly
// the uninterrupted records and reports.
TEST_F(VqaEval, ResumeAfterInterruption) {
  const std::string full = read_file(*ref_ + "/answers.jsonl");
  const auto ref = records(*ref_);
  // Cut in the middle of the 4th line.
  size_t cut = 0;
  for (int i = 0; i < 3; ++i) cut = full.find('\n', cut) + 1;
  cut += 20;
  const std::string out = *root_ + "/torn";
  fs::create_directories(out);
  write_file(out + "/answers.jsonl", full.substr(0, cut));
  RunResult r = run_lowbit(args(a_->model, "vqav2", *q_, a_->images, out));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("3 answered now"), std::string::npos) << r.out;  // the torn one and two more
  EXPECT_EQ(records(out), ref);
  EXPECT_EQ(read_file(out + "/results.json"), read_file(*ref_ + "/results.json"));
  EXPECT_EQ(read_file(out + "/submission.json"), read_file(*ref_ + "/submission.json"));

  // Lines 2 and 5 lost: answered again, same records.
  std::vector<std::string> lines;
  for (size_t p = 0; p < full.size();) {
    const size_t nl = full.find('\n', p);
    lines.push_back(full.substr(p, nl - p + 1));
    p = nl + 1;
  }
  ASSERT_EQ(lines.size(), 6u);
  const std::string out2 = *root_ + "/lost";
  fs::create_directories(out2);
  write_file(out2 + "/answers.jsonl", lines[0] + lines[2] + lines[3] + lines[5]);
  r = run_lowbit(args(a_->model, "vqav2", *q_, a_->images, out2));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("2 answered now"), std::string::npos) << r.out;
  EXPECT_EQ(records(out2), ref);
  EXPECT_EQ(read_file(out2 + "/results.json"), read_file(*ref_ + "/results.json"));
}

// kill -9 for real (LOWBIT_FAULT, core/fault.h): after the 3rd answer, and in the middle of
// writing the 4th (a torn line on disk); each rerun completes to exactly the uninterrupted run.
TEST_F(VqaEval, ResumeAfterKill) {
  for (const char* fault : {"vqa_answer", "vqa_torn"}) {
    const std::string out = *root_ + "/kill_" + fault;
    const RunResult k = lowbit::test::run_lowbit_env(std::string("LOWBIT_FAULT=") + fault,
                                                     args(a_->model, "vqav2", *q_, a_->images, out));
    EXPECT_EQ(k.exit_code, 128 + 9) << fault << ": " << k.out;
    const std::string part = read_file(out + "/answers.jsonl");
    if (std::string(fault) == "vqa_torn") EXPECT_NE(part.back(), '\n') << "expected a torn last line";
    EXPECT_FALSE(fs::exists(out + "/results.json"));
    const RunResult r = run_lowbit(args(a_->model, "vqav2", *q_, a_->images, out));
    ASSERT_EQ(r.exit_code, 0) << r.out;
    EXPECT_NE(r.out.find("3 answered now"), std::string::npos) << fault << ": " << r.out;
    EXPECT_EQ(records(out), records(*ref_)) << fault;
    EXPECT_EQ(read_file(out + "/results.json"), read_file(*ref_ + "/results.json")) << fault;
  }
}

// --shard i/n answers disjoint subsets; --merge gives the unsharded records and reports.
TEST_F(VqaEval, ShardsMergeToTheUnshardedRun) {
  const std::string out = *root_ + "/sharded";
  size_t total = 0;
  for (int i = 0; i < 3; ++i) {
    const RunResult r = run_lowbit(args(a_->model, "vqav2", *q_, a_->images, out, "--shard " + std::to_string(i) + "/3"));
    ASSERT_EQ(r.exit_code, 0) << r.out;
    const auto part = records(out + "/shard-" + std::to_string(i) + "-of-3");
    EXPECT_EQ(part.size(), 2u);  // questions k = i, i + 3
    total += part.size();
  }
  EXPECT_EQ(total, 6u);
  // Merging with a shard missing names it.
  const std::string partial = *root_ + "/partial";
  fs::create_directories(partial);
  fs::copy(out + "/shard-0-of-3", partial + "/shard-0-of-3");
  fs::copy(out + "/shard-2-of-3", partial + "/shard-2-of-3");
  expect_error_line(run_lowbit(args(a_->model, "vqav2", *q_, a_->images, partial, "--merge")), "shard 1/3 is missing");

  // --merge needs no images (a machine without the dataset's images can merge).
  const RunResult m = run_lowbit(args(a_->model, "vqav2", *q_, *root_ + "/no-such-images", out, "--merge"));
  ASSERT_EQ(m.exit_code, 0) << m.out;
  EXPECT_EQ(records(out), records(*ref_));
  EXPECT_EQ(read_file(out + "/results.json"), read_file(*ref_ + "/results.json"));
  EXPECT_EQ(read_file(out + "/submission.json"), read_file(*ref_ + "/submission.json"));
  // --limit keeps the first N questions (before sharding).
  const std::string lim = *root_ + "/limit";
  const RunResult l = run_lowbit(args(a_->model, "vqav2", *q_, a_->images, lim, "--limit 2"));
  ASSERT_EQ(l.exit_code, 0) << l.out;
  const auto lr = records(lim);
  ASSERT_EQ(lr.size(), 2u);
  EXPECT_EQ(lr.at("11"), records(*ref_).at("11"));
  EXPECT_EQ(lr.at("12"), records(*ref_).at("12"));
}

// Bad inputs: a missing image (named by question id; --skip-missing records it), a malformed
// line of answers.jsonl (named), answers of another model (refused unless --force), --shard.
TEST_F(VqaEval, BadInputs) {
  json q = load(*q_);
  q["questions"].push_back({{"question_id", 31}, {"image_id", 3}, {"question", "Where?"}});
  const std::string q2 = *root_ + "/questions_missing.json";
  write_file(q2, q.dump());
  const std::string out = *root_ + "/missing";
  expect_error_line(run_lowbit(args(a_->model, "vqav2", q2, a_->images, out)), "question 31: image", 1);
  fs::create_directories(out);
  fs::copy(*ref_ + "/answers.jsonl", out + "/answers.jsonl", fs::copy_options::overwrite_existing);
  // (the reference answers are of another questions file: refused)
  expect_error_line(run_lowbit(args(a_->model, "vqav2", q2, a_->images, out)), "different run", 2);
  fs::remove(out + "/answers.jsonl");
  RunResult r = run_lowbit(args(a_->model, "vqav2", q2, a_->images, out, "--skip-missing"));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  const auto rec = records(out);
  ASSERT_EQ(rec.size(), 7u);
  EXPECT_TRUE(rec.at("31")["skipped"].get<bool>());
  EXPECT_EQ(load(out + "/results.json")["questions"][6]["skipped"], true);
  // The image appears: resuming answers the skipped question (its new record supersedes the
  // skipped one); one more resume answers nothing and reads the file back.
  const std::string img3 = a_->images + "/COCO_val2014_000000000003.jpg";
  fs::copy_file(a_->images + "/COCO_val2014_000000000001.jpg", img3);
  r = run_lowbit(args(a_->model, "vqav2", q2, a_->images, out));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("1 answered now"), std::string::npos) << r.out;
  auto rec2 = records(out);
  ASSERT_EQ(rec2.size(), 7u);
  EXPECT_FALSE(rec2.at("31").contains("skipped")) << rec2.at("31");
  EXPECT_TRUE(rec2.at("31").contains("text")) << rec2.at("31");
  EXPECT_FALSE(load(out + "/results.json")["questions"][6].contains("skipped"));
  r = run_lowbit(args(a_->model, "vqav2", q2, a_->images, out));
  fs::remove(img3);
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_EQ(r.out.find("answered now"), std::string::npos) << r.out;
  EXPECT_EQ(records(out), rec2);

  // A malformed complete line in the middle: an error naming the file and line, nothing dropped.
  const std::string bad = *root_ + "/malformed";
  fs::create_directories(bad);
  std::string text = read_file(*ref_ + "/answers.jsonl");
  const size_t first = text.find('\n') + 1;
  text.insert(first, "{\"key\": 12, oops\n");
  write_file(bad + "/answers.jsonl", text);
  expect_error_line(run_lowbit(args(a_->model, "vqav2", *q_, a_->images, bad)), "answers.jsonl line 2", 1);
  EXPECT_EQ(read_file(bad + "/answers.jsonl"), text);  // untouched

  // Another model's answers: refused, naming what differs; --force sets them aside.
  const std::string other = *root_ + "/other";
  fs::create_directories(other);
  fs::copy(*ref_ + "/answers.jsonl", other + "/answers.jsonl");
  fs::copy(*ref_ + "/run.json", other + "/run.json");
  const std::string next = lowbit::test::shared_path("models/tiny-llava-next");
  if (!next.empty()) {
    r = run_lowbit(args(next, "vqav2", *q_, a_->images, other, "--limit 1"));
    expect_error_line(r, "--force", 2);
    EXPECT_NE(r.out.find("model"), std::string::npos) << r.out;
    r = run_lowbit(args(next, "vqav2", *q_, a_->images, other, "--limit 1 --force"));
    ASSERT_EQ(r.exit_code, 0) << r.out;
    EXPECT_TRUE(fs::exists(other + "/answers.jsonl.old"));
    const auto nr = records(other);
    ASSERT_EQ(nr.size(), 1u);
    // LLaVA-NeXT: the seed's VQAv2 text in the model's conversation template (mistral-instruct).
    EXPECT_EQ(nr.at("11")["prompt"], "[INST] <image>\nWhat is the man doing? Answer with a single word or phrase. [/INST]");
  }
  expect_error_line(run_lowbit(args(a_->model, "vqav2", *q_, a_->images, other, "--shard 3/3")), "--shard", 2);

  // The image directory is part of the run: resuming with another --images is refused, naming it.
  const std::string moved = *root_ + "/other_images", imgs2 = *root_ + "/images_copy";
  fs::create_directories(moved);
  fs::copy(*ref_ + "/answers.jsonl", moved + "/answers.jsonl");
  fs::copy(*ref_ + "/run.json", moved + "/run.json");
  fs::copy(a_->images, imgs2, fs::copy_options::recursive | fs::copy_options::overwrite_existing);
  r = run_lowbit(args(a_->model, "vqav2", *q_, imgs2, moved));
  expect_error_line(r, "different run", 2);
  EXPECT_NE(r.out.find("images"), std::string::npos) << r.out;
  // --split is for ScienceQA's problems.json only: given elsewhere, one warning line says so.
  r = run_lowbit(args(a_->model, "vqav2", *q_, a_->images, moved, "--split val"));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("--split has no effect"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("answered now"), std::string::npos) << "the split is not part of a VQAv2 run: " << r.out;
  expect_error_line(run_lowbit(args(a_->model, "nocaps", *q_, a_->images, other)), "--task", 2);
}

// Quantization flags quantize the VLM in memory before answering (as eval ppl); they are part of
// the run's fingerprint, so full-precision answers are never mixed with quantized ones.
TEST_F(VqaEval, InMemoryQuantization) {
  const std::string out = *root_ + "/quant";
  RunResult r = run_lowbit(args(a_->model, "vqav2", *q_, a_->images, out, "--limit 2 --wbits 16,16,4 --w_rtn"));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_EQ(records(out).size(), 2u);
  const json q = load(out + "/run.json")["config"]["quantization"];
  ASSERT_TRUE(q.is_object()) << q;
  EXPECT_EQ(q["weights"]["w_bits"], 4);
  EXPECT_EQ(q["vlm"]["w_bits_vision"], 16);
  // A checkpoint written by `lowbit quantize` with the same flags loads in eval vqa and answers
  // exactly as the in-memory quantization did (packed codes vs fake-quantized weights).
  const std::string ckpt = *root_ + "/quant_ckpt";
  r = run_lowbit("quantize --model " + a_->model + " --out " + ckpt + " --wbits 16,16,4 --w_rtn --quiet");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  const std::string out_ckpt = *root_ + "/quant_ckpt_answers";
  r = run_lowbit(args(ckpt, "vqav2", *q_, a_->images, out_ckpt, "--limit 2"));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  const auto in_memory = records(out), from_ckpt = records(out_ckpt);
  ASSERT_EQ(from_ckpt.size(), 2u);
  for (const auto& [key, rec] : in_memory) EXPECT_EQ(from_ckpt.at(key)["text"], rec["text"]) << key;
  // The same directory without the flags: refused, naming the quantization.
  r = run_lowbit(args(a_->model, "vqav2", *q_, a_->images, out, "--limit 2"));
  expect_error_line(r, "quantization", 2);
  // The full-precision reference's first two answers cannot be reused by a quantized run either.
  const std::string mixed = *root_ + "/quant_mixed";
  fs::create_directories(mixed);
  fs::copy(*ref_ + "/answers.jsonl", mixed + "/answers.jsonl");
  expect_error_line(run_lowbit(args(a_->model, "vqav2", *q_, a_->images, mixed, "--wbits 16,16,4 --w_rtn")),
                    "different run", 2);
}

// Two quantized checkpoints of the same shapes written in turn to the same path (RTN with and
// without the MSE clip search: same config.json, same tensor names, shapes and file sizes, only
// the codes, scales and lowbit_quant.json differ) are different models: the second one's run is
// refused in the first one's --output unless --force. Also a checkpoint whose weights changed in
// one byte (nothing else) is told apart.
TEST_F(VqaEval, FingerprintTellsCheckpointsApart) {
  const std::string ckpt = *root_ + "/fp_ckpt", out = *root_ + "/fp_answers";
  RunResult r = run_lowbit("quantize --model " + a_->model + " --out " + ckpt + " --wbits 16,16,4 --w_rtn --quiet");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  const auto size1 = fs::file_size(ckpt + "/model.safetensors");
  r = run_lowbit(args(ckpt, "vqav2", *q_, a_->images, out, "--limit 1"));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  fs::remove_all(ckpt);
  r = run_lowbit("quantize --model " + a_->model + " --out " + ckpt + " --wbits 16,16,4 --w_rtn --w_clip --quiet");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  ASSERT_EQ(fs::file_size(ckpt + "/model.safetensors"), size1) << "the test needs checkpoints of equal sizes";
  r = run_lowbit(args(ckpt, "vqav2", *q_, a_->images, out, "--limit 1"));
  expect_error_line(r, "different run", 2);
  EXPECT_NE(r.out.find("model"), std::string::npos) << r.out;
  r = run_lowbit(args(ckpt, "vqav2", *q_, a_->images, out, "--limit 1 --force"));
  ASSERT_EQ(r.exit_code, 0) << r.out;

  // The same lowbit_quant.json, one weight byte changed (the last byte of the tensor data).
  const std::string st = ckpt + "/model.safetensors";
  fs::permissions(st, fs::perms::owner_write, fs::perm_options::add);
  {
    std::fstream f(st, std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(-1, std::ios::end);
    const char c = char(f.get());
    f.seekp(-1, std::ios::end);
    f.put(char(c ^ 0x01));
  }
  r = run_lowbit(args(ckpt, "vqav2", *q_, a_->images, out, "--limit 1"));
  expect_error_line(r, "different run", 2);
}

// --template overrides the seed prompt: a conversation template renders the task's instruction
// text; raw uses it as is after "<image>\n"; an unknown name is a usage error.
TEST_F(VqaEval, TemplateOverride) {
  const std::string q1 = "What is the man doing? Answer with a single word or phrase.";
  const std::map<std::string, std::string> expect = {
      {"auto", "USER: <image>\n" + q1 + " ASSISTANT:"},  // tiny-llava-1.5's chat template: llava-1.5
      {"vicuna_v1", std::string(kVicuna) + " USER: <image>\n" + q1 + " ASSISTANT:"},
      {"raw", "<image>\n" + q1}};
  for (const auto& [name, prompt] : expect) {
    const std::string out = *root_ + "/template_" + name;
    const RunResult r = run_lowbit(args(a_->model, "vqav2", *q_, a_->images, out, "--limit 1 --template " + name));
    ASSERT_EQ(r.exit_code, 0) << r.out;
    EXPECT_EQ(records(out).at("11")["prompt"], prompt) << name;
  }
  expect_error_line(run_lowbit(args(a_->model, "vqav2", *q_, a_->images, *root_ + "/template_x", "--template nope")),
                    "--template", 2);
}

// TextVQA: LLaVA's jsonl (question_id = the TextVQA image_id, repeated) + TextVQA_0.5.1_val.json;
// vicuna_v1 prompt; EvalAI-processed soft accuracy.
TEST_F(VqaEval, TextVqa) {
  const std::string q = *root_ + "/llava_textvqa_val_v051_ocr.jsonl";
  const std::vector<std::tuple<std::string, std::string, std::string>> qs = {
      {"0054c91397f2fe05", "iron.jpg", "what is on the sign?"},
      {"0054c91397f2fe05", "iron.jpg", "What brand is the taxi?"},
      {"005635e119b9f32f", "VizWiz_val_00000000.jpg", "what is written here?"}};
  std::string text;
  for (const auto& [id, img, question] : qs)
    text += json{{"question_id", id}, {"image", img},
                 {"text", question + "\nReference OCR token: NYC, TAXI\nAnswer the question using a single word or phrase."}}
                .dump() +
            "\n";
  write_file(q, text);
  const std::string out = *root_ + "/textvqa";
  RunResult r = run_lowbit(args(a_->model, "textvqa", q, a_->images, out));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  const auto rec = records(out);
  ASSERT_EQ(rec.size(), 3u);  // keys 0054c91397f2fe05, 0054c91397f2fe05#2, 005635e119b9f32f
  EXPECT_EQ(rec.at("0054c91397f2fe05#2")["prompt"],
            std::string(kVicuna) + " USER: <image>\nWhat brand is the taxi?\nReference OCR token: NYC, TAXI\nAnswer the "
                                   "question using a single word or phrase. ASSISTANT:");
  // Annotations (matched by image_id + lower-cased question): q1 answered by 3 → 0.9; q2 by
  // none → 0; q3 by all → 1. Mean 1.9 / 3.
  const std::vector<int> k = {3, 0, 10};
  const std::vector<std::string> keys = {"0054c91397f2fe05", "0054c91397f2fe05#2", "005635e119b9f32f"};
  json data = json::array();
  for (size_t i = 0; i < qs.size(); ++i) {
    const std::string ans = rec.at(keys[i])["answer"].get<std::string>();
    data.push_back({{"image_id", std::get<0>(qs[i])}, {"question", std::get<2>(qs[i])},
                    {"question_id", int(100 + i)}, {"answers", with(ans, k[i])}});
  }
  const std::string ann = *root_ + "/TextVQA_0.5.1_val.json";
  write_file(ann, json{{"dataset_type", "val"}, {"data", data}}.dump());
  r = run_lowbit(args(a_->model, "textvqa", q, a_->images, out, "--annotations " + ann));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NEAR(load(out + "/accuracy.json")["accuracy"].get<double>(), 1.9 / 3, 1e-12);
}

// VizWiz: LLaVA's llava_test.jsonl shape, the EvalAI upload file, and local scoring with the val
// annotations (answerable / unanswerable breakdown).
TEST_F(VqaEval, VizWiz) {
  const std::string q = *root_ + "/llava_test.jsonl";
  const std::string suffix =
      "\nWhen the provided information is insufficient, respond with 'Unanswerable'.\nAnswer the question using a "
      "single word or phrase.";
  write_file(q, json{{"question_id", 0}, {"image", "VizWiz_val_00000000.jpg"}, {"text", "What is this?" + suffix}}.dump() +
                    "\n" +
                    json{{"question_id", 1}, {"image", "VizWiz_val_00000001.jpg"}, {"text", "What color?" + suffix}}.dump() +
                    "\n");
  const std::string out = *root_ + "/vizwiz";
  RunResult r = run_lowbit(args(a_->model, "vizwiz", q, a_->images, out));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  const auto rec = records(out);
  ASSERT_EQ(rec.size(), 2u);
  EXPECT_EQ(rec.at("0")["prompt"], std::string(kVicuna) + " USER: <image>\nWhat is this?" + suffix + " ASSISTANT:");
  const json sub = load(out + "/submission.json");
  ASSERT_EQ(sub.size(), 2u);
  EXPECT_EQ(sub[1]["image"], "VizWiz_val_00000001.jpg");
  EXPECT_EQ(sub[1]["answer"], rec.at("1")["answer"]);
  // q0 answerable, all ten annotators gave the answer → 1; q1 unanswerable → 0. Mean 0.5.
  const std::string a0 = rec.at("0")["answer"].get<std::string>();
  json val = json::array(
      {{{"image", "VizWiz_val_00000000.jpg"}, {"question", "What is this?"}, {"answers", answers10(with(a0, 10))},
        {"answer_type", "other"}, {"answerable", 1}},
       {{"image", "VizWiz_val_00000001.jpg"}, {"question", "What color?"},
        {"answers", answers10(with("unanswerable", 10))}, {"answer_type", "unanswerable"}, {"answerable", 0}}});
  const std::string ann = *root_ + "/val.json";
  write_file(ann, val.dump());
  r = run_lowbit(args(a_->model, "vizwiz", q, a_->images, out, "--annotations " + ann));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  const json acc = load(out + "/accuracy.json");
  EXPECT_DOUBLE_EQ(acc["accuracy"].get<double>(), 0.5);
  EXPECT_DOUBLE_EQ(acc["by"]["answerable"]["answerable"]["accuracy"].get<double>(), 1.0);
  EXPECT_DOUBLE_EQ(acc["by"]["answerable"]["unanswerable"]["accuracy"].get<double>(), 0.0);
}

// ScienceQA in LLaVA's converted form (an image question and a text-only one) on LLaVA-1.5:
// QSVD's verbatim prompt; the truth letter from the answer turn.
TEST_F(VqaEval, ScienceQaLlavaFile) {
  const std::string q = *root_ + "/llava_test_CQM-A.json";
  json data = json::array(
      {{{"id", "7"}, {"image", "7/image.png"},
        {"conversations", {{{"from", "human"}, {"value", "<image>\nContext: A lake.\nWhat is shown?\nA. water\nB. sand"}},
                           {{"from", "gpt"}, {"value", "A"}}}}},
       {{"id", "8"},
        {"conversations", {{{"from", "human"}, {"value", "Which is a mammal?\nA. trout\nB. whale\nC. crab"}},
                           {{"from", "gpt"}, {"value", "The answer is B."}}}}}});
  write_file(q, data.dump());
  const std::string out = *root_ + "/sqa_llava";
  const RunResult r = run_lowbit(args(a_->model, "scienceqa", q, a_->images, out));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  const auto rec = records(out);
  ASSERT_EQ(rec.size(), 2u);
  const std::string instr = "\nAnswer with the option's letter from the given choices directly.";
  EXPECT_EQ(rec.at("7")["prompt"], std::string(kVicuna) + " USER:  <image> Context: A lake.\nWhat is shown?\nA. water\nB. "
                                                           "sand" + instr + " ASSISTANT: ");
  EXPECT_EQ(rec.at("8")["prompt"],
            std::string(kVicuna) + " USER: Which is a mammal?\nA. trout\nB. whale\nC. crab" + instr + " ASSISTANT: ");
  // Each stored answer is the letter read from the stored text (the reading itself, C1..C4, is
  // tested in test_vqa_metrics).
  const std::map<std::string, std::map<std::string, std::string>> options = {
      {"7", {{"A", "water"}, {"B", "sand"}}}, {"8", {{"A", "trout"}, {"B", "whale"}, {"C", "crab"}}}};
  for (const auto& [key, opts] : options)
    EXPECT_EQ(rec.at(key)["answer"], lowbit::scienceqa_extract_letter(rec.at(key)["text"].get<std::string>(), opts))
        << key;
  // Context groups as ScienceQA's evaluator forms them: 7 has a context line and an image
  // (has_text and has_image), 8 neither (no_context).
  json acc = load(out + "/accuracy.json");
  EXPECT_EQ(acc["by"]["context"]["has_text"]["questions"], 1);
  EXPECT_EQ(acc["by"]["context"]["has_image"]["questions"], 1);
  EXPECT_EQ(acc["by"]["context"]["no_context"]["questions"], 1);
  EXPECT_EQ(acc["by"]["context"].size(), 3u) << acc["by"];

  // Truths written so that exactly one of the two is right: 7's truth is the letter it answered,
  // 8's a different one. The answer turns are not part of the prompt, so the rerun (another
  // questions file: another fingerprint) answers the same; accuracy = (1 + 0) / 2 = 0.5;
  // has_text = has_image = 1 (item 7), no_context = 0 (item 8).
  const std::string a7 = rec.at("7")["answer"].get<std::string>(), a8 = rec.at("8")["answer"].get<std::string>();
  data[0]["conversations"][1]["value"] = "The answer is " + a7 + ".";
  data[1]["conversations"][1]["value"] = std::string(a8 == "A" ? "B" : "A") + ". the other one";
  const std::string q2 = *root_ + "/llava_test_CQM-A_truth.json";
  write_file(q2, data.dump());
  const std::string out2 = *root_ + "/sqa_llava_truth";
  const RunResult r2 = run_lowbit(args(a_->model, "scienceqa", q2, a_->images, out2));
  ASSERT_EQ(r2.exit_code, 0) << r2.out;
  const auto rec2 = records(out2);
  for (const char* key : {"7", "8"}) EXPECT_EQ(rec2.at(key)["text"], rec.at(key)["text"]) << key;
  acc = load(out2 + "/accuracy.json");
  EXPECT_DOUBLE_EQ(acc["accuracy"].get<double>(), 0.5);
  EXPECT_DOUBLE_EQ(acc["by"]["context"]["has_text"]["accuracy"].get<double>(), 1.0);
  EXPECT_DOUBLE_EQ(acc["by"]["context"]["has_image"]["accuracy"].get<double>(), 1.0);
  EXPECT_DOUBLE_EQ(acc["by"]["context"]["no_context"]["accuracy"].get<double>(), 0.0);
}

// ScienceQA's problems.json + pid_splits.json on SmolVLM: the split chosen, QSVD's SmolVLM prompt,
// subject / context / grade groups (context overlapping, as ScienceQA's evaluator forms it).
TEST_F(VqaEval, ScienceQaProblemsOnSmolVlm) {
  if (a_->smol.empty()) GTEST_SKIP() << "tiny-smolvlm not found";
  const std::string dir = *root_ + "/scienceqa";
  fs::create_directories(dir);
  fs::create_directories(a_->images + "/10");
  fs::copy_file(a_->images + "/7/image.png", a_->images + "/10/image.png", fs::copy_options::overwrite_existing);
  // 7: image, no hint; 8: hint, no image; 10: image and hint; 11: neither; 9: train split. 10 and
  // 11 have an empty choice B: every output contains it, so they answer "B" whatever the random
  // weights generate (C3 of the letter reading), unless the output names a letter.
  json problems = {
      {"7", {{"question", "What is shown?"}, {"choices", {"water", "sand"}}, {"answer", 0}, {"hint", ""},
             {"image", "image.png"}, {"subject", "natural science"}, {"grade", "grade3"}, {"split", "test"}}},
      {"8", {{"question", "Which word is a noun?"}, {"choices", {"run", "dog", "blue"}}, {"answer", 1},
             {"hint", "A noun names a thing."}, {"image", nullptr}, {"subject", "language science"},
             {"grade", "grade8"}, {"split", "test"}}},
      {"9", {{"question", "Train only?"}, {"choices", {"x", "y"}}, {"answer", 0}, {"hint", ""}, {"image", nullptr},
             {"subject", "social science"}, {"grade", "grade1"}, {"split", "train"}}},
      {"10", {{"question", "Is it wet?"}, {"choices", {"yes", ""}}, {"answer", 0}, {"hint", "Look at the lake."},
              {"image", "image.png"}, {"subject", "natural science"}, {"grade", "grade10"}, {"split", "test"}}},
      {"11", {{"question", "Which is a city?"}, {"choices", {"Paris", ""}}, {"answer", 0}, {"hint", ""},
              {"image", nullptr}, {"subject", "social science"}, {"grade", "grade2"}, {"split", "test"}}}};
  write_file(dir + "/problems.json", problems.dump());
  write_file(dir + "/pid_splits.json", json{{"train", {"9"}}, {"test", {"7", "8", "10", "11"}}}.dump());
  const std::string out = *root_ + "/sqa_smol";
  const RunResult r = run_lowbit(args(a_->smol, "scienceqa", dir + "/problems.json", a_->images, out));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  const auto rec = records(out);
  ASSERT_EQ(rec.size(), 4u);
  EXPECT_EQ(rec.count("9"), 0u);
  EXPECT_EQ(rec.at("8")["prompt"],
            "<|begin_of_text|>User: Hint: A noun names a thing.\nQuestion: Which word is a noun?\nChoices:\nA. run\nB. "
            "dog\nC. blue\nAnswer with the letter.<end_of_utterance>\nAssistant: Answer:");
  const std::string p7 = rec.at("7")["prompt"].get<std::string>();
  EXPECT_EQ(p7.rfind("<|begin_of_text|>User:<image>Question: What is shown?\nChoices:\nA. water\nB. sand\n", 0), 0u) << p7;
  std::map<std::string, std::map<std::string, std::string>> options;
  for (const char* key : {"7", "8", "10", "11"}) {
    const json& c = problems[key]["choices"];
    for (size_t i = 0; i < c.size(); ++i) options[key][std::string(1, char('A' + i))] = c[i].get<std::string>();
    EXPECT_EQ(rec.at(key)["answer"],
              lowbit::scienceqa_extract_letter(rec.at(key)["text"].get<std::string>(), options[key]))
        << key;
  }
  // Groups (question counts by hand): grade G1-6 = {7, 11}, G7-12 = {8, 10}; subject natural
  // science = {7, 10}; context has_image = {7, 10}, has_text = {8, 10}, no_context = {11}.
  json acc = load(out + "/accuracy.json");
  EXPECT_EQ(acc["by"]["grade"]["G1-6"]["questions"], 2);
  EXPECT_EQ(acc["by"]["grade"]["G7-12"]["questions"], 2);
  EXPECT_EQ(acc["by"]["subject"]["natural science"]["questions"], 2);
  EXPECT_EQ(acc["by"]["context"]["has_image"]["questions"], 2);
  EXPECT_EQ(acc["by"]["context"]["has_text"]["questions"], 2);
  EXPECT_EQ(acc["by"]["context"]["no_context"]["questions"], 1);
  EXPECT_EQ(acc["by"]["context"].size(), 3u) << acc["by"];

  // Truths so that 10 and 11 are right (their answer index = the letter they gave) and 7 and 8
  // wrong (another letter). Only "answer" changes: same prompts, same texts. By hand: accuracy
  // 2/4 = 0.5; has_image {7, 10} = 0.5, has_text {8, 10} = 0.5, no_context {11} = 1; G1-6 {7, 11}
  // = 0.5; natural science {7, 10} = 0.5, social science {11} = 1.
  for (const char* key : {"10", "11"}) {
    const std::string a = rec.at(key)["answer"].get<std::string>();
    ASSERT_TRUE(options[key].count(a)) << key << " answered no option letter (\"" << a << "\"): the test needs one";
    problems[key]["answer"] = a[0] - 'A';
  }
  for (const char* key : {"7", "8"}) problems[key]["answer"] = rec.at(key)["answer"] == "A" ? 1 : 0;
  const std::string dir2 = *root_ + "/scienceqa_truth";
  fs::create_directories(dir2);
  write_file(dir2 + "/problems.json", problems.dump());
  fs::copy_file(dir + "/pid_splits.json", dir2 + "/pid_splits.json", fs::copy_options::overwrite_existing);
  const std::string out2 = *root_ + "/sqa_smol_truth";
  const RunResult r2 = run_lowbit(args(a_->smol, "scienceqa", dir2 + "/problems.json", a_->images, out2));
  ASSERT_EQ(r2.exit_code, 0) << r2.out;
  const auto rec2 = records(out2);
  for (const char* key : {"7", "8", "10", "11"}) EXPECT_EQ(rec2.at(key)["text"], rec.at(key)["text"]) << key;
  acc = load(out2 + "/accuracy.json");
  EXPECT_DOUBLE_EQ(acc["accuracy"].get<double>(), 0.5);
  EXPECT_DOUBLE_EQ(acc["by"]["context"]["has_image"]["accuracy"].get<double>(), 0.5);
  EXPECT_DOUBLE_EQ(acc["by"]["context"]["has_text"]["accuracy"].get<double>(), 0.5);
  EXPECT_DOUBLE_EQ(acc["by"]["context"]["no_context"]["accuracy"].get<double>(), 1.0);
  EXPECT_DOUBLE_EQ(acc["by"]["grade"]["G1-6"]["accuracy"].get<double>(), 0.5);
  EXPECT_DOUBLE_EQ(acc["by"]["grade"]["G7-12"]["accuracy"].get<double>(), 0.5);
  EXPECT_DOUBLE_EQ(acc["by"]["subject"]["natural science"]["accuracy"].get<double>(), 0.5);
  EXPECT_DOUBLE_EQ(acc["by"]["subject"]["social science"]["accuracy"].get<double>(), 1.0);
}

// The readers on their own (no model): keys of repeated ids, TextVQA's question line when the text
// starts with the OCR tokens, LLaVA's original "(A) x (B) y" ScienceQA options with "The answer
// is X." truths, VQAv2's COCO names, missing annotations named.
TEST(VqaDataset, Readers) {
  const std::string dir = temp_dir("vqa_dataset");
  write_file(dir + "/t.jsonl",
             json{{"question_id", "img1"}, {"image", "a.jpg"}, {"text", "What is it?\nReference OCR token: X\nAnswer."}}
                     .dump() + "\n\n" +
                 json{{"question_id", "img1"}, {"image", "a.jpg"},
                      {"text", "Reference OCR token: Y\nWho Is It?\nAnswer."}}.dump() + "\n");
  write_file(dir + "/t_ann.json",
             json{{"data", {{{"image_id", "img1"}, {"question", "what is it?"}, {"answers", {"x", "y"}}},
                            {{"image_id", "img1"}, {"question", "who is it?"}, {"answers", {"z"}}}}}}.dump());
  const lowbit::VqaDataset t = lowbit::load_vqa_dataset(lowbit::VqaTask::TextVQA, dir + "/t.jsonl", dir + "/t_ann.json");
  ASSERT_EQ(t.questions.size(), 2u);
  EXPECT_EQ(t.questions[0].key, "img1");
  EXPECT_EQ(t.questions[1].key, "img1#2");
  EXPECT_EQ(t.questions[0].answers, (std::vector<std::string>{"x", "y"}));
  EXPECT_EQ(t.questions[1].answers, (std::vector<std::string>{"z"}));  // question on the 2nd line

  const json sqa = json::array(
      {{{"id", 5},
        {"conversations",
         {{{"from", "human"}, {"value", "Context: N/A\nQuestion: Which is a fish?\nOptions: (A) trout (B) whale"}},
          {{"from", "gpt"}, {"value", "LECTURE: Fish live in water. The answer is A."}}}}}});
  write_file(dir + "/sqa.json", sqa.dump());
  const lowbit::VqaDataset s = lowbit::load_vqa_dataset(lowbit::VqaTask::ScienceQA, dir + "/sqa.json", "");
  ASSERT_EQ(s.questions.size(), 1u);
  EXPECT_EQ(s.questions[0].key, "5");
  EXPECT_EQ(s.questions[0].options, (std::map<std::string, std::string>{{"A", "trout"}, {"B", "whale"}}));
  EXPECT_EQ(s.questions[0].answer_letter, "A");
  EXPECT_TRUE(s.questions[0].image.empty());

  // An answer turn naming no letter: the error quotes it on one line (newlines escaped), cut at a
  // character boundary (byte 60 falls inside the 2-byte "é" at bytes 59..60).
  const std::string gpt = "no letter\nhere " + std::string(44, 'x') + "\xC3\xA9" + " and more\nlines";
  ASSERT_EQ(gpt.substr(59, 2), "\xC3\xA9");
  write_file(dir + "/sqa_bad.json",
             json::array({{{"id", 6},
                           {"conversations",
                            {{{"from", "human"}, {"value", "Which?\nA. x\nB. y"}}, {{"from", "gpt"}, {"value", gpt}}}}}})
                 .dump());
  try {
    lowbit::load_vqa_dataset(lowbit::VqaTask::ScienceQA, dir + "/sqa_bad.json", "");
    ADD_FAILURE() << "expected a FormatError";
  } catch (const lowbit::FormatError& e) {
    const std::string m = e.what();
    EXPECT_EQ(m.find('\n'), std::string::npos) << m;
    EXPECT_NE(m.find("\"no letter\\nhere xxx"), std::string::npos) << m;
    EXPECT_EQ(m.find("\xC3"), std::string::npos) << "a cut character: " << m;
    EXPECT_NO_THROW((void)json(m).dump()) << "not valid UTF-8: " << m;
  }

  write_file(dir + "/q.json", json{{"data_subtype", "test2015"},
                                   {"questions", {{{"question_id", 7}, {"image_id", 123}, {"question", "Q?"}}}}}.dump());
  write_file(dir + "/a.json", json{{"annotations", json::array()}}.dump());
  const lowbit::VqaDataset v = lowbit::load_vqa_dataset(lowbit::VqaTask::VQAv2, dir + "/q.json", "");
  EXPECT_EQ(v.questions[0].image, "COCO_test2015_000000000123.jpg");
  try {
    lowbit::load_vqa_dataset(lowbit::VqaTask::VQAv2, dir + "/q.json", dir + "/a.json");
    ADD_FAILURE() << "expected a FormatError";
  } catch (const lowbit::FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("no annotation for question 7"), std::string::npos) << e.what();
  }
}
