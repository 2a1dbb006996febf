#include "quant/driver.h"

#include "quant/auto_asym.h"

#include <sys/resource.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <set>

#include "backend/cuda_api.h"
#include "core/error.h"
#include "core/fault.h"
#include "core/progress.h"
#include "quant/gptq_solver.h"
#include "quant/rtn_quant.h"

namespace lowbit {
namespace {

double now_s() {
  using namespace std::chrono;
  return duration<double>(steady_clock::now().time_since_epoch()).count();
}
double peak_rss_mb() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return double(ru.ru_maxrss) / 1024.0;
}
int64_t default_state_budget() {
  const double phys = double(sysconf(_SC_PHYS_PAGES)) * double(sysconf(_SC_PAGE_SIZE));
  return int64_t(0.36 * phys);  // leaves room for weights, scratch and the error reference (7B layer: peak < 11 GB)
}

QuantSpec weight_spec(const QuantConfig& c, int bits) {
  QuantSpec s;
  s.bits = bits;
  s.sym = !c.w_asym;
  s.groupsize = c.w_groupsize;
  s.mse_clip = c.w_clip;
  return s;
}

// The linear now holds packed codes; `keep_f32` also keeps their dequantization as W
// (the driver still multiplies by it while propagating), else W is dropped.
void set_quantized(Linear& lin, const QuantizedWeight& q, bool keep_f32) {
  auto p = std::make_shared<PackedWeight>(PackedWeight::pack(q));
  p->validate(lin.name);
  lin.qw = p;
  lin.W = Tensor();
  if (keep_f32) lin.W = lin.weight_f32();
}

// The per-block error report runs the FP block on this many samples only.
constexpr int64_t kErrSamples = 8;  // 8 x 2048 tokens estimate a relative error well enough

// ---- prepare ------------------------------------------------------------------------------

void check_groupsizes(LlamaModel& m, const QuantConfig& c) {
  std::set<int64_t> warned;
  for (Linear* lin : m.all_linears()) {
    if (lin->name == m.lm_head.name) continue;
    // Weight groups need not divide: the last one is shorter (GPTQ), said once per shape.
    if (c.w_bits < 16 && c.w_groupsize > 0 && lin->in() % c.w_groupsize != 0 && warned.insert(lin->in()).second)
      log_info(fmt::format("--w_groupsize {} does not divide input dimension {} ({} ...): last group has {} columns",
                           c.w_groupsize, lin->in(), lin->name,
                           lin->in() < c.w_groupsize ? lin->in() : lin->in() % c.w_groupsize));
    if (c.a_bits < 16 && c.a_groupsize > 0)
      LOWBIT_CHECK(lin->in() % c.a_groupsize == 0, ShapeError,
                   "--a_groupsize {} does not divide the input dimension {} of {}", c.a_groupsize, lin->in(),
                   lin->name);
  }
  const int64_t D = m.cfg.head_dim;
  if (c.k_bits < 16 && c.k_groupsize > 0)
    LOWBIT_CHECK(D % c.k_groupsize == 0, ShapeError, "--k_groupsize {} does not divide head_dim {}", c.k_groupsize, D);
  if (c.v_bits < 16 && c.v_groupsize > 0)
    LOWBIT_CHECK(D % c.v_groupsize == 0, ShapeError, "--v_groupsize {} does not divide head_dim {}", c.v_groupsize, D);
}

std::shared_ptr<QuantRuntime> prepare(LlamaModel& m, const QuantConfig& cfg, nlohmann::json& rep) {
  auto rt = std::make_shared<QuantRuntime>();
  rt->cfg = cfg;
  if (cfg.k_bits < 16 && !cfg.rotate)
    log_info(cfg.k_had ? "K-cache quantized without --rotate: the online Q/K Hadamard (R3) still runs, as in QuaRot"
                       : "K-cache quantized without --rotate and without R3 (a v1/v2 checkpoint's config)");
  if (cfg.rotate) {
    RotationConfig rc;
    rc.rotate = true;
    rc.seed = cfg.rotate_seed;
    rc.mode = cfg.rotate_mode;
    rt->rot = rotate_model(m, rc);
    rt->rotated = true;
    nlohmann::json h;
    for (auto& [k, H] : {std::pair{"hidden", rt->rot.hidden}, std::pair{"head", rt->rot.head},
                         std::pair{"heads", rt->rot.heads}, std::pair{"ffn", rt->rot.ffn}})
      h[k] = {{"n", H->n}, {"construction", H->construction}, {"incoherence", H->incoherence()}};
    h["R1"] = cfg.rotate_mode == "random" ? "random orthogonal" : "diag(random signs) * hidden";
    rep["hadamard"] = h;
    log_info(fmt::format("rotated: R1 {} , R4 {} (incoherence {:.3f})",
                         cfg.rotate_mode == "random" ? "random orthogonal" : rt->rot.hidden->construction,
                         rt->rot.ffn->construction, rt->rot.ffn->incoherence()));
  }
  install_runtime(m, *rt);
  return rt;
}

// One forward over the calibration samples with the quantizers off, collecting skew
// statistics of every group's input, every layer's K (after RoPE and R3) and lm_head's
// input; decides sym/asym per site (shared by the linears of a group).
nlohmann::json auto_asym_pass(LlamaModel& m, QuantRuntime& rt, const std::vector<std::vector<int32_t>>& calib) {
  std::map<std::string, ActStats> stats;
  ForwardOptions fo;
  fo.act_quant = false;  // statistics of the unquantized activations
  fo.observer = [&](const std::string& site, const float* x, int64_t rows, int64_t cols) {
    stats[site].add(x, rows * cols);
  };
  Progress prog("auto-asym statistics", int64_t(calib.size()));
  for (size_t s = 0; s < calib.size(); ++s) {
    m.forward(calib[s].data(), int64_t(calib[s].size()), nullptr, fo);
    prog.update(int64_t(s + 1));
  }
  prog.finish();
  int n_asym = 0;
  nlohmann::json decisions = nlohmann::json::object();
  for (auto& [site, st] : stats) {
    const bool a = st.choose_asym(rt.cfg.auto_asym_t1, rt.cfg.auto_asym_t2);
    rt.asym[site] = a;
    n_asym += a;
    const double sd = st.stddev();
    decisions[site] = {{"asym", a}, {"mean_over_std", sd > 0 ? std::fabs(st.mean()) / sd : 0.0},
                       {"skewness", st.skewness()}};
  }
  for (Block* b : m.blocks())  // group-mates share the site's decision
    for (auto& grp : b->groups())
      for (Linear* lin : grp) rt.asym[lin->name] = rt.asym.at(grp.front()->name);
  log_info(fmt::format("auto-asym: {} of {} activation sites asymmetric (|mean|/std > {} or |skew| > {})", n_asym,
                       stats.size(), rt.cfg.auto_asym_t1, rt.cfg.auto_asym_t2));
  return decisions;
}

}  // namespace

