// Vision-tower throughput of lowbit's CPU path (issue 9). The PyTorch twin is
// bench/torch_vision.py; bench/run_vision.sh runs both and prints the side-by-side table
// that BENCHMARKS.md records.
//
//   clip-l14-336    CLIP ViT-L/14 at 336 px (LLaVA-1.5's tower): 24 layers, hidden 1024, MLP 4096,
//                   16 heads, patch 14, class token + 576 patches = 577 tokens, quick_gelu,
//                   pre-layernorm; all 24 layers run (HF CLIPVisionModel's last_hidden_state)
//   siglip-so400m   SigLIP-so400m/14 at 384 px: 27 layers, hidden 1152, MLP 4304, 16 heads,
//                   patch 14, 27×27 = 729 tokens (no class token), conv bias, gelu_pytorch_tanh,
//                   post-layernorm output (SiglipVisionTransformer's last_hidden_state)
//
// Weights are f32, random and seeded (linears and embeddings N(0, 0.02), norms 1 + N(0, 0.02)
// and N(0, 0.02)), built here and loaded through ClipVisionTower::from_source. Images are
// N(0, 1) pixel values [3, S, S], one image per forward (batch 1), as the VLM pipelines run it.
// Timing: --warmup untimed images, then --reps repetitions of --images images each
// (wall clock); images/s is the median over repetitions.
//
//   bench_vision [--only clip|siglip] [--images N] [--reps N] [--warmup N] [--json FILE]
//   bench_vision --verify FILE   small towers of both kinds (2 layers, hidden 64/72, the real
//                                token counts 577 and 729) with their weights, inputs and
//                                outputs written to FILE for torch_vision.py --verify
//
// Environment: LOWBIT_THREADS (default 2) -> cpu_backend().set_threads(n).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "backend/backend.h"
#include "core/rng.h"
#include "io/safetensors.h"
#include "models/clip.h"
#include "models/clip_names.h"

extern "C" char* openblas_get_corename(void);

