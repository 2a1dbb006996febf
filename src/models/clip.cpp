// CLIP ViT / SigLIP vision tower (HF CLIPVisionModel, SiglipVisionTransformer semantics):
//   CLIP:   x_0 = [cls ; unfold(pixels) · W_patchᵀ] + pos,  h_0 = LayerNorm_pre(x_0)
//   SigLIP: h_0 = unfold(pixels) · W_patchᵀ + b + pos;  output = post_layernorm(h_L)
//   h = x + out_proj(Attn(q_proj(n1), k_proj(n1), v_proj(n1))),  n1 = LayerNorm1(x)   (full attention)
//   x' = h + fc2(act(fc1(n2))),                                   n2 = LayerNorm2(h)
#include "models/clip.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>

#include "core/error.h"
#include "io/json_util.h"
#include "models/clip_names.h"

namespace lowbit {

using clip_names::Role;
using json = nlohmann::json;

// ---- config ---------------------------------------------------------------------------------

namespace {

// An integer key, HF's default when absent.
int64_t int_or(const json& j, const char* key, int64_t dflt, const std::string& path) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return dflt;
  LOWBIT_CHECK(it->is_number_integer(), ConfigError, "{}: vision_config '{}' must be an integer, got {}", path, key,
               json_excerpt(*it));
  return it->get<int64_t>();
}

}  // namespace

ClipVisionConfig ClipVisionConfig::from_json(const json& j, const std::string& path) {
  LOWBIT_CHECK(j.is_object(), ConfigError, "{}: vision_config must be a JSON object", path);
  const std::string type = j.value("model_type", std::string("clip_vision_model"));
  const bool clip = type == "clip_vision_model" || type == "clip";
  const bool siglip = type == "siglip_vision_model" || type == "siglip" || type == "idefics3_vision" ||
                      type == "idefics3_vision_model" || type == "smolvlm_vision";
  LOWBIT_CHECK(clip || siglip, ConfigError,
               "{}: vision_config model_type '{}' is not a supported vision tower (CLIP: clip_vision_model; SigLIP: "
               "siglip_vision_model, idefics3_vision, smolvlm_vision)",
               path, type);
  ClipVisionConfig c;  // defaults: HF CLIPVisionConfig / SiglipVisionConfig / Idefics3VisionConfig
  c.model_type = type;
  c.class_token = c.pre_norm = clip;
  c.patch_bias = siglip;
  const bool idefics = type == "idefics3_vision" || type == "idefics3_vision_model" || type == "smolvlm_vision";
  if (siglip) {
    c.hidden_act = Activation::gelu_tanh;
    c.layer_norm_eps = 1e-6;
  }
  const int64_t def_hidden = idefics ? 1152 : 768, def_heads = idefics ? 16 : 12;
  const int64_t def_patch = clip ? 32 : idefics ? 32 : 16;
  c.hidden_size = int_or(j, "hidden_size", def_hidden, path);
  c.intermediate_size = int_or(j, "intermediate_size", 3072, path);
  c.num_layers = int_or(j, "num_hidden_layers", 12, path);
  c.num_heads = int_or(j, "num_attention_heads", def_heads, path);
  c.num_channels = int_or(j, "num_channels", 3, path);
  c.image_size = int_or(j, "image_size", 224, path);
  c.patch_size = int_or(j, "patch_size", def_patch, path);
  auto eps = j.find("layer_norm_eps");
  if (eps != j.end() && !eps->is_null()) {
    LOWBIT_CHECK(eps->is_number(), ConfigError, "{}: vision_config 'layer_norm_eps' must be a number, got {}", path,
                 json_excerpt(*eps));
    c.layer_norm_eps = eps->get<double>();
  }
  auto act = j.find("hidden_act");
  if (act != j.end() && !act->is_null()) {
    LOWBIT_CHECK(act->is_string(), ConfigError, "{}: vision_config 'hidden_act' must be a string, got {}", path,
                 json_excerpt(*act));
    c.hidden_act = parse_activation(act->get<std::string>(), "vision_config hidden_act", path);
  }
  constexpr int64_t kMaxDim = int64_t(1) << 20, kMaxLayers = 1 << 12, kMaxImage = 1 << 15;
  LOWBIT_CHECK(c.hidden_size > 0 && c.hidden_size <= kMaxDim && c.intermediate_size > 0 &&
                   c.intermediate_size <= kMaxDim && c.num_layers > 0 && c.num_layers <= kMaxLayers &&
                   c.num_heads > 0 && c.num_heads <= c.hidden_size && c.num_channels > 0 && c.num_channels <= 16 &&
                   c.patch_size > 0 && c.image_size >= c.patch_size && c.image_size <= kMaxImage,
               ConfigError,
               "{}: vision_config sizes out of range (hidden {}, intermediate {}, layers {}, heads {}, channels {}, "
               "image_size {}, patch_size {})",
               path, c.hidden_size, c.intermediate_size, c.num_layers, c.num_heads, c.num_channels, c.image_size,
               c.patch_size);
  LOWBIT_CHECK(c.hidden_size % c.num_heads == 0, ConfigError,
               "{}: vision_config hidden_size {} is not a multiple of num_attention_heads {}", path, c.hidden_size,
               c.num_heads);
  // image_size need not be a multiple of patch_size: the stride-p convolution drops the last
  // image_size mod p rows and columns, as HF's does (SigLIP-so400m-patch14-384: 27×27 patches).
  LOWBIT_CHECK(std::isfinite(c.layer_norm_eps) && c.layer_norm_eps > 0 && c.layer_norm_eps < 1, ConfigError,
               "{}: vision_config layer_norm_eps {} must be in (0, 1)", path, c.layer_norm_eps);
  return c;
}

