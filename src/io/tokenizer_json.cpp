// HF tokenizer.json: BPE models, SentencePiece-style (▁ for spaces, <0xNN> byte
// fallback) and byte-level (GPT-2 byte alphabet after a regex split), with their
// added tokens, normalizers, pre-tokenizers and decoders. Written from the
// tokenizers library's documented file format. Only the components LLaMA-family
// checkpoints use are implemented; anything else is a FormatError that names it,
// so an unfamiliar file fails loudly instead of tokenizing differently.
#include <algorithm>
#include <cctype>
#include <cstring>
#include <mutex>
#include <queue>
#include <unordered_map>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/json_util.h"
#include "core/progress.h"
#include "io/files.h"
#include "io/tokenizer.h"

namespace lowbit {

// ---- Unicode -----------------------------------------------------------------

bool unicode::is_whitespace(uint32_t cp) {
  // The White_Space property, which is what \s means in the tokenizers' regexes.
  if (cp <= 0x20) return cp == 0x20 || (cp >= 0x09 && cp <= 0x0D);
  if (cp < 0x85) return false;
  return cp == 0x85 || cp == 0xA0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 ||
         cp == 0x2029 || cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

namespace {

using json = nlohmann::json;

// Length of the well-formed UTF-8 sequence at s[i] (no overlongs, surrogates or
// code points past U+10FFFF), or 0 when ill-formed; then *bad is the length of the
// maximal ill-formed prefix (>= 1), the unit that lossy decoding replaces by U+FFFD.
size_t utf8_well_formed(std::string_view s, size_t i, size_t* bad) {
  auto c = uint8_t(s[i]);
  if (c < 0x80) return 1;
  size_t n;
  uint8_t lo = 0x80, hi = 0xBF;  // allowed range of the second byte
  if (c >= 0xC2 && c <= 0xDF) n = 2;
  else if (c >= 0xE0 && c <= 0xEF) n = 3, lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;
  else if (c >= 0xF0 && c <= 0xF4) n = 4, lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;
  else n = 0;
  size_t k = 1;
  for (; n && k < n; ++k) {
    if (i + k >= s.size()) break;
    auto b = uint8_t(s[i + k]);
    if (b < (k == 1 ? lo : 0x80) || b > (k == 1 ? hi : 0xBF)) break;
  }
  if (n && k == n) return n;
  *bad = k;
  return 0;
}

// One "character" of possibly malformed input: a well-formed code point, or a
// single stray byte (cp = kBadByte, classed as punctuation) so any bytes tokenize.
constexpr uint32_t kBadByte = 0xFFFFFFFFu;
struct Char {
  uint32_t cp;
  size_t len;
};
Char char_at(std::string_view s, size_t i) {
  size_t bad = 0, n = utf8_well_formed(s, i, &bad);
  if (n == 0) return {kBadByte, 1};
  auto b = [&](size_t k) { return uint32_t(uint8_t(s[i + k])); };
  switch (n) {
    case 1: return {b(0), 1};
    case 2: return {(b(0) & 0x1F) << 6 | (b(1) & 0x3F), 2};
    case 3: return {(b(0) & 0x0F) << 12 | (b(1) & 0x3F) << 6 | (b(2) & 0x3F), 3};
    default: return {(b(0) & 0x07) << 18 | (b(1) & 0x3F) << 12 | (b(2) & 0x3F) << 6 | (b(3) & 0x3F), 4};
  }
}

void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += char(cp);
  } else if (cp < 0x800) {
    out += char(0xC0 | cp >> 6), out += char(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += char(0xE0 | cp >> 12), out += char(0x80 | (cp >> 6 & 0x3F)), out += char(0x80 | (cp & 0x3F));
  } else {
    out += char(0xF0 | cp >> 18), out += char(0x80 | (cp >> 12 & 0x3F));
    out += char(0x80 | (cp >> 6 & 0x3F)), out += char(0x80 | (cp & 0x3F));
  }
}

bool is_valid_utf8(std::string_view s) {
  for (size_t i = 0, bad; i < s.size();) {
    size_t n = utf8_well_formed(s, i, &bad);
    if (!n) return false;
    i += n;
  }
  return true;
}

// Invalid sequences become U+FFFD, one per maximal ill-formed prefix (what HF's
// lossy byte-level decoding produces for ids cut in the middle of a character).
std::string utf8_lossy(std::string_view s) {
  if (is_valid_utf8(s)) return std::string(s);
  std::string out;
  for (size_t i = 0, bad = 0; i < s.size();) {
    size_t n = utf8_well_formed(s, i, &bad);
    if (n) {
      out.append(s.substr(i, n));
      i += n;
    } else {
      out += "\xEF\xBF\xBD";
      i += bad;
    }
  }
  return out;
}

bool is_ws(Char c) { return c.cp != kBadByte && unicode::is_whitespace(c.cp); }
bool is_letter(Char c) { return c.cp != kBadByte && unicode::is_letter(c.cp); }
bool is_number(Char c) { return c.cp != kBadByte && unicode::is_number(c.cp); }
// [^\s\p{L}\p{N}]
bool is_other(Char c) { return !is_ws(c) && !is_letter(c) && !is_number(c); }

// End of the run of characters satisfying `pred` from i (at most `max_chars` of them).
template <class Pred>
size_t skip_while(std::string_view s, size_t i, Pred pred, size_t max_chars = SIZE_MAX) {
  for (size_t k = 0; i < s.size() && k < max_chars; ++k) {
    Char c = char_at(s, i);
    if (!pred(c)) break;
    i += c.len;
  }
  return i;
}

// 's 't 're 've 'm 'll 'd after an apostrophe at s[i]; returns the match length or 0.
size_t match_contraction(std::string_view s, size_t i, bool ignore_case) {
  if (i >= s.size() || s[i] != '\'') return 0;
  auto at = [&](size_t k) -> char {
    if (i + k >= s.size()) return 0;
    char c = s[i + k];
    return ignore_case && c >= 'A' && c <= 'Z' ? char(c + 32) : c;
  };
  char a = at(1), b = at(2);
  if (a == 's' || a == 't' || a == 'm' || a == 'd') return 2;
  if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return 3;
  return 0;
}

// The whitespace alternatives shared by both regexes: \s+(?!\S)|\s+ — a run of
// whitespace followed by a word leaves its last character to prefix that word.
size_t match_space_run(std::string_view s, size_t i) {
  size_t last = i, e = i;
  while (e < s.size()) {
    Char c = char_at(s, e);
    if (!is_ws(c)) break;
    last = e;
    e += c.len;
  }
  if (e == s.size() || last == i) return e;
  return last;
}

// One match of the LLaMA-3 regex at s[i]; the alternatives are tried in order,
// as a backtracking engine would, and every character matches one of them.
size_t match_llama3(std::string_view s, size_t i) {
  // (?i:'s|'t|'re|'ve|'m|'ll|'d)
  if (size_t m = match_contraction(s, i, true)) return i + m;
  Char c = char_at(s, i);
  // [^\r\n\p{L}\p{N}]?\p{L}+
  if (is_letter(c)) return skip_while(s, i, is_letter);
  if (c.cp != '\r' && c.cp != '\n' && !is_number(c)) {
    size_t j = i + c.len;
    if (j < s.size() && is_letter(char_at(s, j))) return skip_while(s, j, is_letter);
  }
  // \p{N}{1,3}
  if (is_number(c)) return skip_while(s, i, is_number, 3);
  // ' '?[^\s\p{L}\p{N}]+[\r\n]*
  size_t j = c.cp == ' ' ? i + 1 : i;
  if (j < s.size() && is_other(char_at(s, j))) {
    j = skip_while(s, j, is_other);
    return skip_while(s, j, [](Char x) { return x.cp == '\r' || x.cp == '\n'; });
  }
  // \s*[\r\n]+ : whitespace up to and including the run's last newline.
  size_t e = i, last_nl = std::string_view::npos;
  while (e < s.size()) {
    Char x = char_at(s, e);
    if (!is_ws(x)) break;
    if (x.cp == '\r' || x.cp == '\n') last_nl = e;
    e += x.len;
  }
  if (last_nl != std::string_view::npos) return last_nl + 1;
  // \s+(?!\S)|\s+
  return match_space_run(s, i);
}

// One match of the GPT-2 regex at s[i].
size_t match_gpt2(std::string_view s, size_t i) {
  if (size_t m = match_contraction(s, i, false)) return i + m;
  // ' '?\p{L}+ | ' '?\p{N}+ | ' '?[^\s\p{L}\p{N}]+
  size_t j = s[i] == ' ' ? i + 1 : i;
  if (j < s.size()) {
    Char d = char_at(s, j);
    if (is_letter(d)) return skip_while(s, j, is_letter);
    if (is_number(d)) return skip_while(s, j, is_number);
    if (is_other(d)) return skip_while(s, j, is_other);
  }
  return match_space_run(s, i);
}

template <class Match>
std::vector<std::string_view> split_all(std::string_view text, Match match) {
  std::vector<std::string_view> out;
  for (size_t i = 0; i < text.size();) {
    size_t e = match(text, i);
    LOWBIT_ASSERT(e > i);
    out.push_back(text.substr(i, e - i));
    i = e;
  }
  return out;
}

// The regexes as tokenizer.json spells them (JSON-unescaped).
const char* const kLlama3Regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
const char* const kGpt2Regex = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

}  // namespace

std::vector<std::string_view> pretokenize_llama3(std::string_view text) { return split_all(text, match_llama3); }
std::vector<std::string_view> pretokenize_gpt2(std::string_view text) { return split_all(text, match_gpt2); }

namespace {

// ---- GPT-2 byte alphabet ---------------------------------------------------------
// Byte-level BPE spells every byte as a printable character: bytes that are
// printable Latin-1 stand for themselves, the other 68 take code points 256+k.
struct ByteAlphabet {
  std::string to_char[256];     // byte -> UTF-8 of its stand-in character
  int16_t to_byte[512];         // stand-in code point -> byte, -1 if none
  ByteAlphabet() {
    std::fill(std::begin(to_byte), std::end(to_byte), int16_t(-1));
    uint32_t next = 256;
    for (uint32_t b = 0; b < 256; ++b) {
      bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      uint32_t cp = printable ? b : next++;
      append_utf8(to_char[b], cp);
      to_byte[cp] = int16_t(b);
    }
  }
};
const ByteAlphabet& byte_alphabet() {
  static const ByteAlphabet a;
  return a;
}

// ---- string keys -------------------------------------------------------------
struct SvHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>{}(s); }
};
template <class V>
using StrMap = std::unordered_map<std::string, V, SvHash, std::equal_to<>>;

