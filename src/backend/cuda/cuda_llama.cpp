// Device-resident LLaMA forward (see cuda_llama.h). Per layer, on one stream:
//   n1 = RMSNorm(x)·w1 → q, k, v = n1·Wᵀ → RoPE(q, k) → att = Attn(q, k, v) → x += att·Woᵀ
//   n2 = RMSNorm(x)·w2 → a = silu(n2·Wgᵀ) ⊙ (n2·Wuᵀ) → x += a·Wdᵀ
// then h = RMSNorm(x)·wf, logits = h·Wheadᵀ, nll = logsumexp − logit[target].
#include "backend/cuda/cuda_llama.h"

#include <cmath>
#include <cstring>

#include "backend/cuda/cuda_context.h"
#include "backend/cuda/kernels.h"
#include "backend/cuda/runner_kernels.h"
#include "core/error.h"
#include "models/llama.h"

namespace lowbit::cuda {

namespace {

constexpr int64_t kQueryBlock = 256;  // query rows per tile of the tensor-core attention

cudaDataType cuda_type(WType t) {
  return t == WType::F32 ? CUDA_R_32F : (t == WType::BF16 ? CUDA_R_16BF : CUDA_R_16F);
}
size_t wsize(WType t) { return t == WType::F32 ? 4 : 2; }

WType wtype(DType t) {
  switch (t) {
    case DType::F32: return WType::F32;
    case DType::F16: return WType::F16;
    case DType::BF16: return WType::BF16;
    default: throw DTypeError(fmt::format("cuda: unsupported weight dtype {}", dtype_name(t)));
  }
}

// Raw device bytes of one tensor in a WType.
struct DevTensor {
  DeviceBuffer<char> buf;
  WType t = WType::F32;
  int64_t n = 0;
  const void* ptr() const { return buf.get(); }
};

// f32 values on the device → a DevTensor of type t.
DevTensor from_f32_device(const float* src, int64_t n, WType t) {
  DevTensor d;
  d.t = t;
  d.n = n;
  d.buf = DeviceBuffer<char>(size_t(n) * wsize(t));
  if (t == WType::F32)
    LOWBIT_CUDA_CHECK(cudaMemcpyAsync(d.buf.get(), src, size_t(n) * 4, cudaMemcpyDeviceToDevice, stream()));
  else if (t == WType::BF16)
    f32_to_bf16(src, reinterpret_cast<uint16_t*>(d.buf.get()), n, stream());
  else
    f32_to_f16(src, reinterpret_cast<uint16_t*>(d.buf.get()), n, stream());
  return d;
}

// Host bytes of dtype `have` → device tensor of type `want` (converted on the device).
DevTensor upload_as(const void* host, WType have, int64_t n, WType want) {
  if (have == want) {
    DevTensor d;
    d.t = want;
    d.n = n;
    d.buf = DeviceBuffer<char>(size_t(n) * wsize(want));
    upload(d.buf.get(), host, size_t(n) * wsize(want));
    return d;
  }
  DeviceBuffer<char> raw(size_t(n) * wsize(have));
  upload(raw.get(), host, size_t(n) * wsize(have));
  DeviceBuffer<float> f(static_cast<size_t>(n));
  to_f32(raw.get(), have, f.get(), n, stream());
  DevTensor d = from_f32_device(f.get(), n, want);
  sync();  // raw and f are returned to the cache below; keep it simple
  return d;
}

DeviceBuffer<float> upload_f32(const std::vector<float>& v) {
  DeviceBuffer<float> d(v.size());
  upload(d.get(), v.data(), v.size() * 4);
  return d;
}

struct DevLinear {
  DevTensor W;  // [out, in] in the compute type
  int64_t out = 0, in = 0;
};

struct DevLayer {
  DeviceBuffer<float> attn_norm, mlp_norm;  // [d] (empty: scale-free)
  DevLinear q, k, v, o, gate, up, down;
};

}  // namespace

struct LlamaRunner::Impl {
  LlamaConfig cfg;
  RunnerOptions opt;
  WType ct = WType::F32;  // compute (GEMM operand) type
  DevTensor embed;        // [vocab, d] in its file dtype
  std::vector<DevLayer> layers;
  DeviceBuffer<float> final_norm, inv_freq;
  DevLinear head;
  bool head_is_embed = false;
  int64_t weight_bytes = 0;

