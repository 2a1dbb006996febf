// Fault injection for the kill tests: when the environment variable LOWBIT_FAULT names a
// point, the process sends itself SIGKILL there (as a power cut or the OOM killer would).
// Unset, it costs one getenv per call at a handful of places.
#pragma once
#include <signal.h>

#include <cstdlib>
#include <cstring>

namespace lowbit {

inline void fault_point(const char* name) {
  static const char* want = std::getenv("LOWBIT_FAULT");
  if (want && std::strcmp(want, name) == 0) raise(SIGKILL);
}

}  // namespace lowbit