// ---- patterns (Replace normalizer/decoder) ------------------------------------
// A "String" pattern, or the small regex subset tokenizer.json files of this
// family use: [\A] atom [quantifier] [\z], atom = one literal character or \s,
// quantifier = + ? {n} {n,} {n,m} (e.g. "\A +", " +\z", " {2,}").
struct Pattern {
  std::string source;  // for messages
  bool is_regex = false;
  std::string literal;  // the string, or the regex atom when !space_class
  bool space_class = false, anchor_begin = false, anchor_end = false;
  size_t min = 1, max = 1;

  static Pattern string(std::string s) {
    Pattern p;
    p.source = p.literal = std::move(s);
    return p;
  }
  static Pattern parse(const json& j, const std::string& where) {
    Pattern p;
    if (j.contains("String")) {
      p.literal = p.source = j.at("String").get<std::string>();
      LOWBIT_CHECK(!p.literal.empty(), FormatError, "{}: empty Replace pattern", where);
      return p;
    }
    LOWBIT_CHECK(j.contains("Regex"), FormatError, "{}: pattern is neither String nor Regex: {}", where, json_excerpt(j));
    p.is_regex = true;
    p.source = j.at("Regex").get<std::string>();
    std::string_view r = p.source;
    auto unsupported = [&] {
      return FormatError(fmt::format("{}: unsupported regex '{}' (only [\\A]<char>[quantifier][\\z])", where, p.source));
    };
    if (r.starts_with("\\A") || r.starts_with("^")) p.anchor_begin = true, r.remove_prefix(r[0] == '^' ? 1 : 2);
    if (r.ends_with("\\z") || r.ends_with("$")) p.anchor_end = true, r.remove_suffix(r.back() == '$' ? 1 : 2);
    if (r.empty()) throw unsupported();
    // The atom.
    if (r[0] == '\\') {
      if (r.size() < 2) throw unsupported();
      char e = r[1];
      if (e == 's') p.space_class = true;
      else if (e == 't') p.literal = "\t";
      else if (e == 'n') p.literal = "\n";
      else if (e == 'r') p.literal = "\r";
      else if (std::strchr("\\.^$|?*+()[]{} ", e)) p.literal = std::string(1, e);
      else throw unsupported();
      r.remove_prefix(2);
    } else {
      if (std::strchr(".^$|?*+()[]{}", r[0])) throw unsupported();
      size_t n = char_at(r, 0).len;
      p.literal = std::string(r.substr(0, n));
      r.remove_prefix(n);
    }
    // The quantifier.
    if (r == "+") p.max = SIZE_MAX;
    else if (r == "?") p.min = 0;
    else if (r.size() > 2 && r.front() == '{' && r.back() == '}') {
      std::string q(r.substr(1, r.size() - 2));
      size_t comma = q.find(',');
      try {
        p.min = std::stoul(q.substr(0, comma));
        p.max = comma == std::string::npos ? p.min
                : comma + 1 == q.size()    ? SIZE_MAX
                                           : std::stoul(q.substr(comma + 1));
      } catch (const std::exception&) {
        throw unsupported();
      }
    } else if (!r.empty()) {
      throw unsupported();
    }
    // Empty matches (x?, x{0,}) have subtle replace semantics; none of the files needs them.
    if (p.min == 0 || p.max < p.min) throw unsupported();
    return p;
  }