// ---- ops --------------------------------------------------------------------------------------
//
// Written so that GCC vectorizes them at -O3 without fast-math: reductions keep explicit lane
// accumulators (a fixed summation order), exp is a branch-free polynomial instead of a libm call.

namespace {

constexpr int kLanes = 16;

// e^x for f32, branch-free so loops over it vectorize: x = n·ln2 + r (Cody–Waite), |r| ≤ ln2/2,
// e^r by the Cephes expf polynomial, 2^n from the exponent bits. Within ~2 ulp of the correctly
// rounded value on [−87.3, 88.3]; inputs are clamped to that range (e^−87.3 ≈ 1.2e−38 stands for
// 0, which no softmax or sigmoid here can tell apart).
inline float exp_f32(float x) {
  x = std::min(std::max(x, -87.3f), 88.3f);
  constexpr float kShift = 12582912.0f;  // 1.5·2²³: adding it rounds to the nearest integer
  const float t = x * 1.44269504088896341f + kShift;
  const float n = t - kShift;
  float r = x - n * 0.693359375f;  // ln2 = 0.693359375 − 2.12194440e−4 (hi part exact in f32)
  r = r + n * 2.12194440e-4f;
  const float r2 = r * r;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r2 + r + 1.0f;
  const int32_t e = (int32_t(n) + 127) << 23;  // n ∈ [−126, 127]: a normal power of two
  return p * std::bit_cast<float>(e);
}

// x · σ(c·g(x)): quick_gelu is x·σ(1.702x); gelu_pytorch_tanh's 0.5x(1 + tanh(u)) equals x·σ(2u),
// u = √(2/π)(x + 0.044715x³).
void activation_f32(Activation a, float* x, int64_t n) {
  if (a == Activation::gelu) {  // erf: the libm version (no CLIP/SigLIP tower here uses it)
    apply_activation(a, x, n);
    return;
  }
  const bool tanh_form = a == Activation::gelu_tanh;
  constexpr int64_t kChunk = 4096;
  const int64_t chunks = (n + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static) if (n > (1 << 15))
  for (int64_t c = 0; c < chunks; ++c) {
    float* p = x + c * kChunk;
    const int64_t m = std::min(kChunk, n - c * kChunk);
    if (tanh_form) {
      for (int64_t i = 0; i < m; ++i) {
        const float v = p[i];
        const float u = 1.5957691216057308f * (v + 0.044715f * v * v * v);  // 2u
        p[i] = v / (1.0f + exp_f32(-u));
      }
    } else {
      for (int64_t i = 0; i < m; ++i) {
        const float v = p[i];
        p[i] = v / (1.0f + exp_f32(-1.702f * v));
      }
    }
  }
}

// Row softmax in place (row already scaled): max, exp, sum in kLanes-wide lanes, normalize.
void softmax_row(float* row, int64_t n) {
  float mx[kLanes];
  std::fill(mx, mx + kLanes, -INFINITY);
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int j = 0; j < kLanes; ++j) mx[j] = std::max(mx[j], row[i + j]);
  float m = -INFINITY;
  for (; i < n; ++i) m = std::max(m, row[i]);
  for (int j = 0; j < kLanes; ++j) m = std::max(m, mx[j]);
  float acc[kLanes] = {};
  for (i = 0; i + kLanes <= n; i += kLanes)
    for (int j = 0; j < kLanes; ++j) acc[j] += row[i + j] = exp_f32(row[i + j] - m);
  float sum = 0;
  for (; i < n; ++i) sum += row[i] = exp_f32(row[i] - m);
  for (int j = 0; j < kLanes; ++j) sum += acc[j];
  const float inv = 1.0f / sum;
  for (i = 0; i < n; ++i) row[i] *= inv;
}

}  // namespace

