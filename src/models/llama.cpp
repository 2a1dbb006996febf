// LLaMA decoder forward (HF LlamaForCausalLM semantics):
//   h = x + o_proj(Attn(RoPE(q_proj(n1)), RoPE(k_proj(n1)), v_proj(n1))),  n1 = RMSNorm(x)·w1
//   x' = h + down_proj(silu(gate_proj(n2)) ⊙ up_proj(n2)),                 n2 = RMSNorm(h)·w2
//   logits = lm_head(RMSNorm(x_L)·w_f)
#include "models/llama.h"

#include <cmath>
#include <cstring>

#include "core/error.h"

namespace lowbit {

std::vector<Linear*> LlamaLayer::linears() {
  return {&q_proj, &k_proj, &v_proj, &o_proj, &gate_proj, &up_proj, &down_proj};
}

namespace {

struct Src {
  const LlamaModel::TensorSource& get;
  const std::string& source;
};

Tensor load_checked(const Src& st, const std::string& name, const Shape& want) {
  Tensor t = st.get(name);
  LOWBIT_CHECK(t.defined(), ShapeError, "{}: missing tensor '{}'", st.source, name);
  LOWBIT_CHECK(t.shape() == want, ShapeError, "{}: tensor '{}' has shape {} but config.json implies {}",
               st.source, name, shape_str(t.shape()), shape_str(want));
  LOWBIT_CHECK(dtype_is_float(t.dtype()) && t.dtype() != DType::F64, DTypeError,
               "{}: tensor '{}' has unsupported dtype {} (expected f32, f16 or bf16)", st.source, name,
               dtype_name(t.dtype()));
  return t;
}

Linear load_linear(const Src& st, const std::string& name, int64_t out, int64_t in, bool bias) {
  Linear l;
  l.name = name;
  l.W = load_checked(st, name + ".weight", {out, in});
  if (bias) l.bias = load_checked(st, name + ".bias", {out}).to(DType::F32);
  return l;
}

}  // namespace

LlamaModel LlamaModel::load(const std::string& dir) {
  LlamaConfig cfg = LlamaConfig::load(dir);
  WeightStore st = WeightStore::open_dir(dir);
  return from_store(cfg, st, dir);
}

LlamaModel LlamaModel::from_store(const LlamaConfig& cfg, const WeightStore& store, const std::string& dir) {
  TensorSource get = [&store](const std::string& name) { return store.has(name) ? store.get(name) : Tensor(); };
  return from_source(cfg, get, store.source(), dir);
}

LlamaModel LlamaModel::from_source(const LlamaConfig& cfg, const TensorSource& get, const std::string& source,
                                   const std::string& dir) {
  Src st{get, source};
  LlamaModel m;
  m.cfg = cfg;
  m.dir = dir;
  const int64_t d = cfg.hidden_size, f = cfg.intermediate_size, D = cfg.head_dim;
  const int64_t qd = cfg.num_heads * D, kvd = cfg.num_kv_heads * D;
  m.embed = load_checked(st, "model.embed_tokens.weight", {cfg.vocab_size, d});
  for (int64_t l = 0; l < cfg.num_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    LlamaLayer L;
    L.attn_norm = load_checked(st, p + "input_layernorm.weight", {d}).to(DType::F32);
    L.mlp_norm = load_checked(st, p + "post_attention_layernorm.weight", {d}).to(DType::F32);
    L.q_proj = load_linear(st, p + "self_attn.q_proj", qd, d, cfg.attention_bias);
    L.k_proj = load_linear(st, p + "self_attn.k_proj", kvd, d, cfg.attention_bias);
    L.v_proj = load_linear(st, p + "self_attn.v_proj", kvd, d, cfg.attention_bias);
    L.o_proj = load_linear(st, p + "self_attn.o_proj", d, qd, cfg.o_bias);
    L.gate_proj = load_linear(st, p + "mlp.gate_proj", f, d, cfg.mlp_bias);
    L.up_proj = load_linear(st, p + "mlp.up_proj", f, d, cfg.mlp_bias);
    L.down_proj = load_linear(st, p + "mlp.down_proj", d, f, cfg.mlp_bias);
    m.layers.push_back(std::move(L));
  }
  m.final_norm = load_checked(st, "model.norm.weight", {d}).to(DType::F32);
  m.lm_head.name = "lm_head";
  if (cfg.tie_word_embeddings && !get("lm_head.weight").defined()) {
    m.lm_head.W = m.embed;
  } else {
    m.lm_head.W = load_checked(st, "lm_head.weight", {cfg.vocab_size, d});
  }
  m.inv_freq = cfg.inv_freq();
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

void LlamaModel::run_linear(const Linear& lin, const float* x, int64_t rows, float* y, const Observer& obs) const {
  const float* in = x;
  std::vector<float> tmp;
  if (lin.pre) {
    tmp.assign(x, x + rows * lin.in());
    lin.pre(tmp.data(), rows, lin.in());
    in = tmp.data();
  }
  if (obs) obs(lin.name, in, rows, lin.in());
  backend->linear(in, rows, lin.W, y, lin.bias.defined() ? lin.bias.data<float>() : nullptr);
}

void LlamaModel::layer_forward(int64_t l, float* x, int64_t T, int64_t start, KVCache* cache,
                               const Observer& obs) const {
  const LlamaLayer& L = layers.at(static_cast<size_t>(l));
  const int64_t d = cfg.hidden_size, D = cfg.head_dim, Hq = cfg.num_heads, Hkv = cfg.num_kv_heads;
  const int64_t f = cfg.intermediate_size;
  Backend& be = *backend;

  std::vector<float> h(static_cast<size_t>(T * d));                                       // [T, d]
  std::vector<float> q(static_cast<size_t>(T * Hq * D)), k(static_cast<size_t>(T * Hkv * D)), v(static_cast<size_t>(T * Hkv * D));
  be.rmsnorm(x, L.attn_norm.defined() ? L.attn_norm.data<float>() : nullptr, h.data(), T, d, float(cfg.rms_eps));
  run_linear(L.q_proj, h.data(), T, q.data(), obs);                        // [T, Hq*D]
  run_linear(L.k_proj, h.data(), T, k.data(), obs);                        // [T, Hkv*D]
  run_linear(L.v_proj, h.data(), T, v.data(), obs);                        // [T, Hkv*D]

  std::vector<int32_t> pos(static_cast<size_t>(T));
  for (int64_t t = 0; t < T; ++t) pos[size_t(t)] = int32_t(start + t);
  be.rope(q.data(), T, Hq, D, pos.data(), inv_freq.data());
  be.rope(k.data(), T, Hkv, D, pos.data(), inv_freq.data());
  if (L.post_rope) L.post_rope(q.data(), k.data(), v.data(), T);

  const float* K = k.data();
  const float* V = v.data();
  int64_t S = T;
  if (cache) {
    LOWBIT_CHECK(start + T <= cache->max_seq, ArgError, "KV cache holds {} positions, asked for {}", cache->max_seq,
                 start + T);
    const size_t row = size_t(Hkv * D);
    std::memcpy(cache->k[size_t(l)].data() + size_t(start) * row, k.data(), k.size() * 4);
    std::memcpy(cache->v[size_t(l)].data() + size_t(start) * row, v.data(), v.size() * 4);
    K = cache->k[size_t(l)].data();
    V = cache->v[size_t(l)].data();
    S = start + T;
  } else {
    LOWBIT_CHECK(start == 0, ArgError, "layer_forward without a cache must start at position 0");
  }
  std::vector<float> att(static_cast<size_t>(T * Hq * D));                               // [T, Hq*D]
  be.attention(q.data(), K, V, att.data(), T, S, Hq, Hkv, D, start, float(1.0 / std::sqrt(double(D))));
  std::vector<float> o(static_cast<size_t>(T * d));                                       // [T, d]
  run_linear(L.o_proj, att.data(), T, o.data(), obs);
  for (int64_t i = 0; i < T * d; ++i) x[i] += o[size_t(i)];

  be.rmsnorm(x, L.mlp_norm.defined() ? L.mlp_norm.data<float>() : nullptr, h.data(), T, d, float(cfg.rms_eps));
  std::vector<float> g(static_cast<size_t>(T * f)), u(static_cast<size_t>(T * f));                     // [T, f]
  run_linear(L.gate_proj, h.data(), T, g.data(), obs);
  run_linear(L.up_proj, h.data(), T, u.data(), obs);
  be.silu_mul(g.data(), u.data(), g.data(), T * f);
  run_linear(L.down_proj, g.data(), T, o.data(), obs);
  for (int64_t i = 0; i < T * d; ++i) x[i] += o[size_t(i)];
}

void LlamaModel::head(const float* x, int64_t T, float* logits, const ForwardOptions& opt) const {
  const int64_t d = cfg.hidden_size;
  std::vector<float> h(static_cast<size_t>(T * d));
  backend->rmsnorm(x, final_norm.defined() ? final_norm.data<float>() : nullptr, h.data(), T, d,
                   float(cfg.rms_eps));
  if (opt.hidden_hook) opt.hidden_hook(cfg.num_layers, h.data(), T, d);
  run_linear(lm_head, h.data(), T, logits, opt.observer);
}

Tensor LlamaModel::forward(const int32_t* ids, int64_t T, KVCache* cache, const ForwardOptions& opt) {
  LOWBIT_CHECK(T > 0, ArgError, "forward: empty token sequence");
  const int64_t start = cache ? cache->len : 0;
  LOWBIT_CHECK(start + T <= cfg.max_position, ArgError,
               "sequence of {} tokens exceeds the model's context of {} (max_position_embeddings)", start + T,
               cfg.max_position);
  const int64_t d = cfg.hidden_size;
  std::vector<float> x(static_cast<size_t>(T * d));  // [T, d] residual stream
  embed_tokens(ids, T, x.data());
  for (int64_t l = 0; l < cfg.num_layers; ++l) {
    if (opt.hidden_hook) opt.hidden_hook(l, x.data(), T, d);
    layer_forward(l, x.data(), T, start, cache, opt.observer);
  }
  if (cache) cache->len = start + T;
  const int64_t rows = opt.last_only ? 1 : T;
  Tensor logits = Tensor::empty({rows, cfg.vocab_size});
  head(x.data() + (T - rows) * d, rows, logits.f32(), opt);
  return logits;
}

int64_t LlamaModel::num_parameters() const {
  int64_t n = embed.numel() + final_norm.numel();
  if (lm_head.W.raw() != embed.raw()) n += lm_head.W.numel();
  for (auto& L : layers) {
    n += L.attn_norm.numel() + L.mlp_norm.numel();
    for (auto* lin : const_cast<LlamaLayer&>(L).linears()) n += lin->W.numel() + (lin->bias.defined() ? lin->bias.numel() : 0);
  }
  return n;
}

}  // namespace lowbit
