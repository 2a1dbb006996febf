// LLaMA decoder forward (HF LlamaForCausalLM semantics):
//   h = x + o_proj(Attn(RoPE(q_proj(n1)), RoPE(k_proj(n1)), v_proj(n1))),  n1 = RMSNorm(x)·w1
//   x' = h + down_proj(silu(gate_proj(n2)) ⊙ up_proj(n2)),                 n2 = RMSNorm(h)·w2
//   logits = lm_head(RMSNorm(x_L)·w_f)
#include "models/llama.h"

#include <cmath>
#include <cstring>

#include "backend/cuda_api.h"
#include "core/error.h"
#include "models/llama_names.h"
#include "models/weights.h"

namespace lowbit {

using llama_names::Role;

// ---- the decoder layer as a block -------------------------------------------------------

LlamaLayer LlamaLayer::shaped(const LlamaConfig& cfg, int64_t index) {
  LlamaLayer L;
  L.index = index;
  L.d = cfg.hidden_size;
  L.f = cfg.intermediate_size;
  L.Hq = cfg.num_heads;
  L.Hkv = cfg.num_kv_heads;
  L.D = cfg.head_dim;
  L.eps = float(cfg.rms_eps);
  L.inv_freq = cfg.inv_freq();
  return L;
}

int64_t LlamaLayer::state_floats(int boundary, int64_t T) const {
  switch (boundary) {
    case 1: return T * (d + Hq * D);
    case 3: return T * (d + f);
    default: return T * d;
  }
}

const float* LlamaLayer::group_input(int g, const BlockState& st, std::vector<float>& buf) const {
  const int64_t T = st.T;
  switch (g) {
    case 0:
    case 2: {  // n = RMSNorm(x)·w
      const Tensor& w = g == 0 ? attn_norm : mlp_norm;
      buf.resize(size_t(T * d));
      backend->rmsnorm(st.x.data(), w.defined() ? w.data<float>() : nullptr, buf.data(), T, d, eps);
      return buf.data();
    }
    case 1:
    case 3:
      LOWBIT_ASSERT(int64_t(st.a.size()) == T * (g == 1 ? Hq * D : f));
      return st.a.data();
  }
  LOWBIT_ASSERT(false);
  return nullptr;
}

namespace {
// The group's shared input as its linears multiply it (online transform, activation
// quantizer), shown to the observer once under the group's site name.
const float* group_pre(const std::vector<const Linear*>& grp, const float* xin, int64_t T, const BlockCtx& ctx,
                       std::vector<float>& buf) {
  const Linear& first = *grp.front();
  for (const Linear* l : grp) LOWBIT_ASSERT(bool(l->rot) == bool(first.rot));
  const float* in = linear_input(first, xin, T, ctx.act_quant, buf);
  if (ctx.observer && *ctx.observer) (*ctx.observer)(first.name, in, T, first.in());
  return in;
}
}  // namespace

void LlamaLayer::advance(int g, BlockState& st, const BlockCtx& ctx) const {
  // On the CUDA backend the whole step runs on the GPU where it can (backend/cuda/cuda_block.cpp).
  // (Stacked sequences never reach it: forward_batch runs them one at a time there.)
  LOWBIT_ASSERT(!(ctx.segments && backend->device() == Device::CUDA));
  if (backend->device() == Device::CUDA && cuda::llama_advance(*this, g, st, ctx)) return;
  const int64_t T = st.T;
  Backend& be = *backend;
  // Scratch reused across calls: these are tens of MB at 7B shapes, and fresh
  // allocations that size are page-faulted in anew every time.
  thread_local std::vector<float> nbuf, pbuf, pbuf2, q, k, v, u, o;
  const auto grps = groups();
  const auto& grp = grps.at(size_t(g));
  const float* raw = group_input(g, st, nbuf);
  const float* in = group_pre(grp, raw, T, ctx, pbuf);
  // A linear whose input quantizer differs from the group's first (the seed's per-linear
  // auto-asym) quantizes the shared input itself.
  auto input_of = [&](const Linear& l) -> const float* {
    return l.aq == grp.front()->aq ? in : linear_input(l, raw, T, ctx.act_quant, pbuf2);
  };
  switch (g) {
    case 0: {  // q, k, v → RoPE → [R3, K/V quant] → attention: a = att [T, Hq·D]
      q.resize(size_t(T * Hq * D));
      k.resize(size_t(T * Hkv * D));
      v.resize(size_t(T * Hkv * D));
      linear_product(be, q_proj, input_of(q_proj), T, q.data());  // [T, Hq*D]
      linear_product(be, k_proj, input_of(k_proj), T, k.data());  // [T, Hkv*D]
      linear_product(be, v_proj, input_of(v_proj), T, v.data());  // [T, Hkv*D]
      // Positions: per sequence when the rows stack several (ctx.segments).
      std::vector<int32_t> pos(static_cast<size_t>(T));
      if (ctx.segments) {
        int64_t covered = 0;
        for (const SeqSegment& sg : *ctx.segments) {
          LOWBIT_ASSERT(sg.row0 == covered && sg.cache != nullptr);
          for (int64_t t = 0; t < sg.T; ++t) pos[size_t(sg.row0 + t)] = int32_t(sg.start + t);
          covered += sg.T;
        }
        LOWBIT_ASSERT(covered == T);
      } else {
        for (int64_t t = 0; t < T; ++t) pos[size_t(t)] = int32_t(ctx.start + t);
      }
      be.rope(q.data(), T, Hq, D, pos.data(), inv_freq.data());
      be.rope(k.data(), T, Hkv, D, pos.data(), inv_freq.data());
      if (qk_rot) {
        qk_rot(q.data(), T, Hq * D);
        qk_rot(k.data(), T, Hkv * D);
      }
      if (ctx.observer && *ctx.observer) (*ctx.observer)(llama_names::k_cache_site(index), k.data(), T * Hkv, D);
      if (ctx.act_quant) {
        k_quant.apply(k.data(), T, Hkv * D);  // per token [T, Hkv*D], groups of k_quant.groupsize
        v_quant.apply(v.data(), T, Hkv * D);
      }
      st.a.resize(size_t(T * Hq * D));  // [T, Hq*D]
      const float scale = float(1.0 / std::sqrt(double(D)));
      const size_t row = size_t(Hkv * D);
      // Appends rows [r0, r0+n) of K/V at positions [start, start+n) of cache c and attends
      // them (causal, offset start) over the cache's first start+n positions.
      auto attend_cached = [&](KVCache& c, int64_t r0, int64_t n, int64_t start) {
        LOWBIT_CHECK(start + n <= c.max_seq, ArgError, "KV cache holds {} positions, asked for {}", c.max_seq,
                     start + n);
        std::memcpy(c.k[size_t(index)].data() + size_t(start) * row, k.data() + size_t(r0) * row, size_t(n) * row * 4);
        std::memcpy(c.v[size_t(index)].data() + size_t(start) * row, v.data() + size_t(r0) * row, size_t(n) * row * 4);
        be.attention(q.data() + size_t(r0 * Hq * D), c.k[size_t(index)].data(), c.v[size_t(index)].data(),
                     st.a.data() + size_t(r0 * Hq * D), n, start + n, Hq, Hkv, D, start, scale);
      };
      if (ctx.segments) {
        for (const SeqSegment& sg : *ctx.segments) attend_cached(*sg.cache, sg.row0, sg.T, sg.start);
      } else if (ctx.cache) {
        attend_cached(*ctx.cache, 0, T, ctx.start);
      } else {
        LOWBIT_CHECK(ctx.start == 0, ArgError, "a decoder layer without a cache must start at position 0");
        be.attention(q.data(), k.data(), v.data(), st.a.data(), T, T, Hq, Hkv, D, 0, scale);
      }
      return;
    }
    case 1: {  // h = x + o_proj(att)
      o.resize(size_t(T * d));  // [T, d]
      linear_product(be, o_proj, in, T, o.data());
      for (int64_t i = 0; i < T * d; ++i) st.x[size_t(i)] += o[size_t(i)];
      st.a.clear();
      st.a.shrink_to_fit();
      return;
    }
    case 2: {  // a = silu(gate(n2)) ⊙ up(n2) [T, f]
      u.resize(size_t(T * f));
      st.a.resize(size_t(T * f));
      linear_product(be, gate_proj, input_of(gate_proj), T, st.a.data());
      linear_product(be, up_proj, input_of(up_proj), T, u.data());
      be.silu_mul(st.a.data(), u.data(), st.a.data(), T * f);
      return;
    }
    case 3: {  // x' = h + down(a)
      o.resize(size_t(T * d));  // [T, d]
      linear_product(be, down_proj, in, T, o.data());
      for (int64_t i = 0; i < T * d; ++i) st.x[size_t(i)] += o[size_t(i)];
      st.a.clear();
      st.a.shrink_to_fit();
      return;
    }
  }
  LOWBIT_ASSERT(false);
}

// ---- loading ------------------------------------------------------------------------------

LlamaModel LlamaModel::load(const std::string& dir) {
  LlamaConfig cfg = LlamaConfig::load(dir);
  WeightStore st = WeightStore::open_dir(dir);
  return from_store(cfg, st, dir);
}

LlamaModel LlamaModel::from_store(const LlamaConfig& cfg, const WeightStore& store, const std::string& dir) {
  TensorSource get = [&store](const std::string& name) { return store.has(name) ? store.get(name) : Tensor(); };
  return from_source(cfg, get, {}, store.source(), dir);
}

LlamaModel LlamaModel::from_source(const LlamaConfig& cfg, const TensorSource& get, const PackedSource& get_packed,
                                   const std::string& source, const std::string& dir) {
  WeightSource st{get, get_packed, source};
  LlamaModel m;
  m.cfg = cfg;
  m.dir = dir;
  const int64_t d = cfg.hidden_size, f = cfg.intermediate_size, D = cfg.head_dim;
  const int64_t qd = cfg.num_heads * D, kvd = cfg.num_kv_heads * D;
  m.embed = load_checked(st, llama_names::kEmbed, {cfg.vocab_size, d});
  for (int64_t l = 0; l < cfg.num_layers; ++l) {
    auto name = [l](Role r) { return llama_names::module(l, r); };
    LlamaLayer L = LlamaLayer::shaped(cfg, l);
    L.attn_norm = load_checked(st, name(Role::attn_norm) + ".weight", {d}).to(DType::F32);
    L.mlp_norm = load_checked(st, name(Role::mlp_norm) + ".weight", {d}).to(DType::F32);
    L.q_proj = load_linear(st, name(Role::q_proj), qd, d, cfg.attention_bias);
    L.k_proj = load_linear(st, name(Role::k_proj), kvd, d, cfg.attention_bias);
    L.v_proj = load_linear(st, name(Role::v_proj), kvd, d, cfg.attention_bias);
    L.o_proj = load_linear(st, name(Role::o_proj), d, qd, cfg.o_bias);
    L.gate_proj = load_linear(st, name(Role::gate_proj), f, d, cfg.mlp_bias);
    L.up_proj = load_linear(st, name(Role::up_proj), f, d, cfg.mlp_bias);
    L.down_proj = load_linear(st, name(Role::down_proj), d, f, cfg.mlp_bias);
    m.layers.push_back(std::move(L));
  }
  m.final_norm = load_checked(st, llama_names::kFinalNorm, {d}).to(DType::F32);
  const std::string head = llama_names::kLmHead;
  const bool head_packed = get_packed && get_packed(head, cfg.vocab_size, d) != nullptr;
  if (cfg.tie_word_embeddings && !head_packed && !get(head + ".weight").defined()) {
    m.lm_head.name = head;
    m.lm_head.n_out = cfg.vocab_size;
    m.lm_head.n_in = d;
    m.lm_head.W = m.embed;
  } else {
    m.lm_head = load_linear(st, head, cfg.vocab_size, d, false);
  }
  return m;
}

KVCache LlamaModel::make_cache(int64_t max_seq) const {
  KVCache c;
  c.max_seq = max_seq;
  const size_t n = size_t(max_seq * cfg.num_kv_heads * cfg.head_dim);
  c.k.assign(static_cast<size_t>(cfg.num_layers), std::vector<float>(n));
  c.v.assign(static_cast<size_t>(cfg.num_layers), std::vector<float>(n));
  return c;
}

// ---- forward ------------------------------------------------------------------------------

void LlamaModel::embed_tokens(const int32_t* ids, int64_t T, float* x) const {
  const int64_t d = cfg.hidden_size;
  const size_t es = dtype_size(embed.dtype());
  for (int64_t t = 0; t < T; ++t) {
    LOWBIT_CHECK(ids[t] >= 0 && ids[t] < cfg.vocab_size, ArgError, "token id {} out of range [0, {})", ids[t],
                 cfg.vocab_size);
    convert_to_f32(embed.dtype(), static_cast<const char*>(embed.raw()) + size_t(ids[t]) * size_t(d) * es,
                   x + t * d, size_t(d));
  }
}

void LlamaModel::final_hidden(const float* x, int64_t T, float* h) const {
  backend->rmsnorm(x, final_norm.defined() ? final_norm.data<float>() : nullptr, h, T, cfg.hidden_size,
                   float(cfg.rms_eps));
}

void LlamaModel::head(const float* x, int64_t T, float* logits, const ForwardOptions& opt) const {
  const int64_t d = cfg.hidden_size;
  std::vector<float> h(static_cast<size_t>(T * d)), buf;  // [T, d]
  final_hidden(x, T, h.data());
  if (opt.hidden_hook) opt.hidden_hook(cfg.num_layers, h.data(), T, d);
  const float* in = linear_input(lm_head, h.data(), T, opt.act_quant, buf);
  if (opt.observer) opt.observer(lm_head.name, in, T, d);
  linear_product(*backend, lm_head, in, T, logits);
}

int64_t LlamaModel::check_span(int64_t T, const KVCache* cache) const {
  LOWBIT_CHECK(T > 0, ArgError, "forward: empty token sequence");
  const int64_t start = cache ? cache->len : 0;
  LOWBIT_CHECK(start + T <= cfg.max_position, ArgError,
               "sequence of {} tokens exceeds the model's context of {} (max_position_embeddings)", start + T,
               cfg.max_position);
  return start;
}

Tensor LlamaModel::forward(const int32_t* ids, int64_t T, KVCache* cache, const ForwardOptions& opt) {
  check_span(T, cache);
  std::vector<float> x(static_cast<size_t>(T * cfg.hidden_size));  // [T, d]
  embed_tokens(ids, T, x.data());
  return forward_embeds(x.data(), T, cache, opt);
}

Tensor LlamaModel::forward_embeds(const float* x, int64_t T, KVCache* cache, const ForwardOptions& opt) {
  const int64_t start = check_span(T, cache);
  const int64_t d = cfg.hidden_size;
  BlockState st;
  st.T = T;
  st.x.assign(x, x + T * d);  // [T, d] residual stream
  BlockCtx ctx;
  ctx.act_quant = opt.act_quant;
  ctx.observer = opt.observer ? &opt.observer : nullptr;
  ctx.cache = cache;
  ctx.start = start;
  for (int64_t l = 0; l < cfg.num_layers; ++l) {
    if (opt.hidden_hook) opt.hidden_hook(l, st.x.data(), T, d);
    layers[size_t(l)].forward(st, ctx);
  }
  if (cache) cache->len = start + T;
  const int64_t rows = opt.last_only ? 1 : T;
  Tensor logits = Tensor::empty({rows, cfg.vocab_size});
  head(st.x.data() + (T - rows) * d, rows, logits.f32(), opt);
  return logits;
}

std::vector<Tensor> LlamaModel::forward_batch(const std::vector<BatchSeq>& seqs, const ForwardOptions& opt) {
  LOWBIT_CHECK(!opt.observer && !opt.hidden_hook && !opt.tower_hook, ArgError,
               "forward_batch: observers and hooks are for single-sequence forwards");
  std::vector<Tensor> out;
  out.reserve(seqs.size());
  // The GPU's fused layer step handles one sequence: run them one at a time there (same results).
  if (backend->device() == Device::CUDA || seqs.size() == 1) {
    for (const BatchSeq& s : seqs) {
      ForwardOptions o;
      o.act_quant = opt.act_quant;
      o.last_only = s.last_only;
      out.push_back(forward(s.ids, s.T, s.cache, o));
    }
    return out;
  }
  const int64_t d = cfg.hidden_size, V = cfg.vocab_size;
  std::vector<SeqSegment> segs;
  int64_t N = 0;
  for (const BatchSeq& s : seqs) {
    LOWBIT_CHECK(s.cache != nullptr, ArgError, "forward_batch: every sequence needs its own KV cache");
    const int64_t start = check_span(s.T, s.cache);
    segs.push_back({N, s.T, s.cache, start});
    N += s.T;
  }
  BlockState st;
  st.T = N;
  st.x.resize(size_t(N * d));  // [N, d] the sequences' rows stacked
  for (const SeqSegment& sg : segs) embed_tokens(seqs[size_t(&sg - segs.data())].ids, sg.T, st.x.data() + sg.row0 * d);
  BlockCtx ctx;
  ctx.act_quant = opt.act_quant;
  ctx.segments = &segs;
  for (int64_t l = 0; l < cfg.num_layers; ++l) layers[size_t(l)].forward(st, ctx);
  // lm_head over the rows asked for (every row, or each sequence's last), stacked too.
  std::vector<float> xs;  // [R, d]
  for (size_t i = 0; i < segs.size(); ++i) {
    const int64_t r = seqs[i].last_only ? 1 : segs[i].T;
    const float* src = st.x.data() + (segs[i].row0 + segs[i].T - r) * d;
    xs.insert(xs.end(), src, src + r * d);
    segs[i].cache->len = segs[i].start + segs[i].T;
  }
  const int64_t R = int64_t(xs.size()) / d;
  std::vector<float> logits(size_t(R * V));  // [R, V]
  head(xs.data(), R, logits.data(), opt);
  int64_t r0 = 0;
  for (size_t i = 0; i < segs.size(); ++i) {
    const int64_t r = seqs[i].last_only ? 1 : segs[i].T;
    Tensor t = Tensor::empty({r, V});
    std::memcpy(t.f32(), logits.data() + r0 * V, size_t(r * V) * 4);
    out.push_back(std::move(t));
    r0 += r;
  }
  return out;
}

std::vector<Block*> LlamaModel::blocks() {
  std::vector<Block*> b;
  for (auto& L : layers) b.push_back(&L);
  return b;
}

std::vector<Linear*> LlamaModel::all_linears() {
  std::vector<Linear*> out;
  for (auto& L : layers)
    for (Linear* l : L.linears()) out.push_back(l);
  out.push_back(&lm_head);
  return out;
}

int64_t LlamaModel::num_parameters() const {
  int64_t n = embed.numel() + final_norm.numel();
  if (!lm_head.W.defined() || lm_head.W.raw() != embed.raw()) n += lm_head.out() * lm_head.in();
  for (const auto& L : layers) {
    n += L.attn_norm.numel() + L.mlp_norm.numel();
    for (const Linear* lin : L.linears()) n += lin->out() * lin->in() + (lin->bias.defined() ? lin->bias.numel() : 0);
  }
  return n;
}

}  // namespace lowbit
