// Device-resident calibration steps of a LLaMA decoder layer (see cuda_api.h): the same
// math as LlamaLayer::advance (models/llama.cpp) and the driver's group inputs, with the
// block state copied to the GPU once per step instead of once per operation.
//   group 0: n = RMSNorm(x)·w1 → R, Q_a → q, k, v → RoPE → R3(q, k) → Q_kv(k, v) → a = Attn(q, k, v)
//   group 1: a → R (cross-head), Q_a → x += a·W_oᵀ
//   group 2: n = RMSNorm(x)·w2 → R, Q_a → a = silu(n·W_gᵀ) ⊙ (n·W_uᵀ)
//   group 3: a → R (H_f), Q_a → x += a·W_dᵀ
// (R the linear's online transform, Q_a its activation quantizer; both only where set.)
#include <cmath>
#include <mutex>
#include <vector>

#include "backend/cuda/cuda_context.h"
#include "backend/cuda/kernels.h"
#include "backend/cuda/runner_kernels.h"
#include "backend/cuda_api.h"
#include "core/error.h"
#include "models/llama.h"
#include "quant/hadamard.h"

namespace lowbit::cuda {
namespace {

struct Scratch {
  DeviceBuffer<float> x, a, n, q, k, v, o, g, u, t1, t2, HKt, inv_freq;
  DeviceBuffer<int32_t> pos;
};
std::mutex g_mu;  // one calibration step at a time (the scratch is shared)
Scratch& scratch() {
  static Scratch* s = new Scratch;  // never destroyed
  return *s;
}

bool supported(const LlamaLayer& L, const BlockCtx* ctx) {
  if (ctx && (ctx->cache || (ctx->observer && *ctx->observer) || ctx->start != 0)) return false;
  for (const Linear* l : L.linears())
    if (!l->W.defined() || l->bias.defined()) return false;
  for (const auto& grp : L.groups())  // per-linear input quantizers (seed auto-asym): the generic path
    for (const Linear* l : grp)
      if (!(l->aq == grp.front()->aq)) return false;
  return true;
}

const float* norm_weight(const Tensor& w) { return w.defined() ? cached_weight_f32(w) : nullptr; }

// x [rows, cols] ← x·H (Hadamard::apply's arithmetic), on the device.
void hadamard(const Hadamard& H, float* x, int64_t rows, Scratch& S) {
  const float* M = nullptr;
  if (H.K > 1) {
    S.HKt.ensure(size_t(H.K * H.K));
    upload(S.HKt.get(), H.HKt.data(), size_t(H.K * H.K) * 4);
    S.t2.ensure(size_t(rows * H.n));
    M = S.HKt.get();
  }
  hadamard_rows(x, rows, H.n, H.pow2, H.K, M, S.t2.get(), stream());
}

// OnlineTransform::operator() (quant/rotation.cpp) on the device.
void transform(const OnlineTransform& t, float* x, int64_t rows, int64_t cols, Scratch& S) {
  if (!t) return;
  const Hadamard& H = *t.H;
  if (t.f16_io) round_f16_inplace(x, rows * cols, stream());
  switch (t.kind) {
    case OnlineTransform::Kind::full:
      LOWBIT_ASSERT(H.n == cols);
      hadamard(H, x, rows, S);
      break;
    case OnlineTransform::Kind::per_block:
      LOWBIT_ASSERT(cols % H.n == 0);
      hadamard(H, x, rows * (cols / H.n), S);
      break;
    case OnlineTransform::Kind::cross_head: {
      LOWBIT_ASSERT(t.heads * t.head_dim == cols && H.n == t.heads);
      S.t1.ensure(size_t(rows * cols));
      transpose_inner(x, S.t1.get(), rows, t.heads, t.head_dim, stream());  // [heads, D] → [D, heads]
      hadamard(H, S.t1.get(), rows * t.head_dim, S);
      transpose_inner(S.t1.get(), x, rows, t.head_dim, t.heads, stream());  // back
      break;
    }
    case OnlineTransform::Kind::none:
      break;
  }
  if (t.f16_io) round_f16_inplace(x, rows * cols, stream());
}

void quantize_act(const ActQuant& q, float* x, int64_t rows, int64_t cols) {
  if (q.on()) act_quant(x, rows, cols, q.bits, q.groupsize, q.asym, q.clip, stream());
}

// Group g's input as its linears multiply it, on the device; dx [T, d] / da [T, cols] are the
// device copies of the state (da is transformed in place).
float* group_input(const LlamaLayer& L, int g, const float* dx, float* da, int64_t T, bool aq, Scratch& S) {
  const Linear& first = *L.groups()[size_t(g)].front();
  float* in = da;
  if (g == 0 || g == 2) {
    S.n.ensure(size_t(T * L.d));
    rmsnorm(dx, norm_weight(g == 0 ? L.attn_norm : L.mlp_norm), S.n.get(), T, L.d, L.eps, stream());
    in = S.n.get();
  }
  transform(first.rot, in, T, first.in(), S);
  if (aq) quantize_act(first.aq, in, T, first.in());
  return in;
}

// Y [T, out] = X [T, in] · Wᵀ (f32, the backend's linear).
void linear(const Linear& l, const float* X, float* Y, int64_t T) {
  gemm_f32(false, true, T, l.out(), l.in(), 1.0f, X, cached_weight_f32(l.W), 0.0f, Y);
}

}  // namespace

bool llama_advance(const LlamaLayer& L, int g, BlockState& st, const BlockCtx& ctx) {
  if (!supported(L, &ctx)) return false;
  std::lock_guard<std::mutex> lk(g_mu);
  Scratch& S = scratch();
  const int64_t T = st.T, d = L.d, f = L.f, Hq = L.Hq, Hkv = L.Hkv, D = L.D;
  LOWBIT_ASSERT(int64_t(st.x.size()) == T * d);
  S.x.ensure(size_t(T * d));
  upload(S.x.get(), st.x.data(), size_t(T * d) * 4);
  switch (g) {
    case 0: {
      const float* in = group_input(L, 0, S.x.get(), nullptr, T, ctx.act_quant, S);
      S.q.ensure(size_t(T * Hq * D));
      S.k.ensure(size_t(T * Hkv * D));
      S.v.ensure(size_t(T * Hkv * D));
      linear(L.q_proj, in, S.q.get(), T);
      linear(L.k_proj, in, S.k.get(), T);
      linear(L.v_proj, in, S.v.get(), T);
      std::vector<int32_t> pos(static_cast<size_t>(T));
      for (int64_t t = 0; t < T; ++t) pos[size_t(t)] = int32_t(t);
      S.pos.ensure(size_t(T));
      upload(S.pos.get(), pos.data(), size_t(T) * 4);
      S.inv_freq.ensure(L.inv_freq.size());
      upload(S.inv_freq.get(), L.inv_freq.data(), L.inv_freq.size() * 4);
      rope(S.q.get(), T, Hq, D, S.pos.get(), S.inv_freq.get(), stream());
      rope(S.k.get(), T, Hkv, D, S.pos.get(), S.inv_freq.get(), stream());
      transform(L.qk_rot, S.q.get(), T, Hq * D, S);
      transform(L.qk_rot, S.k.get(), T, Hkv * D, S);
      if (ctx.act_quant) {
        quantize_act(L.k_quant, S.k.get(), T, Hkv * D);  // per token [T, Hkv·D], groups of groupsize
        quantize_act(L.v_quant, S.v.get(), T, Hkv * D);
      }
      S.a.ensure(size_t(T * Hq * D));
      attention(S.q.get(), S.k.get(), S.v.get(), S.a.get(), T, T, Hq, Hkv, D, 0, float(1.0 / std::sqrt(double(D))),
                stream());
      st.a.resize(size_t(T * Hq * D));
      download(st.a.data(), S.a.get(), st.a.size() * 4);
      return true;
    }
    case 1:
    case 3: {
      const Linear& l = g == 1 ? L.o_proj : L.down_proj;
      LOWBIT_ASSERT(int64_t(st.a.size()) == T * l.in());
      S.a.ensure(st.a.size());
      upload(S.a.get(), st.a.data(), st.a.size() * 4);
      const float* in = group_input(L, g, S.x.get(), S.a.get(), T, ctx.act_quant, S);
      S.o.ensure(size_t(T * d));
      linear(l, in, S.o.get(), T);
      add_inplace(S.x.get(), S.o.get(), T * d, stream());
      download(st.x.data(), S.x.get(), size_t(T * d) * 4);
      st.a.clear();
      st.a.shrink_to_fit();
      return true;
    }
    case 2: {
      const float* in = group_input(L, 2, S.x.get(), nullptr, T, ctx.act_quant, S);
      S.g.ensure(size_t(T * f));
      S.u.ensure(size_t(T * f));
      linear(L.gate_proj, in, S.g.get(), T);
      linear(L.up_proj, in, S.u.get(), T);
      silu_mul(S.g.get(), S.u.get(), S.g.get(), T * f, stream());
      st.a.resize(size_t(T * f));
      download(st.a.data(), S.g.get(), st.a.size() * 4);
      return true;
    }
  }
  LOWBIT_ASSERT(false);
  return false;
}

bool block_group_gram(const Block& blk, int g, const BlockState& st, bool act_quant, DeviceHessian& h, double a,
                      double b) {
  const auto* L = dynamic_cast<const LlamaLayer*>(&blk);
  if (!L || !supported(*L, nullptr)) return false;
  std::lock_guard<std::mutex> lk(g_mu);
  Scratch& S = scratch();
  const int64_t T = st.T;
  float* da = nullptr;
  if (g == 0 || g == 2) {
    S.x.ensure(st.x.size());
    upload(S.x.get(), st.x.data(), st.x.size() * 4);
  } else {
    S.a.ensure(st.a.size());
    upload(S.a.get(), st.a.data(), st.a.size() * 4);
    da = S.a.get();
  }
  const float* in = group_input(*L, g, S.x.get(), da, T, act_quant, S);
  device_hessian_add_device(h, in, T, a, b);
  return true;
}

}  // namespace lowbit::cuda