Observer seed_auto_asym_observer(const std::map<std::string, std::vector<Linear*>>& group_of, Backend& be,
                                 QuantRuntime& rt, nlohmann::json& decisions) {
  auto y = std::make_shared<std::vector<float>>();  // [rows, out], reused across sites
  return [&group_of, &be, &rt, &decisions, y](const std::string& site, const float* x, int64_t rows, int64_t cols) {
    auto it = group_of.find(site);
    if (it == group_of.end()) return;  // K-cache and lm_head sites: the seed never decides them
    for (Linear* lin : it->second) {
      LOWBIT_ASSERT(lin->in() == cols);
      y->resize(size_t(rows * lin->out()));
      linear_product(be, *lin, x, rows, y->data());  // bias included
      const SeedSkewStats st = seed_skew_stats(y->data(), int64_t(y->size()));
      const bool a = seed_choose_asym(st, rt.cfg.auto_asym_t1, rt.cfg.auto_asym_t2);
      rt.asym[lin->name] = a;
      decisions[lin->name] = {{"asym", a}, {"mean", st.mean}, {"std", st.std}, {"skewness", st.skew}};
    }
  };
}

int count_asym(const nlohmann::json& decisions) {
  int n = 0;
  for (const auto& [name, d] : decisions.items()) n += d.at("asym").get<bool>();
  return n;
}

