// Resumable answers.jsonl (contract in vqa_store.h).
#include "eval/vqa_store.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include <fmt/format.h>

#include "core/error.h"
#include "core/fault.h"
#include "io/files.h"

namespace lowbit {

using json = nlohmann::json;
namespace fs = std::filesystem;

std::string fnv1a_hex(const std::string& bytes) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : bytes) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return fmt::format("{:016x}", h);
}

namespace {

// Complete lines of text (each ended by '\n') parsed as records; *torn_at = byte offset of a final
// line without '\n' (text.size() if none).
std::vector<json> parse_records(const std::string& text, const std::string& path, size_t* torn_at) {
  std::vector<json> out;
  size_t pos = 0, line_no = 0;
  while (pos < text.size()) {
    const size_t nl = text.find('\n', pos);
    if (nl == std::string::npos) break;  // torn final line
    ++line_no;
    const std::string line = text.substr(pos, nl - pos);
    pos = nl + 1;
    json j = json::parse(line, nullptr, /*allow_exceptions=*/false);
    LOWBIT_CHECK(!j.is_discarded() && j.is_object() && j.contains("key") && j["key"].is_string(), FormatError,
                 "{} line {}: not an answer record (a JSON object with a string \"key\"): '{}'; fix or remove the "
                 "line (or the file) and rerun",
                 path, line_no, line.substr(0, 80));
    out.push_back(std::move(j));
  }
  *torn_at = pos;
  return out;
}

// A value for an error message: its JSON, cut at 40 characters.
std::string short_dump(const json& v) {
  const std::string s = v.dump();
  return s.size() <= 40 ? s : s.substr(0, 40) + "…";
}

}  // namespace

std::vector<json> read_vqa_answers(const std::string& path, bool* torn) {
  LOWBIT_CHECK(fs::is_regular_file(path), IoError, "{}: no such file", path);
  const std::string text = read_text_file(path);
  size_t torn_at = 0;
  std::vector<json> r = parse_records(text, path, &torn_at);
  if (torn) *torn = torn_at < text.size();
  return r;
}

VqaAnswerStore::VqaAnswerStore(const std::string& dir, const json& config, const std::string& fingerprint, bool force)
    : path_((fs::path(dir) / "answers.jsonl").string()), fingerprint_(fingerprint) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  LOWBIT_CHECK(fs::is_directory(dir), IoError, "--output {}: cannot create the directory ({})", dir, ec.message());
  fd_ = ::open(path_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  LOWBIT_CHECK(fd_ >= 0, IoError, "cannot open {}: {}", path_, std::strerror(errno));
  if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
    ::close(fd_);
    fd_ = -1;
    throw IoError(fmt::format("{} is in use by another lowbit eval vqa run (one writer per output directory)", path_));
  }
  const std::string text = read_text_file(path_);
  size_t torn_at = 0;
  std::vector<json> recs;
  const std::string run_json = (fs::path(dir) / "run.json").string();
  recs = parse_records(text, path_, &torn_at);
  size_t line = 0;
  bool foreign = false;
  for (const json& r : recs) {
    ++line;
    if (!r.contains("fingerprint") || r["fingerprint"] != fingerprint_) foreign = true;
  }
  if (foreign && !force) {
    std::string what;
    if (fs::is_regular_file(run_json)) {
      const json old = json::parse(read_text_file(run_json), nullptr, false);
      if (old.is_object() && old.contains("config") && old["config"].is_object())
        for (const auto& [k, v] : config.items())
          if (!old["config"].contains(k) || old["config"][k] != v)
            what += fmt::format("{}{} ({} there, {} now)", what.empty() ? "" : ", ", k,
                                old["config"].contains(k) ? short_dump(old["config"][k]) : "unset", short_dump(v));
    }
    ::close(fd_);
    fd_ = -1;
    throw ArgError(fmt::format(
        "{} holds answers from a different run{}{}; use another --output, or --force to set them aside "
        "(moved to answers.jsonl.old) and start over",
        path_, what.empty() ? "" : ": ", what));
  }
  if (foreign) {  // --force: keep the old answers beside, start empty
    const std::string old = path_ + ".old";
    fs::remove(old, ec);
    fs::rename(path_, old, ec);
    LOWBIT_CHECK(!ec, IoError, "cannot move {} to {}: {}", path_, old, ec.message());
    ::close(fd_);
    fd_ = ::open(path_.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    LOWBIT_CHECK(fd_ >= 0 && ::flock(fd_, LOCK_EX | LOCK_NB) == 0, IoError, "cannot open {}", path_);
    recs.clear();
    torn_at = 0;
  } else if (torn_at < text.size()) {  // torn final line: cut it, that question is answered again
    LOWBIT_CHECK(::ftruncate(fd_, off_t(torn_at)) == 0, IoError, "cannot truncate {}: {}", path_, std::strerror(errno));
  }
  line = 0;
  for (json& r : recs) {
    ++line;
    const std::string key = r["key"].get<std::string>();
    LOWBIT_CHECK(!records_.count(key) || records_[key].value("skipped", false), FormatError,
                 "{} line {}: question {} answered twice; remove one of the lines", path_, line, key);
    records_[key] = std::move(r);
  }
  LOWBIT_CHECK(::lseek(fd_, 0, SEEK_END) >= 0, IoError, "cannot seek {}", path_);
  write_file_atomic(run_json, json{{"fingerprint", fingerprint_}, {"config", config}}.dump(2) + "\n");
}

VqaAnswerStore::~VqaAnswerStore() {
  if (fd_ >= 0) ::close(fd_);  // also releases the lock
}

void VqaAnswerStore::append(json record) {
  record["fingerprint"] = fingerprint_;
  const std::string key = record["key"].get<std::string>();
  const std::string line = record.dump(-1, ' ', false, json::error_handler_t::replace) + "\n";
  // Fault injection for the kill tests (core/fault.h): LOWBIT_FAULT=vqa_answer kills the process
  // after the 3rd record of this run; vqa_torn writes half of the 4th record, then kills it.
  ++appended_;
  const char* fault = std::getenv("LOWBIT_FAULT");
  size_t len = line.size();
  if (appended_ == 4 && fault && std::strcmp(fault, "vqa_torn") == 0) len = line.size() / 2;
  size_t done = 0;
  while (done < len) {  // one write() in practice; loop for partial writes
    const ssize_t w = ::write(fd_, line.data() + done, len - done);
    if (w < 0 && errno == EINTR) continue;
    LOWBIT_CHECK(w > 0, IoError, "cannot write {}: {}", path_, std::strerror(errno));
    done += size_t(w);
  }
  if (len < line.size()) fault_point("vqa_torn");
  if (appended_ == 3) fault_point("vqa_answer");
  records_[key] = std::move(record);
}

}  // namespace lowbit
