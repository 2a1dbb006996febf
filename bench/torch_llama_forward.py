#!/usr/bin/env python3
"""PyTorch GPU reference for lowbit's CUDA perplexity forward: a LLaMA-2-7B-shaped model.

What it measures (one JSON line on stdout, also written to --json-out):

  * ppl loop: the GPTQ/QuaRot perplexity protocol on a random-weight LLaMA (default
    LLaMA-2-7B shape: 32 layers, hidden 4096, FFN 11008, 32 heads, vocab 32000, RMSNorm
    eps 1e-5, rope theta 10000). --windows windows of --seqlen seeded random token ids,
    one window per forward (batch 1), bf16 logits -> float -> cross-entropy; the NLL is
    summed as mean_loss * seqlen per window and ppl = exp(sum / (windows * seqlen)).
    2 warm-up windows (not timed), then all windows are timed with
    torch.cuda.synchronize() + time.perf_counter, under torch.inference_mode().
    The ppl of a random model is meaningless; it is printed only as a sanity value.
  * gemm_peak_tflops: median of 10 CUDA-event-timed torch.matmul of two 8192x8192 bf16
    matrices (3 warm-ups) -> the practical bf16 GEMM peak of this GPU.
  * linear_*: the 7 decoder linears of every layer (q, k, v, o, gate, up, down, the
    model's own weights) run alone as F.linear with M = seqlen rows, timed with CUDA
    events -> linear-layer time per window, its TFLOP/s and the fraction of the peak.
    (lm_head is timed separately as lm_head_ms.)
  * peak_mem_bytes: torch.cuda.max_memory_allocated() over model build + ppl loop.

Model: plain PyTorch eager (nn.Linear with bf16 weights, RMSNorm computed in float32,
rotate-half RoPE, F.scaled_dot_product_attention(is_causal=True), SwiGLU, GQA by
repeat_interleave when --kv-heads < --heads); weights N(0, 0.02) drawn on the device
from a seeded generator, norm weights 1. With --hf the model is instead transformers'
LlamaForCausalLM built from a LlamaConfig (random init, bf16, sdpa attention).

BENCHMARKS.md uses this as the PyTorch column next to `lowbit eval ppl` on the CUDA
backend (same shape, windows and seqlen): tokens/s and seconds per window are compared
directly, and linear_fraction_of_peak / gemm_peak_tflops tell how close each side's
GEMMs get to the hardware.

GPU run (H200):   python3 bench/torch_llama_forward.py --json-out torch_fwd.json
                  python3 bench/torch_llama_forward.py --hf --json-out torch_fwd_hf.json
CPU smoke test:   python3 bench/torch_llama_forward.py --device cpu --layers 2 --hidden 256 \
                      --intermediate 688 --heads 4 --vocab 1000 --windows 2 --seqlen 64 --gemm-size 256
"""
import argparse
import json
import math
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--layers", type=int, default=32)
    ap.add_argument("--hidden", type=int, default=4096)
    ap.add_argument("--intermediate", type=int, default=11008)
    ap.add_argument("--heads", type=int, default=32)
    ap.add_argument("--kv-heads", type=int, default=None, help="default: --heads (no GQA)")
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--rms-eps", type=float, default=1e-5)
    ap.add_argument("--rope-theta", type=float, default=10000.0)
    ap.add_argument("--windows", type=int, default=40)
    ap.add_argument("--seqlen", type=int, default=2048)
    ap.add_argument("--warmup", type=int, default=2, help="untimed warm-up windows")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--hf", action="store_true", help="use transformers' LlamaForCausalLM")
    ap.add_argument("--gemm-size", type=int, default=8192, help="N of the NxNxN peak GEMM (0 skips)")
    ap.add_argument("--linear-reps", type=int, default=3, help="timed passes of the linear-only loop")
    ap.add_argument("--json-out", default=None)
    args = ap.parse_args(argv)
    if args.kv_heads is None:
        args.kv_heads = args.heads
    if args.hidden % args.heads or args.heads % args.kv_heads:
        ap.error("--hidden must be divisible by --heads, and --heads by --kv-heads")
    if (args.hidden // args.heads) % 2:
        ap.error("head_dim must be even for rotate-half RoPE")
    return args


def log(msg):
    print(msg, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- timing

class Clock:
    """Wall clock that waits for the device (cuda: synchronize; cpu: nothing to wait for)."""

    def __init__(self, device):
        self.cuda = device.type == "cuda"

    def sync(self):
        if self.cuda:
            torch.cuda.synchronize()

    def now(self):
        self.sync()
        return time.perf_counter()

    def event_pair(self):
        """(start, stop, elapsed_ms) with CUDA events on cuda, perf_counter on cpu."""
        if self.cuda:
            a = torch.cuda.Event(enable_timing=True)
            b = torch.cuda.Event(enable_timing=True)
            return a.record, b.record, lambda: a.elapsed_time(b)
        box = {}
        return (lambda: box.__setitem__("a", time.perf_counter()),
                lambda: box.__setitem__("b", time.perf_counter()),
                lambda: (box["b"] - box["a"]) * 1e3)


# ----------------------------------------------------------------------------- model

class RMSNorm(nn.Module):
    def __init__(self, dim, eps, device, dtype):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim, device=device, dtype=dtype))

    def forward(self, x):
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * xf.to(x.dtype)


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class Attention(nn.Module):
    def __init__(self, a, device, dtype):
        super().__init__()
        self.heads, self.kv_heads = a.heads, a.kv_heads
        self.head_dim = a.hidden // a.heads
        kv = self.kv_heads * self.head_dim
        lin = lambda i, o: nn.Linear(i, o, bias=False, device=device, dtype=dtype)  # noqa: E731
        self.q_proj, self.k_proj = lin(a.hidden, a.hidden), lin(a.hidden, kv)
        self.v_proj, self.o_proj = lin(a.hidden, kv), lin(a.hidden, a.hidden)

    def forward(self, x, cos, sin):
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(B, T, self.kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(B, T, self.kv_heads, self.head_dim).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        if self.kv_heads != self.heads:
            rep = self.heads // self.kv_heads
            k = k.repeat_interleave(rep, dim=1)
            v = v.repeat_interleave(rep, dim=1)
        o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.o_proj(o.transpose(1, 2).reshape(B, T, self.heads * self.head_dim))


class MLP(nn.Module):
    def __init__(self, a, device, dtype):
        super().__init__()
        lin = lambda i, o: nn.Linear(i, o, bias=False, device=device, dtype=dtype)  # noqa: E731
        self.gate_proj = lin(a.hidden, a.intermediate)
        self.up_proj = lin(a.hidden, a.intermediate)
        self.down_proj = lin(a.intermediate, a.hidden)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    def __init__(self, a, device, dtype):
        super().__init__()
        self.input_layernorm = RMSNorm(a.hidden, a.rms_eps, device, dtype)
        self.self_attn = Attention(a, device, dtype)
        self.post_attention_layernorm = RMSNorm(a.hidden, a.rms_eps, device, dtype)
        self.mlp = MLP(a, device, dtype)

    def forward(self, x, cos, sin):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin)
        return x + self.mlp(self.post_attention_layernorm(x))


