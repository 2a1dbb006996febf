#include "testing.h"

#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace lowbit::test {

std::string shared_dir() {
  const char* env = std::getenv("LOWBIT_SHARED");
  std::string d = env && *env ? env : std::string(LOWBIT_SOURCE_DIR) + "/../shared";
  return std::filesystem::is_directory(d) ? d : "";
}

std::string shared_path(const std::string& rel) {
  std::string d = shared_dir();
  if (d.empty()) return "";
  std::string p = d + "/" + rel;
  return std::filesystem::exists(p) ? p : "";
}

std::string temp_dir(const std::string& tag) {
  std::string tmpl = (std::filesystem::temp_directory_path() / ("lowbit_" + tag + "_XXXXXX")).string();
  char* r = mkdtemp(tmpl.data());
  if (!r) throw std::runtime_error("mkdtemp failed");
  return tmpl;
}

RunResult run_lowbit(const std::string& args) { return run_lowbit_env("", args); }

nlohmann::json run_lowbit_json(const std::string& args, const std::string& json_path) {
  const RunResult r = run_lowbit(args + " --output-json " + json_path);
  if (r.exit_code != 0) {
    ADD_FAILURE() << "lowbit " << args << " exited " << r.exit_code << ":\n" << r.out;
    return nullptr;
  }
  return nlohmann::json::parse(read_file(json_path));
}

RunResult run_lowbit_env(const std::string& env, const std::string& args) {
  std::string cmd = env + (env.empty() ? "" : " ") + std::string(LOWBIT_BINARY) + " " + args + " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return {-1, "popen failed"};
  std::string out;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) out.append(buf.data(), n);
  int st = pclose(p);
  int code = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return {code, out};
}

double normalized_error(const float* a, const float* b, size_t n) {
  double num = 0, den = 0;
  for (size_t i = 0; i < n; ++i) {
    double d = double(a[i]) - double(b[i]);
    num += d * d;
    den += double(b[i]) * double(b[i]);
  }
  return std::sqrt(num) / std::max(std::sqrt(den), 1e-30);
}

double normalized_error(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size()) return INFINITY;
  return normalized_error(a.data(), b.data(), a.size());
}

void expect_error_line(const RunResult& r, const std::string& needle, int code) {
  if (code == -1)
    EXPECT_NE(r.exit_code, 0) << r.out;
  else
    EXPECT_EQ(r.exit_code, code) << r.out;
  auto pos = r.out.find("lowbit: error: ");
  ASSERT_NE(pos, std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("lowbit: error: ", pos + 1), std::string::npos) << "one error line only: " << r.out;
  const std::string line = r.out.substr(pos);
  EXPECT_EQ(line.find('\n'), line.size() - 1) << "error must be one line: " << r.out;
  EXPECT_NE(line.find(needle), std::string::npos) << "error should mention '" << needle << "': " << r.out;
}

std::vector<int32_t> golden_ids(const SafetensorsFile& g) {
  Tensor t = g.get("input_ids");  // [1, T] i32
  return std::vector<int32_t>(t.data<int32_t>(), t.data<int32_t>() + t.numel());
}

uint64_t fnv1a(const std::vector<uint8_t>& bytes) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (uint8_t b : bytes) {
    h ^= b;
    h *= 0x100000001b3ull;
  }
  return h;
}

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

void write_file(const std::string& path, const std::string& data) {
  std::ofstream f(path, std::ios::binary);
  f << data;
}

}  // namespace lowbit::test
