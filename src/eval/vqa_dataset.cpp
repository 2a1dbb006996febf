// VQA dataset readers (formats in vqa_dataset.h).
#include "eval/vqa_dataset.h"

#include <algorithm>
#include <filesystem>
#include <set>
#include <unordered_map>

#include <fmt/format.h>

#include "core/error.h"
#include "io/files.h"
#include "io/json_util.h"

namespace lowbit {

using json = nlohmann::json;
namespace fs = std::filesystem;

VqaTask parse_vqa_task(const std::string& name) {
  if (name == "vqav2") return VqaTask::VQAv2;
  if (name == "textvqa") return VqaTask::TextVQA;
  if (name == "vizwiz") return VqaTask::VizWiz;
  if (name == "scienceqa") return VqaTask::ScienceQA;
  throw ArgError(fmt::format("--task: unknown task '{}' (vqav2, textvqa, vizwiz, scienceqa)", name));
}

const char* vqa_task_name(VqaTask t) {
  switch (t) {
    case VqaTask::VQAv2: return "vqav2";
    case VqaTask::TextVQA: return "textvqa";
    case VqaTask::VizWiz: return "vizwiz";
    case VqaTask::ScienceQA: return "scienceqa";
  }
  return "?";
}

namespace {

json read_json_file(const std::string& path, const char* flag) {
  LOWBIT_CHECK(fs::is_regular_file(path), IoError, "{} {}: no such file", flag, path);
  return parse_json(read_text_file(path), path);
}

std::string id_string(const json& id) { return id.is_string() ? id.get<std::string>() : id.dump(); }

// A string member, or FormatError naming the file and entry.
std::string str_field(const json& o, const char* name, const std::string& file, const std::string& where) {
  LOWBIT_CHECK(o.is_object() && o.contains(name) && o[name].is_string(), FormatError,
               "{}: {} has no string \"{}\"", file, where, name);
  return o[name].get<std::string>();
}

std::vector<std::string> answer_list(const json& a, const std::string& file, const std::string& where) {
  LOWBIT_CHECK(a.is_object() && a.contains("answers") && a["answers"].is_array() && !a["answers"].empty(),
               FormatError, "{}: {} has no \"answers\" list", file, where);
  std::vector<std::string> out;
  for (const json& x : a["answers"]) {
    if (x.is_string()) out.push_back(x.get<std::string>());
    else out.push_back(str_field(x, "answer", file, where + " answers[]"));
  }
  return out;
}

// Keys: the id's string, "#n" on its n-th occurrence (n >= 2).
void assign_keys(std::vector<VqaQuestion>& qs) {
  std::unordered_map<std::string, int> seen;
  for (VqaQuestion& q : qs) {
    const std::string base = id_string(q.question_id);
    const int n = ++seen[base];
    q.key = n == 1 ? base : fmt::format("{}#{}", base, n);
  }
  // A later "#n" could collide with a literal id "x#n" in the file: refuse rather than guess.
  std::set<std::string> keys;
  for (const VqaQuestion& q : qs)
    LOWBIT_CHECK(keys.insert(q.key).second, FormatError, "question id '{}' is ambiguous in the questions file", q.key);
}

std::vector<json> read_jsonl(const std::string& path) {
  LOWBIT_CHECK(fs::is_regular_file(path), IoError, "--questions {}: no such file", path);
  const std::string text = read_text_file(path);
  std::vector<json> out;
  size_t line_no = 0, pos = 0;
  while (pos < text.size()) {
    size_t nl = text.find('\n', pos);
    if (nl == std::string::npos) nl = text.size();
    const std::string line = text.substr(pos, nl - pos);
    ++line_no;
    pos = nl + 1;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    json j = parse_json(line, fmt::format("{} line {}", path, line_no));
    LOWBIT_CHECK(j.is_object(), FormatError, "{} line {}: not a JSON object", path, line_no);
    out.push_back(std::move(j));
  }
  return out;
}

// LLaVA jsonl (textvqa / vizwiz): {"question_id", "image", "text"}.
std::vector<VqaQuestion> read_llava_jsonl(const std::string& path) {
  std::vector<VqaQuestion> qs;
  size_t i = 0;
  for (const json& j : read_jsonl(path)) {
    ++i;
    const std::string where = fmt::format("question {}", i);
    LOWBIT_CHECK(j.contains("question_id") && (j["question_id"].is_string() || j["question_id"].is_number_integer()),
                 FormatError, "{}: {} has no \"question_id\"", path, where);
    VqaQuestion q;
    q.question_id = j["question_id"];
    q.text = str_field(j, "text", path, where);
    q.image = str_field(j, "image", path, where);
    qs.push_back(std::move(q));
  }
  return qs;
}

std::vector<std::string> split_lines(const std::string& s) {
  std::vector<std::string> out;
  size_t pos = 0;
  while (true) {
    size_t nl = s.find('\n', pos);
    out.push_back(s.substr(pos, nl == std::string::npos ? std::string::npos : nl - pos));
    if (nl == std::string::npos) break;
    pos = nl + 1;
  }
  return out;
}

std::string lower_ascii(std::string s) {
  for (char& c : s)
    if (c >= 'A' && c <= 'Z') c = char(c - 'A' + 'a');
  return s;
}

std::string strip_ws(const std::string& s) {
  const size_t b = s.find_first_not_of(" \t\r\n");
  if (b == std::string::npos) return "";
  return s.substr(b, s.find_last_not_of(" \t\r\n") - b + 1);
}

// The question line of a LLaVA TextVQA "text" (eval_textvqa.py prompt_processor, lower-cased).
std::string textvqa_question_line(const std::string& text) {
  const std::vector<std::string> lines = split_lines(text);
  std::string q;
  if (text.rfind("Reference OCR token:", 0) == 0 && lines.size() >= 2) q = lines[1];
  else q = lines[0];
  if (q.rfind("Question: ", 0) == 0) q = q.substr(10);
  return lower_ascii(q);
}

VqaDataset load_vqav2(const std::string& qfile, const std::string& afile) {
  const json j = read_json_file(qfile, "--questions");
  LOWBIT_CHECK(j.is_object() && j.contains("questions") && j["questions"].is_array(), FormatError,
               "{}: not a VQAv2 questions file (no \"questions\" list)", qfile);
  VqaDataset d{VqaTask::VQAv2, str_field(j, "data_subtype", qfile, "the file"), false, {}};
  for (const json& x : j["questions"]) {
    const std::string where = fmt::format("question {}", d.questions.size() + 1);
    LOWBIT_CHECK(x.is_object() && x.contains("question_id") && x["question_id"].is_number_integer() &&
                     x.contains("image_id") && x["image_id"].is_number_integer(),
                 FormatError, "{}: {} needs integer \"question_id\" and \"image_id\"", qfile, where);
    VqaQuestion q;
    q.question_id = x["question_id"];
    q.text = str_field(x, "question", qfile, where);
    q.image = fmt::format("COCO_{}_{:012d}.jpg", d.data_subtype, x["image_id"].get<int64_t>());
    d.questions.push_back(std::move(q));
  }
  assign_keys(d.questions);
  if (afile.empty()) return d;
  const json a = read_json_file(afile, "--annotations");
  LOWBIT_CHECK(a.is_object() && a.contains("annotations") && a["annotations"].is_array(), FormatError,
               "{}: not a VQAv2 annotations file (no \"annotations\" list)", afile);
  std::unordered_map<std::string, const json*> by_id;
  for (const json& x : a["annotations"]) {
    LOWBIT_CHECK(x.is_object() && x.contains("question_id"), FormatError, "{}: an annotation has no question_id", afile);
    by_id[id_string(x["question_id"])] = &x;
  }
  for (VqaQuestion& q : d.questions) {
    auto it = by_id.find(id_string(q.question_id));
    LOWBIT_CHECK(it != by_id.end(), FormatError, "{}: no annotation for question {}", afile, q.key);
    const json& x = *it->second;
    q.answers = answer_list(x, afile, "question " + q.key);
    q.has_truth = true;
    for (const char* g : {"answer_type", "question_type"})
      if (x.contains(g) && x[g].is_string()) q.groups.emplace(g, x[g].get<std::string>());
  }
  d.scored = true;
  return d;
}

VqaDataset load_textvqa(const std::string& qfile, const std::string& afile) {
  VqaDataset d{VqaTask::TextVQA, "", false, read_llava_jsonl(qfile)};
  assign_keys(d.questions);
  if (afile.empty()) return d;
  const json a = read_json_file(afile, "--annotations");
  LOWBIT_CHECK(a.is_object() && a.contains("data") && a["data"].is_array(), FormatError,
               "{}: not a TextVQA annotations file (no \"data\" list)", afile);
  std::map<std::pair<std::string, std::string>, const json*> by_key;
  for (const json& x : a["data"]) {
    LOWBIT_CHECK(x.is_object() && x.contains("image_id"), FormatError, "{}: an entry has no image_id", afile);
    by_key[{id_string(x["image_id"]), lower_ascii(str_field(x, "question", afile, "an entry"))}] = &x;
  }
  for (VqaQuestion& q : d.questions) {
    auto it = by_key.find({id_string(q.question_id), textvqa_question_line(q.text)});
    LOWBIT_CHECK(it != by_key.end(), FormatError, "{}: no annotation for question {} (image_id {}, question \"{}\")",
                 afile, q.key, id_string(q.question_id), textvqa_question_line(q.text));
    q.answers = answer_list(*it->second, afile, "question " + q.key);
    q.has_truth = true;
  }
  d.scored = true;
  return d;
}

VqaDataset load_vizwiz(const std::string& qfile, const std::string& afile) {
  VqaDataset d{VqaTask::VizWiz, "", false, read_llava_jsonl(qfile)};
  assign_keys(d.questions);
  if (afile.empty()) return d;
  const json a = read_json_file(afile, "--annotations");
  LOWBIT_CHECK(a.is_array(), FormatError, "{}: not a VizWiz annotations file (a list of {{image, answers}})", afile);
  std::unordered_map<std::string, const json*> by_image;
  for (const json& x : a) by_image[str_field(x, "image", afile, "an entry")] = &x;
  for (VqaQuestion& q : d.questions) {
    auto it = by_image.find(fs::path(q.image).filename().string());
    LOWBIT_CHECK(it != by_image.end(), FormatError, "{}: no annotation for question {} (image {})", afile, q.key,
                 q.image);
    const json& x = *it->second;
    q.answers = answer_list(x, afile, "image " + q.image);
    q.has_truth = true;
    if (x.contains("answer_type") && x["answer_type"].is_string()) q.groups.emplace("answer_type", x["answer_type"].get<std::string>());
    if (x.contains("answerable") && (x["answerable"].is_number() || x["answerable"].is_boolean()))
      q.groups.emplace("answerable",
                       (x["answerable"].is_boolean() ? x["answerable"].get<bool>() : x["answerable"].get<double>() != 0)
                           ? "answerable"
                           : "unanswerable");
  }
  d.scored = true;
  return d;
}

// "X. text" lines, else "(X) text" items.
std::map<std::string, std::string> parse_options(const std::string& text) {
  std::map<std::string, std::string> opts;
  for (const std::string& l : split_lines(text))
    if (l.size() >= 3 && l[0] >= 'A' && l[0] <= 'Z' && l[1] == '.' && l[2] == ' ') opts[std::string(1, l[0])] = strip_ws(l.substr(3));
  if (!opts.empty()) return opts;
  for (size_t p = text.find('('); p != std::string::npos; p = text.find('(', p + 1)) {
    if (p + 3 >= text.size() || text[p + 1] < 'A' || text[p + 1] > 'Z' || text[p + 2] != ')' || text[p + 3] != ' ') continue;
    size_t end = text.find(" (", p + 3);
    while (end != std::string::npos &&
           !(end + 3 < text.size() && text[end + 2] >= 'A' && text[end + 2] <= 'Z' && text[end + 3] == ')'))
      end = text.find(" (", end + 1);
    const size_t nl = text.find('\n', p);
    if (nl != std::string::npos && (end == std::string::npos || nl < end)) end = nl;
    opts[std::string(1, text[p + 1])] = strip_ws(text.substr(p + 4, end == std::string::npos ? std::string::npos : end - p - 4));
  }
  return opts;
}

// ScienceQA's context groups as its own evaluator forms them (TXT / IMG / NO), overlapping:
// has_text = the hint is non-empty (with or without an image), has_image = the question has an
// image, no_context = neither.
void add_context_groups(VqaQuestion& q, const std::string& hint) {
  if (!strip_ws(hint).empty()) q.groups.emplace("context", "has_text");
  if (!q.image.empty()) q.groups.emplace("context", "has_image");
  if (strip_ws(hint).empty() && q.image.empty()) q.groups.emplace("context", "no_context");
}

// The hint of a LLaVA-converted question: its "Context: …" line, "" when absent or "N/A" (what
// LLaVA's converter writes for an empty hint).
std::string llava_context(const std::string& text) {
  for (const std::string& l : split_lines(text))
    if (l.rfind("Context:", 0) == 0) {
      const std::string c = strip_ws(l.substr(8));
      return c == "N/A" ? "" : c;
    }
  return "";
}

// At most max_bytes of s, cut at a UTF-8 character boundary ("…" appended when cut), as a JSON
// string: newlines and quotes escaped, so an error message stays one line.
std::string quoted_excerpt(const std::string& s, size_t max_bytes) {
  size_t n = std::min(s.size(), max_bytes);
  while (n > 0 && n < s.size() && (uint8_t(s[n]) & 0xC0) == 0x80) --n;  // not inside a character
  const std::string cut = n < s.size() ? s.substr(0, n) + "\u2026" : s;
  return json(cut).dump(-1, ' ', false, json::error_handler_t::replace);
}

// The gpt turn's letter: "X", "X. …", or "… The answer is X…" (last occurrence); "" if none.
std::string truth_letter(const std::string& v) {
  const std::string s = strip_ws(v);
  if (s.size() == 1 && s[0] >= 'A' && s[0] <= 'Z') return s;
  if (s.size() >= 2 && s[0] >= 'A' && s[0] <= 'Z' && s[1] == '.') return s.substr(0, 1);
  const size_t p = s.rfind("The answer is ");
  if (p != std::string::npos && p + 14 < s.size() && s[p + 14] >= 'A' && s[p + 14] <= 'Z') return s.substr(p + 14, 1);
  return "";
}

VqaDataset load_scienceqa_llava(const json& j, const std::string& qfile) {
  VqaDataset d{VqaTask::ScienceQA, "", true, {}};
  for (const json& x : j) {
    const std::string where = fmt::format("entry {}", d.questions.size() + 1);
    LOWBIT_CHECK(x.is_object() && x.contains("id") && (x["id"].is_string() || x["id"].is_number_integer()) &&
                     x.contains("conversations") && x["conversations"].is_array() && x["conversations"].size() >= 2,
                 FormatError, "{}: {} needs \"id\" and two \"conversations\" turns", qfile, where);
    VqaQuestion q;
    q.question_id = x["id"];
    const std::string human = str_field(x["conversations"][0], "value", qfile, where + " conversations[0]");
    const std::string gpt = str_field(x["conversations"][1], "value", qfile, where + " conversations[1]");
    std::string t = human;
    for (size_t p = t.find("<image>"); p != std::string::npos; p = t.find("<image>")) t.erase(p, 7);
    q.llava_text = strip_ws(t);
    q.text = q.llava_text;
    q.options = parse_options(q.llava_text);
    LOWBIT_CHECK(!q.options.empty(), FormatError, "{}: {} (id {}): no options (\"A. …\" lines or \"(A) …\") in the question",
                 qfile, where, id_string(q.question_id));
    q.answer_letter = truth_letter(gpt);
    LOWBIT_CHECK(!q.answer_letter.empty(), FormatError,
                 "{}: {} (id {}): the answer turn {} names no option letter", qfile, where, id_string(q.question_id),
                 quoted_excerpt(gpt, 60));
    q.has_truth = true;
    if (x.contains("image") && x["image"].is_string()) q.image = x["image"].get<std::string>();
    add_context_groups(q, llava_context(q.llava_text));
    d.questions.push_back(std::move(q));
  }
  assign_keys(d.questions);
  return d;
}

VqaDataset load_scienceqa_problems(const json& problems, const std::string& qfile, std::string splits_file,
                                   const std::string& split) {
  if (splits_file.empty()) splits_file = (fs::path(qfile).parent_path() / "pid_splits.json").string();
  LOWBIT_CHECK(fs::is_regular_file(splits_file), IoError,
               "--annotations: ScienceQA's problems.json needs pid_splits.json ({} not found; pass --annotations FILE)",
               splits_file);
  const json s = parse_json(read_text_file(splits_file), splits_file);
  LOWBIT_CHECK(s.is_object() && s.contains(split) && s[split].is_array(), FormatError,
               "{}: no split \"{}\" (--split)", splits_file, split);
  VqaDataset d{VqaTask::ScienceQA, "", true, {}};
  for (const json& pid_j : s[split]) {
    const std::string pid = id_string(pid_j);
    LOWBIT_CHECK(problems.contains(pid), FormatError, "{}: split {} names problem {}, which {} does not have",
                 splits_file, split, pid, qfile);
    const json& p = problems[pid];
    const std::string where = "problem " + pid;
    VqaQuestion q;
    q.question_id = pid;
    q.text = str_field(p, "question", qfile, where);
    LOWBIT_CHECK(p.contains("choices") && p["choices"].is_array() && !p["choices"].empty() && p["choices"].size() <= 26,
                 FormatError, "{}: {} needs 1..26 \"choices\"", qfile, where);
    for (size_t i = 0; i < p["choices"].size(); ++i) {
      LOWBIT_CHECK(p["choices"][i].is_string(), FormatError, "{}: {} choice {} is not a string", qfile, where, i);
      q.options[std::string(1, char('A' + i))] = p["choices"][i].get<std::string>();
    }
    LOWBIT_CHECK(p.contains("answer") && p["answer"].is_number_integer() && p["answer"].get<int64_t>() >= 0 &&
                     p["answer"].get<int64_t>() < int64_t(p["choices"].size()),
                 FormatError, "{}: {} has no valid \"answer\" index", qfile, where);
    q.answer_letter = std::string(1, char('A' + p["answer"].get<int64_t>()));
    q.has_truth = true;
    if (p.contains("hint") && p["hint"].is_string()) q.hint = p["hint"].get<std::string>();
    if (p.contains("image") && p["image"].is_string() && !p["image"].get<std::string>().empty())
      q.image = pid + "/" + p["image"].get<std::string>();
    // The ScienceQA paper's groups: subject, context modality (TXT / IMG / NO, overlapping), grade band.
    if (p.contains("subject") && p["subject"].is_string()) q.groups.emplace("subject", p["subject"].get<std::string>());
    add_context_groups(q, q.hint);
    if (p.contains("grade") && p["grade"].is_string()) {
      const std::string g = p["grade"].get<std::string>();  // "grade1" … "grade12"
      int n = 0;
      for (char c : g)
        if (c >= '0' && c <= '9') n = n * 10 + (c - '0');
      if (n > 0) q.groups.emplace("grade", n <= 6 ? "G1-6" : "G7-12");
    }
    d.questions.push_back(std::move(q));
  }
  assign_keys(d.questions);
  d.split_used = true;
  return d;
}

}  // namespace

VqaDataset load_vqa_dataset(VqaTask task, const std::string& questions, const std::string& annotations,
                            const std::string& split) {
  switch (task) {
    case VqaTask::VQAv2: return load_vqav2(questions, annotations);
    case VqaTask::TextVQA: return load_textvqa(questions, annotations);
    case VqaTask::VizWiz: return load_vizwiz(questions, annotations);
    case VqaTask::ScienceQA: {
      const json j = read_json_file(questions, "--questions");
      if (j.is_array()) {
        LOWBIT_CHECK(annotations.empty(), ArgError,
                     "--annotations: LLaVA's converted ScienceQA file carries its answers; --annotations is for "
                     "problems.json's pid_splits.json");
        return load_scienceqa_llava(j, questions);
      }
      LOWBIT_CHECK(j.is_object(), FormatError, "{}: neither LLaVA's ScienceQA list nor problems.json", questions);
      return load_scienceqa_problems(j, questions, annotations, split);
    }
  }
  throw ArgError("--task: unknown task");
}

}  // namespace lowbit
