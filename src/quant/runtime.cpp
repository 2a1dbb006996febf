#include "quant/runtime.h"

#include "core/error.h"
#include "models/llama_names.h"
#include "quant/hadamard.h"
#include "quant/qgrid.h"

namespace lowbit {

namespace {

bool site_asym(const QuantRuntime& rt, const std::string& site, bool dflt) {
  if (!rt.cfg.a_auto_asym) return dflt;
  auto it = rt.asym.find(site);
  return it == rt.asym.end() ? dflt : it->second;
}

ActQuant act_quant(const QuantRuntime& rt, const std::string& site, int bits) {
  ActQuant q;
  q.bits = bits;
  q.groupsize = rt.cfg.a_groupsize;
  q.asym = site_asym(rt, site, rt.cfg.a_asym);
  q.clip = float(rt.cfg.a_clip_ratio);
  return q;
}

// Without --fp32_had QuaRot computes its online Hadamards in the model's FP16: the
// input and the result are FP16 values. lowbit's activations are f32, so that mode
// rounds both to f16 around the (f32) transform.
OnlineTransform transform(OnlineTransform::Kind kind, std::shared_ptr<const Hadamard> H, bool fp32_had,
                          int64_t heads = 0, int64_t head_dim = 0) {
  OnlineTransform t;
  t.kind = kind;
  t.H = std::move(H);
  t.heads = heads;
  t.head_dim = head_dim;
  t.f16_io = !fp32_had;
  return t;
}

}  // namespace

void install_runtime(LlamaModel& m, const QuantRuntime& rt) {
  const QuantConfig& c = rt.cfg;
  const LlamaConfig& mc = m.cfg;
  const int64_t D = mc.head_dim, Hq = mc.num_heads;
  const bool seed_rule = c.a_auto_asym && c.auto_asym_rule == "seed";
  std::shared_ptr<const Hadamard> unrotated_head;  // R3 of an unrotated model (same H_D as make_online_rotations)
  for (LlamaLayer& L : m.layers) {
    // Every linear's own input quantizer. Without auto-asym (and under lowbit's rule, whose
    // decisions are per shared input) a group's linears get equal quantizers and share one
    // quantized input; under the seed's rule each linear has its own decision.
    for (auto& grp : L.groups()) {
      for (Linear* lin : grp) {
        lin->aq = act_quant(rt, lin->name, c.a_bits);
        lin->rot = {};
      }
    }
    // QuaRot's --int8_down_proj: down_proj's input at 8 bits whenever its quantizers are set up.
    if (c.int8_down_proj && (c.a_bits < 16 || c.v_bits < 16)) L.down_proj.aq = act_quant(rt, L.down_proj.name, 8);
    if (rt.rotated) {
      L.o_proj.rot = transform(OnlineTransform::Kind::cross_head, rt.rot.heads, c.fp32_had, Hq, D);
      L.down_proj.rot = transform(OnlineTransform::Kind::full, rt.rot.ffn, c.fp32_had);
    }
    // After RoPE: R3 on Q and K (when rotating and K is quantized), then K/V fake quant on
    // each token's [Hkv·D] vector: groupsize -1 = the whole vector (QuaRot's token-wise K and
    // v_proj output quantizer), 0 = per head (head_dim), g = groups of g channels.
    L.qk_rot = {};
    if (rt.rotated && (c.k_bits < 16 || rt.force_qk_rotation)) {
      L.qk_rot = transform(OnlineTransform::Kind::per_block, rt.rot.head, c.fp32_had);
    } else if (!rt.rotated && c.k_bits < 16 && c.k_had) {
      // QuaRot applies R3 whenever K is quantized, rotated model or not (Q·Kᵀ is unchanged).
      if (!unrotated_head || unrotated_head->n != D)
        unrotated_head = std::make_shared<Hadamard>(make_hadamard(D, c.rotate_seed + 1));
      L.qk_rot = transform(OnlineTransform::Kind::per_block, unrotated_head, c.fp32_had);
    }
    const int64_t kgs = c.k_groupsize == 0 ? D : c.k_groupsize, vgs = c.v_groupsize == 0 ? D : c.v_groupsize;
    if (c.k_bits < 16 || c.v_bits < 16)
      LOWBIT_CHECK((kgs < 0 || D % kgs == 0) && (vgs < 0 || D % vgs == 0), ArgError,
                   "--k_groupsize {} / --v_groupsize {} must divide head_dim {}", kgs, vgs, D);
    // The seed's rule: K stays symmetric (its lookup of "k_proj" finds no statistics), V
    // follows v_proj's decision (the out_quantizer takes that wrapper's sym).
    const bool k_asym = seed_rule ? false : site_asym(rt, llama_names::k_cache_site(L.index), c.k_asym);
    const bool v_asym = seed_rule ? site_asym(rt, L.v_proj.name, c.v_asym) : c.v_asym;
    L.k_quant = ActQuant{c.k_bits, kgs, k_asym, float(c.k_clip_ratio)};
    L.v_quant = ActQuant{c.v_bits, vgs, v_asym, float(c.v_clip_ratio)};
  }
  m.lm_head.aq = act_quant(rt, m.lm_head.name, c.lm_head_a_bits);
  m.lm_head.rot = {};
}

}  // namespace lowbit