void layer_norm(const float* x, const float* w, const float* b, float* y, int64_t rows, int64_t dim, float eps) {
  constexpr int L = 8;  // double lanes
#pragma omp parallel for schedule(static) if (rows * dim > (1 << 15))
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * dim;
    float* yr = y + r * dim;
    double acc[L] = {};
    int64_t i = 0;
    for (; i + L <= dim; i += L)
      for (int j = 0; j < L; ++j) acc[j] += double(xr[i + j]);
    double mean = 0;
    for (; i < dim; ++i) mean += double(xr[i]);
    for (int j = 0; j < L; ++j) mean += acc[j];
    mean /= double(dim);
    std::fill(acc, acc + L, 0.0);
    for (i = 0; i + L <= dim; i += L)
      for (int j = 0; j < L; ++j) {
        const double c = double(xr[i + j]) - mean;
        acc[j] += c * c;
      }
    double var = 0;
    for (; i < dim; ++i) var += (double(xr[i]) - mean) * (double(xr[i]) - mean);
    for (int j = 0; j < L; ++j) var += acc[j];
    const float rstd = float(1.0 / std::sqrt(var / double(dim) + double(eps)));
    const float mf = float(mean);
    for (i = 0; i < dim; ++i) yr[i] = (xr[i] - mf) * rstd * w[i] + b[i];
  }
}

void full_attention(const float* q, const float* k, const float* v, float* out, int64_t T, int64_t H,
                    int64_t D, float scale) {
  // Host memory in and out, so the CPU backend's GEMM whatever the tower's backend is.
  Backend& be = cpu_backend();
  const int64_t row = H * D;
  // One head per iteration: S = scale·Q_h K_hᵀ [T, T], row softmax, O_h = P V_h, the heads'
  // slices read and written in place (leading dimension H·D). Inside the parallel region the
  // OpenMP OpenBLAS runs each GEMM on the calling thread.
#pragma omp parallel if (H > 1 && T * T * D > (1 << 16))
  {
    std::vector<float> P(static_cast<size_t>(T * T));
#pragma omp for schedule(dynamic)
    for (int64_t h = 0; h < H; ++h) {
      be.gemm(false, true, T, T, D, scale, q + h * D, row, k + h * D, row, 0.0f, P.data(), T);
      for (int64_t t = 0; t < T; ++t) softmax_row(P.data() + t * T, T);
      be.gemm(false, false, T, D, T, 1.0f, P.data(), T, v + h * D, row, 0.0f, out + h * D, row);
    }
  }
}

