// Calibration data of a vision-language model (declared in quant/vlm_quant.h).
//
// Conversation JSON (LLaVA's llava_v1_5_mix665k.json / llava_instruct_150k.json, and
// ScienceQA-train converted by LLaVA's convert_sqa_to_llava: the same shape):
//   [ {"id": ..., "image": "rel/path.jpg" (absent: a text-only row), "conversations":
//      [{"from": "human", "value": "<image>\nQ1"}, {"from": "gpt", "value": "A1"}, ...]}, ... ]
// Rows with an image are kept (as the VLM GPTQ/QuIP tool and QSVD do); their paths are resolved
// under --image_folder (a path that does not exist there is tried by its basename, as AutoRound's
// loader does). nsamples rows are drawn with replacement, row r = SplitMix64(seed) draws mod n
// (QSVD draws with replacement too; lowbit's generator, not Python's).
// Each row is rendered with the model's conversation format (--template auto for the directory):
//   render(template, Q1 without "<image>", n_images=1) + " " + A1
//   then for each further turn: " " + render(template, Qk, 0, no BOS text) + " " + Ak
// tokenized by the family's processor (each <image> expanded to the image's tokens), and cut to
// --cal_seqlen tokens — never inside the image tokens; shorter samples are not padded (the driver
// takes samples of any length, which is what padding with a masked-out tail computes).
// A text file (anything not starting with '[' after blanks) calibrates the language model alone:
// the LLaMA protocol (tokenize_stream + sample_calibration).
#include <filesystem>

#include "core/error.h"
#include "core/rng.h"
#include "eval/perplexity.h"
#include "io/files.h"
#include "io/json_util.h"
#include "models/templates.h"
#include "quant/calibration.h"
#include "quant/vlm_quant.h"

