#include "quant/checkpoint_meta.h"

#include "core/error.h"
#include "io/json_util.h"

namespace lowbit {

QuantCheckpointMeta parse_quant_meta(std::string_view text, const std::string& qpath) {
  const nlohmann::json j = parse_json(text, qpath);
  QuantCheckpointMeta m;
  try {
    // format_version must be exactly the integer 1 (a float must not be cast, a string not compared).
    const auto fv = j.is_object() ? j.find("format_version") : j.end();
    LOWBIT_CHECK(j.is_object() && j.contains("format") && j["format"] == "lowbit-fakequant" && fv != j.end() &&
                     fv->is_number_integer() && *fv == 1,
                 FormatError, "{}: not a lowbit-fakequant v1 checkpoint", qpath);
    try {
      m.cfg = QuantConfig::from_json(j.at("quant_config"));
    } catch (const Error& e) {
      // FormatError for fields, ArgError (validate) for impossible settings: both mean a bad file here.
      throw FormatError(fmt::format("{}: {}", qpath, e.what()));
    }
    m.rotated = j.at("rotated").get<bool>();
    m.asym = j.at("asym_decisions").get<std::map<std::string, bool>>();
    const nlohmann::json& ql = j.at("quantized_linears");
    LOWBIT_CHECK(ql.is_object(), FormatError, "{}: \"quantized_linears\" must be an object, got {}", qpath,
                 json_excerpt(ql));
    for (auto& [name, v] : ql.items()) {
      const nlohmann::json& b = v.at("bits");
      LOWBIT_CHECK(b.is_number_integer() && b >= 2 && b <= 8, FormatError,
                   "{}: quantized linear '{}' has {} bits (supported: 2..8)", qpath, name, json_excerpt(b));
      m.qlin[name] = {b.get<int>(), v.at("sym").get<bool>()};
    }
  } catch (const nlohmann::json::exception& e) {
    throw FormatError(fmt::format("{}: {}", qpath, e.what()));
  }
  LOWBIT_CHECK(m.rotated == m.cfg.rotate, FormatError, "{}: \"rotated\": {} contradicts the config's rotate: {}",
               qpath, m.rotated, m.cfg.rotate);
  return m;
}

}  // namespace lowbit
