#include "vision/processor_config.h"

#include <cmath>
#include <filesystem>

#include "core/error.h"
#include "io/files.h"
#include "io/json_util.h"

namespace lowbit {

using json = nlohmann::json;

const json& image_processor_section(const json& root, const std::string& source) {
  LOWBIT_CHECK(root.is_object(), ConfigError, "{}: expected a JSON object", source);
  const json& j = root.contains("image_processor") ? root["image_processor"] : root;
  LOWBIT_CHECK(j.is_object(), ConfigError, "{}: 'image_processor' must be an object", source);
  return j;
}

bool processor_bool(const json& j, const char* key, bool dflt, const std::string& source) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return dflt;
  LOWBIT_CHECK(it->is_boolean(), ConfigError, "{}: '{}' must be true or false, got {}", source, key,
               json_excerpt(*it));
  return it->get<bool>();
}

double processor_double(const json& j, const char* key, double dflt, const std::string& source) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return dflt;
  LOWBIT_CHECK(it->is_number(), ConfigError, "{}: '{}' must be a number, got {}", source, key, json_excerpt(*it));
  return it->get<double>();
}

std::array<double, 3> processor_triple(const json& j, const char* key, const std::array<double, 3>& dflt,
                                       const std::string& source, bool positive) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return dflt;
  std::array<double, 3> out{};
  if (it->is_number()) {  // a scalar applies to every channel
    out.fill(it->get<double>());
  } else {
    LOWBIT_CHECK(it->is_array() && it->size() == 3, ConfigError,
                 "{}: '{}' must be a list of 3 numbers (RGB), got {}", source, key, json_excerpt(*it));
    for (size_t c = 0; c < 3; ++c) {
      LOWBIT_CHECK((*it)[c].is_number(), ConfigError, "{}: '{}' must be a list of 3 numbers, got {}", source, key,
                   json_excerpt(*it));
      out[c] = (*it)[c].get<double>();
    }
  }
  for (double v : out)
    LOWBIT_CHECK(std::isfinite(v) && (!positive || v > 0), ConfigError, "{}: '{}' has an invalid value {}", source,
                 key, json_excerpt(*it));
  return out;
}

ProcessorJson read_processor_json(const std::string& model_dir, const char* first, const char* second) {
  namespace fs = std::filesystem;
  for (const char* name : {first, second}) {
    const std::string path = (fs::path(model_dir) / name).string();
    if (fs::exists(path)) return {parse_json(read_text_file(path), path), path};
  }
  throw IoError(fmt::format("{}: no {} or {}", model_dir, first, second));
}

}  // namespace lowbit