namespace {

// The seed's rule (quant/auto_asym.h): one forward of the first calibration window with the
// quantizers off; each linear's output is computed from its group's (rotated) input as the
// observer sees it, and that linear's own input quantizer (and v_proj's V cache) decided.
nlohmann::json seed_auto_asym_pass(LlamaModel& m, QuantRuntime& rt, const std::vector<int32_t>& window) {
  std::map<std::string, std::vector<Linear*>> group_of;  // site (a group's first linear) -> the group
  for (Block* b : m.blocks())
    for (auto& grp : b->groups()) group_of[grp.front()->name] = grp;
  nlohmann::json decisions = nlohmann::json::object();
  ForwardOptions fo;
  fo.act_quant = false;
  fo.observer = seed_auto_asym_observer(group_of, *m.backend, rt, decisions);
  m.forward(window.data(), int64_t(window.size()), nullptr, fo);
  log_info(fmt::format("auto-asym (seed rule, first calibration window, linear outputs): {} of {} linears' inputs "
                       "asymmetric (|mean|/std > {} or |skew| > {}); K symmetric, V as v_proj",
                       count_asym(decisions), decisions.size(), rt.cfg.auto_asym_t1, rt.cfg.auto_asym_t2));
  return decisions;
}

// ---- one block: collect → solve → propagate → report ----------------------------------------

struct BlockRun {
  const QuantConfig& cfg;
  const GptqConfig& gc;
  int64_t budget;
  int64_t index, count;
  const std::set<const Linear*>& keep;  // linears left in full precision
  std::string tower;                    // "" for a plain LLaMA model
};

double sq_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double e = double(a[i]) - double(b[i]);
    s += e * e;
  }
  return s;
}

// One block's calibration: the block, its full-precision clone (GPTAQ's X̃ and the error
// report), the per-sample states and the boundary each one is stored at.
struct Calibration {
  Block& blk;
  std::unique_ptr<Block> fp;  // full-precision weights (shares the storage)
  std::vector<BlockState>& Xq;
  std::vector<BlockState>& Xfp;  // GPTAQ only
  const BlockRun& run;
  BlockCtx cq, cfp;  // quantized path (quantizers on iff --enable_aq_calibration), FP path (off)
  bool v2;
  int64_t N;
  std::vector<int> at;  // boundary at which sample s is stored
  int64_t stored = 0;   // bytes of all stored states
  std::vector<int64_t> kept_at;  // samples kept at each boundary
  BlockState tq, tfp;   // a sample brought forward (buffers reused from sample to sample)
  std::vector<float> buf, pbuf, fbuf, fpbuf;

  Calibration(Block& b, std::vector<BlockState>& xq, std::vector<BlockState>& xfp, const BlockRun& r)
      : blk(b), fp(b.clone()), Xq(xq), Xfp(xfp), run(r), v2(r.cfg.use_v2), N(int64_t(xq.size())) {
    cq.act_quant = r.cfg.enable_aq_calibration;
    cfp.act_quant = false;
    at.assign(size_t(N), 0);
    for (int64_t s = 0; s < N; ++s) stored += bytes_at(s, 0);
    kept_at.assign(blk.groups().size() + 1, 0);
    kept_at[0] = N;
  }
  int64_t bytes_at(int64_t s, int b) const {
    return blk.state_floats(b, Xq[size_t(s)].T) * int64_t(sizeof(float)) * (v2 ? 2 : 1);
  }
};

// Memory the budget also covers while group g is solved (gptq_solver.cpp): the accumulated
// H, the solver's copies of it (H, P·H·Pᵀ, U; GPTAQ also dXXᵀ, P and two temporaries) as
// n×n f64, and W in f64 twice.
int64_t solver_reserve(const std::vector<Linear*>& group, bool v2) {
  int64_t max_out = 0;
  for (const Linear* lin : group) max_out = std::max(max_out, lin->out());
  const int64_t n = group.front()->in();
  return 8 * n * n * (v2 ? 8 : 5) + 16 * max_out * n;
}

// RTN on the chosen device (the same codes either way).
QuantizedWeight rtn(const float* W, int64_t out, int64_t in, const QuantSpec& s) {
  return default_device() == Device::CUDA ? cuda::quantize_rtn(W, out, in, s) : quantize_rtn(W, out, in, s);
}

