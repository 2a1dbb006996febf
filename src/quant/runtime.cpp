#include "quant/runtime.h"

#include "core/error.h"
#include "quant/qgrid.h"
#include "quant/rtn_quant.h"

namespace lowbit {

std::string k_cache_site(int64_t layer) { return fmt::format("model.layers.{}.self_attn.k_cache", layer); }

namespace {

bool site_asym(const QuantRuntime& rt, const std::string& site, bool dflt) {
  if (!rt.cfg.a_auto_asym) return dflt;
  auto it = rt.asym.find(site);
  return it == rt.asym.end() ? dflt : it->second;
}

// pre-transform of one linear: [online rotation] then [per-token fake quant].
ActTransform make_pre(std::shared_ptr<const QuantRuntime> rt, const std::string& name, int bits,
                      std::function<void(float*, int64_t, int64_t)> rotate) {
  const bool quant = bits < 16;
  if (!quant && !rotate) return {};
  const bool asym = site_asym(*rt, name, rt->cfg.a_asym);
  const int64_t gs = rt->cfg.a_groupsize;
  const float clip = float(rt->cfg.a_clip_ratio);
  return [rt, rotate, quant, bits, asym, gs, clip](float* x, int64_t rows, int64_t cols) {
    if (rotate) rotate(x, rows, cols);
    if (quant && *rt->act_enabled) fake_quant_act(x, rows, cols, bits, gs, asym, clip);
  };
}

}  // namespace

void install_runtime(LlamaModel& m, std::shared_ptr<const QuantRuntime> rt) {
  const QuantConfig& c = rt->cfg;
  const LlamaConfig& mc = m.cfg;
  const int64_t D = mc.head_dim, Hq = mc.num_heads, Hkv = mc.num_kv_heads;
  for (int64_t l = 0; l < mc.num_layers; ++l) {
    LlamaLayer& L = m.layers[size_t(l)];
    for (Linear* lin : {&L.q_proj, &L.k_proj, &L.v_proj, &L.gate_proj, &L.up_proj})
      lin->pre = make_pre(rt, lin->name, c.a_bits, {});
    std::function<void(float*, int64_t, int64_t)> cross, ffn;
    if (rt->rotated) {
      auto heads = rt->rot.heads;
      cross = [heads, Hq, D](float* x, int64_t rows, int64_t) { apply_cross_head(*heads, x, rows, Hq, D); };
      auto Hf = rt->rot.ffn;
      ffn = [Hf](float* x, int64_t rows, int64_t) { Hf->apply(x, rows); };
    }
    L.o_proj.pre = make_pre(rt, L.o_proj.name, c.a_bits, cross);
    L.down_proj.pre = make_pre(rt, L.down_proj.name, c.a_bits, ffn);

    // After RoPE: R3 on Q and K (when rotating and K is quantized), then K/V fake quant per head.
    const bool r3 = rt->rotated && (c.k_bits < 16 || rt->force_qk_rotation);
    const bool kq = c.k_bits < 16, vq = c.v_bits < 16;
    if (!r3 && !kq && !vq) {
      L.post_rope = {};
      continue;
    }
    const int64_t kgs = c.k_groupsize > 0 ? c.k_groupsize : D, vgs = c.v_groupsize > 0 ? c.v_groupsize : D;
    LOWBIT_CHECK(D % kgs == 0 && D % vgs == 0, ArgError,
                 "--k_groupsize {} / --v_groupsize {} must divide head_dim {}", kgs, vgs, D);
    const bool kasym = site_asym(*rt, k_cache_site(l), c.k_asym);
    auto head = rt->rot.head;
    L.post_rope = [rt, r3, kq, vq, head, Hq, Hkv, D, kgs, vgs, kasym](float* q, float* k, float* v, int64_t T) {
      if (r3) {
        apply_per_block(*head, q, T, Hq * D);
        apply_per_block(*head, k, T, Hkv * D);
      }
      if (!*rt->act_enabled) return;
      const QuantConfig& c = rt->cfg;
      // Per head (and per group within a head): rows of [T*Hkv, D].
      if (kq) fake_quant_act(k, T * Hkv, D, c.k_bits, kgs, kasym, float(c.k_clip_ratio));
      if (vq) fake_quant_act(v, T * Hkv, D, c.v_bits, vgs, c.v_asym, float(c.v_clip_ratio));
    };
  }
  m.lm_head.pre = make_pre(rt, "lm_head", c.lm_head_a_bits, {});
}

}  // namespace lowbit
