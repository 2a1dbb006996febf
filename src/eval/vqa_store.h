// The resumable answer file of `eval vqa`: OUTPUT/answers.jsonl, one JSON object per answered
// (or skipped) question, appended and flushed as each is produced.
//
// Contract:
//   * Every record carries "key" (the question's unique key) and "fingerprint" (a hash of what
//     determines the answers: model contents, task, questions file, the images directory's absolute
//     path, template, decoding, quantization; not --limit / --shard / --threads). OUTPUT/run.json
//     (written atomically) holds the readable config.
//   * Opening an existing file: a final line without its terminating '\n' is a torn write
//     (interrupted, kill -9 included): it is cut off and that question is answered again. Any
//     complete line that is not a JSON object with a string "key", or repeats a key, is a
//     FormatError naming the file and line (never dropped silently) — except that a record may
//     follow a {"skipped": true} record of its key and supersede it (--skip-missing, image found later). Records whose fingerprint
//     differs from this run's are refused (ArgError naming what differs, when run.json tells) unless
//     --force, which moves the old file to answers.jsonl.old and starts over.
//   * One writer at a time: the file is locked (flock) while open; a second run on the same
//     directory is refused.
// Because a record is written in one write() ending with '\n' and answers are deterministic
// (greedy, same model and threads), an interrupted run resumed with the same flags gives exactly the
// records an uninterrupted run gives (timing fields aside).
#pragma once
#include <cstdint>
#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace lowbit {

// Reads a complete answers file (no truncation, no lock): every line must be a record; a torn
// final line is ignored. Used by --merge and for scoring.
std::vector<nlohmann::json> read_vqa_answers(const std::string& path, bool* torn = nullptr);

class VqaAnswerStore {
 public:
  // dir is created if needed. config: the run's config (stored in run.json); fingerprint: its hash.
  VqaAnswerStore(const std::string& dir, const nlohmann::json& config, const std::string& fingerprint, bool force);
  ~VqaAnswerStore();
  VqaAnswerStore(const VqaAnswerStore&) = delete;
  VqaAnswerStore& operator=(const VqaAnswerStore&) = delete;

  const std::map<std::string, nlohmann::json>& records() const { return records_; }
  bool has(const std::string& key) const { return records_.count(key) != 0; }
  // Appends one record (adds "fingerprint"), flushed before returning.
  void append(nlohmann::json record);
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::string fingerprint_;
  int fd_ = -1;
  int64_t appended_ = 0;  // records appended by this run (fault injection)
  std::map<std::string, nlohmann::json> records_;
};

// FNV-1a 64 of bytes, as 16 hex digits.
std::string fnv1a_hex(const std::string& bytes);

}  // namespace lowbit