// --device cuda: group g's input is made and folded into H on the GPU from one copy of the
// state (false: the block or its settings need the host path).
bool device_gram(HessianAccumulator& H, const Block& blk, int g, const BlockState& st, bool act_quant) {
  if (default_device() != Device::CUDA) return false;
  if (!H.dev) H.dev = cuda::make_device_hessian(H.n);
  const double t = double(H.tokens), tot = double(H.tokens + st.T);
  if (!cuda::block_group_gram(blk, g, st, act_quant, *H.dev, t / tot, 2.0 / tot)) return false;
  H.tokens += st.T;
  return true;
}

// collect: H (and GPTAQ's dXXᵀ) of group g's shared input over every sample. A sample
// stored before boundary g is brought forward; it stays there if its state shrinks or
// still fits the budget (greedily, in sample order), else it is recomputed when next needed.
HessianAccumulator collect(Calibration& c, int g) {
  const std::vector<Linear*> group = c.blk.groups()[size_t(g)];
  const Linear& first = *group.front();
  const int64_t reserve = solver_reserve(group, c.v2);
  HessianAccumulator H(first.in());
  Progress prog(fmt::format("layer {}/{} {} inputs", c.run.index + 1, c.run.count, first.name), c.N);
  for (int64_t s = 0; s < c.N; ++s) {
    prog.update(s);
    const BlockState* sq = &c.Xq[size_t(s)];
    const BlockState* sfp = c.v2 ? &c.Xfp[size_t(s)] : nullptr;
    const int from = c.at[size_t(s)];
    if (from < g) {
      c.tq = c.Xq[size_t(s)];
      for (int k = from; k < g; ++k) c.blk.advance(k, c.tq, c.cq);
      sq = &c.tq;
      if (c.v2) {
        c.tfp = c.Xfp[size_t(s)];
        for (int k = from; k < g; ++k) c.fp->advance(k, c.tfp, c.cfp);
        sfp = &c.tfp;
      }
    }
    if (c.v2) {
      const float* in = linear_input(first, c.blk.group_input(g, *sq, c.buf), sq->T, c.cq.act_quant, c.pbuf);
      const Linear& ffirst = *c.fp->groups()[size_t(g)].front();
      const float* in_fp = linear_input(ffirst, c.fp->group_input(g, *sfp, c.fbuf), sfp->T, false, c.fpbuf);
      H.add_v2(in, in_fp, sq->T);
    } else if (!device_gram(H, c.blk, g, *sq, c.cq.act_quant)) {
      H.add(linear_input(first, c.blk.group_input(g, *sq, c.buf), sq->T, c.cq.act_quant, c.pbuf), sq->T);
    }
    const int64_t grown = c.stored - c.bytes_at(s, from) + c.bytes_at(s, g);
    if (s == c.N / 2) fault_point("calibration");
    if (from < g && (grown <= c.stored || grown + reserve <= c.run.budget)) {
      std::swap(c.Xq[size_t(s)], c.tq);  // tq keeps the old buffers for the next sample
      if (c.v2) std::swap(c.Xfp[size_t(s)], c.tfp);
      c.at[size_t(s)] = g;
      c.stored = grown;
      ++c.kept_at[size_t(g)];
    }
  }
  prog.clear();
  H.finalize();  // a device-held H comes to the host for the solvers
  return H;
}

// The width a linear's weights get: QuaRot's --int8_down_proj puts down_proj at 8 bits.
int linear_w_bits(const QuantConfig& cfg, const Linear& lin, int bits) {
  const std::string suffix = ".mlp.down_proj";
  const bool down = lin.name.size() >= suffix.size() &&
                    lin.name.compare(lin.name.size() - suffix.size(), suffix.size(), suffix) == 0;
  return cfg.int8_down_proj && down && bits < 16 ? 8 : bits;
}