  // Length of one atom at s[i], 0 if none there.
  size_t atom_at(std::string_view s, size_t i) const {
    if (i >= s.size()) return 0;
    if (space_class) {
      Char c = char_at(s, i);
      return is_ws(c) ? c.len : 0;
    }
    return s.substr(i).starts_with(literal) ? literal.size() : 0;
  }

  // Replaces every leftmost, greedy, non-overlapping match.
  // FormatError once the result would pass `limit` bytes (a hostile file's replacement
  // must not be able to ask for gigabytes).
  std::string replace_all(std::string_view s, std::string_view with, size_t limit = SIZE_MAX) const {
    std::string out;
    auto check = [&] {
      if (out.size() > limit)
        throw FormatError(fmt::format("tokenizer pattern '{}': replacing it grows the text past {} bytes",
                                      source.size() > 40 ? source.substr(0, 40) + "..." : source, limit));
    };
    if (!is_regex) {
      for (size_t i = 0;;) {
        size_t k = s.find(literal, i);
        if (k == std::string_view::npos) return out.append(s.substr(i));
        out.append(s.substr(i, k - i)).append(with);
        check();
        i = k + literal.size();
      }
    }
    if (anchor_end) {
      // Only a run of atoms reaching the end can match; the leftmost admissible start wins.
      std::vector<size_t> run;  // starts of the atoms of the current run
      for (size_t i = 0; i < s.size();) {
        size_t n = atom_at(s, i);
        if (n) {
          run.push_back(i);
          i += n;
        } else {
          run.clear();
          i += char_at(s, i).len;
        }
      }
      if (run.size() < min) return std::string(s);
      size_t first = run.size() > max ? run.size() - max : 0;
      if (anchor_begin && run[first] != 0) return std::string(s);
      return out.append(s.substr(0, run[first])).append(with);
    }
    for (size_t i = 0; i < s.size();) {
      size_t e = i, count = 0;
      while (count < max) {
        size_t n = atom_at(s, e);
        if (!n) break;
        e += n, ++count;
      }
      if (count >= min) {
        out.append(with);
        check();
        i = e;
      } else {
        // No match starts inside this short run either; copy it and the next character.
        size_t next = e < s.size() ? e + char_at(s, e).len : e;
        out.append(s.substr(i, next - i));
        i = next;
      }
      if (anchor_begin) return out.append(s.substr(i));
    }
    return out;
  }
};

// ---- BPE model ----------------------------------------------------------------
struct MergeInfo {
  int32_t rank, new_id;
};

class BpeModel {
 public:
  StrMap<int32_t> vocab;
  std::unordered_map<uint64_t, MergeInfo> merges;  // (left id, right id) -> rank, merged id
  int32_t unk_id = -1;
  bool byte_fallback = false, fuse_unk = false, ignore_merges = false;
  int32_t byte_ids[256];  // <0xNN> token ids, -1 where missing

  static uint64_t key(int32_t a, int32_t b) { return uint64_t(uint32_t(a)) << 32 | uint32_t(b); }
  const MergeInfo* find_merge(int32_t a, int32_t b) const {
    auto it = merges.find(key(a, b));
    return it == merges.end() ? nullptr : &it->second;
  }