namespace {

using lowbit::ClipVisionConfig;
using lowbit::ClipVisionTower;
using lowbit::Tensor;
using Named = std::vector<std::pair<std::string, Tensor>>;

ClipVisionConfig clip_config(int64_t d, int64_t f, int64_t layers, int64_t heads, int64_t image, int64_t patch) {
  ClipVisionConfig c;
  c.model_type = "clip_vision_model";
  c.class_token = c.pre_norm = true;
  c.patch_bias = false;
  c.hidden_act = lowbit::Activation::quick_gelu;
  c.layer_norm_eps = 1e-5;
  c.hidden_size = d;
  c.intermediate_size = f;
  c.num_layers = layers;
  c.num_heads = heads;
  c.image_size = image;
  c.patch_size = patch;
  return c;
}

ClipVisionConfig siglip_config(int64_t d, int64_t f, int64_t layers, int64_t heads, int64_t image, int64_t patch) {
  ClipVisionConfig c = clip_config(d, f, layers, heads, image, patch);
  c.model_type = "siglip_vision_model";
  c.class_token = c.pre_norm = false;
  c.patch_bias = true;
  c.hidden_act = lowbit::Activation::gelu_tanh;
  c.layer_norm_eps = 1e-6;
  return c;
}

// The tower's tensors under HF's names (root ""), random and seeded.
Named random_weights(const ClipVisionConfig& c, uint64_t seed) {
  lowbit::NormalRng rng(seed);
  Named w;
  auto add = [&](const std::string& name, const lowbit::Shape& shape, float mean, float std) {
    Tensor t = Tensor::empty(shape);
    float* p = t.f32();
    for (int64_t i = 0, n = t.numel(); i < n; ++i) p[i] = mean + float(rng.normal()) * std;
    w.emplace_back(name, std::move(t));
  };
  const int64_t d = c.hidden_size, f = c.intermediate_size, p = c.patch_size, C = c.num_channels;
  namespace cn = lowbit::clip_names;
  const std::string patch = cn::kPatchEmbedding;
  add(patch + ".weight", {d, C, p, p}, 0, 0.02f);
  if (c.patch_bias) add(patch + ".bias", {d}, 0, 0.02f);
  if (c.class_token) add(cn::kClassEmbedding, {d}, 0, 0.02f);
  add(std::string(cn::kPositionEmbedding) + ".weight", {c.num_positions(), d}, 0, 0.02f);
  auto norm = [&](const std::string& name) {
    add(name + ".weight", {d}, 1, 0.02f);
    add(name + ".bias", {d}, 0, 0.02f);
  };
  if (c.pre_norm) norm(cn::kPreNorm);
  using R = cn::Role;
  for (int64_t l = 0; l < c.num_layers; ++l) {
    auto lin = [&](R r, int64_t out, int64_t in) {
      add(cn::module("", l, r) + ".weight", {out, in}, 0, 0.02f);
      add(cn::module("", l, r) + ".bias", {out}, 0, 0.02f);
    };
    norm(cn::module("", l, R::ln1));
    lin(R::q_proj, d, d);
    lin(R::k_proj, d, d);
    lin(R::v_proj, d, d);
    lin(R::out_proj, d, d);
    norm(cn::module("", l, R::ln2));
    lin(R::fc1, f, d);
    lin(R::fc2, d, f);
  }
  if (c.is_siglip()) norm(cn::kPostNorm);
  return w;
}

ClipVisionTower build_tower(const ClipVisionConfig& c, const Named& w) {
  std::map<std::string, Tensor> by_name(w.begin(), w.end());
  const lowbit::TensorSource get = [&](const std::string& n) {
    auto it = by_name.find(n);
    return it == by_name.end() ? Tensor() : it->second;
  };
  const lowbit::PackedSource no_packed;
  const std::string source = "<random " + c.model_type + ">";
  return ClipVisionTower::from_source(c, lowbit::WeightSource{get, no_packed, source}, "");
}

// What both sides compare: CLIP's encoder output (all layers), SigLIP's post-layernorm output.
std::vector<float> run(const ClipVisionTower& t, const float* px) {
  return t.cfg.is_siglip() ? t.forward_output(px) : t.forward(px, t.cfg.num_layers);
}

std::vector<float> random_images(const ClipVisionConfig& c, int64_t n, uint64_t seed) {
  lowbit::NormalRng rng(seed);
  std::vector<float> px(size_t(n * c.num_channels * c.image_size * c.image_size));
  for (auto& v : px) v = float(rng.normal());
  return px;
}

nlohmann::json config_json(const ClipVisionConfig& c) {
  return {{"model_type", c.model_type},
          {"hidden_size", c.hidden_size},
          {"intermediate_size", c.intermediate_size},
          {"num_hidden_layers", c.num_layers},
          {"num_attention_heads", c.num_heads},
          {"num_channels", c.num_channels},
          {"image_size", c.image_size},
          {"patch_size", c.patch_size},
          {"layer_norm_eps", c.layer_norm_eps},
          {"hidden_act", lowbit::activation_name(c.hidden_act)},
          {"tokens", c.num_positions()}};
}

struct Case {
  std::string name;
  ClipVisionConfig cfg;
};

std::vector<Case> bench_cases() {
  return {{"clip-l14-336", clip_config(1024, 4096, 24, 16, 336, 14)},
          {"siglip-so400m", siglip_config(1152, 4304, 27, 16, 384, 14)}};
}

int verify(const std::string& path) {
  // The real token counts (577, 729: the attention shapes of the benchmark), small widths.
  const std::vector<Case> cases = {{"clip", clip_config(64, 256, 2, 4, 336, 14)},
                                   {"siglip", siglip_config(72, 200, 2, 4, 384, 14)}};
  Named out;
  nlohmann::json meta;
  for (const Case& cs : cases) {
    Named w = random_weights(cs.cfg, 1234);
    ClipVisionTower t = build_tower(cs.cfg, w);
    const int64_t S = cs.cfg.image_size, C = cs.cfg.num_channels;
    std::vector<float> px = random_images(cs.cfg, 1, 99);
    std::vector<float> y = run(t, px.data());
    for (auto& [n, x] : w) out.emplace_back(cs.name + "/" + n, x);
    out.emplace_back(cs.name + "/pixel_values", Tensor::from_vector(px, {1, C, S, S}));
    out.emplace_back(cs.name + "/output", Tensor::from_vector(y, {1, cs.cfg.num_positions(), cs.cfg.hidden_size}));
    meta[cs.name] = config_json(cs.cfg);
  }
  lowbit::save_safetensors(path, out, {{"towers", meta.dump()}});
  fmt::print("wrote {} ({} tensors)\n", path, out.size());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  int64_t images = 2, reps = 3, warmup = 1;
  std::string only, json_path, verify_path;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        fmt::print(stderr, "bench_vision: {} needs a value\n", a);
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--images") images = std::atoll(next().c_str());
    else if (a == "--reps") reps = std::atoll(next().c_str());
    else if (a == "--warmup") warmup = std::atoll(next().c_str());
    else if (a == "--only") only = next();
    else if (a == "--json") json_path = next();
    else if (a == "--verify") verify_path = next();
    else {
      fmt::print(stderr, "usage: bench_vision [--only clip|siglip] [--images N] [--reps N] [--warmup N] "
                         "[--json FILE] | --verify FILE\n");
      return 2;
    }
  }
  const char* env = std::getenv("LOWBIT_THREADS");
  lowbit::cpu_backend().set_threads(env && *env ? std::atoi(env) : 2);
  if (!verify_path.empty()) return verify(verify_path);
  if (images < 1 || reps < 1 || warmup < 0) {
    fmt::print(stderr, "bench_vision: --images and --reps must be >= 1, --warmup >= 0\n");
    return 2;
  }