// solve: every linear of the group from the shared statistics; returns the seconds spent.
double solve(const std::vector<Linear*>& group, const HessianAccumulator& H, const GptqConfig& gc_all,
             const QuantConfig& cfg, const std::set<const Linear*>& keep, nlohmann::json& linears_report) {
  double total = 0;
  for (Linear* lin : group) {
    if (keep.count(lin)) {  // left in full precision (--skip_last_*): propagated as is
      linears_report[lin->name] = {{"kept_fp", true}};
      continue;
    }
    const double ts = now_s();
    GptqConfig gc = gc_all;
    gc.spec.bits = linear_w_bits(cfg, *lin, gc_all.spec.bits);
    const Tensor W = lin->W.to(DType::F32);
    // On --device cuda the column loop runs on the GPU (backend/cuda/gptq_cuda.*), same contract.
    GptqResult r = default_device() == Device::CUDA ? cuda::gptq_quantize(W.f32(), lin->out(), lin->in(), H, gc, lin->name)
                                                    : gptq_quantize(W.f32(), lin->out(), lin->in(), H, gc, lin->name);
    const double secs = now_s() - ts;
    total += secs;
    linears_report[lin->name] = {{"loss", r.loss}, {"solve_seconds", secs}, {"percdamp", r.percdamp_used}};
    set_quantized(*lin, r.weight, /*keep_f32=*/true);  // f32 kept while the block is still propagated
    fault_point("solve");
  }
  return total;
}

// propagate: every sample through the rest of the quantized block (and the FP clone for GPTAQ).
void propagate(Calibration& c) {
  const int G = int(c.blk.groups().size());
  Progress prop(fmt::format("layer {}/{} propagation", c.run.index + 1, c.run.count), c.N);
  for (int64_t s = 0; s < c.N; ++s) {
    prop.update(s);
    for (int k = c.at[size_t(s)]; k < G; ++k) c.blk.advance(k, c.Xq[size_t(s)], c.cq);
    if (c.v2)
      for (int k = c.at[size_t(s)]; k < G; ++k) c.fp->advance(k, c.Xfp[size_t(s)], c.cfp);
  }
  prop.clear();
  for (Linear* lin : c.blk.linears())
    if (lin->quantized()) lin->W = Tensor();  // packed codes only from here on
  for (int64_t s = 0; s < c.N; ++s)
    for (float v : c.Xq[size_t(s)].x)
      LOWBIT_CHECK(std::isfinite(v), NumericError,
                   "layer {} ({}) produced a NaN or Inf on calibration sample {} after quantization", c.run.index,
                   c.blk.kind(), s);
}

// The report's error estimate: the FP block on the first samples' inputs (before), compared
// with the quantized block's outputs (after): ‖Y_q − Y_fp‖ / ‖Y_fp − X‖.
struct ErrorEstimate {
  std::vector<std::vector<float>> ref;
  double den = 0, seconds = 0;
  void before(Calibration& c) {
    const double te = now_s();
    for (int64_t s = 0; s < std::min(c.N, kErrSamples); ++s) {
      BlockState r = c.Xq[size_t(s)];
      c.fp->forward(r, c.cfp);
      // A residual block: ‖Y_fp − X‖; a block that changes the width (a projector): ‖Y_fp‖.
      den += r.x.size() == c.Xq[size_t(s)].x.size() ? sq_diff(r.x, c.Xq[size_t(s)].x)
                                                     : sq_diff(r.x, std::vector<float>(r.x.size(), 0.0f));
      ref.push_back(std::move(r.x));
    }
    seconds = now_s() - te;
  }
  double after(const Calibration& c) const {
    double num = 0;
    for (size_t s = 0; s < ref.size(); ++s) num += sq_diff(c.Xq[s].x, ref[s]);
    return std::sqrt(num / std::max(den, 1e-30));
  }
};