  // Appends the ids of one pre-tokenized word. Starts from one symbol per
  // character and repeatedly applies the lowest-rank merge among adjacent pairs,
  // the leftmost on ties, via a heap over a linked list: O(n log n), so a whole
  // document as one word (SentencePiece style, no pre-tokenizer) stays fast.
  void encode_word(std::string_view w, std::vector<int32_t>& out) const {
    if (w.empty()) return;
    if (ignore_merges) {
      if (auto it = vocab.find(w); it != vocab.end()) return out.push_back(it->second);
    }
    struct Sym {
      int32_t id, prev, next;
      bool alive;
    };
    std::vector<Sym> syms;
    syms.reserve(w.size());
    auto push = [&](int32_t id) { syms.push_back({id, int32_t(syms.size()) - 1, int32_t(syms.size()) + 1, true}); };
    bool prev_unk = false;
    for (size_t i = 0; i < w.size();) {
      size_t n = char_at(w, i).len;
      std::string_view ch = w.substr(i, n);
      i += n;
      if (auto it = vocab.find(ch); it != vocab.end()) {
        push(it->second);
        prev_unk = false;
        continue;
      }
      if (byte_fallback &&
          std::all_of(ch.begin(), ch.end(), [&](char b) { return byte_ids[uint8_t(b)] >= 0; })) {
        for (char b : ch) push(byte_ids[uint8_t(b)]);
        prev_unk = false;
        continue;
      }
      if (unk_id < 0) continue;              // no unk token: the character is dropped, as in HF
      if (fuse_unk && prev_unk) continue;    // a run of unknown characters is one <unk>
      push(unk_id);
      prev_unk = true;
    }
    if (syms.empty()) return;
    syms.back().next = -1;

    struct Cand {
      int32_t rank, pos, new_id;
      bool operator>(const Cand& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
    };
    std::priority_queue<Cand, std::vector<Cand>, std::greater<Cand>> heap;
    auto consider = [&](int32_t pos) {
      int32_t nx = syms[size_t(pos)].next;
      if (nx < 0) return;
      if (const MergeInfo* m = find_merge(syms[size_t(pos)].id, syms[size_t(nx)].id))
        heap.push({m->rank, pos, m->new_id});
    };
    for (int32_t k = 0; k + 1 < int32_t(syms.size()); ++k) consider(k);
    while (!heap.empty()) {
      Cand c = heap.top();
      heap.pop();
      Sym& a = syms[size_t(c.pos)];
      if (!a.alive || a.next < 0) continue;
      Sym& b = syms[size_t(a.next)];
      // Entries go stale when a neighbour merged first; the pair must still be this merge.
      const MergeInfo* m = find_merge(a.id, b.id);
      if (!m || m->new_id != c.new_id) continue;
      a.id = c.new_id;
      b.alive = false;
      a.next = b.next;
      if (a.next >= 0) syms[size_t(a.next)].prev = c.pos;
      if (a.prev >= 0) consider(a.prev);
      consider(c.pos);
    }
    for (int32_t k = 0; k >= 0; k = syms[size_t(k)].next) out.push_back(syms[size_t(k)].id);
  }
};

// ---- added tokens ---------------------------------------------------------------
struct AddedToken {
  std::string content;
  int32_t id;
  bool special, lstrip, rstrip, single_word, normalized;
};

// Finds added tokens in text, leftmost first and longest at a position (as HF's
// matcher does), so "<s>" typed in the text becomes the BOS id.
class AddedMatcher {
 public:
  void add(const AddedToken* t) {
    if (t->content.empty()) return;
    auto& v = by_first_[uint8_t(t->content[0])];
    v.push_back(t);
    std::stable_sort(v.begin(), v.end(), [](auto* a, auto* b) { return a->content.size() > b->content.size(); });
    any_ = true;
  }
  bool empty() const { return !any_; }

  struct Piece {
    std::string_view text;  // when id < 0
    int32_t id;
    size_t offset;  // byte offset of text in the matched string
  };
  std::vector<Piece> split(std::string_view s) const {
    std::vector<Piece> out;
    if (!any_) {
      out.push_back({s, -1, 0});
      return out;
    }
    size_t done = 0;  // end of the last emitted piece
    for (size_t i = 0; i < s.size(); ++i) {
      const AddedToken* hit = nullptr;
      for (const AddedToken* t : by_first_[uint8_t(s[i])]) {
        if (s.substr(i).starts_with(t->content) && (!t->single_word || whole_word(s, i, t->content.size()))) {
          hit = t;
          break;
        }
      }
      if (!hit) continue;
      size_t b = i, e = i + hit->content.size();
      // lstrip/rstrip: the token swallows the whitespace next to it.
      if (hit->lstrip)
        while (b > done && std::isspace(uint8_t(s[b - 1]))) --b;
      if (hit->rstrip)
        while (e < s.size() && std::isspace(uint8_t(s[e]))) ++e;
      if (b > done) out.push_back({s.substr(done, b - done), -1, done});
      out.push_back({{}, hit->id, b});
      done = e;
      i = e - 1;
    }
    if (done < s.size()) out.push_back({s.substr(done), -1, done});
    return out;
  }

 private:
  static bool whole_word(std::string_view s, size_t b, size_t n) {
    auto word_char = [](Char c) { return is_letter(c) || is_number(c) || c.cp == '_'; };
    if (b > 0) {
      size_t p = b - 1;
      while (p > 0 && (uint8_t(s[p]) & 0xC0) == 0x80) --p;
      if (word_char(char_at(s, p))) return false;
    }
    return b + n >= s.size() || !word_char(char_at(s, b + n));
  }
  std::vector<const AddedToken*> by_first_[256];
  bool any_ = false;
};

// ---- normalizer / pre-tokenizer / decoder steps --------------------------------
struct NormStep {
  enum Kind { Prepend, Replace, Strip, Identity } kind;
  std::string text;  // Prepend: prefix; Replace: replacement
  Pattern pattern;
  bool left = false, right = false;
};

struct PreStep {
  enum Kind { SplitLlama3, SplitGpt2, ByteLevel, Metaspace } kind;
  explicit PreStep(Kind k) : kind(k) {}
  bool add_prefix_space = false, use_regex = false;  // ByteLevel
  std::string replacement;                           // Metaspace
  std::string prepend_scheme = "always";             // Metaspace
  bool split = true;                                 // Metaspace
};

struct DecStep {
  enum Kind { Replace, ByteFallback, Fuse, Strip, ByteLevel, Metaspace } kind;
  Pattern pattern;
  std::string content;  // Replace: replacement; Strip: the stripped character
  size_t start = 0, stop = 0;
  std::string replacement;         // Metaspace
  bool strip_first_space = false;  // Metaspace (prepend_scheme != never)
};

std::string strip_ws(std::string_view s, bool left, bool right) {
  size_t b = 0, e = s.size();
  if (left)
    while (b < e && is_ws(char_at(s, b))) b += char_at(s, b).len;
  if (right)
    while (e > b) {
      size_t p = e - 1;
      while (p > b && (uint8_t(s[p]) & 0xC0) == 0x80) --p;
      if (!is_ws(char_at(s, p))) break;
      e = p;
    }
  return std::string(s.substr(b, e - b));
}

// ---- the tokenizer ---------------------------------------------------------------
class JsonTokenizer : public Tokenizer {
 public:
  JsonTokenizer(const json& j, const std::string& path) : path_(path) {
    load_model(j.at("model"));
    load_added(j);
    if (j.contains("normalizer")) load_normalizer(j["normalizer"]);
    if (j.contains("pre_tokenizer")) load_pre_tokenizer(j["pre_tokenizer"]);
    if (j.contains("decoder")) load_decoder(j["decoder"]);
    int32_t bos = -1;
    if (j.contains("post_processor")) bos = leading_special(j["post_processor"]);
    set_special(bos, -1, bos >= 0);
    find_chunk_marker();
  }