  nlohmann::json report = {{"threads", lowbit::cpu_backend().threads()},
                           {"openblas_core", openblas_get_corename()},
                           {"cases", nlohmann::json::array()}};
  fmt::print("lowbit threads {}, OpenBLAS core {}\n", lowbit::cpu_backend().threads(), openblas_get_corename());
  for (const Case& cs : bench_cases()) {
    if (!only.empty() && cs.name.rfind(only, 0) != 0) continue;
    ClipVisionTower t;
    {
      Named w = random_weights(cs.cfg, 7);
      t = build_tower(cs.cfg, w);
    }  // the tower shares the tensors; the list goes
    const int64_t per = cs.cfg.num_channels * cs.cfg.image_size * cs.cfg.image_size;
    std::vector<float> px = random_images(cs.cfg, images, 11);
    for (int64_t i = 0; i < warmup; ++i) run(t, px.data() + (i % images) * per);
    std::vector<double> secs;
    double checksum = 0;
    for (int64_t r = 0; r < reps; ++r) {
      const auto t0 = std::chrono::steady_clock::now();
      for (int64_t i = 0; i < images; ++i) {
        std::vector<float> y = run(t, px.data() + i * per);
        checksum += y[0];
      }
      secs.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    std::vector<double> sorted = secs;
    std::sort(sorted.begin(), sorted.end());
    const double med = sorted[sorted.size() / 2];
    const double ips = double(images) / med;
    fmt::print("{:<15} tokens {:>4}  {:.3f} images/s  ({:.0f} ms/image, median of {} x {} images; checksum {:.4g})\n",
               cs.name, cs.cfg.num_positions(), ips, 1e3 * med / double(images), reps, images, checksum);
    std::fflush(stdout);
    report["cases"].push_back({{"name", cs.name},
                               {"config", config_json(cs.cfg)},
                               {"images", images},
                               {"reps", reps},
                               {"seconds", secs},
                               {"images_per_s", ips}});
  }
  if (!json_path.empty()) {
    std::FILE* fp = std::fopen(json_path.c_str(), "w");
    if (!fp) {
      fmt::print(stderr, "bench_vision: cannot write {}\n", json_path);
      return 1;
    }
    std::fputs(report.dump(2).c_str(), fp);
    std::fclose(fp);
  }
  return 0;
}
