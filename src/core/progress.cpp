#include "core/progress.h"

#include <unistd.h>

#include <cstdio>

#include <fmt/format.h>

namespace lowbit {

static bool g_quiet = false;
void set_quiet(bool q) { g_quiet = q; }
bool quiet() { return g_quiet; }
void log_info(const std::string& msg) {
  if (!g_quiet) std::fprintf(stderr, "lowbit: %s\n", msg.c_str());
}
void log_warn(const std::string& msg) { std::fprintf(stderr, "lowbit: warning: %s\n", msg.c_str()); }

Progress::Progress(std::string label, int64_t total, bool enabled)
    : label_(std::move(label)), total_(total), enabled_(enabled && !g_quiet), tty_(isatty(2)) {
  start_ = last_ = std::chrono::steady_clock::now();
}

double Progress::elapsed() const {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
}

void Progress::update(int64_t done, const std::string& extra) {
  if (!enabled_) return;
  auto now = std::chrono::steady_clock::now();
  double since = std::chrono::duration<double>(now - last_).count();
  if (since < (tty_ ? 0.2 : 5.0) && done < total_) return;
  last_ = now;
  double el = elapsed();
  double eta = done > 0 ? el * double(total_ - done) / double(done) : 0.0;
  std::string line = fmt::format("{} {}/{} ({:.0f}%) {:.1f}s elapsed, eta {:.1f}s{}{}", label_, done, total_,
                                 total_ ? 100.0 * double(done) / double(total_) : 100.0, el, eta,
                                 extra.empty() ? "" : "  ", extra);
  if (tty_)
    std::fprintf(stderr, "\r%s\033[K", line.c_str());
  else
    std::fprintf(stderr, "%s\n", line.c_str());
}

void Progress::clear() {
  if (enabled_ && tty_) std::fprintf(stderr, "\r\033[K");
}

void Progress::finish(const std::string& extra) {
  if (!enabled_) return;
  std::string line = fmt::format("{} done: {} in {:.2f}s{}{}", label_, total_, elapsed(), extra.empty() ? "" : "  ",
                                 extra);
  if (tty_)
    std::fprintf(stderr, "\r%s\033[K\n", line.c_str());
  else
    std::fprintf(stderr, "%s\n", line.c_str());
}

}  // namespace lowbit