nlohmann::json calibrate_block(Block& blk, std::vector<BlockState>& Xq, std::vector<BlockState>& Xfp,
                               const BlockRun& run) {
  const double t0 = now_s();
  Calibration c(blk, Xq, Xfp, run);
  nlohmann::json lrep = {{"layer", run.index}, {"kind", blk.kind()}, {"linears", nlohmann::json::object()}};
  if (!run.tower.empty()) lrep["tower"] = run.tower;
  ErrorEstimate err;
  err.before(c);
  double solve_total = 0;
  const auto groups = blk.groups();
  for (int g = 0; g < int(groups.size()); ++g) {
    bool all_kept = true;
    for (Linear* lin : groups[size_t(g)]) all_kept = all_kept && run.keep.count(lin) > 0;
    if (all_kept) {  // nothing to solve: no statistics either
      for (Linear* lin : groups[size_t(g)]) lrep["linears"][lin->name] = {{"kept_fp", true}};
      continue;
    }
    const HessianAccumulator H = collect(c, g);
    solve_total += solve(groups[size_t(g)], H, run.gc, run.cfg, run.keep, lrep["linears"]);
  }
  propagate(c);
  // report
  const double rel = err.after(c), secs = now_s() - t0;
  const int64_t G = int64_t(groups.size());
  std::string kept_s;
  for (int64_t b = 1; b < G; ++b) kept_s += fmt::format("{}{}/{}", b > 1 ? " " : "", c.kept_at[size_t(b)], c.N);
  lrep["seconds"] = secs;
  lrep["solve_seconds"] = solve_total;
  lrep["error_report_seconds"] = err.seconds;  // the FP reference forwards of the error estimate
  lrep["rel_error"] = rel;
  // samples whose state was kept at boundary b (1..G-1); the others recomputed that group's input
  lrep["states_kept_at_boundary"] = std::vector<int64_t>(c.kept_at.begin() + 1, c.kept_at.end() - 1);
  log_info(fmt::format("{}layer {}/{}: {:.2f}s, relative output error {:.4f}, group inputs kept (of {} samples) {}, "
                       "peak RSS {:.0f} MB",
                       run.tower.empty() ? "" : run.tower + " ", run.index + 1, run.count, secs, rel, c.N, kept_s,
                       peak_rss_mb()));
  return lrep;
}

}  // namespace

void rtn_linear(Linear& lin, const QuantConfig& cfg, int bits) {
  set_quantized(lin, rtn(lin.weight_f32().f32(), lin.out(), lin.in(), weight_spec(cfg, bits)), false);
}

void rtn_blocks(const std::vector<Block*>& blocks, const QuantConfig& cfg, const TowerPlan& plan,
                nlohmann::json& layers) {
  if (plan.w_bits >= 16) return;
  Progress prog(plan.tower.empty() ? "rtn" : "rtn " + plan.tower, int64_t(blocks.size()));
  for (size_t b = 0; b < blocks.size(); ++b) {
    nlohmann::json lrep = {{"layer", b}, {"kind", blocks[b]->kind()}, {"linears", nlohmann::json::object()}};
    if (!plan.tower.empty()) lrep["tower"] = plan.tower;
    for (Linear* lin : blocks[b]->linears()) {
      if (plan.keep.count(lin)) {
        lrep["linears"][lin->name] = {{"kept_fp", true}};
        continue;
      }
      rtn_linear(*lin, cfg, linear_w_bits(cfg, *lin, plan.w_bits));
    }
    if (!plan.tower.empty()) layers.push_back(std::move(lrep));  // LLaMA's RTN report stays as it was
    prog.update(int64_t(b + 1));
  }
  prog.finish();
}

namespace {
GptqConfig gptq_config(const QuantConfig& cfg, int bits) {
  GptqConfig gc;
  gc.spec = weight_spec(cfg, bits);
  gc.percdamp = cfg.percdamp;
  gc.blocksize = cfg.blocksize;
  gc.act_order = cfg.act_order;
  gc.static_groups = cfg.static_groups;
  gc.use_v2 = cfg.use_v2;
  gc.alpha = cfg.v2_alpha;
  return gc;
}
}  // namespace

nlohmann::json gptq_linear(Linear& lin, const HessianAccumulator& H, const QuantConfig& cfg, int bits) {
  GptqConfig gc = gptq_config(cfg, bits);
  gc.use_v2 = false;
  nlohmann::json rep = nlohmann::json::object();
  solve({&lin}, H, gc, cfg, {}, rep);
  lin.W = Tensor();  // nothing propagates through it here: the packed codes alone
  return rep[lin.name];
}

