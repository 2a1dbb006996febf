#include "quant/pipeline.h"

#include <sys/resource.h>

#include <chrono>
#include <cmath>
#include <set>

#include "core/error.h"
#include "core/progress.h"
#include "quant/gptq_solver.h"

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

QuantSpec weight_spec(const QuantConfig& c, int bits) {
  QuantSpec s;
  s.bits = bits;
  s.sym = !c.w_asym;
  s.groupsize = c.w_groupsize;
  s.mse_clip = c.w_clip;
  return s;
}

// Replaces lin.W by the dequantized weight and keeps the codes for saving.
void set_quantized(Linear& lin, QuantizedWeight q, std::map<std::string, QuantizedWeight>& store) {
  std::vector<float> deq = q.dequant();
  lin.W = Tensor::from_vector(deq, {lin.out(), lin.in()});
  store[lin.name] = std::move(q);
}

// Thrown by a calibration observer once the last input it needs is seen: the rest
// of the layer's forward is not computed (the buffer it ran on is a scratch copy).
struct StopForward {};
// The per-layer error report runs the FP layer on this many windows only.
constexpr int64_t kErrWindows = 16;

void check_groupsizes(const LlamaModel& m, const QuantConfig& c) {
  std::set<int64_t> warned;
  for (const auto& L : m.layers)
    for (Linear* lin : const_cast<LlamaLayer&>(L).linears()) {
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

// One forward pass over the calibration windows collecting skew statistics of
// every linear input and every layer's K (after RoPE and R3); decides sym/asym.
nlohmann::json auto_asym_pass(LlamaModel& m, QuantRuntime& rt, const std::vector<std::vector<int32_t>>& calib) {
  std::map<std::string, ActStats> stats;
  const bool was = *rt.act_enabled;
  *rt.act_enabled = false;  // statistics of the unquantized activations
  std::vector<std::function<void(float*, float*, float*, int64_t)>> saved;
  const int64_t kvd = m.cfg.num_kv_heads * m.cfg.head_dim;
  for (int64_t l = 0; l < m.cfg.num_layers; ++l) {
    auto& L = m.layers[size_t(l)];
    saved.push_back(L.post_rope);
    auto orig = L.post_rope;
    ActStats* ks = &stats[k_cache_site(l)];
    L.post_rope = [orig, ks, kvd](float* q, float* k, float* v, int64_t T) {
      if (orig) orig(q, k, v, T);
      ks->add(k, T * kvd);
    };
  }
  ForwardOptions fo;
  fo.observer = [&](const std::string& name, const float* x, int64_t rows, int64_t cols) {
    stats[name].add(x, rows * cols);
  };
  Progress prog("auto-asym statistics", int64_t(calib.size()));
  for (size_t s = 0; s < calib.size(); ++s) {
    m.forward(calib[s].data(), int64_t(calib[s].size()), nullptr, fo);
    prog.update(int64_t(s + 1));
  }
  prog.finish();
  for (int64_t l = 0; l < m.cfg.num_layers; ++l) m.layers[size_t(l)].post_rope = saved[size_t(l)];
  *rt.act_enabled = was;
  int n_asym = 0;
  nlohmann::json decisions = nlohmann::json::object();
  for (auto& [name, st] : stats) {
    bool a = st.choose_asym(rt.cfg.auto_asym_t1, rt.cfg.auto_asym_t2);
    rt.asym[name] = a;
    n_asym += a;
    const double sd = st.stddev();
    decisions[name] = {{"asym", a},
                       {"mean_over_std", sd > 0 ? std::fabs(st.mean()) / sd : 0.0},
                       {"skewness", st.skewness()}};
  }
  log_info(fmt::format("auto-asym: {} of {} activation sites asymmetric (|mean|/std > {} or |skew| > {})", n_asym,
                       stats.size(), rt.cfg.auto_asym_t1, rt.cfg.auto_asym_t2));
  return decisions;
}

}  // namespace

QuantizedModel quantize_model(LlamaModel& m, const QuantConfig& cfg, const std::vector<std::vector<int32_t>>& calib) {
  cfg.validate();
  check_groupsizes(m, cfg);
  const double t_start = now_s();
  QuantizedModel out;
  auto rt = std::make_shared<QuantRuntime>();
  rt->cfg = cfg;
  out.runtime = rt;
  nlohmann::json& rep = out.report;
  rep["config"] = cfg.to_json();
  rep["summary"] = cfg.summary();

  if (cfg.k_bits < 16 && !cfg.rotate)
    log_warn("K-cache quantized without --rotate: no online Q/K Hadamard (R3), expect a large accuracy loss");
  if (cfg.rotate) {
    RotationConfig rc;
    rc.rotate = true;
    rc.seed = cfg.rotate_seed;
    rt->rot = rotate_model(m, rc);
    rt->rotated = true;
    nlohmann::json h;
    for (auto& [k, H] : {std::pair{"hidden", rt->rot.hidden}, std::pair{"head", rt->rot.head},
                         std::pair{"heads", rt->rot.heads}, std::pair{"ffn", rt->rot.ffn}})
      h[k] = {{"n", H->n}, {"construction", H->construction}, {"incoherence", H->incoherence()}};
    rep["hadamard"] = h;
    log_info(fmt::format("rotated: R1 {} (incoherence {:.3f}), R4 {} (incoherence {:.3f})",
                         rt->rot.hidden->construction, rt->rot.hidden->incoherence(), rt->rot.ffn->construction,
                         rt->rot.ffn->incoherence()));
  }
  *rt->act_enabled = cfg.enable_aq_calibration;
  install_runtime(m, rt);

  if (cfg.a_auto_asym && (cfg.a_bits < 16 || cfg.k_bits < 16)) {
    LOWBIT_CHECK(!calib.empty(), ArgError, "--a_auto_asym needs calibration data (--cal_dataset)");
    rep["auto_asym"] = auto_asym_pass(m, *rt, calib);
    install_runtime(m, rt);
  }

  rep["layers"] = nlohmann::json::array();
  if (cfg.w_bits < 16 && cfg.w_rtn) {
    Progress prog("rtn", m.cfg.num_layers);
    for (int64_t l = 0; l < m.cfg.num_layers; ++l) {
      for (Linear* lin : m.layers[size_t(l)].linears())
        set_quantized(*lin, quantize_rtn(lin->W.to(DType::F32).f32(), lin->out(), lin->in(), weight_spec(cfg, cfg.w_bits)),
                      out.weights);
      prog.update(l + 1);
    }
    prog.finish();
  } else if (cfg.w_bits < 16) {
    LOWBIT_CHECK(!calib.empty(), ArgError, "GPTQ needs calibration data: pass --cal_dataset (or --w_rtn)");
    const int64_t d = m.cfg.hidden_size, N = int64_t(calib.size());
    const int64_t T = int64_t(calib[0].size());
    // Residual-stream inputs of the current layer for every window: quantized path and, for GPTAQ, FP path.
    std::vector<std::vector<float>> Xq(static_cast<size_t>(N)), Xfp;
    for (int64_t s = 0; s < N; ++s) {
      Xq[size_t(s)].resize(static_cast<size_t>(T * d));
      m.embed_tokens(calib[size_t(s)].data(), T, Xq[size_t(s)].data());
    }
    if (cfg.use_v2) Xfp = Xq;
    GptqConfig gc;
    gc.spec = weight_spec(cfg, cfg.w_bits);
    gc.percdamp = cfg.percdamp;
    gc.blocksize = cfg.blocksize;
    gc.act_order = cfg.act_order;
    gc.static_groups = cfg.static_groups;
    gc.use_v2 = cfg.use_v2;
    gc.alpha = cfg.v2_alpha;

    for (int64_t l = 0; l < m.cfg.num_layers; ++l) {
      const double t0 = now_s();
      LlamaLayer& L = m.layers[size_t(l)];
      const LlamaLayer fp_layer = L;  // original weights (shared storage) for GPTAQ and the error report
      auto run_fp = [&](float* x, const Observer& obs) {
        LlamaLayer q_layer = L;
        L = fp_layer;
        const bool was = *rt->act_enabled;
        *rt->act_enabled = false;
        m.layer_forward(l, x, T, 0, nullptr, obs);
        *rt->act_enabled = was;
        L = q_layer;
      };
      const std::vector<std::vector<Linear*>> groups = {
          {&L.q_proj, &L.k_proj, &L.v_proj}, {&L.o_proj}, {&L.gate_proj, &L.up_proj}, {&L.down_proj}};
      nlohmann::json lrep = {{"layer", l}, {"linears", nlohmann::json::object()}};
      double solve_total = 0;  // seconds in the GPTQ solves; the rest is forwards and statistics
      for (const auto& group : groups) {
        std::set<std::string> members;
        for (Linear* lin : group) members.insert(lin->name);
        std::map<std::string, HessianAccumulator> acc;  // made on first use: aliased linears get none
        const std::string& last = group.back()->name;  // the forward stops once its input is seen
        std::vector<float> x(static_cast<size_t>(T * d));
        // Linears of a group that see identical inputs (q/k/v, gate/up — unless their
        // activation quantizers differ) share one Hessian: decided on the first window,
        // checked on every later one.
        std::map<std::string, std::string> alias;  // linear -> the linear whose H it uses
        std::vector<float> prev_in;
        std::string prev_name;
        Progress prog(fmt::format("layer {}/{} {} inputs", l + 1, m.cfg.num_layers, group.front()->name), N);
        for (int64_t s = 0; s < N; ++s) {
          prog.update(s);
          std::map<std::string, std::vector<float>> fp_in;
          prev_name.clear();
          if (cfg.use_v2) {
            x = Xfp[size_t(s)];
            try {
              run_fp(x.data(), [&](const std::string& name, const float* in, int64_t rows, int64_t cols) {
                if (members.count(name)) fp_in[name].assign(in, in + rows * cols);
                if (name == last) throw StopForward{};
              });
            } catch (const StopForward&) {
            }
          }
          x = Xq[size_t(s)];
          try {
            m.layer_forward(l, x.data(), T, 0, nullptr,
                            [&](const std::string& name, const float* in, int64_t rows, int64_t cols) {
                              if (!members.count(name)) return;
                              const size_t cnt = size_t(rows * cols);
                              const bool same = !prev_name.empty() && prev_in.size() == cnt &&
                                                std::equal(in, in + cnt, prev_in.begin());
                              if (s == 0 && same) alias[name] = prev_name;  // prev_name is never an alias
                              LOWBIT_CHECK(same == (alias.count(name) > 0), Error,
                                           "{}: calibration inputs stopped matching its group-mate's", name);
                              if (!same) {
                                HessianAccumulator& a = acc.try_emplace(name, cols).first->second;
                                if (cfg.use_v2)
                                  a.add_v2(in, fp_in.at(name).data(), rows);
                                else
                                  a.add(in, rows);
                                if (name != last) {
                                  prev_in.assign(in, in + cnt);
                                  prev_name = name;
                                }
                              }
                              if (name == last) throw StopForward{};
                            });
          } catch (const StopForward&) {
          }
        }
        prog.clear();
        for (Linear* lin : group) {
          const double ts = now_s();
          Tensor W = lin->W.to(DType::F32);
          const std::string& src = alias.count(lin->name) ? alias.at(lin->name) : lin->name;
          GptqResult r = gptq_quantize(W.f32(), lin->out(), lin->in(), acc.at(src), gc, lin->name);
          const double solve = now_s() - ts;
          solve_total += solve;
          lrep["linears"][lin->name] = {{"loss", r.loss}, {"solve_seconds", solve}, {"percdamp", r.percdamp_used}};
          set_quantized(*lin, std::move(r.weight), out.weights);
        }
      }
      // Propagate, and measure the layer's error against its FP version on the same
      // inputs (on the first kErrWindows windows: an estimate that costs one more forward each).
      double num = 0, den = 0, err_seconds = 0;
      std::vector<float> ref(static_cast<size_t>(T * d));
      Progress prop(fmt::format("layer {}/{} propagation", l + 1, m.cfg.num_layers), N);
      for (int64_t s = 0; s < N; ++s) {
        prop.update(s);
        std::vector<float>& x = Xq[size_t(s)];
        const bool measure = s < kErrWindows;
        if (measure) {
          const double te = now_s();
          ref = x;
          run_fp(ref.data(), {});
          err_seconds += now_s() - te;
        }
        std::vector<float> x_in = measure ? x : std::vector<float>();
        m.layer_forward(l, x.data(), T, 0, nullptr, {});
        for (size_t i = 0; measure && i < x.size(); ++i) {
          double e = double(x[i]) - ref[i], u = double(ref[i]) - x_in[i];
          num += e * e;
          den += u * u;
        }
        if (cfg.use_v2) run_fp(Xfp[size_t(s)].data(), {});
      }
      prop.clear();
      const double rel = std::sqrt(num / std::max(den, 1e-30));
      const double secs = now_s() - t0;
      lrep["seconds"] = secs;
      lrep["solve_seconds"] = solve_total;
      lrep["error_report_seconds"] = err_seconds;  // the FP reference forwards of the error estimate
      lrep["rel_error"] = rel;
      rep["layers"].push_back(lrep);
      log_info(fmt::format("layer {}/{}: {:.2f}s, relative output error {:.4f}, peak RSS {:.0f} MB", l + 1,
                           m.cfg.num_layers, secs, rel, peak_rss_mb()));
    }
  }
  if (cfg.lm_head_w_bits < 16)
    set_quantized(m.lm_head, quantize_rtn(m.lm_head.W.to(DType::F32).f32(), m.lm_head.out(), m.lm_head.in(),
                                          weight_spec(cfg, cfg.lm_head_w_bits)),
                  out.weights);

  *rt->act_enabled = true;
  install_runtime(m, rt);
  rep["seconds"] = now_s() - t_start;
  rep["peak_rss_mb"] = peak_rss_mb();
  return out;
}

}  // namespace lowbit
