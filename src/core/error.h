// Typed exceptions. Library code throws these with a message that names the
// file, tensor, shape or flag at fault; the CLI prints what() on one line and
// exits non-zero.
#pragma once
#include <stdexcept>
#include <string>

#include <fmt/format.h>

namespace lowbit {

struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};
struct IoError : Error { using Error::Error; };       // missing/unreadable files
struct FormatError : Error { using Error::Error; };   // corrupt or malformed file contents
struct ConfigError : Error { using Error::Error; };   // unsupported / inconsistent config.json
struct ShapeError : Error { using Error::Error; };    // tensor shape mismatches
struct DTypeError : Error { using Error::Error; };    // unsupported dtypes
struct ArgError : Error { using Error::Error; };      // bad command-line values
struct NumericError : Error { using Error::Error; };  // NaN, non-PD matrices, ...
struct DeviceError : Error { using Error::Error; };   // CUDA missing, out of device memory, failed calls

}  // namespace lowbit

// LOWBIT_CHECK(cond, ErrorType, "fmt {}", args...) — throws ErrorType with file:line.
#define LOWBIT_CHECK(cond, Type, ...)                                              \
  do {                                                                             \
    if (!(cond)) throw Type(fmt::format(__VA_ARGS__));                             \
  } while (0)

// Internal invariants (programming errors, not user input): carry file:line.
#define LOWBIT_ASSERT(cond)                                                        \
  do {                                                                             \
    if (!(cond))                                                                   \
      throw ::lowbit::Error(fmt::format("internal error: {} ({}:{})", #cond,       \
                                        __FILE__, __LINE__));                      \
  } while (0)