  std::vector<int32_t> encode(std::string_view text) const override {
    std::vector<int32_t> ids;
    for (const auto& p : raw_added_.split(text)) {
      if (p.id >= 0) {
        ids.push_back(p.id);
        continue;
      }
      std::string norm = normalize(p.text);
      for (const auto& q : norm_added_.split(norm)) {
        if (q.id >= 0) ids.push_back(q.id);
        else pre_tokenize_and_encode(q.text, p.offset == 0 && q.offset == 0, ids);
      }
    }
    return ids;
  }

  std::string decode(const std::vector<int32_t>& ids) const override {
    std::vector<std::string> toks;
    toks.reserve(ids.size());
    for (int32_t id : ids) {
      LOWBIT_CHECK(id >= 0 && id < vocab_size(), ArgError, "token id {} out of range [0, {}) for {}", id,
                   vocab_size(), path_);
      if (special_[size_t(id)]) continue;
      toks.push_back(id_to_token_[size_t(id)]);
    }
    if (!has_decoder_) {
      // No decoder: HF joins the tokens with spaces.
      std::string s;
      for (size_t i = 0; i < toks.size(); ++i) s += (i ? " " : "") + toks[i];
      return s;
    }
    size_t in = 0;
    for (const auto& t : toks) in += t.size() + 1;
    for (const DecStep& d : decoders_) {
      apply_decoder(d, toks, growth_limit(in));
      size_t n = 0;
      for (const auto& t : toks) n += t.size();
      check_growth(in, n, "decoder");
    }
    std::string s;
    for (const auto& t : toks) s += t;
    return s;
  }

  int32_t vocab_size() const override { return int32_t(id_to_token_.size()); }
  std::string kind() const override { return byte_level_ ? "bpe-bytelevel" : "bpe-sp"; }
  int32_t token_to_id(std::string_view token) const override {
    if (auto it = added_ids_.find(token); it != added_ids_.end()) return it->second;
    if (auto it = bpe_.vocab.find(token); it != bpe_.vocab.end()) return it->second;
    return -1;
  }
  std::string id_to_token(int32_t id) const override {
    return id >= 0 && id < vocab_size() ? id_to_token_[size_t(id)] : std::string();
  }

 private:
  FormatError unsupported(const std::string& what, const json& j) const {
    return FormatError(fmt::format("{}: unsupported {} type '{}'", path_, what,
                                   json_excerpt(j.is_object() && j.contains("type") ? j["type"] : j)));
  }

  // A token id: an integer in [0, 2^31) (a larger one must not wrap to a small id).
  int32_t read_id(const json& v, const std::string& tok) const {
    LOWBIT_CHECK(v.is_number_integer() && v.get<int64_t>() >= 0 && v.get<int64_t>() <= INT32_MAX, FormatError,
                 "{}: token '{}' has id {} (expected an integer in [0, 2^31))", path_,
                 tok.size() > 40 ? tok.substr(0, 40) + "..." : tok, v.dump().substr(0, 40));
    return int32_t(v.get<int64_t>());
  }

  // A non-negative integer option (absent: 0); a float or a negative number must not be cast.
  size_t read_count(const json& d, const char* key) const {
    if (!d.contains(key)) return 0;
    const json& v = d.at(key);
    LOWBIT_CHECK(v.is_number_integer() && v.get<int64_t>() >= 0, FormatError,
                 "{}: '{}' must be a non-negative integer, got {}", path_, key, json_excerpt(v));
    return v.is_number_unsigned() ? size_t(v.get<uint64_t>()) : size_t(v.get<int64_t>());
  }

  void load_model(const json& m) {
    // Older files omit "type"; merges then mean BPE.
    std::string type = m.contains("type") ? m["type"].get<std::string>() : (m.contains("merges") ? "BPE" : "?");
    LOWBIT_CHECK(type == "BPE", FormatError, "{}: unsupported tokenizer model type '{}' (only BPE is implemented)",
                 path_, type);
    for (const char* k : {"continuing_subword_prefix", "end_of_word_suffix"})
      LOWBIT_CHECK(!m.contains(k) || m[k].is_null() || m[k].get<std::string>().empty(), FormatError,
                   "{}: unsupported BPE option {} = {}", path_, k, json_excerpt(m[k]));
    for (auto& [tok, id] : m.at("vocab").items()) bpe_.vocab.emplace(tok, read_id(id, tok));
    bpe_.byte_fallback = m.value("byte_fallback", false);
    bpe_.fuse_unk = m.value("fuse_unk", false);
    bpe_.ignore_merges = m.value("ignore_merges", false);
    if (m.contains("unk_token") && m["unk_token"].is_string()) {
      auto it = bpe_.vocab.find(m["unk_token"].get<std::string>());
      LOWBIT_CHECK(it != bpe_.vocab.end(), FormatError, "{}: unk_token {} is not in the vocab", path_,
                   json_excerpt(m["unk_token"]));
      bpe_.unk_id = it->second;
    }
    for (int b = 0; b < 256; ++b) {
      auto it = bpe_.vocab.find(fmt::format("<0x{:02X}>", b));
      bpe_.byte_ids[b] = it == bpe_.vocab.end() ? -1 : it->second;
    }
    // Merges: "left right" strings (older files) or [left, right] pairs (newer,
    // which allow spaces inside tokens). Rank = position in the list.
    const json& merges = m.contains("merges") ? m["merges"] : json::array();
    int32_t rank = 0;
    for (const json& mj : merges) {
      std::string a, b;
      if (mj.is_string()) {
        std::string s = mj.get<std::string>();
        size_t sp = s.find(' ');
        LOWBIT_CHECK(sp != std::string::npos && s.find(' ', sp + 1) == std::string::npos, FormatError,
                     "{}: merge {} is not two space-separated tokens", path_, json_excerpt(mj));
        a = s.substr(0, sp), b = s.substr(sp + 1);
      } else {
        LOWBIT_CHECK(mj.is_array() && mj.size() == 2, FormatError, "{}: bad merge {}", path_, json_excerpt(mj));
        a = mj[0].get<std::string>(), b = mj[1].get<std::string>();
      }
      auto ia = bpe_.vocab.find(a), ib = bpe_.vocab.find(b), iab = bpe_.vocab.find(a + b);
      LOWBIT_CHECK(ia != bpe_.vocab.end() && ib != bpe_.vocab.end() && iab != bpe_.vocab.end(), FormatError,
                   "{}: merge {} uses a token that is not in the vocab", path_, json_excerpt(mj));
      bpe_.merges.try_emplace(BpeModel::key(ia->second, ib->second), MergeInfo{rank++, iab->second});
    }
  }

