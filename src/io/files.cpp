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
