#include "io/files.h"

#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/error.h"

namespace lowbit {

std::string read_text_file(const std::string& path) {
  LOWBIT_CHECK(!std::filesystem::is_directory(path), IoError, "cannot read {}: it is a directory", path);
  std::ifstream f(path, std::ios::binary);
  LOWBIT_CHECK(f.good(), IoError, "cannot open {}: {}", path, std::strerror(errno));
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

void write_file_atomic(const std::string& path, const std::string& content) {
  std::string tmp = path + ".tmp." + std::to_string(getpid());
  FILE* f = std::fopen(tmp.c_str(), "wb");
  LOWBIT_CHECK(f, IoError, "cannot write {}: {}", path, std::strerror(errno));
  bool ok = std::fwrite(content.data(), 1, content.size(), f) == content.size();
  ok = (std::fclose(f) == 0) && ok;
  if (!ok || std::rename(tmp.c_str(), path.c_str()) != 0) {
    int e = errno;
    std::remove(tmp.c_str());
    throw IoError(fmt::format("cannot write {}: {}", path, std::strerror(e)));
  }
}

void check_output_file(const std::string& path, const char* flag) {
  namespace fs = std::filesystem;
  std::error_code ec;
  LOWBIT_CHECK(!path.empty(), ArgError, "{} is empty", flag);
  LOWBIT_CHECK(!fs::is_directory(path, ec), ArgError, "{} {} is a directory", flag, path);
  const fs::path parent = fs::path(path).has_parent_path() ? fs::path(path).parent_path() : fs::path(".");
  LOWBIT_CHECK(fs::is_directory(parent, ec), ArgError, "{} {}: directory {} does not exist", flag, path,
               parent.string());
  LOWBIT_CHECK(access(parent.c_str(), W_OK) == 0, ArgError, "{} {}: directory {} is not writable", flag, path,
               parent.string());
}

std::string utf8_slice(const std::string& text, int64_t begin, int64_t end) {
  // Byte offset of code point `n`: count bytes that are not continuation bytes (10xxxxxx).
  auto byte_of = [&](int64_t n) -> size_t {
    int64_t cp = 0;
    for (size_t i = 0; i < text.size(); ++i) {
      if ((uint8_t(text[i]) & 0xC0) != 0x80) {
        if (cp == n) return i;
        ++cp;
      }
    }
    LOWBIT_CHECK(cp == n, ArgError, "character offset {} is past the end of the text ({} characters)", n, cp);
    return text.size();
  };
  LOWBIT_CHECK(begin >= 0, ArgError, "negative character offset {}", begin);
  size_t b = byte_of(begin);
  size_t e = end < 0 ? text.size() : byte_of(end);
  LOWBIT_CHECK(e >= b, ArgError, "character range [{}, {}) is empty or reversed", begin, end);
  return text.substr(b, e - b);
}

}  // namespace lowbit