  void load_added(const json& j) {
    int32_t max_id = -1;
    for (auto& [tok, id] : bpe_.vocab) max_id = std::max(max_id, id);
    if (j.contains("added_tokens") && j["added_tokens"].is_array()) {
      for (const json& a : j["added_tokens"]) {
        added_.push_back({a.at("content").get<std::string>(), read_id(a.at("id"), a.at("content").get<std::string>()),
                          a.value("special", false),
                          a.value("lstrip", false), a.value("rstrip", false), a.value("single_word", false),
                          a.value("normalized", !a.value("special", false))});
        max_id = std::max(max_id, added_.back().id);
      }
    }
    // Ids index a table: a sparse id (1e8 in a 32k vocab) would allocate gigabytes for
    // nothing. HF vocabularies are dense, so the largest id must stay near the entry count.
    const int64_t entries = int64_t(bpe_.vocab.size() + added_.size());
    LOWBIT_CHECK(max_id < entries + 1024, FormatError,
                 "{}: token id {} is far beyond the {} vocabulary and added-token entries", path_, max_id, entries);
    id_to_token_.assign(size_t(max_id + 1), std::string());
    special_.assign(size_t(max_id + 1), false);
    for (auto& [tok, id] : bpe_.vocab) {
      LOWBIT_CHECK(id >= 0, FormatError, "{}: negative id {} for token '{}'", path_, id, tok);
      id_to_token_[size_t(id)] = tok;
    }
    for (const AddedToken& a : added_) {
      LOWBIT_CHECK(a.id >= 0, FormatError, "{}: negative id {} for added token '{}'", path_, a.id, a.content);
      id_to_token_[size_t(a.id)] = a.content;
      special_[size_t(a.id)] = a.special;
      added_ids_[a.content] = a.id;
      (a.normalized ? norm_added_ : raw_added_).add(&a);
    }
  }

  void load_normalizer(const json& n) {
    if (n.is_null()) return;
    std::string type = n.at("type").get<std::string>();
    if (type == "Sequence") {
      for (const json& s : n.at("normalizers")) load_normalizer(s);
    } else if (type == "Prepend") {
      normalizers_.push_back({NormStep::Prepend, n.at("prepend").get<std::string>(), {}});
    } else if (type == "Replace") {
      normalizers_.push_back({NormStep::Replace, n.at("content").get<std::string>(),
                              Pattern::parse(n.at("pattern"), path_ + ": Replace normalizer")});
    } else if (type == "Strip") {
      normalizers_.push_back({NormStep::Strip, "", {}, n.value("strip_left", true), n.value("strip_right", true)});
    } else if (type == "NFC") {
      // Real text is almost always NFC already; composing would need the full tables.
      log_warn(fmt::format("{}: NFC normalizer treated as identity", path_));
    } else {
      throw unsupported("normalizer", n);
    }
  }

  void load_pre_tokenizer(const json& p) {
    if (p.is_null()) return;
    LOWBIT_CHECK(!byte_level_, FormatError, "{}: pre-tokenizer steps after ByteLevel are not supported", path_);
    std::string type = p.at("type").get<std::string>();
    if (type == "Sequence") {
      for (const json& s : p.at("pretokenizers")) load_pre_tokenizer(s);
    } else if (type == "Split") {
      const json& pat = p.at("pattern");
      std::string re = pat.contains("Regex") ? pat["Regex"].get<std::string>() : pat.dump();
      LOWBIT_CHECK(p.value("behavior", "Isolated") == "Isolated" && !p.value("invert", false), FormatError,
                   "{}: Split pre-tokenizer behaviour {} / invert not supported", path_, p.value("behavior", ""));
      if (re == kLlama3Regex) pre_.emplace_back(PreStep::SplitLlama3);
      else if (re == kGpt2Regex) pre_.emplace_back(PreStep::SplitGpt2);
      else throw FormatError(fmt::format("{}: unsupported Split pre-tokenizer pattern {}", path_, json_excerpt(pat)));
    } else if (type == "ByteLevel") {
      PreStep s(PreStep::ByteLevel);
      s.add_prefix_space = p.value("add_prefix_space", false);
      s.use_regex = p.value("use_regex", true);
      pre_.push_back(s);
      byte_level_ = true;
    } else if (type == "Metaspace") {
      PreStep s(PreStep::Metaspace);
      s.replacement = p.value("replacement", "\u2581");
      LOWBIT_CHECK(!s.replacement.empty(), FormatError, "{}: Metaspace pre-tokenizer with an empty replacement", path_);
      if (p.contains("prepend_scheme")) s.prepend_scheme = p["prepend_scheme"].get<std::string>();
      else if (p.contains("add_prefix_space")) s.prepend_scheme = p["add_prefix_space"].get<bool>() ? "always" : "never";
      s.split = p.value("split", true);
      pre_.push_back(s);
    } else {
      throw unsupported("pre_tokenizer", p);
    }
  }

