// Progress lines on stderr for long steps: rewritten in place on a terminal,
// throttled to one line every few seconds otherwise (logs, CI).
#pragma once
#include <chrono>
#include <cstdint>
#include <string>

namespace lowbit {

class Progress {
 public:
  Progress(std::string label, int64_t total, bool enabled = true);
  // `extra` is appended to the line (e.g. "ppl 5.79").
  void update(int64_t done, const std::string& extra = "");
  void finish(const std::string& extra = "");
  // For sub-steps: erases the live line on a terminal, prints nothing otherwise
  // (call update() with done < total only, so logs get throttled lines alone).
  void clear();
  double elapsed() const;

 private:
  std::string label_;
  int64_t total_;
  bool enabled_, tty_;
  std::chrono::steady_clock::time_point start_, last_;
};

void set_quiet(bool quiet);  // suppresses Progress and log_info
bool quiet();
void log_info(const std::string& msg);  // "lowbit: msg" on stderr unless quiet
void log_warn(const std::string& msg);  // always printed

}  // namespace lowbit
