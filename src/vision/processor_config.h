// JSON readers shared by the image processors' configs (CLIP, anyres, Idefics3):
// preprocessor_config.json / processor_config.json keys with HF's defaults when absent or null,
// and ConfigError naming the source and the key for a value of the wrong type.
#pragma once
#include <array>
#include <string>

#include <nlohmann/json.hpp>

namespace lowbit {

// root itself (a flat preprocessor_config.json) or its "image_processor" object (processor_config.json).
// ConfigError when root or that member is not an object.
const nlohmann::json& image_processor_section(const nlohmann::json& root, const std::string& source);

// A boolean key, dflt when absent or null.
bool processor_bool(const nlohmann::json& j, const char* key, bool dflt, const std::string& source);

// A number key, dflt when absent or null.
double processor_double(const nlohmann::json& j, const char* key, double dflt, const std::string& source);

// A per-channel (RGB) key: a list of 3 finite numbers or a scalar for all three; positive: each > 0.
std::array<double, 3> processor_triple(const nlohmann::json& j, const char* key, const std::array<double, 3>& dflt,
                                       const std::string& source, bool positive);

// The JSON of <model_dir>/<first>, else of <model_dir>/<second>, with the path it came from;
// IoError when neither exists.
struct ProcessorJson {
  nlohmann::json json;
  std::string path;
};
ProcessorJson read_processor_json(const std::string& model_dir, const char* first, const char* second);

}  // namespace lowbit
