#include "testing.h"

#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace lowbit::test {

std::string shared_dir() {
  const char* env = std::getenv("LOWBIT_SHARED");
  std::string d = env && *env ? env : std::string(LOWBIT_SOURCE_DIR) + "/../shared";
  return std::filesystem::is_directory(d) ? d : "";
}

std::string shared_path(const std::string& rel) {
  std::string d = shared_dir();
  if (d.empty()) return "";
  std::string p = d + "/" + rel;
  return std::filesystem::exists(p) ? p : "";
}

std::string temp_dir(const std::string& tag) {
  std::string tmpl = (std::filesystem::temp_directory_path() / ("lowbit_" + tag + "_XXXXXX")).string();
  char* r = mkdtemp(tmpl.data());
  if (!r) throw std::runtime_error("mkdtemp failed");
  return tmpl;
}

RunResult run_lowbit(const std::string& args) { return run_lowbit_env("", args); }

nlohmann::json run_lowbit_json(const std::string& args, const std::string& json_path) {
  const RunResult r = run_lowbit(args + " --output-json " + json_path);
  if (r.exit_code != 0) {
    ADD_FAILURE() << "lowbit " << args << " exited " << r.exit_code << ":\n" << r.out;
    return nullptr;
  }
  return nlohmann::json::parse(read_file(json_path));
}

RunResult run_lowbit_env(const std::string& env, const std::string& args) {
  std::string cmd = env + (env.empty() ? "" : " ") + std::string(LOWBIT_BINARY) + " " + args + " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return {-1, "popen failed"};
  std::string out;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) out.append(buf.data(), n);
  int st = pclose(p);
  int code = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return {code, out};
}

double normalized_error(const float* a, const float* b, size_t n) {
  double num = 0, den = 0;
  for (size_t i = 0; i < n; ++i) {
    double d = double(a[i]) - double(b[i]);
    num += d * d;
    den += double(b[i]) * double(b[i]);
  }
  return std::sqrt(num) / std::max(std::sqrt(den), 1e-30);
}

double normalized_error(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size()) return INFINITY;
  return normalized_error(a.data(), b.data(), a.size());
}

void expect_error_line(const RunResult& r, const std::string& needle, int code) {
  if (code == -1)
    EXPECT_NE(r.exit_code, 0) << r.out;
  else
    EXPECT_EQ(r.exit_code, code) << r.out;
  auto pos = r.out.find("lowbit: error: ");
  ASSERT_NE(pos, std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("lowbit: error: ", pos + 1), std::string::npos) << "one error line only: " << r.out;
  const std::string line = r.out.substr(pos);
  EXPECT_EQ(line.find('\n'), line.size() - 1) << "error must be one line: " << r.out;
  EXPECT_NE(line.find(needle), std::string::npos) << "error should mention '" << needle << "': " << r.out;
}

std::vector<int32_t> golden_ids(const SafetensorsFile& g) {
  Tensor t = g.get("input_ids");  // [1, T] i32
  return std::vector<int32_t>(t.data<int32_t>(), t.data<int32_t>() + t.numel());
}

uint64_t fnv1a(const std::vector<uint8_t>& bytes) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (uint8_t b : bytes) {
    h ^= b;
    h *= 0x100000001b3ull;
  }
  return h;
}

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

void write_file(const std::string& path, const std::string& data) {
  std::ofstream f(path, std::ios::binary);
  f << data;
}

LlavaOriginalLayout write_llava_original_layout(const std::string& hf_dir, const std::string& root,
                                                const std::string& aspect) {
  LlavaOriginalLayout o{root + "/llava", root + "/clip"};
  std::filesystem::create_directories(o.llava);
  std::filesystem::create_directories(o.clip);
  const WeightStore store = WeightStore::open_dir(hf_dir);
  std::vector<std::pair<std::string, Tensor>> lm, clip;
  auto strip = [](const std::string& n, const std::string& p) { return n.rfind(p, 0) == 0 ? n.substr(p.size()) : ""; };
  for (const std::string& n : store.names()) {
    if (auto r = strip(n, "language_model.model."); !r.empty()) lm.emplace_back("model." + r, store.get(n));
    else if (auto r2 = strip(n, "language_model.lm_head."); !r2.empty()) lm.emplace_back("lm_head." + r2, store.get(n));
    else if (auto r3 = strip(n, "multi_modal_projector.linear_1."); !r3.empty())
      lm.emplace_back("model.mm_projector.0." + r3, store.get(n));
    else if (auto r4 = strip(n, "multi_modal_projector.linear_2."); !r4.empty())
      lm.emplace_back("model.mm_projector.2." + r4, store.get(n));
    else if (auto r5 = strip(n, "vision_tower."); !r5.empty()) clip.emplace_back("vision_model." + r5, store.get(n));
    else ADD_FAILURE() << "unexpected tensor " << n;
  }
  save_safetensors(o.llava + "/model.safetensors", lm);
  save_safetensors(o.clip + "/model.safetensors", clip);

  const nlohmann::json hf = nlohmann::json::parse(read_file(hf_dir + "/config.json"));
  nlohmann::json cfg = hf["text_config"];
  cfg["architectures"] = {"LlavaLlamaForCausalLM"};
  cfg["model_type"] = "llava";
  cfg["torch_dtype"] = "float16";
  cfg["mm_vision_tower"] = "openai/clip-vit-large-patch14-336";
  cfg["mm_hidden_size"] = hf["vision_config"]["hidden_size"];
  cfg["mm_projector_type"] = "mlp2x_gelu";
  cfg["mm_vision_select_layer"] = hf["vision_feature_layer"];
  cfg["mm_vision_select_feature"] = "patch";
  cfg["mm_use_im_start_end"] = false;
  cfg["mm_use_im_patch_token"] = false;
  cfg["image_aspect_ratio"] = aspect;
  cfg["use_mm_proj"] = true;
  write_file(o.llava + "/config.json", cfg.dump(2));
  for (const char* f : {"tokenizer.json", "tokenizer_config.json", "generation_config.json"})
    if (std::filesystem::exists(hf_dir + "/" + f)) std::filesystem::copy_file(hf_dir + "/" + f, o.llava + "/" + f);

  nlohmann::json vc = hf["vision_config"];
  vc["architectures"] = {"CLIPVisionModel"};
  vc["model_type"] = "clip_vision_model";
  write_file(o.clip + "/config.json", vc.dump(2));
  const nlohmann::json proc = nlohmann::json::parse(read_file(hf_dir + "/processor_config.json"));
  write_file(o.clip + "/preprocessor_config.json", proc["image_processor"].dump(2));
  return o;
}

}  // namespace lowbit::test
