// Small file helpers with typed errors and atomic writes.
#pragma once
#include <string>

namespace lowbit {

std::string read_text_file(const std::string& path);  // IoError naming the path
// Writes `content` to path.tmp.<pid> then renames: readers never see half a file.
void write_file_atomic(const std::string& path, const std::string& content);

}  // namespace lowbit