// ---- the encoder layer as a block ---------------------------------------------------------------

ClipLayer ClipLayer::shaped(const ClipVisionConfig& cfg, int64_t index) {
  ClipLayer L;
  L.index = index;
  L.d = cfg.hidden_size;
  L.f = cfg.intermediate_size;
  L.H = cfg.num_heads;
  L.D = cfg.head_dim();
  L.eps = float(cfg.layer_norm_eps);
  L.act = cfg.hidden_act;
  return L;
}

int64_t ClipLayer::state_floats(int boundary, int64_t T) const {
  switch (boundary) {
    case 1: return T * 2 * d;
    case 3: return T * (d + f);
    default: return T * d;
  }
}

const float* ClipLayer::group_input(int g, const BlockState& st, std::vector<float>& buf) const {
  const int64_t T = st.T;
  switch (g) {
    case 0:
    case 2: {  // n = LayerNorm(x)
      buf.resize(size_t(T * d));
      const Tensor& w = g == 0 ? ln1_w : ln2_w;
      const Tensor& b = g == 0 ? ln1_b : ln2_b;
      layer_norm(st.x.data(), w.data<float>(), b.data<float>(), buf.data(), T, d, eps);
      return buf.data();
    }
    case 1:
    case 3:
      LOWBIT_ASSERT(int64_t(st.a.size()) == T * (g == 1 ? d : f));
      return st.a.data();
  }
  LOWBIT_ASSERT(false);
  return nullptr;
}

void ClipLayer::advance(int g, BlockState& st, const BlockCtx& ctx) const {
  const int64_t T = st.T;
  Backend& be = *backend;
  thread_local std::vector<float> nbuf, pbuf, q, k, v, o;
  const auto grp = groups().at(size_t(g));
  // The group's shared input as its linears multiply it, shown to the observer once.
  const float* in = linear_input(*grp.front(), group_input(g, st, nbuf), T, ctx.act_quant, pbuf);
  if (ctx.observer && *ctx.observer) (*ctx.observer)(grp.front()->name, in, T, grp.front()->in());
  switch (g) {
    case 0: {  // q, k, v [T, H·D] → full attention: a [T, d]
      q.resize(size_t(T * d));
      k.resize(size_t(T * d));
      v.resize(size_t(T * d));
      linear_product(be, q_proj, in, T, q.data());
      linear_product(be, k_proj, in, T, k.data());
      linear_product(be, v_proj, in, T, v.data());
      st.a.resize(size_t(T * d));
      full_attention(q.data(), k.data(), v.data(), st.a.data(), T, H, D, float(1.0 / std::sqrt(double(D))));
      return;
    }
    case 1:    // h = x + out_proj(a)
    case 3: {  // x' = h + fc2(a)
      o.resize(size_t(T * d));  // [T, d]
      linear_product(be, g == 1 ? out_proj : fc2, in, T, o.data());
      for (int64_t i = 0; i < T * d; ++i) st.x[size_t(i)] += o[size_t(i)];
      st.a.clear();
      st.a.shrink_to_fit();
      return;
    }
    case 2: {  // a = act(fc1(n2)) [T, f]
      st.a.resize(size_t(T * f));
      linear_product(be, fc1, in, T, st.a.data());
      activation_f32(act, st.a.data(), T * f);
      return;
    }
  }
  LOWBIT_ASSERT(false);
}

// ---- the tower ----------------------------------------------------------------------------------