class Llama(nn.Module):
    """Returns logits [B, T, vocab] in the weight dtype (bf16)."""

    def __init__(self, a, device, dtype):
        super().__init__()
        self.embed_tokens = nn.Embedding(a.vocab, a.hidden, device=device, dtype=dtype)
        self.layers = nn.ModuleList(DecoderLayer(a, device, dtype) for _ in range(a.layers))
        self.norm = RMSNorm(a.hidden, a.rms_eps, device, dtype)
        self.lm_head = nn.Linear(a.hidden, a.vocab, bias=False, device=device, dtype=dtype)
        hd = a.hidden // a.heads
        inv_freq = 1.0 / (a.rope_theta ** (torch.arange(0, hd, 2, device=device, dtype=torch.float32) / hd))
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        self.dtype_ = dtype

    def rope(self, T):
        pos = torch.arange(T, device=self.inv_freq.device, dtype=torch.float32)
        emb = torch.outer(pos, self.inv_freq)
        emb = torch.cat((emb, emb), dim=-1)                 # [T, head_dim], rotate-half layout
        return emb.cos().to(self.dtype_), emb.sin().to(self.dtype_)

    def forward(self, ids):
        cos, sin = self.rope(ids.shape[1])
        x = self.embed_tokens(ids)
        for layer in self.layers:
            x = layer(x, cos, sin)
        return self.lm_head(self.norm(x))


