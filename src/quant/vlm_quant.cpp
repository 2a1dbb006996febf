// Vision-language quantization, tower by tower (see vlm_quant.h).
#include "quant/vlm_quant.h"

#include <sys/resource.h>

#include <algorithm>
#include <cmath>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <map>
#include <optional>
#include <set>

#include "core/error.h"
#include "core/progress.h"
#include "io/files.h"
#include "io/image.h"
#include "io/json_util.h"
#include "io/safetensors.h"
#include "models/llama_names.h"
#include "quant/checkpoint.h"
#include "quant/qgrid.h"
#include "quant/auto_asym.h"
#include "quant/checkpoint_meta.h"
#include "quant/rotation.h"
#include "quant/runtime.h"

namespace lowbit {

namespace fs = std::filesystem;

namespace {

constexpr int kVision = 0, kProjector = 1, kLanguage = 2;
constexpr const char* kTowerNames[] = {"vision", "projector", "language"};

double now_s() {
  using namespace std::chrono;
  return duration<double>(steady_clock::now().time_since_epoch()).count();
}

// The activation quantizer of the vision tower's and projector's linears: a_bits under
// --vit_module with clip min(a_clip_ratio, vita_clip_ratio) (QSVD), else off.
ActQuant vision_act_quant(const QuantConfig& c) {
  ActQuant q;
  if (!c.vit_module || c.a_bits >= 16) return q;
  q.bits = c.a_bits;
  q.groupsize = c.a_groupsize;
  q.asym = c.a_asym;
  q.clip = float(std::min(c.a_clip_ratio, c.vita_clip_ratio));
  return q;
}

std::vector<Block*> tower_blocks(const VlmParts& P, int t) {
  std::vector<Block*> b;
  if (t == kVision)
    for (int64_t l = 0; l < P.vision_layers; ++l) b.push_back(&P.vision->layers[size_t(l)]);
  else if (t == kProjector)
    b.push_back(P.projector);
  else
    b = P.language->blocks();
  return b;
}

// ids cut to max_len tokens, but never inside the image tokens (a sample keeps all of them).
void truncate_ids(std::vector<int32_t>& ids, int64_t max_len, int32_t image_token) {
  if (max_len <= 0 || int64_t(ids.size()) <= max_len) return;
  int64_t keep = max_len;
  for (int64_t t = int64_t(ids.size()) - 1; t >= 0; --t)
    if (ids[size_t(t)] == image_token) {
      keep = std::max(keep, t + 1);
      break;
    }
  ids.resize(size_t(keep));
}

// Calibration sample smp made ready for a forward: its images decoded and set on the model, its
// rendered conversation's ids (image tokens expanded) cut to max_len.
std::vector<int32_t> prepare_sample(Vlm& vlm, const Tokenizer& tok, const VlmCalibSample& smp, int64_t max_len,
                                    int32_t image_token) {
  std::vector<Image> imgs;
  for (const std::string& p : smp.images) imgs.push_back(decode_image(p));
  vlm.set_images(imgs);
  std::vector<int32_t> ids = vlm.prompt_ids(tok, smp.text);
  truncate_ids(ids, max_len, image_token);
  return ids;
}

// Inputs of tower t for every calibration sample, from the model's own forward with the
// upstream towers as they are now (quantized or not). act_quant: activation quantizers on.
std::vector<BlockState> capture(Vlm& vlm, const Tokenizer& tok, const VlmCalibration& calib, int t, bool act_quant,
                                int64_t max_len) {
  const VlmParts P = vlm.parts();
  std::vector<BlockState> out;
  if (calib.multimodal.empty()) {  // a text-only calibration: the language model's inputs only
    LOWBIT_ASSERT(t == kLanguage);
    const int64_t d = P.language->cfg.hidden_size;
    for (const auto& ids : calib.text) {
      BlockState s;
      s.T = int64_t(ids.size());
      s.x.resize(size_t(s.T * d));
      P.language->embed_tokens(ids.data(), s.T, s.x.data());
      out.push_back(std::move(s));
    }
    return out;
  }
  Progress prog(fmt::format("{} inputs", kTowerNames[t]), int64_t(calib.multimodal.size()));
  for (size_t s = 0; s < calib.multimodal.size(); ++s) {
    std::vector<int32_t> ids = prepare_sample(vlm, tok, calib.multimodal[s], max_len, P.image_token_id);
    ForwardOptions fo;
    fo.act_quant = act_quant;
    const char* stage = t == kVision ? "vision" : "projector";
    if (t != kLanguage)
      fo.tower_hook = [&](const char* st, const float* x, int64_t rows, int64_t cols) {
        if (std::strcmp(st, stage) != 0) return;
        BlockState b;
        b.T = rows;
        b.x.assign(x, x + rows * cols);
        out.push_back(std::move(b));
      };
    std::vector<float> x = vlm.embed(ids, fo);  // [T, d]: the decoder's input
    if (t == kLanguage) {
      BlockState b;
      b.T = int64_t(ids.size());
      b.x = std::move(x);
      out.push_back(std::move(b));
    }
    prog.update(int64_t(s + 1));
  }
  prog.clear();
  return out;
}

// GPTQ of the patch-embedding convolution: H = 2/N Σ x xᵀ over every unfolded patch row x
// [C·p·p] of every frame the processor makes of the calibration images (the frames the vision
// tower's calibration runs; the pixels reach the conv unchanged, so the quantized and the FP
// model see the same x and GPTAQ's dXXᵀ term is zero: GPTAQ = GPTQ here), then the shared solver.
nlohmann::json gptq_patch_embed(Vlm& vlm, const Tokenizer& tok, const VlmCalibration& calib, const QuantConfig& cfg,
                                int bits, int64_t max_len) {
  const VlmParts P = vlm.parts();
  const ClipVisionTower& tower = *P.vision;
  HessianAccumulator H(tower.cfg.patch_dim());
  int64_t frames = 0;
  Progress prog("patch_embed inputs", int64_t(calib.multimodal.size()));
  for (size_t s = 0; s < calib.multimodal.size(); ++s) {
    std::vector<int32_t> ids = prepare_sample(vlm, tok, calib.multimodal[s], max_len, P.image_token_id);
    ForwardOptions fo;
    fo.act_quant = false;
    fo.tower_hook = [&](const char* st, const float* px, int64_t, int64_t) {
      if (std::strcmp(st, "pixels") != 0) return;
      const std::vector<float> x = tower.unfold(px);  // [P, C·p·p]
      H.add(x.data(), tower.cfg.num_patches());
      ++frames;
    };
    vlm.embed(ids, fo);
    prog.update(int64_t(s + 1));
  }
  prog.clear();
  H.finalize();
  LOWBIT_CHECK(H.tokens > 0, NumericError, "GPTQ of {}: no image frame in the calibration data",
               tower.patch_embed.name);
  nlohmann::json r = gptq_linear(P.vision->patch_embed, H, cfg, bits);
  r["frames"] = frames;
  r["patches"] = H.tokens;
  return r;
}

// RTN of the blocks with each block's relative output error measured on the calibration states
// X (the driver's definition: ‖Y_q − Y_fp‖ / ‖Y_fp − X‖ over the first 8 samples, ‖Y_fp‖ for a
// block that changes the width); X ends as the last block's outputs.
void rtn_measured(const std::vector<Block*>& blocks, std::vector<BlockState>& X, const QuantConfig& cfg,
                  const TowerPlan& plan, nlohmann::json& layers) {
  BlockCtx qctx, fpctx;
  qctx.act_quant = cfg.enable_aq_calibration;
  fpctx.act_quant = false;
  auto sq = [](const std::vector<float>& a, const std::vector<float>* b) {
    double e = 0;
    for (size_t i = 0; i < a.size(); ++i) {
      const double d = double(a[i]) - (b ? double((*b)[i]) : 0.0);
      e += d * d;
    }
    return e;
  };
  for (size_t b = 0; b < blocks.size(); ++b) {
    const std::unique_ptr<Block> fp = blocks[b]->clone();  // shares the full-precision weights
    std::vector<std::vector<float>> ref;
    double den = 0;
    for (size_t s = 0; s < std::min<size_t>(X.size(), 8); ++s) {
      BlockState r = X[s];
      fp->forward(r, fpctx);
      den += r.x.size() == X[s].x.size() ? sq(r.x, &X[s].x) : sq(r.x, nullptr);
      ref.push_back(std::move(r.x));
    }
    nlohmann::json scratch = nlohmann::json::array();
    rtn_blocks({blocks[b]}, cfg, plan, scratch);  // the driver's RTN (its per-linear widths and kept linears)
    nlohmann::json lrep = scratch.empty() ? nlohmann::json::object() : scratch[0];
    lrep["layer"] = b;
    lrep["kind"] = blocks[b]->kind();
    lrep["tower"] = plan.tower;
    for (auto& st : X) blocks[b]->forward(st, qctx);
    double num = 0;
    for (size_t s = 0; s < ref.size(); ++s) num += sq(X[s].x, &ref[s]);
    lrep["rel_error"] = std::sqrt(num / std::max(den, 1e-30));
    log_info(fmt::format("{} layer {}/{} (rtn): relative output error {:.4f}", plan.tower, b + 1, blocks.size(),
                         lrep["rel_error"].get<double>()));
    layers.push_back(std::move(lrep));
  }
}

int64_t sample_count(const VlmCalibration& calib) {
  return int64_t(calib.multimodal.empty() ? calib.text.size() : calib.multimodal.size());
}

// Calibration sample s through the whole model (vision → projector → decoder) with `fo`.
void forward_sample(Vlm& vlm, const Tokenizer& tok, const VlmCalibration& calib, size_t s, const ForwardOptions& fo,
                    int64_t max_len) {
  const VlmParts P = vlm.parts();
  if (calib.multimodal.empty()) {
    const std::vector<int32_t>& ids = calib.text[s];
    P.language->forward(ids.data(), int64_t(ids.size()), nullptr, fo);
    return;
  }
  const std::vector<int32_t> ids = prepare_sample(vlm, tok, calib.multimodal[s], max_len, P.image_token_id);
  const std::vector<float> x = vlm.embed(ids, fo);
  P.language->forward_embeds(x.data(), int64_t(ids.size()), nullptr, fo);
}

// Every group of every tower the driver walks, by its site (the group's first linear).
std::map<std::string, std::vector<Linear*>> groups_by_site(const VlmParts& P) {
  std::map<std::string, std::vector<Linear*>> g;
  for (int t = 0; t < 3; ++t)
    for (Block* b : tower_blocks(P, t))
      for (auto& grp : b->groups()) g[grp.front()->name] = grp;
  return g;
}

// The skew-based QuaRot's rule (quant/auto_asym.h) on every tower: after weight quantization,
// one forward of the first calibration sample with the quantizers off; each linear's output
// decides its own input quantizer (v_proj's also the V cache; K stays symmetric).
nlohmann::json seed_auto_asym(Vlm& vlm, const Tokenizer& tok, const VlmCalibration& calib, QuantRuntime& rt,
                              int64_t max_len) {
  const auto group_of = groups_by_site(vlm.parts());
  nlohmann::json decisions = nlohmann::json::object();
  ForwardOptions fo;
  fo.act_quant = false;
  fo.observer = seed_auto_asym_observer(group_of, default_backend(), rt, decisions);
  forward_sample(vlm, tok, calib, 0, fo, max_len);
  log_info(fmt::format("auto-asym (seed rule, first calibration sample, linear outputs, every tower): {} of {} "
                       "linears' inputs asymmetric",
                       count_asym(decisions), decisions.size()));
  return decisions;
}

// lowbit's rule on every tower: before weight quantization, skew statistics of every shared input
// (and each layer's K) over all calibration samples; group-mates share the site's decision.
nlohmann::json lowbit_auto_asym(Vlm& vlm, const Tokenizer& tok, const VlmCalibration& calib, QuantRuntime& rt,
                                int64_t max_len) {
  std::map<std::string, ActStats> stats;
  ForwardOptions fo;
  fo.act_quant = false;
  fo.observer = [&](const std::string& site, const float* x, int64_t rows, int64_t cols) {
    stats[site].add(x, rows * cols);
  };
  const int64_t n = sample_count(calib);
  Progress prog("auto-asym statistics", n);
  for (int64_t s = 0; s < n; ++s) {
    forward_sample(vlm, tok, calib, size_t(s), fo, max_len);
    prog.update(s + 1);
  }
  prog.finish();
  nlohmann::json decisions = nlohmann::json::object();
  for (auto& [site, st] : stats) {
    const bool a = st.choose_asym(rt.cfg.auto_asym_t1, rt.cfg.auto_asym_t2);
    rt.asym[site] = a;
    const double sd = st.stddev();
    decisions[site] = {{"asym", a}, {"mean_over_std", sd > 0 ? std::fabs(st.mean()) / sd : 0.0},
                       {"skewness", st.skewness()}};
  }
  for (auto& [site, grp] : groups_by_site(vlm.parts()))
    if (rt.asym.count(site))
      for (Linear* lin : grp) rt.asym[lin->name] = rt.asym.at(site);
  return decisions;
}

}  // namespace

void install_vlm_runtime(const VlmParts& P, const QuantRuntime& rt) {
  QuantRuntime lm = rt;  // the language model: LLaMA's runtime with its own clip ratio
  lm.cfg.a_clip_ratio = std::min(rt.cfg.a_clip_ratio, rt.cfg.lma_clip_ratio);
  install_runtime(*P.language, lm);
  const ActQuant aq = vision_act_quant(rt.cfg);
  // Under auto-asym each linear's input quantizer takes its decision (when the pass made one).
  auto site_aq = [&](const Linear& lin) {
    ActQuant q = aq;
    if (rt.cfg.a_auto_asym && q.on()) {
      auto it = rt.asym.find(lin.name);
      if (it != rt.asym.end()) q.asym = it->second;
    }
    return q;
  };
  for (size_t l = 0; l < P.vision->layers.size(); ++l)
    for (Linear* lin : P.vision->layers[l].linears()) {
      lin->aq = int64_t(l) < P.vision_layers ? site_aq(*lin) : ActQuant{};
      lin->rot = {};
    }
  for (Linear* lin : P.projector->linears()) {
    lin->aq = site_aq(*lin);
    lin->rot = {};
  }
}

QuantizedModel quantize_vlm(Vlm& vlm, const QuantConfig& cfg, const Tokenizer& tok, const VlmCalibration& calib,
                            const DriverOptions& opt) {
  cfg.validate();
  const VlmParts P = vlm.parts();
  LlamaModel& lm = *P.language;
  // Activation groups must divide the input of every linear whose input is quantized.
  if (cfg.a_bits < 16 && cfg.a_groupsize > 0) {
    std::vector<const Linear*> acts;
    for (Block* b : lm.blocks())
      for (const Linear* l : b->linears()) acts.push_back(l);
    if (cfg.vit_module) {
      for (int64_t l = 0; l < P.vision_layers; ++l)
        for (const Linear* x : P.vision->layers[size_t(l)].linears()) acts.push_back(x);
      for (const Linear* x : P.projector->linears()) acts.push_back(x);
    }
    for (const Linear* l : acts)
      LOWBIT_CHECK(l->in() % cfg.a_groupsize == 0, ShapeError,
                   "--a_groupsize {} does not divide the input dimension {} of {}", cfg.a_groupsize, l->in(), l->name);
  }
  const double t0 = now_s();
  QuantizedModel out;
  nlohmann::json& rep = out.report;
  rep["config"] = cfg.to_json();
  rep["summary"] = cfg.summary();
  rep["family"] = P.family;
  auto rt = std::make_shared<QuantRuntime>();
  rt->cfg = cfg;
  if (cfg.rotate) {
    RotationConfig rc;
    rc.rotate = true;
    rc.seed = cfg.rotate_seed;
    rc.mode = cfg.rotate_mode;
    StreamWriters w;
    w.linears = {P.projector_out};
    if (P.stream_rows) w.rows = {P.stream_rows};
    rt->rot = rotate_model(lm, rc, w);
    rt->rotated = true;
    rep["hadamard"] = {{"R1", cfg.rotate_mode == "random" ? "random orthogonal" : "diag(random signs) * hidden"},
                       {"folded_into", P.projector_out->name},
                       {"image_newline", P.stream_rows != nullptr}};
    log_info(fmt::format("rotated the language model (R1 also folded into {}{})", P.projector_out->name,
                         P.stream_rows ? " and image_newline" : ""));
  }
  install_vlm_runtime(P, *rt);
  out.runtime = rt;

  TowerPlan plans[3] = {{"vision", cfg.vision_w_bits(), {}}, {"projector", cfg.projector_w_bits(), {}},
                        {"language", cfg.w_bits, {}}};
  if (cfg.skip_last_vision && P.vision_layers > 0)
    plans[kVision].keep.insert(&P.vision->layers[size_t(P.vision_layers - 1)].fc2);
  if (cfg.skip_last_proj) plans[kProjector].keep.insert(P.projector_out);
  const bool gptq = !cfg.w_rtn;
  const bool images = !calib.multimodal.empty();
  for (int t = 0; t < 3; ++t) {
    if (plans[t].w_bits >= 16 || !gptq) continue;
    LOWBIT_CHECK(images || t == kLanguage, ArgError,
                 "GPTQ on the {} needs image calibration data: a conversation JSON --cal_dataset with --image_folder "
                 "(or --w_rtn, or 16 bits for that tower with --wbits V,P,L)",
                 t == kVision ? "vision tower" : "projector");
    LOWBIT_CHECK(images || !calib.text.empty(), ArgError,
                 "GPTQ needs calibration data: pass --cal_dataset (or --w_rtn)");
  }
  const int64_t max_len = cfg.cal_seqlen;
  const bool seed_asym = cfg.a_auto_asym && cfg.auto_asym_rule == "seed" && cfg.auto_asym_used();
  if (cfg.auto_asym_used())
    LOWBIT_CHECK(sample_count(calib) > 0, ArgError, "--a_auto_asym needs calibration data (--cal_dataset)");
  if (cfg.auto_asym_used() && !seed_asym) {  // lowbit's rule: before the weights
    rep["auto_asym"] = lowbit_auto_asym(vlm, tok, calib, *rt, max_len);
    install_vlm_runtime(P, *rt);
  }
  // GPTAQ's full-precision inputs of each tower, before any weight is quantized.
  std::vector<BlockState> fp_in[3];
  if (gptq && cfg.use_v2)
    for (int t = 0; t < 3; ++t)
      if (plans[t].w_bits < 16) fp_in[t] = capture(vlm, tok, calib, t, /*act_quant=*/false, max_len);

  rep["layers"] = nlohmann::json::array();
  if (cfg.quant_patch_embed && plans[kVision].w_bits < 16) {
    // GPTQ runs (GPTAQ included: its dXXᵀ is zero for the pixels) solve the conv on the calibration
    // images' unfolded patches before the vision tower's inputs are captured; RTN runs round it.
    if (gptq) {
      rep["patch_embed"] = gptq_patch_embed(vlm, tok, calib, cfg, plans[kVision].w_bits, max_len);
      rep["patch_embed"]["method"] = "gptq";
    } else {
      rtn_linear(P.vision->patch_embed, cfg, plans[kVision].w_bits);
      rep["patch_embed"] = {{"method", "rtn"}};
    }
    rep["patch_embed"]["name"] = P.vision->patch_embed.name;
    rep["patch_embed"]["bits"] = plans[kVision].w_bits;
  }
  for (int t = 0; t < 3; ++t) {
    const TowerPlan& plan = plans[t];
    if (plan.w_bits >= 16) continue;
    const std::vector<Block*> blocks = tower_blocks(P, t);
    if (!gptq) {  // with calibration data at hand, each layer's error is measured too
      if (images || (t == kLanguage && !calib.text.empty())) {
        std::vector<BlockState> X = capture(vlm, tok, calib, t, cfg.enable_aq_calibration, max_len);
        rtn_measured(blocks, X, cfg, plan, rep["layers"]);
      } else {
        rtn_blocks(blocks, cfg, plan, rep["layers"]);
      }
      continue;
    }
    std::vector<BlockState> Xq = capture(vlm, tok, calib, t, cfg.enable_aq_calibration, max_len);
    std::vector<BlockState> Xfp = std::move(fp_in[t]);
    LOWBIT_CHECK(!cfg.use_v2 || Xfp.size() == Xq.size(), NumericError,
                 "GPTAQ: {} full-precision and {} quantized calibration inputs of the {}", Xfp.size(), Xq.size(),
                 plan.tower);
    rep["state_budget_bytes"] = gptq_blocks(blocks, Xq, Xfp, cfg, plan, rep["layers"], opt);
  }
  const bool head = cfg.lm_head_w_bits < 16 && !cfg.skip_last_language;
  if (head) rtn_linear(lm.lm_head, cfg, cfg.lm_head_w_bits);
  if (cfg.lm_head_w_bits < 16 && cfg.skip_last_language)
    log_warn("--skip_last_language keeps lm_head in full precision; --lm_head_w_bits has no effect");

  if (seed_asym) {  // the seed's rule: after weight quantization
    rep["auto_asym"] = seed_auto_asym(vlm, tok, calib, *rt, max_len);
    install_vlm_runtime(P, *rt);
  }

  // The per-tower summary: settings and the per-layer relative output error.
  nlohmann::json towers = nlohmann::json::object();
  for (int t = 0; t < 3; ++t) {
    nlohmann::json kept = nlohmann::json::array();
    for (const Linear* l : plans[t].keep) kept.push_back(l->name);
    towers[kTowerNames[t]] = {{"w_bits", plans[t].w_bits},
                              {"method", plans[t].w_bits >= 16 ? "none" : cfg.w_rtn ? "rtn" : cfg.use_v2 ? "gptaq" : "gptq"},
                              {"a_bits", t == kLanguage ? cfg.a_bits : vision_act_quant(cfg).bits},
                              {"a_clip_ratio", t == kLanguage ? std::min(cfg.a_clip_ratio, cfg.lma_clip_ratio)
                                                              : double(vision_act_quant(cfg).clip)},
                              {"kept_fp", kept},
                              {"layers", nlohmann::json::array()}};
  }
  towers["vision"]["layers_used"] = P.vision_layers;
  towers["vision"]["patch_embed_quantized"] = cfg.quant_patch_embed && plans[kVision].w_bits < 16;
  if (rep.contains("patch_embed")) towers["vision"]["patch_embed_method"] = rep["patch_embed"]["method"];
  towers["language"]["lm_head_w_bits"] = head ? cfg.lm_head_w_bits : 16;
  for (const auto& l : rep["layers"]) {
    nlohmann::json e = {{"layer", l["layer"]}, {"kind", l["kind"]}};
    if (l.contains("rel_error")) e["rel_error"] = l["rel_error"];
    towers[l["tower"].get<std::string>()]["layers"].push_back(e);
  }
  rep["towers"] = towers;
  rep["seconds"] = now_s() - t0;
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  rep["peak_rss_mb"] = double(ru.ru_maxrss) / 1024.0;
  return out;
}

QuantizedModel quantize_vlm_in_memory(Vlm& vlm, const QuantConfig& cfg, const Tokenizer& tok,
                                      const std::string& model_dir) {
  log_info("quantization config: " + cfg.summary());
  const VlmCalibration calib = load_vlm_calibration(cfg, tok, model_dir, vlm.language().cfg.max_position);
  QuantizedModel q = quantize_vlm(vlm, cfg, tok, calib);
  log_info(fmt::format("quantized in {:.2f}s, peak RSS {:.0f} MB", q.report["seconds"].get<double>(),
                       q.report["peak_rss_mb"].get<double>()));
  return q;
}

// ---- checkpoint -----------------------------------------------------------------------------

namespace {

const char* kQuantFile = "lowbit_quant.json";
const char* kTowerKey = "lowbit_vision_tower_dir";  // original LLaVA layout: config.json's pointer
const char* kTowerSubdir = "vision_tower";

// The language model's name "model.X" / "lm_head.*" in the VLM's file.
std::string lm_file_name(const VlmParts& P, const std::string& name) {
  static const std::string kModel = "model.";
  return name.compare(0, kModel.size(), kModel) == 0 ? P.language_root + name.substr(kModel.size())
                                                      : P.head_root + name;
}

}  // namespace

void save_quantized_vlm(Vlm& vlm, const QuantizedModel& q, const std::string& src_dir, const std::string& out_dir) {
  using llama_names::Role;
  const VlmParts P = vlm.parts();
  const QuantRuntime& rt = *q.runtime;
  const LlamaModel& m = *P.language;
  const WeightStore src = WeightStore::open_dir(src_dir);
  // The original layout: the CLIP tower's tensors (named P.vision->root + ..., as in the tower
  // directory's file) go to OUT/vision_tower/model.safetensors, everything else to OUT.
  const bool orig = P.family == "llava_original";
  LOWBIT_CHECK(!orig || !P.vision_dir.empty(), ArgError, "{}: the original LLaVA layout needs its --vision-tower",
               src_dir);
  std::optional<WeightStore> vsrc;
  if (orig) vsrc.emplace(WeightStore::open_dir(P.vision_dir));
  auto in_tower = [&](const std::string& name) { return orig && name.rfind(P.vision->root, 0) == 0; };

  // What this process holds under the file's names: every tensor quantization or rotation may
  // have changed (plain), every quantized linear (packed; its ".weight" dropped).
  std::map<std::string, Tensor> plain;
  std::map<std::string, const Linear*> packed;
  std::set<std::string> dropped;
  nlohmann::json qlin = nlohmann::json::object();
  auto linear = [&](const Linear& lin, const std::string& fname, const Shape& file_shape) {
    if (lin.quantized()) {
      packed[fname] = &lin;
      dropped.insert(fname + ".weight");
      qlin[fname] = {{"bits", lin.qw->bits}, {"sym", lin.qw->sym}, {"groupsize", lin.qw->groupsize}};
    } else {
      plain[fname + ".weight"] = file_shape.empty() ? lin.W : lin.W.reshape(file_shape);
    }
    if (lin.bias.defined()) plain[fname + ".bias"] = lin.bias;
  };
  // Vision tower and projector: their linears carry the file's names.
  for (ClipLayer& L : P.vision->layers)
    for (const Linear* lin : L.linears()) linear(*lin, lin->name, {});
  {
    const ClipVisionConfig& vc = P.vision->cfg;
    linear(P.vision->patch_embed, P.vision->patch_embed.name,
           {vc.hidden_size, vc.num_channels, vc.patch_size, vc.patch_size});
  }
  for (const Linear* lin : P.projector->linears()) linear(*lin, lin->name, {});
  // Language model under the VLM's roots; fused norms are stored as ones (x·1 = x).
  const int64_t d = m.cfg.hidden_size;
  auto ones = [&](int64_t n) { return Tensor::from_vector(std::vector<float>(size_t(n), 1.0f), {n}); };
  plain[lm_file_name(P, llama_names::kEmbed)] = m.embed;
  for (const LlamaLayer& L : m.layers) {
    plain[lm_file_name(P, llama_names::module(L.index, Role::attn_norm) + ".weight")] =
        L.attn_norm.defined() ? L.attn_norm : ones(d);
    plain[lm_file_name(P, llama_names::module(L.index, Role::mlp_norm) + ".weight")] =
        L.mlp_norm.defined() ? L.mlp_norm : ones(d);
    for (const Linear* lin : L.linears()) linear(*lin, lm_file_name(P, lin->name), {});
  }
  plain[lm_file_name(P, llama_names::kFinalNorm)] = m.final_norm.defined() ? m.final_norm : ones(d);
  const bool tied = !m.lm_head.quantized() && m.lm_head.W.raw() == m.embed.raw();
  if (!tied) linear(m.lm_head, lm_file_name(P, m.lm_head.name), {});
  if (P.stream_rows) plain[P.image_newline_name] = *P.stream_rows;

  std::vector<std::pair<std::string, Tensor>> ts, vts;  // OUT's file; the original layout's tower file
  std::set<std::string> written;
  auto copy_store = [&](const WeightStore& st, std::vector<std::pair<std::string, Tensor>>& to) {
    for (const std::string& name : st.names()) {
      if (dropped.count(name)) continue;
      auto it = plain.find(name);
      to.push_back({name, it != plain.end() ? it->second : st.get(name)});
      written.insert(name);
    }
  };
  copy_store(src, ts);
  if (vsrc) copy_store(*vsrc, vts);
  for (auto& [name, t] : plain)
    if (!written.count(name)) (in_tower(name) ? vts : ts).push_back({name, t});  // e.g. an lm_head untied by the rotation
  for (auto& [name, lin] : packed) {
    const PackedWeight& p = *lin->qw;
    auto& to = in_tower(name) ? vts : ts;
    to.push_back({name + ".qweight", p.qweight});
    to.push_back({name + ".scales", p.scales});
    to.push_back({name + ".qzeros", p.qzeros});
    to.push_back({name + ".g_idx", p.g_idx});
  }

  // config.json as the source's, untied when the rotation untied lm_head.
  const std::string cpath = (fs::path(src_dir) / "config.json").string();
  nlohmann::json config = parse_json(read_text_file(cpath), cpath);
  if (!tied) {
    config["tie_word_embeddings"] = false;
    if (config.contains("text_config") && config["text_config"].is_object())
      config["text_config"]["tie_word_embeddings"] = false;
  }
  if (orig) config[kTowerKey] = kTowerSubdir;  // mm_vision_tower (the training tower's name) stays as it was
  nlohmann::json meta = quant_meta_common(rt, src_dir, qlin, q.report);
  meta["model_kind"] = "vlm";
  meta["family"] = P.family;
  meta["towers"] = q.report.value("towers", nlohmann::json::object());
  if (orig) {
    meta["vision_tower_source"] = P.vision_dir;
    meta["vision_tower_dir"] = kTowerSubdir;
  }
  write_checkpoint_atomically(out_dir, [&](const fs::path& tmp) {
    save_safetensors((tmp / "model.safetensors").string(), ts, {{"format", "pt"}, {"lowbit", "fakequant-v1"}});
    write_file_atomic((tmp / "config.json").string(), config.dump(2) + "\n");
    copy_model_files(src_dir, tmp, tokenizer_file_names());
    copy_model_files(src_dir, tmp,
                     {"processor_config.json", "preprocessor_config.json", "chat_template.jinja", "chat_template.json",
                      "added_tokens.json"});
    if (orig) {  // a CLIPVisionModel directory: the tower's own config and image processor settings
      const fs::path vt = tmp / kTowerSubdir;
      fs::create_directories(vt);
      save_safetensors((vt / "model.safetensors").string(), vts, {{"format", "pt"}, {"lowbit", "fakequant-v1"}});
      copy_model_files(P.vision_dir, vt, {"config.json", "preprocessor_config.json"});
    }
    write_file_atomic((tmp / kQuantFile).string(), meta.dump(2) + "\n");
  });
}

std::string quantized_vision_tower_dir(const std::string& dir) {
  const std::string cpath = (fs::path(dir) / "config.json").string();
  const nlohmann::json config = parse_json(read_text_file(cpath), cpath);
  if (!config.is_object() || !config.contains(kTowerKey)) return "";
  const nlohmann::json& v = config[kTowerKey];
  LOWBIT_CHECK(v.is_string() && !v.get<std::string>().empty(), FormatError,
               "{}: '{}' must be a non-empty string (a subdirectory of the checkpoint)", cpath, kTowerKey);
  const fs::path rel(v.get<std::string>());
  bool up = false;
  for (const auto& part : rel) up = up || part == "..";
  LOWBIT_CHECK(rel.is_relative() && !up, FormatError, "{}: '{}' is '{}'; it must name a subdirectory of {}", cpath,
               kTowerKey, rel.string(), dir);
  const fs::path tower = fs::path(dir) / rel;
  LOWBIT_CHECK(fs::is_directory(tower), FormatError, "{}: '{}' names {}, which is not a directory", cpath, kTowerKey,
               tower.string());
  return tower.string();
}

PackedSource quantized_packed_source(const std::string& dir, std::shared_ptr<std::set<std::string>> used) {
  const std::string qpath = (fs::path(dir) / kQuantFile).string();
  auto meta = std::make_shared<const QuantCheckpointMeta>(parse_quant_meta(read_text_file(qpath), qpath));
  auto main_st = std::make_shared<const WeightStore>(WeightStore::open_dir(dir));
  const std::string tower = quantized_vision_tower_dir(dir);  // the original LLaVA layout's second file
  auto tower_st = tower.empty() ? nullptr : std::make_shared<const WeightStore>(WeightStore::open_dir(tower));
  return [meta, main_st, tower_st, used, qpath](const std::string& lin, int64_t out,
                                                 int64_t in) -> std::shared_ptr<const PackedWeight> {
    // The file holding lin's codes: the tower's when it has them (its names, vision_model.*, are
    // not the decoder's), else OUT's.
    const WeightStore* st = tower_st && tower_st->has(lin + ".qweight") ? tower_st.get() : main_st.get();
    auto it = meta->qlin.find(lin);
    if (it == meta->qlin.end()) {
      LOWBIT_CHECK(!st->has(lin + ".qweight"), FormatError,
                   "{}: '{}.qweight' is stored but {} does not list '{}' as quantized", st->source(), lin, qpath, lin);
      return nullptr;
    }
    for (const char* part : {".qweight", ".scales", ".qzeros", ".g_idx"})
      LOWBIT_CHECK(st->has(lin + part), FormatError, "{}: missing tensor '{}{}' of quantized linear '{}'",
                   st->source(), lin, part, lin);
    auto p = std::make_shared<PackedWeight>();
    p->bits = it->second.first;
    p->sym = it->second.second;
    p->out = out;
    p->in = in;
    p->qweight = st->get(lin + ".qweight");
    p->scales = st->get(lin + ".scales");
    p->qzeros = st->get(lin + ".qzeros");
    p->g_idx = st->get(lin + ".g_idx");
    p->ngroups = p->scales.dim() == 2 ? p->scales.size(1) : 0;
    p->validate(st->source() + ": " + lin);
    if (used) used->insert(lin);
    return p;
  };
}

std::unique_ptr<Vlm> load_quantized_vlm(const std::string& dir) {
  const std::string qpath = (fs::path(dir) / kQuantFile).string();
  const QuantCheckpointMeta meta = parse_quant_meta(read_text_file(qpath), qpath);
  auto used_ptr = std::make_shared<std::set<std::string>>();
  const std::set<std::string>& used = *used_ptr;
  const PackedSource get_packed = quantized_packed_source(dir, used_ptr);
  std::unique_ptr<Vlm> vlm = load_vlm_packed(dir, get_packed);
  for (auto& [name, v] : meta.qlin)
    LOWBIT_CHECK(used.count(name), FormatError, "{}: lists '{}' as quantized, but the model has no such linear", qpath,
                 name);
  const VlmParts P = vlm->parts();
  QuantRuntime rt;
  rt.cfg = meta.cfg;
  rt.rotated = meta.rotated;
  rt.asym = meta.asym;
  if (rt.rotated) {
    rt.rot = make_online_rotations(P.language->cfg, rt.cfg.rotate_seed);
    for (auto& L : P.language->layers) {  // stored as ones: scale-free as when quantized
      L.attn_norm = Tensor();
      L.mlp_norm = Tensor();
    }
    P.language->final_norm = Tensor();
  }
  install_vlm_runtime(P, rt);
  log_info(fmt::format("loaded quantized VLM checkpoint {} ({})", dir, rt.cfg.summary()));
  return vlm;
}

}  // namespace lowbit