ClipVisionTower ClipVisionTower::from_source(const ClipVisionConfig& cfg, const WeightSource& src,
                                             const std::string& root) {
  ClipVisionTower t;
  t.cfg = cfg;
  t.root = root;
  const int64_t d = cfg.hidden_size, f = cfg.intermediate_size, p = cfg.patch_size, C = cfg.num_channels;
  auto f32 = [&](const std::string& name, const Shape& shape) { return load_checked(src, root + name, shape).to(DType::F32); };
  // The conv weight [d, C, p, p] is, row-major, the matrix [d, C·p·p] (a view, no copy).
  const std::string patch = root + clip_names::kPatchEmbedding;
  t.patch_embed.name = patch;
  t.patch_embed.n_out = d;
  t.patch_embed.n_in = cfg.patch_dim();
  if (auto q = src.get_packed ? src.get_packed(patch, d, cfg.patch_dim()) : nullptr) {  // a quantized checkpoint
    LOWBIT_CHECK(q->out == d && q->in == cfg.patch_dim(), ShapeError, "{}: packed weight '{}' is [{}, {}], expected [{}, {}]",
                 src.source, patch, q->out, q->in, d, cfg.patch_dim());
    t.patch_embed.qw = q;
  } else {
    t.patch_embed.W = load_checked(src, patch + ".weight", {d, C, p, p}).reshape({d, cfg.patch_dim()});
  }
  if (cfg.patch_bias) {
    t.patch_embed.bias = load_checked(src, patch + ".bias", {d}).to(DType::F32);
  } else {
    LOWBIT_CHECK(!src.get(patch + ".bias").defined(), ShapeError,
                 "{}: tensor '{}.bias' is not expected (CLIP's patch embedding has no bias)", src.source, patch);
  }
  if (cfg.class_token) t.class_embedding = f32(clip_names::kClassEmbedding, {d});
  t.position_embedding = f32(std::string(clip_names::kPositionEmbedding) + ".weight", {cfg.num_positions(), d});
  if (cfg.pre_norm) {
    t.pre_norm_w = f32(std::string(clip_names::kPreNorm) + ".weight", {d});
    t.pre_norm_b = f32(std::string(clip_names::kPreNorm) + ".bias", {d});
  }
  const std::string post = root + clip_names::kPostNorm;
  if (src.get(post + ".weight").defined() || cfg.is_siglip()) {  // SigLIP's output needs it
    t.post_norm_w = f32(std::string(clip_names::kPostNorm) + ".weight", {d});
    t.post_norm_b = f32(std::string(clip_names::kPostNorm) + ".bias", {d});
  }
  for (int64_t l = 0; l < cfg.num_layers; ++l) {
    auto name = [&](Role r) { return clip_names::module(root, l, r); };
    ClipLayer L = ClipLayer::shaped(cfg, l);
    L.ln1_w = load_checked(src, name(Role::ln1) + ".weight", {d}).to(DType::F32);
    L.ln1_b = load_checked(src, name(Role::ln1) + ".bias", {d}).to(DType::F32);
    L.ln2_w = load_checked(src, name(Role::ln2) + ".weight", {d}).to(DType::F32);
    L.ln2_b = load_checked(src, name(Role::ln2) + ".bias", {d}).to(DType::F32);
    L.q_proj = load_linear(src, name(Role::q_proj), d, d, true);
    L.k_proj = load_linear(src, name(Role::k_proj), d, d, true);
    L.v_proj = load_linear(src, name(Role::v_proj), d, d, true);
    L.out_proj = load_linear(src, name(Role::out_proj), d, d, true);
    L.fc1 = load_linear(src, name(Role::fc1), f, d, true);
    L.fc2 = load_linear(src, name(Role::fc2), d, f, true);
    t.layers.push_back(std::move(L));
  }
  return t;
}