def build_plain(a, device, dtype):
    model = Llama(a, device, dtype).eval()
    g = torch.Generator(device=device)
    g.manual_seed(a.seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                m.weight.normal_(0.0, 0.02, generator=g)
    return model, (lambda ids: model(ids))


def build_hf(a, device, dtype):
    import transformers
    from transformers import LlamaConfig, LlamaForCausalLM
    kw = dict(vocab_size=a.vocab, hidden_size=a.hidden, intermediate_size=a.intermediate,
              num_hidden_layers=a.layers, num_attention_heads=a.heads,
              num_key_value_heads=a.kv_heads, rms_norm_eps=a.rms_eps, rope_theta=a.rope_theta,
              max_position_embeddings=max(2048, a.seqlen), initializer_range=0.02,
              tie_word_embeddings=False, use_cache=False)
    cfg = LlamaConfig(**kw)
    # transformers >= 5 keeps theta in rope_parameters; make sure it is ours either way.
    rp = getattr(cfg, "rope_parameters", None)
    if isinstance(rp, dict):
        rp["rope_theta"] = a.rope_theta
    try:
        cfg._attn_implementation = "sdpa"
    except Exception as e:  # noqa: BLE001
        log(f"note: could not select sdpa attention: {e}")
    torch.manual_seed(a.seed)
    if device.type == "cuda":
        torch.cuda.manual_seed(a.seed)
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = LlamaForCausalLM(cfg)
    finally:
        torch.set_default_dtype(old)
    model = model.to(device=device, dtype=dtype).eval()
    log(f"transformers {transformers.__version__}, attention "
        f"{getattr(model.config, '_attn_implementation', '?')}")
    return model, (lambda ids: model(input_ids=ids, use_cache=False).logits)


def decoder_layers(model, hf):
    return model.model.layers if hf else model.layers


def lm_head_of(model):
    return model.lm_head


# ----------------------------------------------------------------------------- measurements

def ppl_loop(a, fwd, device, clock):
    g = torch.Generator().manual_seed(a.seed + 1)
    ids = torch.randint(0, a.vocab, (a.windows, a.seqlen), generator=g).to(device)
    T = a.seqlen

    def window(i):
        logits = fwd(ids[i:i + 1])                          # [1, T, vocab] bf16
        shift = logits[:, :-1, :].float()
        loss = F.cross_entropy(shift.reshape(-1, shift.shape[-1]), ids[i:i + 1, 1:].reshape(-1))
        return loss.float() * T

    with torch.inference_mode():
        for i in range(min(a.warmup, a.windows)):
            window(i)
        t0 = clock.now()
        nll = torch.zeros((), device=device, dtype=torch.float32)
        for i in range(a.windows):
            nll = nll + window(i)
        t1 = clock.now()
    total = t1 - t0
    nll_sum = float(nll)
    return total, nll_sum, math.exp(nll_sum / (a.windows * T))


def gemm_peak(n, device, dtype, clock):
    g = torch.Generator(device=device)
    g.manual_seed(1234)
    A = torch.randn(n, n, device=device, dtype=dtype, generator=g)
    B = torch.randn(n, n, device=device, dtype=dtype, generator=g)
    times = []
    with torch.inference_mode():
        for _ in range(3):
            torch.matmul(A, B)
        clock.sync()
        for _ in range(10):
            start, stop, ms = clock.event_pair()
            start()
            torch.matmul(A, B)
            stop()
            clock.sync()
            times.append(ms())
    med = statistics.median(times)
    del A, B
    return 2.0 * n ** 3 / (med * 1e-3) / 1e12, med


def linear_only(a, model, device, dtype, clock):
    layers = decoder_layers(model, a.hf)
    M = a.seqlen
    g = torch.Generator(device=device)
    g.manual_seed(4321)
    xh = torch.randn(M, a.hidden, device=device, dtype=dtype, generator=g)
    xi = torch.randn(M, a.intermediate, device=device, dtype=dtype, generator=g)
    seq = []
    for layer in layers:
        at, mlp = layer.self_attn, layer.mlp
        for lin in (at.q_proj, at.k_proj, at.v_proj, at.o_proj, mlp.gate_proj, mlp.up_proj):
            seq.append((xh, lin.weight))
        seq.append((xi, mlp.down_proj.weight))
    flops = sum(2.0 * M * w.shape[0] * w.shape[1] for _, w in seq)

    def run_pass():
        for x, w in seq:
            F.linear(x, w)

    times = []
    with torch.inference_mode():
        run_pass()                                          # warm-up
        clock.sync()
        for _ in range(max(1, a.linear_reps)):
            start, stop, ms = clock.event_pair()
            start()
            run_pass()
            stop()
            clock.sync()
            times.append(ms())
        W = lm_head_of(model).weight
        F.linear(xh, W)
        start, stop, ms = clock.event_pair()
        start()
        F.linear(xh, W)
        stop()
        clock.sync()
        lm_ms = ms()
    med = statistics.median(times)
    return med, flops / (med * 1e-3) / 1e12, flops, lm_ms


def main(argv=None):
    a = parse_args(argv)
    device = torch.device(a.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("CUDA requested but torch.cuda.is_available() is False")
    dtype = torch.bfloat16
    clock = Clock(device)
    torch.set_grad_enabled(False)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        dev_name = torch.cuda.get_device_name(device)
    else:
        dev_name = "cpu"
    log(f"torch {torch.__version__}, device {dev_name}, mode {'hf' if a.hf else 'plain'}")

    t0 = time.perf_counter()
    model, fwd = (build_hf if a.hf else build_plain)(a, device, dtype)
    clock.sync()
    build_s = time.perf_counter() - t0
    n_params = sum(p.numel() for p in model.parameters())
    log(f"built {n_params / 1e9:.3f} B params in {build_s:.1f} s")

    total_s, nll_sum, ppl = ppl_loop(a, fwd, device, clock)
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    tokens = a.windows * a.seqlen
    log(f"ppl loop: {a.windows} x {a.seqlen} in {total_s:.3f} s = {tokens / total_s:.1f} tok/s, ppl {ppl:.2f}")

    peak_tflops, peak_ms = (None, None)
    if a.gemm_size > 0:
        peak_tflops, peak_ms = gemm_peak(a.gemm_size, device, dtype, clock)
        log(f"gemm {a.gemm_size}^3 bf16: {peak_ms:.3f} ms -> {peak_tflops:.1f} TFLOP/s")
    lin_ms, lin_tflops, lin_flops, lm_ms = linear_only(a, model, device, dtype, clock)
    log(f"decoder linears per window: {lin_ms:.2f} ms, {lin_tflops:.1f} TFLOP/s; lm_head {lm_ms:.2f} ms")

    result = {
        "bench": "torch_llama_forward", "mode": "hf" if a.hf else "plain",
        "torch_version": torch.__version__, "device": dev_name,
        "model": {"layers": a.layers, "hidden": a.hidden, "intermediate": a.intermediate,
                  "heads": a.heads, "kv_heads": a.kv_heads, "vocab": a.vocab,
                  "rms_eps": a.rms_eps, "rope_theta": a.rope_theta, "params": n_params,
                  "dtype": "bfloat16"},
        "windows": a.windows, "seqlen": a.seqlen, "warmup_windows": a.warmup,
        "total_s": total_s, "s_per_window": total_s / a.windows, "tokens_per_s": tokens / total_s,
        "nll_sum": nll_sum, "ppl": ppl,
        "gemm_size": a.gemm_size, "gemm_peak_ms": peak_ms, "gemm_peak_tflops": peak_tflops,
        "linear_ms_per_window": lin_ms, "linear_gflop_per_window": lin_flops / 1e9,
        "linear_tflops": lin_tflops,
        "linear_fraction_of_peak": (lin_tflops / peak_tflops) if peak_tflops else None,
        "linear_share_of_window": (lin_ms * 1e-3) / (total_s / a.windows),
        "lm_head_ms": lm_ms,
        "peak_mem_bytes": peak, "peak_mem_gib": (peak / 2 ** 30) if peak is not None else None,
        "build_s": build_s,
    }
    line = json.dumps(result)
    print(line, flush=True)
    if a.json_out:
        with open(a.json_out, "w") as f:
            f.write(line + "\n")


if __name__ == "__main__":
    main()
