#include "io/json_util.h"

#include "core/error.h"

namespace lowbit {

nlohmann::json parse_json(std::string_view text, const std::string& source) {
  int depth = 0;
  bool in_string = false, escaped = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char ch = text[i];
    if (in_string) {
      if (escaped) escaped = false;
      else if (ch == '\\') escaped = true;
      else if (ch == '"') in_string = false;
    } else if (ch == '"') {
      in_string = true;
    } else if (ch == '[' || ch == '{') {
      LOWBIT_CHECK(++depth <= kMaxJsonDepth, FormatError, "{}: JSON nested deeper than {} levels (at byte {})", source,
                   kMaxJsonDepth, i);
    } else if (ch == ']' || ch == '}') {
      --depth;
    }
  }
  try {
    return nlohmann::json::parse(text.begin(), text.end());
  } catch (const nlohmann::json::exception& e) {
    std::string msg = e.what();
    if (msg.size() > 200) msg = msg.substr(0, 200) + "...";
    throw FormatError(fmt::format("{}: invalid JSON ({})", source, msg));
  }
}

std::string json_excerpt(const nlohmann::json& j) {
  std::string s = j.dump();
  return s.size() > 80 ? s.substr(0, 77) + "..." : s;
}

}  // namespace lowbit