  void load_decoder(const json& d) {
    if (d.is_null()) return;
    has_decoder_ = true;
    std::string type = d.at("type").get<std::string>();
    DecStep s{};
    if (type == "Sequence") {
      for (const json& x : d.at("decoders")) load_decoder(x);
      return;
    } else if (type == "Replace") {
      s.kind = DecStep::Replace;
      s.pattern = Pattern::parse(d.at("pattern"), path_ + ": Replace decoder");
      s.content = d.at("content").get<std::string>();
    } else if (type == "ByteFallback") {
      s.kind = DecStep::ByteFallback;
    } else if (type == "Fuse") {
      s.kind = DecStep::Fuse;
    } else if (type == "Strip") {
      s.kind = DecStep::Strip;
      s.content = d.value("content", " ");
      LOWBIT_CHECK(!s.content.empty(), FormatError, "{}: Strip decoder with an empty content", path_);
      s.start = read_count(d, "start");
      s.stop = read_count(d, "stop");
    } else if (type == "ByteLevel") {
      s.kind = DecStep::ByteLevel;
    } else if (type == "Metaspace") {
      s.kind = DecStep::Metaspace;
      s.replacement = d.value("replacement", "\u2581");
      LOWBIT_CHECK(!s.replacement.empty(), FormatError, "{}: Metaspace decoder with an empty replacement", path_);
      std::string scheme = d.value("prepend_scheme", d.value("add_prefix_space", true) ? "always" : "never");
      s.strip_first_space = scheme != "never";
    } else {
      throw unsupported("decoder", d);
    }
    decoders_.push_back(std::move(s));
  }

  // The id of the special token a TemplateProcessing post-processor puts first
  // for a single sequence (LLaMA-2's <s>), or -1.
  int32_t leading_special(const json& pp) const {
    if (!pp.is_object() || !pp.contains("type")) return -1;
    if (pp["type"] == "Sequence") {
      for (const json& p : pp.value("processors", json::array()))
        if (int32_t id = leading_special(p); id >= 0) return id;
      return -1;
    }
    if (pp["type"] != "TemplateProcessing" || !pp.contains("single") || pp["single"].empty()) return -1;
    const json& first = pp["single"][0];
    if (!first.contains("SpecialToken")) return -1;
    std::string name = first["SpecialToken"].at("id").get<std::string>();
    const json& st = pp.value("special_tokens", json::object());
    int32_t id = st.contains(name) && !st[name].value("ids", json::array()).empty()
                     ? read_id(st[name]["ids"][0], name)
                     : token_to_id(name);
    LOWBIT_CHECK(id < vocab_size(), FormatError, "{}: post-processor special token '{}' has id {} outside the {}-token vocabulary",
                 path_, name, id, vocab_size());
    return id;
  }

  // Normalizers, pre-tokenizers and decoders can each lengthen text (Replace "a" -> "aa",
  // a Metaspace replacement holding spaces); chained, they grow it exponentially. No real
  // file comes near this bound, a hostile one must not exhaust memory.
  static size_t growth_limit(size_t in) { return 64 * in + 65536; }
  void check_growth(size_t in, size_t out, const char* stage) const {
    LOWBIT_CHECK(out <= growth_limit(in), FormatError,
                 "{}: the {} steps expand {} bytes of text to more than {} (chained Replace/Prepend/Metaspace?)",
                 path_, stage, in, growth_limit(in));
  }

  std::string normalize(std::string_view s) const {
    std::string t(s);
    for (const NormStep& n : normalizers_) {
      switch (n.kind) {
        case NormStep::Prepend:
          if (!t.empty()) t = n.text + t;  // HF prepends only to non-empty text
          break;
        case NormStep::Replace: t = n.pattern.replace_all(t, n.text, growth_limit(s.size())); break;
        case NormStep::Strip: t = strip_ws(t, n.left, n.right); break;
        case NormStep::Identity: break;
      }
      check_growth(s.size(), t.size(), "normalizer");
    }
    return t;
  }

  // Runs the pre-tokenizer steps over one normalized segment and the model over
  // each resulting piece. `first`: the segment starts the input (Metaspace "first").
  void pre_tokenize_and_encode(std::string_view seg, bool first, std::vector<int32_t>& ids) const {
    if (seg.empty()) return;
    std::vector<std::string> pieces{std::string(seg)};
    for (const PreStep& p : pre_) {
      size_t total = 0;
      for (const std::string& piece : pieces) total += piece.size();
      check_growth(seg.size(), total + pieces.size(), "pre-tokenizer");
      std::vector<std::string> next;
      for (std::string& piece : pieces) {
        switch (p.kind) {
          case PreStep::SplitLlama3:
            for (auto v : pretokenize_llama3(piece)) next.emplace_back(v);
            break;
          case PreStep::SplitGpt2:
            for (auto v : pretokenize_gpt2(piece)) next.emplace_back(v);
            break;
          case PreStep::ByteLevel: {
            // The byte mapping itself happens in encode_piece, after the cache lookup.
            if (p.add_prefix_space && !piece.starts_with(' ')) piece = " " + piece;
            if (p.use_regex) {
              for (auto v : pretokenize_gpt2(piece)) next.emplace_back(v);
            } else {
              next.push_back(std::move(piece));
            }
            break;
          }
          case PreStep::Metaspace: {
            std::string t = Pattern::string(" ").replace_all(piece, p.replacement, growth_limit(seg.size()));
            if ((p.prepend_scheme == "always" || (p.prepend_scheme == "first" && first)) &&
                !t.starts_with(p.replacement))
              t = p.replacement + t;
            if (!p.split) {
              next.push_back(std::move(t));
              break;
            }
            // Split before each replacement character, which stays with the word after it.
            size_t b = 0;
            for (size_t k = t.find(p.replacement, 1); k != std::string::npos; k = t.find(p.replacement, k + 1)) {
              next.push_back(t.substr(b, k - b));
              b = k;
            }
            next.push_back(t.substr(b));
            break;
          }
        }
      }
      pieces = std::move(next);
    }
    size_t total = 0;
    for (const std::string& piece : pieces) total += piece.size();
    check_growth(seg.size(), total + pieces.size(), "pre-tokenizer");
    for (const std::string& piece : pieces) encode_piece(piece, ids);
  }

  void encode_piece(std::string_view piece, std::vector<int32_t>& ids) const {
    if (byte_level_) return encode_cached(piece, ids);
    if (chunk_marker_.empty()) return bpe_.encode_word(piece, ids);
    // Cut before each marker that follows another character (see find_chunk_marker).
    const std::string& m = chunk_marker_;
    size_t b = 0;
    for (size_t k = piece.find(m, 1); k != std::string_view::npos; k = piece.find(m, k + m.size())) {
      if (piece.substr(0, k).ends_with(m)) continue;
      encode_cached(piece.substr(b, k - b), ids);
      b = k;
    }
    encode_cached(piece.substr(b), ids);
  }

