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

}  // namespace lowbit
