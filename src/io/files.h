// Small file helpers with typed errors and atomic writes.
#pragma once
#include <cstdint>
#include <string>

namespace lowbit {

std::string read_text_file(const std::string& path);  // IoError naming the path
// Writes `content` to path.tmp.<pid> then renames: readers never see half a file.
void write_file_atomic(const std::string& path, const std::string& content);
// Before any compute: `path` (given with `flag`) can be written — its directory exists and
// is writable, and it is not a directory itself. ArgError naming the flag otherwise.
void check_output_file(const std::string& path, const char* flag);

// Characters [begin, end) of UTF-8 text, counted in code points like Python's
// str slicing (the datasets' split offsets are given that way). end < 0: to the end.
// ArgError when begin is past the text.
std::string utf8_slice(const std::string& text, int64_t begin, int64_t end = -1);

}  // namespace lowbit