namespace lowbit {

namespace fs = std::filesystem;

namespace {

std::string strip_image_placeholder(std::string v) {
  for (const char* p : {"<image>\n", "\n<image>", "<image>"}) {
    for (size_t at; (at = v.find(p)) != std::string::npos;) v.erase(at, std::strlen(p));
  }
  return v;
}

std::string row_id(const nlohmann::json& row, size_t index) {
  if (row.is_object() && row.contains("id")) {
    const auto& id = row["id"];
    return id.is_string() ? id.get<std::string>() : id.dump();
  }
  return fmt::format("#{}", index);
}

}  // namespace

VlmCalibration load_vlm_calibration(const QuantConfig& c, const Tokenizer& tok, const std::string& model_dir,
                                    int64_t max_context) {
  VlmCalibration out;
  // RTN needs none, but given data it measures each layer's error (the report's per-tower errors).
  if (!c.needs_calibration() && c.cal_dataset.empty()) return out;
  LOWBIT_CHECK(!c.cal_dataset.empty(), ArgError,
               "this configuration needs calibration data: pass --cal_dataset FILE (a LLaVA conversation JSON with "
               "--image_folder, or a text file for the language model alone)");
  std::string text = read_text_file(c.cal_dataset);
  const size_t first = text.find_first_not_of(" \t\r\n");
  if (first == std::string::npos || text[first] != '[') {  // a text file: the language model alone
    LOWBIT_CHECK(c.cal_seqlen <= max_context, ArgError, "--cal_seqlen {} is larger than the model's context ({})",
                 c.cal_seqlen, max_context);
    if (c.cal_begin != 0 || c.cal_end >= 0) text = utf8_slice(text, c.cal_begin, c.cal_end);
    LOWBIT_CHECK(!text.empty(), ArgError, "--cal_dataset {} (selected range) is empty", c.cal_dataset);
    const std::vector<int32_t> ids = tokenize_stream(tok, text, tok.bos_id());
    out.text = sample_calibration(ids, c.nsamples, c.cal_seqlen, c.seed);
    return out;
  }
  LOWBIT_CHECK(!c.cal_image_folder.empty(), ArgError,
               "--cal_dataset {} is a conversation JSON: pass --image_folder DIR (where its images are)",
               c.cal_dataset);
  LOWBIT_CHECK(fs::is_directory(c.cal_image_folder), IoError, "--image_folder {} is not a directory",
               c.cal_image_folder);
  const nlohmann::json rows = parse_json(text, c.cal_dataset);
  LOWBIT_CHECK(rows.is_array(), FormatError, "{}: expected a JSON array of conversations", c.cal_dataset);
  struct Row {
    std::string id, image;
    std::vector<std::pair<std::string, std::string>> turns;  // (question, answer)
  };
  std::vector<Row> kept;
  for (size_t i = 0; i < rows.size(); ++i) {
    const nlohmann::json& r = rows[i];
    const std::string id = row_id(r, i);
    LOWBIT_CHECK(r.is_object(), FormatError, "{}: conversation {} is not an object", c.cal_dataset, id);
    if (!r.contains("image") || r["image"].is_null()) continue;  // text-only rows are not drawn
    LOWBIT_CHECK(r["image"].is_string(), FormatError, "{}: conversation {}: 'image' must be a string path",
                 c.cal_dataset, id);
    LOWBIT_CHECK(r.contains("conversations") && r["conversations"].is_array(), FormatError,
                 "{}: conversation {} has no 'conversations' array", c.cal_dataset, id);
    Row row{id, r["image"].get<std::string>(), {}};
    const auto& conv = r["conversations"];
    for (size_t k = 0; k < conv.size(); ++k) {
      const auto& m = conv[k];
      LOWBIT_CHECK(m.is_object() && m.contains("from") && m["from"].is_string() && m.contains("value") &&
                       m["value"].is_string(),
                   FormatError, "{}: conversation {} turn {}: expected {{\"from\": string, \"value\": string}}",
                   c.cal_dataset, id, k);
      const std::string from = m["from"].get<std::string>(), value = m["value"].get<std::string>();
      if (from == "human" || from == "user") {
        row.turns.push_back({strip_image_placeholder(value), ""});
      } else {
        LOWBIT_CHECK(from == "gpt" || from == "assistant", FormatError,
                     "{}: conversation {} turn {}: 'from' is '{}' (expected human or gpt)", c.cal_dataset, id, k, from);
        LOWBIT_CHECK(!row.turns.empty(), FormatError, "{}: conversation {} starts with an answer", c.cal_dataset, id);
        row.turns.back().second += value;
      }
    }
    LOWBIT_CHECK(!row.turns.empty(), FormatError, "{}: conversation {} has no question", c.cal_dataset, id);
    kept.push_back(std::move(row));
  }
  LOWBIT_CHECK(!kept.empty(), ArgError, "{}: no conversation with an image", c.cal_dataset);

  const std::string tmpl = resolve_template("auto", model_dir);
  const TemplateContext ctx = template_context(model_dir);
  SplitMix64 rng(c.seed);
  for (int64_t s = 0; s < c.nsamples; ++s) {
    const Row& r = kept[size_t(rng.next_u64() % uint64_t(kept.size()))];
    fs::path img = fs::path(c.cal_image_folder) / r.image;
    if (!fs::exists(img)) img = fs::path(c.cal_image_folder) / fs::path(r.image).filename();
    LOWBIT_CHECK(fs::exists(img), IoError, "{}: conversation {}: image '{}' not found under --image_folder {}",
                 c.cal_dataset, r.id, r.image, c.cal_image_folder);
    std::string prompt = render_prompt(tmpl, r.turns[0].first, 1, ctx);
    prompt.append(1, ' ').append(r.turns[0].second);
    for (size_t k = 1; k < r.turns.size(); ++k)
      prompt.append(1, ' ').append(render_prompt(tmpl, r.turns[k].first, 0, TemplateContext{})).append(1, ' ').append(
          r.turns[k].second);
    out.multimodal.push_back({r.id, {img.string()}, prompt});
  }
  return out;
}

}  // namespace lowbit
