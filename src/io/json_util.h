// Untrusted JSON: bounded nesting before parsing (a 100 000-deep "[[[[…" must be a format
// error, not a stack overflow), and short excerpts in error messages.
#pragma once
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace lowbit {

// Nesting deeper than this is refused (HF configs and tokenizers nest < 10 levels).
inline constexpr int kMaxJsonDepth = 64;

// Parses `text` (from `source`, named in errors). Throws FormatError for nesting deeper
// than kMaxJsonDepth (checked by an iterative scan first) and for invalid JSON.
nlohmann::json parse_json(std::string_view text, const std::string& source);

// At most ~80 characters of j's serialization, for error messages.
std::string json_excerpt(const nlohmann::json& j);

}  // namespace lowbit