  // activations, grown on demand
  DeviceBuffer<float> x, q, k, v, g, u, attf, nf, logits;
  DeviceBuffer<uint16_t> n16, a16, q16, k16, v16, att16, g16, u16;
  DeviceBuffer<float> scores;
  DeviceBuffer<uint16_t> P;
  DeviceBuffer<int32_t> ids, pos;
  DeviceBuffer<double> nll;
  DeviceBuffer<const void*> ptrs;  // pointer arrays of the batched attention GEMMs
  std::vector<DeviceBuffer<float>> kcache, vcache;  // per layer [cache_max, Hkv·D] (decoding)
  int64_t cache_len = 0, cache_max = 0;
  int64_t ptrs_T = -1;

  // profiling
  std::vector<std::pair<cudaEvent_t, cudaEvent_t>> events;
  size_t next_event = 0;
  double lin_seconds = 0, lin_flops = 0, pending_flops = 0;

  ~Impl() {
    for (auto& e : events) {
      cudaEventDestroy(e.first);
      cudaEventDestroy(e.second);
    }
  }

  // ---- building ------------------------------------------------------------------------
  DevLinear upload_linear(const Linear& l) {
    DevLinear d;
    d.out = l.out();
    d.in = l.in();
    const int64_t n = d.out * d.in;
    if (l.W.defined()) {
      d.W = upload_as(l.W.raw(), wtype(l.W.dtype()), n, ct);
    } else {
      LOWBIT_ASSERT(l.qw != nullptr);
      std::vector<float> W(static_cast<size_t>(n));  // one linear at a time on the host
      l.qw->dequantize(W.data());
      d.W = upload_as(W.data(), WType::F32, n, ct);
    }
    weight_bytes += int64_t(d.W.buf.bytes());
    return d;
  }

  // ---- pieces of the forward -------------------------------------------------------------
  void begin_linear(double flops) {
    if (!opt.profile) return;
    if (next_event == events.size()) {
      cudaEvent_t a, b;
      LOWBIT_CUDA_CHECK(cudaEventCreate(&a));
      LOWBIT_CUDA_CHECK(cudaEventCreate(&b));
      events.push_back({a, b});
    }
    LOWBIT_CUDA_CHECK(cudaEventRecord(events[next_event].first, stream()));
    pending_flops += flops;
  }
  void end_linear() {
    if (!opt.profile) return;
    LOWBIT_CUDA_CHECK(cudaEventRecord(events[next_event].second, stream()));
    ++next_event;
  }
  void collect_profile() {
    if (!opt.profile) return;
    sync();
    for (size_t i = 0; i < next_event; ++i) {
      float ms = 0;
      LOWBIT_CUDA_CHECK(cudaEventElapsedTime(&ms, events[i].first, events[i].second));
      lin_seconds += double(ms) / 1e3;
    }
    lin_flops += pending_flops;
    pending_flops = 0;
    next_event = 0;
  }