std::vector<float> ClipVisionTower::unfold(const float* px) const {
  const int64_t p = cfg.patch_size, S = cfg.image_size, G = cfg.grid(), C = cfg.num_channels;
  const int64_t P = cfg.num_patches(), K = cfg.patch_dim();
  // Unfold: patch i = (gy, gx) row-major; column (c, ky, kx) matches the conv weight's layout.
  std::vector<float> patches(static_cast<size_t>(P * K));  // [P, C·p·p]
  for (int64_t gy = 0; gy < G; ++gy)
    for (int64_t gx = 0; gx < G; ++gx) {
      float* dst = patches.data() + (gy * G + gx) * K;
      for (int64_t c = 0; c < C; ++c)
        for (int64_t ky = 0; ky < p; ++ky)
          std::memcpy(dst + (c * p + ky) * p, px + (c * S + gy * p + ky) * S + gx * p, size_t(p) * sizeof(float));
    }
  return patches;
}

void ClipVisionTower::embed(const float* px, float* x) const {
  const int64_t d = cfg.hidden_size, P = cfg.num_patches();
  const std::vector<float> patches = unfold(px);  // [P, C·p·p]
  const int64_t T = cfg.num_positions(), c0 = cfg.class_token ? 1 : 0;
  std::vector<float> e(static_cast<size_t>(T * d));  // [T, d]: [class token,] then patches
  if (c0) std::memcpy(e.data(), class_embedding.data<float>(), size_t(d) * sizeof(float));
  linear_product(*backend, patch_embed, patches.data(), P, e.data() + c0 * d);  // + conv bias when present
  const float* pos = position_embedding.data<float>();
  for (int64_t i = 0; i < T * d; ++i) e[size_t(i)] += pos[i];
  if (cfg.pre_norm)
    layer_norm(e.data(), pre_norm_w.data<float>(), pre_norm_b.data<float>(), x, T, d, float(cfg.layer_norm_eps));
  else
    std::memcpy(x, e.data(), size_t(T * d) * sizeof(float));
}

std::vector<float> ClipVisionTower::forward(const float* px, int64_t upto, const ForwardOptions& opt) const {
  LOWBIT_CHECK(upto >= 0 && upto <= cfg.num_layers, ArgError,
               "vision tower: hidden state {} asked for, the tower has {} layers", upto, cfg.num_layers);
  const int64_t T = cfg.num_positions(), d = cfg.hidden_size;
  BlockState st;
  st.T = T;
  st.x.resize(static_cast<size_t>(T * d));  // [T, d]
  if (opt.tower_hook) opt.tower_hook("pixels", px, cfg.num_channels, cfg.image_size * cfg.image_size);
  embed(px, st.x.data());
  if (opt.tower_hook) opt.tower_hook("vision", st.x.data(), T, d);
  BlockCtx ctx;
  ctx.act_quant = opt.act_quant;
  ctx.observer = opt.observer ? &opt.observer : nullptr;
  for (int64_t l = 0; l < upto; ++l) {
    if (opt.hidden_hook) opt.hidden_hook(l, st.x.data(), T, d);
    layers[size_t(l)].forward(st, ctx);
  }
  if (opt.hidden_hook) opt.hidden_hook(upto, st.x.data(), T, d);
  return std::move(st.x);
}

std::vector<float> ClipVisionTower::forward_output(const float* px, const ForwardOptions& opt) const {
  LOWBIT_CHECK(post_norm_w.defined(), ShapeError, "vision tower '{}': no post_layernorm, so no last_hidden_state", root);
  std::vector<float> h = forward(px, cfg.num_layers, opt);
  const int64_t T = cfg.num_positions(), d = cfg.hidden_size;
  std::vector<float> y(h.size());
  layer_norm(h.data(), post_norm_w.data<float>(), post_norm_b.data<float>(), y.data(), T, d, float(cfg.layer_norm_eps));
  return y;
}

std::vector<Block*> ClipVisionTower::blocks() {
  std::vector<Block*> b;
  for (auto& L : layers) b.push_back(&L);
  return b;
}

}  // namespace lowbit