int64_t gptq_blocks(const std::vector<Block*>& blocks, std::vector<BlockState>& Xq, std::vector<BlockState>& Xfp,
                    const QuantConfig& cfg, const TowerPlan& plan, nlohmann::json& layers, const DriverOptions& opt) {
  const GptqConfig gc = gptq_config(cfg, plan.w_bits);
  const int64_t budget = opt.state_budget_bytes > 0 ? opt.state_budget_bytes : default_state_budget();
  for (size_t b = 0; b < blocks.size(); ++b) {
    BlockRun run{cfg, gc, budget, int64_t(b), int64_t(blocks.size()), plan.keep, plan.tower};
    if (plan.w_bits >= 16) {  // this tower keeps its weights: only propagate (the next tower's inputs)
      for (auto& st : Xq) blocks[b]->forward(st, BlockCtx{cfg.enable_aq_calibration});
      BlockCtx fpctx;
      fpctx.act_quant = false;
      for (auto& st : Xfp) blocks[b]->forward(st, fpctx);
    } else {
      layers.push_back(calibrate_block(*blocks[b], Xq, Xfp, run));
    }
    if (opt.after_block) opt.after_block(int64_t(b), Xq);
  }
  return budget;
}

QuantizedModel quantize_model(LlamaModel& m, const QuantConfig& cfg, const std::vector<std::vector<int32_t>>& calib,
                              const DriverOptions& opt) {
  cfg.validate();
  check_groupsizes(m, cfg);
  const double t_start = now_s();
  QuantizedModel out;
  nlohmann::json& rep = out.report;
  rep["config"] = cfg.to_json();
  rep["summary"] = cfg.summary();
  out.runtime = prepare(m, cfg, rep);
  QuantRuntime& rt = *out.runtime;

  const bool seed_asym = cfg.a_auto_asym && cfg.auto_asym_rule == "seed" && (cfg.a_bits < 16 || cfg.v_bits < 16);
  if (seed_asym) LOWBIT_CHECK(!calib.empty(), ArgError, "--a_auto_asym needs calibration data (--cal_dataset)");
  if (cfg.a_auto_asym && cfg.auto_asym_rule == "lowbit" &&
      (cfg.a_bits < 16 || cfg.k_bits < 16 || cfg.lm_head_a_bits < 16)) {
    LOWBIT_CHECK(!calib.empty(), ArgError, "--a_auto_asym_lowbit needs calibration data (--cal_dataset)");
    rep["auto_asym"] = auto_asym_pass(m, rt, calib);
    install_runtime(m, rt);
  }

  rep["layers"] = nlohmann::json::array();
  const std::vector<Block*> blocks = m.blocks();
  const TowerPlan plan{"", cfg.w_bits, {}};
  if (cfg.w_bits < 16 && cfg.w_rtn) {
    rtn_blocks(blocks, cfg, plan, rep["layers"]);
  } else if (cfg.w_bits < 16) {
    LOWBIT_CHECK(!calib.empty(), ArgError, "GPTQ needs calibration data: pass --cal_dataset (or --w_rtn)");
    // Inputs of the current block for every sample: quantized path and, for GPTAQ, FP path.
    std::vector<BlockState> Xq(calib.size()), Xfp;
    for (size_t s = 0; s < calib.size(); ++s) {
      Xq[s].T = int64_t(calib[s].size());
      Xq[s].x.resize(size_t(Xq[s].T * m.cfg.hidden_size));
      m.embed_tokens(calib[s].data(), Xq[s].T, Xq[s].x.data());
    }
    if (cfg.use_v2) Xfp = Xq;
    rep["state_budget_bytes"] = gptq_blocks(blocks, Xq, Xfp, cfg, plan, rep["layers"], opt);
  }
  if (cfg.lm_head_w_bits < 16) rtn_linear(m.lm_head, cfg, cfg.lm_head_w_bits);
  if (seed_asym) {  // after weight quantization, as the skew-based QuaRot orders it
    rep["auto_asym"] = seed_auto_asym_pass(m, rt, calib.front());
    install_runtime(m, rt);
  }
  rep["seconds"] = now_s() - t_start;
  rep["peak_rss_mb"] = peak_rss_mb();
  rep["device"] = default_device() == Device::CUDA ? "cuda" : "cpu";
  if (default_device() == Device::CUDA) rep["peak_device_mb"] = double(cuda::mem_stats().peak) / 1048576.0;
  return out;
}

}  // namespace lowbit