  // BPE of one word through a cache: words repeat a lot in real text.
  void encode_cached(std::string_view word, std::vector<int32_t>& ids) const {
    {
      std::lock_guard<std::mutex> lock(cache_mu_);
      if (auto it = cache_.find(word); it != cache_.end()) {
        ids.insert(ids.end(), it->second.begin(), it->second.end());
        return;
      }
    }
    std::vector<int32_t> out;
    if (byte_level_) {
      std::string mapped;
      for (char b : word) mapped += byte_alphabet().to_char[uint8_t(b)];
      bpe_.encode_word(mapped, out);
    } else {
      bpe_.encode_word(word, out);
    }
    ids.insert(ids.end(), out.begin(), out.end());
    if (word.size() <= 64) {
      std::lock_guard<std::mutex> lock(cache_mu_);
      if (cache_.size() >= 500000) cache_.clear();  // bound memory on huge, diverse inputs
      cache_.emplace(std::string(word), std::move(out));
    }
  }

  // SentencePiece-style files have no pre-tokenizer, so a whole text segment is
  // one BPE word. If no vocabulary token has "▁" right after another character,
  // no merge can join across such a point: cutting the word there gives the same
  // ids and makes the pieces cacheable words.
  void find_chunk_marker() {
    const std::string m = "\u2581";
    if (byte_level_ || !pre_.empty() || bpe_.vocab.find(m) == bpe_.vocab.end()) return;
    for (const auto& [tok, id] : bpe_.vocab)
      for (size_t k = tok.find(m, 1); k != std::string::npos; k = tok.find(m, k + m.size()))
        if (!std::string_view(tok).substr(0, k).ends_with(m)) return;
    chunk_marker_ = m;
  }

  static void apply_decoder(const DecStep& d, std::vector<std::string>& toks, size_t limit) {
    switch (d.kind) {
      case DecStep::Replace:
        for (auto& t : toks) t = d.pattern.replace_all(t, d.content, limit);
        break;
      case DecStep::ByteFallback: {
        // Runs of <0xNN> tokens become their bytes when those are valid UTF-8, else one U+FFFD each.
        std::vector<std::string> out;
        std::string bytes;
        size_t nbytes = 0;
        auto flush = [&] {
          if (!nbytes) return;
          if (is_valid_utf8(bytes)) out.push_back(bytes);
          else
            for (size_t k = 0; k < nbytes; ++k) out.push_back("\xEF\xBF\xBD");
          bytes.clear(), nbytes = 0;
        };
        for (auto& t : toks) {
          unsigned v = 0;
          if (t.size() == 6 && t.starts_with("<0x") && t[5] == '>' && std::isxdigit(uint8_t(t[3])) &&
              std::isxdigit(uint8_t(t[4]))) {
            v = unsigned(std::stoul(t.substr(3, 2), nullptr, 16));
            bytes += char(v), ++nbytes;
          } else {
            flush();
            out.push_back(std::move(t));
          }
        }
        flush();
        toks = std::move(out);
        break;
      }
      case DecStep::Fuse: {
        std::string all;
        for (auto& t : toks) all += t;
        toks.assign(1, all);
        break;
      }
      case DecStep::Strip:
        // Per token: up to `start` leading and `stop` trailing copies of the character.
        for (auto& t : toks) {
          std::string_view v = t;
          for (size_t k = 0; k < d.start && v.starts_with(d.content); ++k) v.remove_prefix(d.content.size());
          for (size_t k = 0; k < d.stop && v.ends_with(d.content); ++k) v.remove_suffix(d.content.size());
          t = std::string(v);
        }
        break;
      case DecStep::ByteLevel: {
        const ByteAlphabet& ab = byte_alphabet();
        std::string bytes;
        for (auto& t : toks) {
          for (size_t i = 0; i < t.size();) {
            Char c = char_at(t, i);
            if (c.cp < 512 && ab.to_byte[c.cp] >= 0) bytes += char(ab.to_byte[c.cp]);
            else bytes.append(t, i, c.len);  // not from the byte alphabet (e.g. an added token): as is
            i += c.len;
          }
        }
        toks.assign(1, utf8_lossy(bytes));
        break;
      }
      case DecStep::Metaspace:
        for (size_t i = 0; i < toks.size(); ++i) {
          toks[i] = Pattern::string(d.replacement).replace_all(toks[i], " ", limit);
          if (i == 0 && d.strip_first_space && toks[i].starts_with(' ')) toks[i].erase(0, 1);
        }
        break;
    }
  }

  std::string path_;
  BpeModel bpe_;
  std::vector<AddedToken> added_;  // stable: the matchers point into it
  StrMap<int32_t> added_ids_;
  AddedMatcher raw_added_, norm_added_;
  std::vector<std::string> id_to_token_;
  std::vector<bool> special_;
  std::vector<NormStep> normalizers_;
  std::vector<PreStep> pre_;
  std::vector<DecStep> decoders_;
  bool has_decoder_ = false, byte_level_ = false;
  std::string chunk_marker_;  // cut point for SentencePiece-style words, "" = none
  mutable std::mutex cache_mu_;
  mutable StrMap<std::vector<int32_t>> cache_;
};

}  // namespace

std::unique_ptr<Tokenizer> load_tokenizer_json(const std::string& path) {
  return parse_tokenizer_json(read_text_file(path), path);  // IoError naming the path
}

std::unique_ptr<Tokenizer> parse_tokenizer_json(std::string_view text, const std::string& path) {
  const json j = parse_json(text, path);
  LOWBIT_CHECK(j.is_object() && j.contains("model"), FormatError, "{}: not a tokenizer.json (no \"model\")", path);
  try {
    return std::make_unique<JsonTokenizer>(j, path);
  } catch (const json::exception& e) {
    // Missing fields or wrong types somewhere in the file.
    throw FormatError(fmt::format("{}: unexpected tokenizer.json contents: {}", path, e.what()));
  }
}

}  // namespace lowbit
