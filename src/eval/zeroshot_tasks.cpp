// Task definitions of eval/zeroshot.h: lm-eval-harness's doc_to_text / doc_to_choice /
// doc_to_target for each task, on the neutral jsonl records of ../shared/data/tasks, and
// HFLM._encode_pair's tokenization of a (context, continuation) request.
//
//   arc_easy, arc_challenge  context "Question: {question}\nAnswer:"   choices " {choice}"
//   piqa                     context "Question: {goal}\nAnswer:"       choices " {sol1}", " {sol2}"
//   openbookqa               context "{question_stem}"                 choices " {choice}"
//   siqa                     context "Q: {context} {question}\nA:"     choices " {answerA..C}"
//                            (our record's "question" is "{context} {question}" already)
//   winogrande               sentence = pre + "_" + post; contexts pre + option1/2,
//                            continuation " " + strip(post)
//   lambada_openai           words = text.split(' '); context " ".join(words[:-1]),
//                            continuation " " + words[-1]
#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "eval/zeroshot.h"
#include "io/json_util.h"

namespace lowbit {

namespace {

// Python's str.isspace for one code point.
bool py_space(uint32_t c) {
  return (c >= 0x09 && c <= 0x0d) || (c >= 0x1c && c <= 0x20) || c == 0x85 || c == 0xa0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 || c == 0x202f || c == 0x205f || c == 0x3000;
}

// Decodes the code point that ends at byte `end` (exclusive); returns its first byte.
size_t prev_cp(const std::string& s, size_t end, uint32_t* cp) {
  size_t b = end - 1;
  while (b > 0 && (uint8_t(s[b]) & 0xc0) == 0x80 && end - b < 4) --b;
  const auto* p = reinterpret_cast<const uint8_t*>(s.data()) + b;
  const size_t n = end - b;
  if (n == 1) *cp = p[0];
  else if (n == 2) *cp = (uint32_t(p[0] & 0x1f) << 6) | (p[1] & 0x3f);
  else if (n == 3) *cp = (uint32_t(p[0] & 0x0f) << 12) | (uint32_t(p[1] & 0x3f) << 6) | (p[2] & 0x3f);
  else *cp = (uint32_t(p[0] & 0x07) << 18) | (uint32_t(p[1] & 0x3f) << 12) | (uint32_t(p[2] & 0x3f) << 6) | (p[3] & 0x3f);
  return b;
}

size_t next_cp(const std::string& s, size_t b, uint32_t* cp) {
  const auto* p = reinterpret_cast<const uint8_t*>(s.data()) + b;
  size_t n = p[0] < 0x80 ? 1 : p[0] < 0xe0 ? 2 : p[0] < 0xf0 ? 3 : 4;
  n = std::min(n, s.size() - b);
  std::string one = s.substr(b, n);
  prev_cp(one, one.size(), cp);
  return b + n;
}

// Python str.rstrip() / str.strip() (Unicode whitespace).
size_t rstrip_len(const std::string& s) {
  size_t end = s.size();
  while (end > 0) {
    uint32_t cp = 0;
    size_t b = prev_cp(s, end, &cp);
    if (!py_space(cp)) break;
    end = b;
  }
  return end;
}
std::string py_strip(const std::string& s) {
  size_t b = 0;
  while (b < s.size()) {
    uint32_t cp = 0;
    size_t nb = next_cp(s, b, &cp);
    if (!py_space(cp)) break;
    b = nb;
  }
  std::string t = s.substr(b);
  return t.substr(0, rstrip_len(t));
}

const std::string& str_field(const nlohmann::json& doc, const char* key, const std::string& task) {
  LOWBIT_CHECK(doc.is_object() && doc.contains(key) && doc[key].is_string(), FormatError,
               "{}: record without a string \"{}\": {}", task, key, json_excerpt(doc));
  return doc[key].get_ref<const std::string&>();
}
int64_t int_field(const nlohmann::json& doc, const char* key, const std::string& task) {
  LOWBIT_CHECK(doc.is_object() && doc.contains(key) && doc[key].is_number_integer(), FormatError,
               "{}: record without an integer \"{}\": {}", task, key, json_excerpt(doc));
  return doc[key].get<int64_t>();
}

}  // namespace

int64_t choice_length(const std::string& s) {
  int64_t n = 0;  // Python len(): code points
  for (unsigned char c : s) n += (c & 0xc0) != 0x80;
  return n;
}

bool task_reports_acc_norm(const std::string& task) {
  return task == "arc_easy" || task == "arc_challenge" || task == "piqa" || task == "openbookqa";
}

const std::vector<std::string>& known_tasks() {
  static const std::vector<std::string> names = {"arc_easy", "arc_challenge", "piqa",          "openbookqa",
                                                 "siqa",     "winogrande",    "lambada_openai"};
  return names;
}

TaskKind task_kind(const std::string& task) {
  if (task == "winogrande") return TaskKind::Winogrande;
  if (task == "lambada_openai") return TaskKind::Lambada;
  for (const auto& n : known_tasks())
    if (n == task) return TaskKind::MultipleChoice;
  std::string list;
  for (const auto& n : known_tasks()) list += (list.empty() ? "" : ", ") + n;
  throw ArgError(fmt::format("unknown task '{}' (known: {})", task, list));
}

Prompt make_prompt(const std::string& task, const nlohmann::json& doc) {
  Prompt p;
  switch (task_kind(task)) {
    case TaskKind::MultipleChoice: {
      const std::string& q = str_field(doc, "question", task);
      std::string context;
      if (task == "arc_easy" || task == "arc_challenge" || task == "piqa")
        context = "Question: " + q + "\nAnswer:";
      else if (task == "siqa")
        context = "Q: " + q + "\nA:";
      else  // openbookqa: the question stem alone
        context = q;
      LOWBIT_CHECK(doc.contains("choices") && doc["choices"].is_array() && !doc["choices"].empty(), FormatError,
                   "{}: record without a non-empty \"choices\" list: {}", task, json_excerpt(doc));
      for (const auto& c : doc["choices"]) {
        LOWBIT_CHECK(c.is_string(), FormatError, "{}: a choice is not a string: {}", task, json_excerpt(doc));
        p.contexts.push_back(context);
        p.continuations.push_back(fmt::format(" {}", c.get<std::string>()));
        p.choice_len.push_back(choice_length(c.get<std::string>()));
      }
      p.gold = int_field(doc, "answer", task);
      LOWBIT_CHECK(p.gold >= 0 && p.gold < int64_t(p.continuations.size()), FormatError,
                   "{}: answer {} outside the {} choices: {}", task, p.gold, p.continuations.size(),
                   json_excerpt(doc));
      return p;
    }
    case TaskKind::Winogrande: {
      const std::string& s = str_field(doc, "sentence", task);
      const size_t blank = s.find('_');
      LOWBIT_CHECK(blank != std::string::npos, FormatError, "{}: sentence without a blank '_': {}", task,
                   json_excerpt(doc));
      const std::string pre = s.substr(0, blank), target = fmt::format(" {}", py_strip(s.substr(blank + 1)));
      for (const char* key : {"option1", "option2"}) {
        p.contexts.push_back(pre + str_field(doc, key, task));  // lm-eval's doc_to_choice
        p.continuations.push_back(target);
        p.choice_len.push_back(choice_length(p.contexts.back()));
      }
      const int64_t a = int_field(doc, "answer", task);
      LOWBIT_CHECK(a == 1 || a == 2, FormatError, "{}: answer must be 1 or 2, got {}: {}", task, a,
                   json_excerpt(doc));
      p.gold = a - 1;
      return p;
    }
    case TaskKind::Lambada: {
      const std::string& t = str_field(doc, "text", task);
      const size_t sp = t.rfind(' ');
      // " ".join(text.split(' ')[:-1]) is everything before the last ' ' (empty without one).
      p.contexts = {sp == std::string::npos ? std::string() : t.substr(0, sp)};
      p.continuations = {fmt::format(" {}", sp == std::string::npos ? t : t.substr(sp + 1))};
      p.choice_len = {choice_length(p.continuations[0])};
      return p;
    }
  }
  LOWBIT_ASSERT(false);
  return p;
}

bool hf_adds_bos(const std::string& model_dir, const Tokenizer& tok) {
  const std::string json_path = model_dir + "/tokenizer.json";
  // The file's own view (JsonTokenizer: add_bos iff the post-processor leads with a special token).
  if (!model_dir.empty() && std::filesystem::is_regular_file(json_path)) return load_tokenizer_json(json_path)->add_bos();
  return tok.add_bos();
}

// HFLM.tok_encode with add_special_tokens left to the tokenizer: BOS when it adds one,
// except when the text already starts with the BOS string.
std::vector<int32_t> hf_encode(const Tokenizer& tok, const std::string& text, bool add_bos) {
  std::vector<int32_t> ids;
  const int32_t bos = tok.bos_id();
  if (add_bos && bos >= 0) {
    const std::string bos_str = tok.id_to_token(bos);
    if (bos_str.empty() || text.compare(0, bos_str.size(), bos_str) != 0) ids.push_back(bos);
  }
  std::vector<int32_t> t = tok.encode(text);
  ids.insert(ids.end(), t.begin(), t.end());
  return ids;
}

LlRequest encode_request(const Tokenizer& tok, const std::string& context, const std::string& continuation,
                         bool add_bos) {
  LlRequest r;
  if (context.empty()) {
    // HFLM.loglikelihood: the prefix token (BOS, else EOS) is the context, unless the
    // continuation already starts with it.
    r.continuation = continuation;
    std::vector<int32_t> cont = tok.encode(continuation);
    const int32_t prefix = tok.bos_id() >= 0 ? tok.bos_id() : tok.eos_id();
    LOWBIT_CHECK(prefix >= 0, FormatError, "an empty context needs a BOS or EOS token, and the tokenizer has neither");
    if (!cont.empty() && cont[0] == prefix) {
      r.tokens = cont;
      r.cont_len = int64_t(cont.size()) - 1;
    } else {
      r.tokens = {prefix};
      r.tokens.insert(r.tokens.end(), cont.begin(), cont.end());
      r.cont_len = int64_t(cont.size());
    }
    return r;
  }
  // _encode_pair: the context's trailing whitespace moves to the continuation.
  const size_t keep = rstrip_len(context);
  r.context = context.substr(0, keep);
  r.continuation = context.substr(keep) + continuation;
  std::vector<int32_t> whole = hf_encode(tok, r.context + r.continuation, add_bos);
  std::vector<int32_t> ctx = hf_encode(tok, r.context, add_bos);
  r.tokens = ctx;
  if (whole.size() > ctx.size()) r.tokens.insert(r.tokens.end(), whole.begin() + int64_t(ctx.size()), whole.end());
  r.cont_len = int64_t(r.tokens.size() - ctx.size());
  return r;
}

std::vector<ZsItem> load_task(const std::string& task, const std::string& tasks_dir, const Tokenizer& tok,
                              int64_t limit, bool add_bos) {
  task_kind(task);  // unknown names: ArgError before touching files
  const std::string path = tasks_dir + "/" + task + ".jsonl";
  std::ifstream in(path, std::ios::binary);
  LOWBIT_CHECK(in.good(), IoError, "task '{}': cannot open {} (set --tasks-dir to the folder with {}.jsonl)", task,
               path, task);
  std::vector<ZsItem> items;
  std::string line;
  int64_t lineno = 0;
  while ((limit < 0 || int64_t(items.size()) < limit) && std::getline(in, line)) {
    ++lineno;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    nlohmann::json doc;
    try {
      doc = parse_json(line, path);
    } catch (const FormatError& e) {
      throw FormatError(fmt::format("{} line {}: {}", path, lineno, e.what()));
    }
    Prompt p;
    try {
      p = make_prompt(task, doc);
    } catch (const FormatError& e) {
      throw FormatError(fmt::format("{} line {}: {}", path, lineno, e.what()));
    }
    ZsItem it;
    it.id = doc.contains("id") && doc["id"].is_string() ? doc["id"].get<std::string>() : std::to_string(lineno);
    it.gold = p.gold;
    it.choice_len = p.choice_len;
    for (size_t i = 0; i < p.contexts.size(); ++i) it.reqs.push_back(encode_request(tok, p.contexts[i], p.continuations[i], add_bos));
    items.push_back(std::move(it));
  }
  LOWBIT_CHECK(!items.empty(), FormatError, "task '{}': {} has no records", task, path);
  return items;
}

}  // namespace lowbit