  // Y [M, N] f32 = X [M, K] (compute type) · Wᵀ.
  // beta 1 adds the product to Y (the residual stream: no separate add pass); Y of type yt
  // (bf16 outputs feed the next bf16 op directly, as a bf16 framework's would).
  void linear(const void* X, const DevLinear& W, void* Y, int64_t M, float beta = 0.0f,
              cudaDataType yt = CUDA_R_32F) {
    const float one = 1.0f;
    const cudaDataType dt = cuda_type(ct);
    begin_linear(2.0 * double(M) * double(W.out) * double(W.in));
    LOWBIT_CUBLAS_CHECK(cublasGemmEx(cublas(), CUBLAS_OP_T, CUBLAS_OP_N, int(W.out), int(M), int(W.in), &one,
                                     W.W.ptr(), dt, int(W.in), X, dt, int(W.in), &beta, Y, yt, int(W.out),
                                     CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    end_linear();
  }

  // RMSNorm(x)·w into the compute type; returns the GEMM input pointer.
  const void* norm_in(const float* xin, const DeviceBuffer<float>& w, int64_t T) {
    const int64_t d = cfg.hidden_size;
    const float eps = float(cfg.rms_eps);
    const float* wp = w.size() ? w.get() : nullptr;
    switch (ct) {
      case WType::F32:
        nf.ensure(size_t(T * d));
        rmsnorm(xin, wp, nf.get(), T, d, eps, stream());
        return nf.get();
      case WType::BF16:
        n16.ensure(size_t(T * d));
        rmsnorm_bf16(xin, wp, n16.get(), T, d, eps, stream());
        return n16.get();
      case WType::F16:
        nf.ensure(size_t(T * d));
        n16.ensure(size_t(T * d));
        rmsnorm(xin, wp, nf.get(), T, d, eps, stream());
        f32_to_f16(nf.get(), n16.get(), T * d, stream());
        return n16.get();
    }
    return nullptr;
  }

  // f32 activation [n] → compute type (in `tmp` unless f32).
  const void* to_ct(const float* a, DeviceBuffer<uint16_t>& tmp, int64_t n) {
    if (ct == WType::F32) return a;
    tmp.ensure(size_t(n));
    if (ct == WType::BF16)
      f32_to_bf16(a, tmp.get(), n, stream());
    else
      f32_to_f16(a, tmp.get(), n, stream());
    return tmp.get();
  }

  // The fused flash-attention kernel replaces the tiled path (bf16 compute, D 64 or 128).
  bool use_flash() const {
    return ct == WType::BF16 && opt.flash_attention && (cfg.head_dim == 64 || cfg.head_dim == 128);
  }

  // Pointer arrays of the tiled attention for T tokens (the buffers must already be sized).
  void build_attention_ptrs(int64_t T) {
    const int64_t Hq = cfg.num_heads, Hkv = cfg.num_kv_heads, D = cfg.head_dim, r = Hq / Hkv;
    const int64_t nblk = (T + kQueryBlock - 1) / kQueryBlock;
    std::vector<const void*> h(size_t(nblk * Hq * 6));
    for (int64_t b = 0; b < nblk; ++b) {
      const int64_t t0 = b * kQueryBlock, rows = std::min(kQueryBlock, T - t0), Sc = t0 + rows;
      const int64_t ld = (Sc + 7) / 8 * 8;
      const void** A = h.data() + b * Hq * 6;
      for (int64_t hh = 0; hh < Hq; ++hh) {
        const int64_t gk = hh / r;
        A[0 * Hq + hh] = k16.get() + gk * D;                  // K_g   [Sc, D], ld Hkv·D
        A[1 * Hq + hh] = q16.get() + t0 * Hq * D + hh * D;    // Q_h   [rows, D], ld Hq·D
        A[2 * Hq + hh] = scores.get() + hh * rows * ld;       // S_h   [rows, ld] f32
        A[3 * Hq + hh] = v16.get() + gk * D;                  // V_g   [Sc, D], ld Hkv·D
        A[4 * Hq + hh] = P.get() + hh * rows * ld;            // P_h   [rows, ld] bf16
        A[5 * Hq + hh] = att16.get() + t0 * Hq * D + hh * D;  // out_h [rows, D], ld Hq·D
      }
    }
    ptrs.ensure(h.size());
    upload(ptrs.get(), h.data(), h.size() * sizeof(void*));
    ptrs_T = T;
  }

  // att16 [T, Hq·D] (bf16) = causal softmax(q kᵀ · scale) v, tile by tile of query rows.
  void attention_tiled(int64_t T) {
    const int64_t Hq = cfg.num_heads, Hkv = cfg.num_kv_heads, D = cfg.head_dim;
    const float scale = float(1.0 / std::sqrt(double(D)));
    const int64_t nblk = (T + kQueryBlock - 1) / kQueryBlock;
    const float one = 1.0f, zero = 0.0f;
    for (int64_t b = 0; b < nblk; ++b) {
      const int64_t t0 = b * kQueryBlock, rows = std::min(kQueryBlock, T - t0), Sc = t0 + rows;
      const int64_t ld = (Sc + 7) / 8 * 8;
      const void* const* A = ptrs.get() + b * Hq * 6;
      // S_h [rows, Sc] = Q_h K_gᵀ   (column-major: S_hᵀ = K_g Q_hᵀ)
      LOWBIT_CUBLAS_CHECK(cublasGemmBatchedEx(cublas(), CUBLAS_OP_T, CUBLAS_OP_N, int(Sc), int(rows), int(D), &one,
                                              A + 0 * Hq, CUDA_R_16BF, int(Hkv * D), A + 1 * Hq, CUDA_R_16BF,
                                              int(Hq * D), &zero, (void* const*)(A + 2 * Hq), CUDA_R_32F, int(ld),
                                              int(Hq), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
      causal_softmax_bf16(scores.get(), P.get(), Hq, rows, Sc, ld, t0, scale, stream());
      // out_h [rows, D] = P_h V_g   (column-major: out_hᵀ = V_gᵀ P_hᵀ)
      LOWBIT_CUBLAS_CHECK(cublasGemmBatchedEx(cublas(), CUBLAS_OP_N, CUBLAS_OP_N, int(D), int(rows), int(Sc), &one,
                                              A + 3 * Hq, CUDA_R_16BF, int(Hkv * D), A + 4 * Hq, CUDA_R_16BF,
                                              int(ld), &zero, (void* const*)(A + 5 * Hq), CUDA_R_16BF, int(Hq * D),
                                              int(Hq), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    }
  }

  void ensure_buffers(int64_t T, bool f32_acts) {
    const int64_t d = cfg.hidden_size, f = cfg.intermediate_size;
    const int64_t qd = cfg.num_heads * cfg.head_dim, kvd = cfg.num_kv_heads * cfg.head_dim;
    x.ensure(size_t(T * d));
    pos.ensure(size_t(T));
    ids.ensure(size_t(T));
    if (f32_acts) {  // f32 / f16 models, and decoding: f32 activations between the GEMMs
      q.ensure(size_t(T * qd));
      k.ensure(size_t(T * kvd));
      v.ensure(size_t(T * kvd));
      g.ensure(size_t(T * f));
      u.ensure(size_t(T * f));
      attf.ensure(size_t(T * qd));
      return;
    }
    {
      g16.ensure(size_t(T * f));
      u16.ensure(size_t(T * f));
      a16.ensure(size_t(T * f));
      const int64_t rows = std::min(kQueryBlock, T), ld = (T + 7) / 8 * 8;
      const size_t before[6] = {q16.size(), k16.size(), v16.size(), att16.size(), scores.size(), P.size()};
      q16.ensure(size_t(T * qd));
      k16.ensure(size_t(T * kvd));
      v16.ensure(size_t(T * kvd));
      att16.ensure(size_t(T * qd));
      if (!use_flash()) {  // the tiled path's per-block scores and probabilities
        scores.ensure(size_t(cfg.num_heads * rows * ld));
        P.ensure(size_t(cfg.num_heads * rows * ld));
      }
      const size_t after[6] = {q16.size(), k16.size(), v16.size(), att16.size(), scores.size(), P.size()};
      if (T != ptrs_T || std::memcmp(before, after, sizeof before) != 0) ptrs_T = -1;  // buffers moved: rebuild
    }
  }

  // x [T, d] ← the decoder stack applied to the embedded ids (already in `ids`), at
  // positions 0..T-1, or with `cached` at cache_len.. (keys and values appended to the cache).
  void decoder(int64_t T, bool cached = false) {
    const int64_t f = cfg.intermediate_size, Hq = cfg.num_heads, Hkv = cfg.num_kv_heads, D = cfg.head_dim;
    const int64_t start = cached ? cache_len : 0, kvd = Hkv * D;
    const bool fast = ct == WType::BF16 && !cached;
    ensure_buffers(T, !fast);
    if (fast && !use_flash() && ptrs_T != T) build_attention_ptrs(T);
    std::vector<int32_t> hp(static_cast<size_t>(T));
    for (int64_t t = 0; t < T; ++t) hp[size_t(t)] = int32_t(start + t);
    upload(pos.get(), hp.data(), size_t(T) * 4);
    embed_rows(T);
    const float scale = float(1.0 / std::sqrt(double(D)));
    for (size_t l = 0; l < layers.size(); ++l) {
      const DevLayer& L = layers[l];
      const void* in = norm_in(x.get(), L.attn_norm, T);
      if (fast) {
        // q, k, v straight out of the GEMMs in bf16, RoPE on them, tensor-core attention.
        linear(in, L.q, q16.get(), T, 0.0f, CUDA_R_16BF);
        linear(in, L.k, k16.get(), T, 0.0f, CUDA_R_16BF);
        linear(in, L.v, v16.get(), T, 0.0f, CUDA_R_16BF);
        rope_bf16(q16.get(), T, Hq, D, pos.get(), inv_freq.get(), stream());
        rope_bf16(k16.get(), T, Hkv, D, pos.get(), inv_freq.get(), stream());
        if (use_flash())
          flash_attention_bf16(q16.get(), k16.get(), v16.get(), att16.get(), T, T, Hq, Hkv, D, 0, scale, stream());
        else
          attention_tiled(T);
        linear(att16.get(), L.o, x.get(), T, 1.0f);  // x += att·W_oᵀ
        const void* in2 = norm_in(x.get(), L.mlp_norm, T);
        linear(in2, L.gate, g16.get(), T, 0.0f, CUDA_R_16BF);
        linear(in2, L.up, u16.get(), T, 0.0f, CUDA_R_16BF);
        silu_mul_bf16_bf16(g16.get(), u16.get(), a16.get(), T * f, stream());
        linear(a16.get(), L.down, x.get(), T, 1.0f);  // x += a·W_dᵀ
        continue;
      }
      linear(in, L.q, q.get(), T);
      linear(in, L.k, k.get(), T);
      linear(in, L.v, v.get(), T);
      rope(q.get(), T, Hq, D, pos.get(), inv_freq.get(), stream());
      rope(k.get(), T, Hkv, D, pos.get(), inv_freq.get(), stream());
      const float *K = k.get(), *V = v.get();
      if (cached) {  // append to the layer's cache, attend over all of it
        LOWBIT_CUDA_CHECK(cudaMemcpyAsync(kcache[l].get() + start * kvd, k.get(), size_t(T * kvd) * 4,
                                          cudaMemcpyDeviceToDevice, stream()));
        LOWBIT_CUDA_CHECK(cudaMemcpyAsync(vcache[l].get() + start * kvd, v.get(), size_t(T * kvd) * 4,
                                          cudaMemcpyDeviceToDevice, stream()));
        K = kcache[l].get();
        V = vcache[l].get();
      }
      cuda::attention(q.get(), K, V, attf.get(), T, start + T, Hq, Hkv, D, start, scale, stream());
      linear(to_ct(attf.get(), a16, T * Hq * D), L.o, x.get(), T, 1.0f);  // x += att·W_oᵀ
      const void* in2 = norm_in(x.get(), L.mlp_norm, T);
      linear(in2, L.gate, g.get(), T);
      linear(in2, L.up, u.get(), T);
      silu_mul(g.get(), u.get(), g.get(), T * f, stream());
      linear(to_ct(g.get(), a16, T * f), L.down, x.get(), T, 1.0f);  // x += a·W_dᵀ
    }
    if (cached) cache_len += T;
  }

  void embed_rows(int64_t T) { cuda::embed(embed.ptr(), embed.t, ids.get(), T, cfg.hidden_size, x.get(), stream()); }

  // logits [T, vocab] on the device from x.
  void head_logits(int64_t T, int64_t first_row = 0) {
    const int64_t V = cfg.vocab_size;
    logits.ensure(size_t((T - first_row) * V));
    const void* in = norm_in(x.get() + first_row * cfg.hidden_size, final_norm, T - first_row);
    linear(in, head, logits.get(), T - first_row);
  }

  void set_ids(const int32_t* h, int64_t T) {
    for (int64_t t = 0; t < T; ++t)
      LOWBIT_CHECK(h[t] >= 0 && h[t] < cfg.vocab_size, ArgError, "token id {} out of range [0, {})", h[t],
                   cfg.vocab_size);
    ids.ensure(size_t(T));
    upload(ids.get(), h, size_t(T) * 4);
  }
};

std::string fast_path_unsupported(const LlamaModel& m) {
  if (m.cfg.attention_bias || m.cfg.o_bias || m.cfg.mlp_bias) return "linear biases";
  if (m.cfg.head_dim > 256) return "head_dim > 256";
  for (const auto& L : m.layers) {
    if (L.qk_rot || L.k_quant.on() || L.v_quant.on()) return "online Q/K rotation or KV quantization";
    for (const Linear* l : L.linears())
      if (l->rot || l->aq.on()) return "online rotations or activation quantization";
  }
  if (m.lm_head.rot || m.lm_head.aq.on()) return "online rotations or activation quantization (lm_head)";
  return "";
}

LlamaRunner::LlamaRunner(const LlamaModel& m, const RunnerOptions& opt) : p_(std::make_unique<Impl>()) {
  const std::string why = fast_path_unsupported(m);
  LOWBIT_CHECK(why.empty(), ArgError, "cuda runner: model has {}", why);
  Impl& I = *p_;
  I.cfg = m.cfg;
  I.opt = opt;
  const Linear& probe = m.layers.empty() ? m.lm_head : m.layers[0].q_proj;
  const DType pd = probe.W.defined() ? probe.W.dtype() : m.embed.dtype();
  I.ct = opt.f32_compute ? WType::F32 : wtype(pd == DType::F64 ? DType::F32 : pd);
  I.embed = upload_as(m.embed.raw(), wtype(m.embed.dtype()), m.embed.numel(), wtype(m.embed.dtype()));
  I.weight_bytes += int64_t(I.embed.buf.bytes());
  I.inv_freq = upload_f32(m.cfg.inv_freq());
  auto norm = [](const Tensor& t) {
    if (!t.defined()) return DeviceBuffer<float>();
    Tensor f = t.to(DType::F32);
    DeviceBuffer<float> d(size_t(f.numel()));
    upload(d.get(), f.raw(), size_t(f.numel()) * 4);
    return d;
  };
  for (const LlamaLayer& L : m.layers) {  // one layer at a time: host keeps only the mmap
    DevLayer D;
    D.attn_norm = norm(L.attn_norm);
    D.mlp_norm = norm(L.mlp_norm);
    D.q = I.upload_linear(L.q_proj);
    D.k = I.upload_linear(L.k_proj);
    D.v = I.upload_linear(L.v_proj);
    D.o = I.upload_linear(L.o_proj);
    D.gate = I.upload_linear(L.gate_proj);
    D.up = I.upload_linear(L.up_proj);
    D.down = I.upload_linear(L.down_proj);
    I.layers.push_back(std::move(D));
  }
  I.final_norm = norm(m.final_norm);
  I.head = I.upload_linear(m.lm_head);
  sync();
}

std::unique_ptr<LlamaRunner> LlamaRunner::random(const LlamaConfig& cfg, uint64_t seed, const RunnerOptions& opt) {
  std::unique_ptr<LlamaRunner> r(new LlamaRunner());
  r->p_ = std::make_unique<Impl>();
  Impl& I = *r->p_;
  I.cfg = cfg;
  I.opt = opt;
  I.ct = WType::BF16;
  uint64_t s = seed;
  auto rand_tensor = [&](int64_t n, float a) {
    DevTensor t;
    t.t = WType::BF16;
    t.n = n;
    t.buf = DeviceBuffer<char>(size_t(n) * 2);
    fill_uniform_bf16(reinterpret_cast<uint16_t*>(t.buf.get()), n, s++ * 0x9E3779B97F4A7C15ull, a, stream());
    I.weight_bytes += int64_t(t.buf.bytes());
    return t;
  };
  auto lin = [&](int64_t out, int64_t in) {
    DevLinear l;
    l.out = out;
    l.in = in;
    l.W = rand_tensor(out * in, float(1.0 / std::sqrt(double(in))));
    return l;
  };
  auto ones = [&](int64_t n) {
    DeviceBuffer<float> b(static_cast<size_t>(n));
    fill_f32(b.get(), n, 1.0f, stream());
    return b;
  };
  const int64_t d = cfg.hidden_size, f = cfg.intermediate_size, qd = cfg.num_heads * cfg.head_dim,
                kvd = cfg.num_kv_heads * cfg.head_dim;
  I.embed = rand_tensor(cfg.vocab_size * d, 1.0f);
  I.inv_freq = upload_f32(cfg.inv_freq());
  for (int64_t l = 0; l < cfg.num_layers; ++l) {
    DevLayer D;
    D.attn_norm = ones(d);
    D.mlp_norm = ones(d);
    D.q = lin(qd, d);
    D.k = lin(kvd, d);
    D.v = lin(kvd, d);
    D.o = lin(d, qd);
    D.gate = lin(f, d);
    D.up = lin(f, d);
    D.down = lin(d, f);
    I.layers.push_back(std::move(D));
  }
  I.final_norm = ones(d);
  I.head = lin(cfg.vocab_size, d);
  sync();
  return r;
}

LlamaRunner::~LlamaRunner() = default;

std::vector<float> LlamaRunner::logits(const int32_t* ids, int64_t T) {
  Impl& I = *p_;
  LOWBIT_CHECK(T > 0 && T <= I.cfg.max_position, ArgError, "cuda runner: {} tokens (context {})", T,
               I.cfg.max_position);
  I.set_ids(ids, T);
  I.decoder(T);
  I.head_logits(T);
  std::vector<float> out(size_t(T * I.cfg.vocab_size));
  download(out.data(), I.logits.get(), out.size() * 4);
  I.collect_profile();
  return out;
}

void LlamaRunner::begin_sequence(int64_t max_seq) {
  Impl& I = *p_;
  LOWBIT_CHECK(max_seq > 0 && max_seq <= I.cfg.max_position, ArgError, "cuda runner: sequence of {} tokens (context {})",
               max_seq, I.cfg.max_position);
  const size_t n = size_t(max_seq * I.cfg.num_kv_heads * I.cfg.head_dim);
  I.kcache.resize(I.layers.size());
  I.vcache.resize(I.layers.size());
  for (size_t l = 0; l < I.layers.size(); ++l) {
    I.kcache[l].ensure(n);
    I.vcache[l].ensure(n);
  }
  I.cache_len = 0;
  I.cache_max = max_seq;
}

std::vector<float> LlamaRunner::feed(const int32_t* ids, int64_t T) {
  Impl& I = *p_;
  LOWBIT_CHECK(T > 0 && I.cache_len + T <= I.cache_max, ArgError, "cuda runner: KV cache holds {} positions, asked for {}",
               I.cache_max, I.cache_len + T);
  I.set_ids(ids, T);
  I.decoder(T, true);
  I.head_logits(T, T - 1);
  std::vector<float> out(size_t(I.cfg.vocab_size));
  download(out.data(), I.logits.get(), out.size() * 4);
  return out;
}

std::vector<double> LlamaRunner::window_nll(const int32_t* ids, int64_t T) {
  Impl& I = *p_;
  LOWBIT_CHECK(T >= 2 && T <= I.cfg.max_position, ArgError, "cuda runner: window of {} tokens (context {})", T,
               I.cfg.max_position);
  I.set_ids(ids, T);
  I.decoder(T);
  I.head_logits(T);
  I.nll.ensure(size_t(T));
  nll_rows(I.logits.get(), I.ids.get() + 1, T - 1, I.cfg.vocab_size, I.nll.get(), stream());
  std::vector<double> out(size_t(T - 1));
  download(out.data(), I.nll.get(), out.size() * 8);
  I.collect_profile();
  return out;
}

double LlamaRunner::linear_seconds() const { return p_->lin_seconds; }
double LlamaRunner::linear_flops() const { return p_->lin_flops; }
void LlamaRunner::reset_profile() {
  p_->lin_seconds = 0;
  p_->lin_flops = 0;
}
int64_t LlamaRunner::weight_bytes() const { return p_->weight_bytes; }
void LlamaRunner::set_profile(bool on) { p_->opt.profile = on; }

}  // namespace lowbit::cuda
