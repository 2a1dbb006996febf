// Test helpers: locating ../shared, running the CLI, normalized errors.
#pragma once
#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "io/safetensors.h"

namespace lowbit::test {

// $LOWBIT_SHARED, else <source dir>/../shared. Empty string if it does not exist.
std::string shared_dir();
// Path under shared/; calls GTEST_SKIP (via the macro below) when absent.
#define LOWBIT_REQUIRE_SHARED(var, rel)                                                       \
  std::string var = ::lowbit::test::shared_path(rel);                                         \
  if (var.empty()) GTEST_SKIP() << "../shared/" << (rel) << " not found (set LOWBIT_SHARED)"; \
  (void)0
std::string shared_path(const std::string& rel);  // "" when missing

// A fresh temporary directory (removed at process exit is not guaranteed).
std::string temp_dir(const std::string& tag);

struct RunResult {
  int exit_code;
  std::string out;  // stdout + stderr
};
// Runs the built `lowbit` binary with the given argument string (shell-quoted by the caller).
RunResult run_lowbit(const std::string& args);
// The same with environment assignments in front ("LOWBIT_FAULT=solve"); a run killed by a
// signal reports the shell's 128 + signal.
RunResult run_lowbit_env(const std::string& env, const std::string& args);
// Runs `lowbit <args> --output-json <json_path>` and returns the JSON it wrote; a failed run
// (nonzero exit) is a test failure showing the output, and returns null.
nlohmann::json run_lowbit_json(const std::string& args, const std::string& json_path);

// ||a - b|| / ||b||, in double.
double normalized_error(const float* a, const float* b, size_t n);
double normalized_error(const std::vector<float>& a, const std::vector<float>& b);

// One error line "lowbit: error: ..." in r.out (no second one, nothing after it) naming `needle`;
// exit code `code`, or any nonzero one when code is -1.
void expect_error_line(const RunResult& r, const std::string& needle, int code = -1);

// A golden's "input_ids" tensor ([1, T] i32) as a vector.
std::vector<int32_t> golden_ids(const SafetensorsFile& g);

// FNV-1a, 64-bit, of the bytes (the reference image hashes).
uint64_t fnv1a(const std::vector<uint8_t>& bytes);

std::string read_file(const std::string& path);
void write_file(const std::string& path, const std::string& data);

// The original LLaVA layout of tiny-llava-1.5, written the way liuhaotian/llava-v1.5-* are laid
// out: <root>/llava (LlavaLlamaForCausalLM config with the LLaMA keys at the top level and the
// mm_* keys; model.embed_tokens, model.layers.*, model.norm, lm_head, model.mm_projector.0/2;
// the tokenizer) and <root>/clip (a CLIPVisionModel directory: vision_model.*, its config,
// preprocessor_config.json).
// image_aspect_ratio is `aspect` (pad | square); "square" gives pixels equal to the HF layout's
// processor up to the Slow/Fast flavour (vision/clip_processor.h).
struct LlavaOriginalLayout {
  std::string llava, clip;
};
LlavaOriginalLayout write_llava_original_layout(const std::string& hf_dir, const std::string& root,
                                                const std::string& aspect = "pad");

}  // namespace lowbit::test
