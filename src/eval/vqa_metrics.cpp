// VQA normalization and scores; the rules and their sources are in vqa_metrics.h (A1-A5, B1-B4,
// C1-C4). This file is a reimplementation: the tables below are the evaluators' data.
#include "eval/vqa_metrics.h"

#include <algorithm>
#include <array>
#include <unordered_map>

namespace lowbit {

namespace {

bool is_space(unsigned char c) { return c == ' ' || (c >= '\t' && c <= '\r') || (c >= 0x1c && c <= 0x1f); }
bool is_digit(char c) { return c >= '0' && c <= '9'; }

std::string strip(const std::string& s) {
  size_t b = 0, e = s.size();
  while (b < e && is_space(static_cast<unsigned char>(s[b]))) ++b;
  while (e > b && is_space(static_cast<unsigned char>(s[e - 1]))) --e;
  return s.substr(b, e - b);
}

// ASCII A-Z, and Latin-1 À..Þ (UTF-8 C3 80..C3 9E, except × = C3 97) lower-cased.
std::string lower(const std::string& s) {
  std::string r = s;
  for (size_t i = 0; i < r.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(r[i]);
    if (c >= 'A' && c <= 'Z') {
      r[i] = char(c + 32);
    } else if (c == 0xC3 && i + 1 < r.size()) {
      const unsigned char d = static_cast<unsigned char>(r[i + 1]);
      if (d >= 0x80 && d <= 0x9E && d != 0x97) r[i + 1] = char(d + 0x20);
      ++i;
    }
  }
  return r;
}

std::vector<std::string> split_ws(const std::string& s) {
  std::vector<std::string> out;
  size_t i = 0;
  while (i < s.size()) {
    while (i < s.size() && is_space(static_cast<unsigned char>(s[i]))) ++i;
    size_t j = i;
    while (j < s.size() && !is_space(static_cast<unsigned char>(s[j]))) ++j;
    if (j > i) out.push_back(s.substr(i, j - i));
    i = j;
  }
  return out;
}

std::string replace_all(std::string s, const std::string& from, const std::string& to) {
  for (size_t p = s.find(from); p != std::string::npos; p = s.find(from, p + to.size())) s.replace(p, from.size(), to);
  return s;
}

bool contains(const std::string& s, const std::string& sub) { return s.find(sub) != std::string::npos; }

// A3/B3's punctuation list, in the evaluators' order.
constexpr std::array<char, 21> kPunct = {';', '/', '[', ']', '"', '{', '}', '(', ')', '=', '+',
                                         '\\', '_', '-', '>', '<', '@', '`', ',', '?', '!'};

// A4's number words.
const std::unordered_map<std::string, std::string>& number_map() {
  static const std::unordered_map<std::string, std::string> k = {
      {"none", "0"}, {"zero", "0"}, {"one", "1"}, {"two", "2"},   {"three", "3"}, {"four", "4"},
      {"five", "5"}, {"six", "6"},  {"seven", "7"}, {"eight", "8"}, {"nine", "9"},  {"ten", "10"}};
  return k;
}

// A4's contraction table (the VQA evaluator's and EvalAI's are the same data).
const std::unordered_map<std::string, std::string>& contractions() {
  static const std::unordered_map<std::string, std::string> k = {
      {"aint", "ain't"},           {"arent", "aren't"},           {"cant", "can't"},
      {"couldve", "could've"},     {"couldnt", "couldn't"},       {"couldn'tve", "couldn't've"},
      {"couldnt've", "couldn't've"}, {"didnt", "didn't"},         {"doesnt", "doesn't"},
      {"dont", "don't"},           {"hadnt", "hadn't"},           {"hadnt've", "hadn't've"},
      {"hadn'tve", "hadn't've"},   {"hasnt", "hasn't"},           {"havent", "haven't"},
      {"hed", "he'd"},             {"hed've", "he'd've"},         {"he'dve", "he'd've"},
      {"hes", "he's"},             {"howd", "how'd"},             {"howll", "how'll"},
      {"hows", "how's"},           {"Id've", "I'd've"},           {"I'dve", "I'd've"},
      {"Im", "I'm"},               {"Ive", "I've"},               {"isnt", "isn't"},
      {"itd", "it'd"},             {"itd've", "it'd've"},         {"it'dve", "it'd've"},
      {"itll", "it'll"},           {"let's", "let's"},            {"maam", "ma'am"},
      {"mightnt", "mightn't"},     {"mightnt've", "mightn't've"}, {"mightn'tve", "mightn't've"},
      {"mightve", "might've"},     {"mustnt", "mustn't"},         {"mustve", "must've"},
      {"neednt", "needn't"},       {"notve", "not've"},           {"oclock", "o'clock"},
      {"oughtnt", "oughtn't"},     {"ow's'at", "'ow's'at"},       {"'ows'at", "'ow's'at"},
      {"'ow'sat", "'ow's'at"},     {"shant", "shan't"},           {"shed've", "she'd've"},
      {"she'dve", "she'd've"},     {"she's", "she's"},            {"shouldve", "should've"},
      {"shouldnt", "shouldn't"},   {"shouldnt've", "shouldn't've"}, {"shouldn'tve", "shouldn't've"},
      {"somebody'd", "somebodyd"}, {"somebodyd've", "somebody'd've"}, {"somebody'dve", "somebody'd've"},
      {"somebodyll", "somebody'll"}, {"somebodys", "somebody's"}, {"someoned", "someone'd"},
      {"someoned've", "someone'd've"}, {"someone'dve", "someone'd've"}, {"someonell", "someone'll"},
      {"someones", "someone's"},   {"somethingd", "something'd"}, {"somethingd've", "something'd've"},
      {"something'dve", "something'd've"}, {"somethingll", "something'll"}, {"thats", "that's"},
      {"thered", "there'd"},       {"thered've", "there'd've"},   {"there'dve", "there'd've"},
      {"therere", "there're"},     {"theres", "there's"},         {"theyd", "they'd"},
      {"theyd've", "they'd've"},   {"they'dve", "they'd've"},     {"theyll", "they'll"},
      {"theyre", "they're"},       {"theyve", "they've"},         {"twas", "'twas"},
      {"wasnt", "wasn't"},         {"wed've", "we'd've"},         {"we'dve", "we'd've"},
      {"weve", "we've"},           {"werent", "weren't"},         {"whatll", "what'll"},
      {"whatre", "what're"},       {"whats", "what's"},           {"whatve", "what've"},
      {"whens", "when's"},         {"whered", "where'd"},         {"wheres", "where's"},
      {"whereve", "where've"},     {"whod", "who'd"},             {"whod've", "who'd've"},
      {"who'dve", "who'd've"},     {"wholl", "who'll"},           {"whos", "who's"},
      {"whove", "who've"},         {"whyll", "why'll"},           {"whyre", "why're"},
      {"whys", "why's"},           {"wont", "won't"},             {"wouldve", "would've"},
      {"wouldnt", "wouldn't"},     {"wouldnt've", "wouldn't've"}, {"wouldn'tve", "wouldn't've"},
      {"yall", "y'all"},           {"yall'll", "y'all'll"},       {"y'allll", "y'all'll"},
      {"yall'd've", "y'all'd've"}, {"y'alld've", "y'all'd've"},   {"y'all'dve", "y'all'd've"},
      {"youd", "you'd"},           {"youd've", "you'd've"},       {"you'dve", "you'd've"},
      {"youll", "you'll"},         {"youre", "you're"},           {"youve", "you've"}};
  return k;
}

// "(\d)(,)(\d)" (A3), or "(?<=\d)(,)+(?=\d)" (B3) somewhere in s.
bool has_digit_comma_digit(const std::string& s, bool comma_plus) {
  for (size_t i = 0; i + 2 < s.size(); ++i) {
    if (!is_digit(s[i]) || s[i + 1] != ',') continue;
    size_t j = i + 1;
    if (comma_plus)
      while (j < s.size() && s[j] == ',') ++j;
    else
      ++j;
    if (j < s.size() && is_digit(s[j])) return true;
  }
  return false;
}

// A1: '\n', '\t' → ' ', then strip.
std::string a1(const std::string& s) {
  std::string r = s;
  for (char& c : r)
    if (c == '\n' || c == '\t') c = ' ';
  return strip(r);
}

}  // namespace

std::string vqa_process_punctuation(const std::string& in, bool comma_plus) {
  const bool digit_comma = has_digit_comma_digit(in, comma_plus);
  std::string out = in;
  for (char p : kPunct) {
    const std::string ps(1, p);
    const bool del = contains(in, ps + " ") || contains(in, " " + ps) || digit_comma;
    out = replace_all(out, ps, del ? "" : " ");
  }
  // Periods not followed by a digit, at most 32 of them (re.UNICODE passed as the count).
  std::string r;
  r.reserve(out.size());
  int removed = 0;
  for (size_t i = 0; i < out.size(); ++i) {
    if (out[i] == '.' && removed < 32 && !(i + 1 < out.size() && is_digit(out[i + 1]))) {
      ++removed;
      continue;
    }
    r += out[i];
  }
  return r;
}

std::string vqa_process_digit_article(const std::string& in) {
  std::vector<std::string> words;
  for (std::string w : split_ws(lower(in))) {
    if (auto it = number_map().find(w); it != number_map().end()) w = it->second;
    if (w == "a" || w == "an" || w == "the") continue;
    words.push_back(w);
  }
  std::string out;
  for (size_t i = 0; i < words.size(); ++i) {
    auto it = contractions().find(words[i]);
    out += (i ? " " : "") + (it != contractions().end() ? it->second : words[i]);
  }
  return out;
}

std::string evalai_normalize(const std::string& text) {
  std::string s = lower(text);  // B1
  s = replace_all(s, ",", "");
  s = replace_all(s, "?", "");
  s = replace_all(s, "'s", " 's");
  s = a1(strip(s));  // B2
  s = vqa_process_punctuation(s, /*comma_plus=*/true);  // B3
  return vqa_process_digit_article(s);                  // B4
}

double leave_one_out_accuracy(const std::string& prediction, const std::vector<std::string>& answers) {
  if (answers.empty()) return 0.0;
  const int64_t total = int64_t(std::count(answers.begin(), answers.end(), prediction));
  double sum = 0;
  for (const std::string& a : answers) {
    const int64_t others = total - (a == prediction ? 1 : 0);  // matches among the other n-1
    sum += std::min(1.0, double(others) / 3.0);
  }
  return sum / double(answers.size());
}

double vqa_official_accuracy(const std::string& prediction, const std::vector<std::string>& answers) {
  std::string pred = a1(prediction);
  std::vector<std::string> gts;
  for (const std::string& a : answers) gts.push_back(a1(a));
  bool all_same = true;
  for (const std::string& g : gts) all_same = all_same && g == gts.front();
  if (!gts.empty() && !all_same) {  // A2
    for (std::string& g : gts) g = vqa_process_digit_article(vqa_process_punctuation(g));
    pred = vqa_process_digit_article(vqa_process_punctuation(pred));
  }
  return leave_one_out_accuracy(pred, gts);
}

double textvqa_accuracy(const std::string& prediction, const std::vector<std::string>& answers) {
  std::vector<std::string> gts;
  for (const std::string& a : answers) gts.push_back(evalai_normalize(a));
  return leave_one_out_accuracy(evalai_normalize(prediction), gts);
}

std::string scienceqa_extract_letter(const std::string& text, const std::map<std::string, std::string>& options) {
  static const char* kRefusals[] = {"Sorry, I can't help with images of people yet.", "I can't process this file.",
                                    "I'm sorry, but without the image provided", "Cannot determine the answer"};
  for (const char* r : kRefusals)
    if (contains(text, r)) return "Z";  // C1
  std::string mod = text;               // C2
  for (char c : std::string(".()[],:;!*#{}"))
    for (char& x : mod)
      if (x == c) x = ' ';
  const std::vector<std::string> tokens = split_ws(mod);
  auto has_token = [&](const std::string& t) { return std::find(tokens.begin(), tokens.end(), t) != tokens.end(); };
  std::vector<std::string> found;
  for (const auto& [letter, _] : options)
    if (has_token(letter)) found.push_back(letter);
  if (found.size() == 1) return found.front();
  if (found.empty() && has_token("Z")) return "Z";
  const std::string low = lower(text);  // C3
  std::vector<std::string> cands;
  for (const auto& [letter, opt] : options)
    if (contains(low, lower(opt))) cands.push_back(letter);
  if (cands.size() == 1) return cands.front();
  return "Z";  // C4
}

}  // namespace lowbit
