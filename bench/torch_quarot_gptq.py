#!/usr/bin/env python3
"""PyTorch GPU peer of lowbit's QuaRot + GPTQ W4A4KV4 quantizer, layer by layer, on a 7B shape.

What it measures (one JSON line on stdout, also written to --json-out): the wall time
of the steps `lowbit quantize --recipe quarot-gptq-w4a4kv4` performs per decoder layer,
done here in plain PyTorch on the GPU for --layers (default 4) LLaMA-2-7B-shaped
layers (hidden 4096, FFN 11008, 32 heads, head_dim 128, RMSNorm eps 1e-5, rotate-half
RoPE theta 10000) with random weights: bf16 N(0, 0.02) linears, norm weights N(1, 0.1),
drawn on the device from a seeded generator (excluded from the timings).

Per layer (timed with torch.cuda.synchronize() + time.perf_counter):
  rotate_s     QuaRot weight transforms, in float32, written back as bf16:
               RMSNorm fusion (norm weight folded into q/k/v and gate/up columns, norm
               weight set to 1); R1 = diag(random +-1) . H_d (normalized Sylvester
               Hadamard applied by a fast Walsh-Hadamard transform over d = 4096) on the
               residual stream: q/k/v/gate/up inputs, o/down outputs; R2 = H_128 per
               head on v_proj's outputs, and H_d on o_proj's inputs (= H_heads (x) H_128,
               the cross-head half being applied online before o_proj, as QuaRot/lowbit
               do); R4 on down_proj's inputs. 11008 = 172 x 64 is not a power of two:
               R4 here is H_64 applied per 64-block followed by a seeded random 172x172
               orthogonal mix over the blocks (QR of a Gaussian) -- orthogonal, the same
               two-stage cost as QuaRot's H_172 (x) H_64, not the same matrix. For other
               sizes the block is the largest power of two dividing the FFN, capped at 64.
               The calibration states are random, so they are taken as already living in
               the R1 basis (embedding and lm_head are not part of this benchmark).
  calib_s      calibration forward + Hessians: --nsamples sequences of --seqlen random
               hidden states (bf16, std 1, seeded, kept on the device) pushed through the
               layer in chunks of --chunk samples. Linear inputs are fake-quantized to
               4-bit per-token symmetric (clip 1.0); K (after RoPE and the online R3 =
               H_128 on Q and K) and V are fake-quantized 4-bit asymmetric per head
               (groupsize --kv-groupsize, default head_dim); R4 runs online (float32)
               before down_proj. H = 2/N sum x x^T in float32 (N = tokens) per linear
               group input: q/k/v share one, o, gate/up share one, down. True-sequential
               like lowbit and QuaRot: [q,k,v] -> [o] -> [gate,up] -> [down], each group
               solved before the next group's inputs are collected (its forward stops at
               the group's input); --no-true-sequential collects all four in one pass.
               --no-aq-calibration turns the activation/KV quantizers off while collecting
               (QuaRot's default; lowbit's --enable_aq_calibration turns them on).
  gptq_s       GPTQ per linear in float32 on the device, as in the GPTQ reference:
               dead columns, damping 0.01 x mean(diag H), Cholesky -> cholesky_inverse ->
               upper Cholesky, lazy batches of 128 columns, per-output-channel symmetric
               4-bit grid (scale = max|w_row| / 7, q in [-8, 7]); the dequantized weight
               replaces the bf16 one.
  propagate_s  the calibration states pushed through the quantized layer (same quantizer
               setting as calibration), in place, as the next layer's inputs.

Also reported: per-linear solve seconds; rel_err per linear = sqrt(tr(D H D^T) /
tr(W H W^T)), D = W - Q (computed outside the timed regions); total_s (sum of the
layers); mean_layer_s_excl_first (layer 0 may still carry one-time costs, although a tiny
untimed warm-up of cuBLAS/cuSOLVER/SDPA runs first); torch.cuda.max_memory_allocated().

BENCHMARKS.md uses this as the PyTorch column next to lowbit's CUDA-backend
quarot-gptq-w4a4kv4 run on the same random 7B-shaped layers: seconds per layer for each
phase (calibration, solve, propagate) and the peak device memory, lowbit / PyTorch.

GPU run (H200):   python3 bench/torch_quarot_gptq.py --json-out torch_quarot_gptq.json
CPU smoke test:   python3 bench/torch_quarot_gptq.py --device cpu --layers 2 --hidden 256 \
                      --intermediate 688 --heads 4 --nsamples 4 --seqlen 64
"""
import argparse
import json
import math
import sys
import time

import torch
import torch.nn.functional as F


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--hidden", type=int, default=4096)
    ap.add_argument("--intermediate", type=int, default=11008)
    ap.add_argument("--heads", type=int, default=32)
    ap.add_argument("--kv-heads", type=int, default=None, help="default: --heads")
    ap.add_argument("--rms-eps", type=float, default=1e-5)
    ap.add_argument("--rope-theta", type=float, default=10000.0)
    ap.add_argument("--nsamples", type=int, default=128)
    ap.add_argument("--seqlen", type=int, default=2048)
    ap.add_argument("--chunk", type=int, default=8, help="samples per forward chunk")
    ap.add_argument("--w-bits", type=int, default=4)
    ap.add_argument("--a-bits", type=int, default=4)
    ap.add_argument("--a-clip", type=float, default=1.0)
    ap.add_argument("--kv-bits", type=int, default=4)
    ap.add_argument("--kv-groupsize", type=int, default=None, help="default: head_dim")
    ap.add_argument("--percdamp", type=float, default=0.01)
    ap.add_argument("--blocksize", type=int, default=128)
    ap.add_argument("--rotate", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--true-sequential", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--aq-calibration", action=argparse.BooleanOptionalAction, default=True,
                    help="activation/KV fake-quant on while calibrating and propagating")
    ap.add_argument("--rel-err", action=argparse.BooleanOptionalAction, default=True,
                    help="compute per-linear rel_err (untimed)")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json-out", default=None)
    a = ap.parse_args(argv)
    if a.kv_heads is None:
        a.kv_heads = a.heads
    a.head_dim = a.hidden // a.heads
    if a.kv_groupsize is None:
        a.kv_groupsize = a.head_dim
    pow2 = lambda n: n > 0 and n & (n - 1) == 0  # noqa: E731
    if a.hidden % a.heads or a.heads % a.kv_heads:
        ap.error("--hidden must be divisible by --heads, and --heads by --kv-heads")
    if a.rotate and not (pow2(a.hidden) and pow2(a.heads) and pow2(a.head_dim)):
        ap.error("--rotate needs power-of-two hidden, heads and head_dim (Sylvester Hadamards)")
    if a.head_dim % a.kv_groupsize:
        ap.error("--kv-groupsize must divide head_dim")
    return a


def log(msg):
    print(msg, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- Hadamards

def fwht(x):
    """Normalized Sylvester Hadamard over the last dim (power of two): x @ H_n, H symmetric."""
    n = x.shape[-1]
    shape = x.shape
    y = x.reshape(-1, n)
    h = 1
    while h < n:
        y = y.view(-1, n // (2 * h), 2, h)
        a, b = y[:, :, 0, :], y[:, :, 1, :]
        y = torch.stack((a + b, a - b), dim=2).reshape(-1, n)
        h *= 2
    return (y * (1.0 / math.sqrt(n))).view(shape)


def hadamard_matrix(n, device):
    return fwht(torch.eye(n, device=device, dtype=torch.float32))


def pow2_block(n, cap=64):
    b = 1
    while n % (2 * b) == 0 and 2 * b <= cap:
        b *= 2
    return b


class Rotations:
    """The orthogonal transforms of QuaRot (see the header)."""

    def __init__(self, a, device):
        g = torch.Generator(device=device)
        g.manual_seed(a.seed + 7)
        self.signs = (torch.randint(0, 2, (a.hidden,), device=device, generator=g) * 2 - 1).float()
        self.H_hd = hadamard_matrix(a.head_dim, device)          # R2 (per head) and R3 (online)
        self.H_heads = hadamard_matrix(a.heads, device)          # cross-head half, online before o_proj
        self.ffn_block = pow2_block(a.intermediate)
        self.ffn_mix = a.intermediate // self.ffn_block
        self.H_ffn = hadamard_matrix(self.ffn_block, device)
        G = torch.randn(self.ffn_mix, self.ffn_mix, device=device, dtype=torch.float32, generator=g)
        Qm, Rm = torch.linalg.qr(G)
        self.M_ffn = Qm * torch.sign(torch.diagonal(Rm)).unsqueeze(0)   # Haar orthogonal

    def r1(self, x):
        """x @ R1 over the last dim, R1 = diag(signs) . H_d."""
        return fwht(x * self.signs)

    def r4(self, x):
        """x @ R4 over the last dim (FFN): H_block per block, then the orthogonal mix of blocks."""
        shape = x.shape
        y = x.reshape(-1, self.ffn_mix, self.ffn_block) @ self.H_ffn
        y = (y.transpose(1, 2) @ self.M_ffn).transpose(1, 2)
        return y.reshape(shape)


# ----------------------------------------------------------------------------- quantizers

def act_quant(x, bits, clip):
    """Per-token symmetric fake quantization of the last dim (computed in float32)."""
    xf = x.float()
    maxq = 2 ** (bits - 1) - 1
    scale = xf.abs().amax(dim=-1, keepdim=True) * (clip / maxq)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    q = torch.clamp(torch.round(xf / scale), -(maxq + 1), maxq)
    return (q * scale).to(x.dtype)


def asym_group_quant(x, bits, group):
    """Asymmetric fake quantization in groups of `group` along the last dim (range holds 0)."""
    xf = x.float()
    shape = xf.shape
    xg = xf.reshape(*shape[:-1], shape[-1] // group, group)
    lo = xg.amin(dim=-1, keepdim=True).clamp(max=0)
    hi = xg.amax(dim=-1, keepdim=True).clamp(min=0)
    maxq = 2 ** bits - 1
    scale = (hi - lo) / maxq
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    zero = torch.round(-lo / scale)
    q = torch.clamp(torch.round(xg / scale) + zero, 0, maxq)
    return ((q - zero) * scale).reshape(shape).to(x.dtype)


def weight_quant(w, scale, bits):
    maxq = 2 ** (bits - 1) - 1
    return torch.clamp(torch.round(w / scale), -(maxq + 1), maxq) * scale


# ----------------------------------------------------------------------------- layer

LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
GROUPS = (("q_proj", "k_proj", "v_proj"), ("o_proj",), ("gate_proj", "up_proj"), ("down_proj",))
GROUP_INPUT = {"q_proj": "qkv_in", "o_proj": "o_in", "gate_proj": "mlp_in", "down_proj": "down_in"}


def make_layer(a, device, g):
    kv = a.kv_heads * a.head_dim
    shapes = {"q_proj": (a.hidden, a.hidden), "k_proj": (kv, a.hidden), "v_proj": (kv, a.hidden),
              "o_proj": (a.hidden, a.hidden), "gate_proj": (a.intermediate, a.hidden),
              "up_proj": (a.intermediate, a.hidden), "down_proj": (a.hidden, a.intermediate)}
    W = {}
    for name in LINEARS:
        W[name] = torch.empty(shapes[name], device=device, dtype=torch.bfloat16).normal_(0.0, 0.02, generator=g)
    for name in ("ln1", "ln2"):
        W[name] = torch.empty(a.hidden, device=device, dtype=torch.bfloat16).normal_(1.0, 0.1, generator=g)
    return W


def rotate_layer(a, W, R):
    """RMSNorm fusion + R1/R2/R4 on the weights (float32 math, bf16 storage). In place on W."""
    f = {k: v.float() for k, v in W.items()}
    for name in ("q_proj", "k_proj", "v_proj"):
        f[name] = f[name] * f["ln1"]
    for name in ("gate_proj", "up_proj"):
        f[name] = f[name] * f["ln2"]
    f["ln1"] = torch.ones_like(f["ln1"])
    f["ln2"] = torch.ones_like(f["ln2"])
    # R1 on the residual stream: inputs W -> W R1 (rows), outputs W -> R1^T W (columns).
    for name in ("q_proj", "k_proj", "v_proj", "gate_proj", "up_proj"):
        f[name] = R.r1(f[name])
    for name in ("o_proj", "down_proj"):
        f[name] = R.r1(f[name].t().contiguous()).t()
    # R2: v_proj outputs per head; o_proj inputs by the full H_d = H_heads (x) H_hd.
    hd = a.head_dim
    v = f["v_proj"].view(a.kv_heads, hd, a.hidden)
    f["v_proj"] = torch.matmul(R.H_hd.t(), v).reshape(a.kv_heads * hd, a.hidden)
    f["o_proj"] = fwht(f["o_proj"])
    # R4 on down_proj inputs (applied online to the activations too).
    f["down_proj"] = R.r4(f["down_proj"])
    for k in W:
        W[k] = f[k].to(W[k].dtype).contiguous()


def rope_tables(a, T, device):
    hd = a.head_dim
    inv = 1.0 / (a.rope_theta ** (torch.arange(0, hd, 2, device=device, dtype=torch.float32) / hd))
    e = torch.outer(torch.arange(T, device=device, dtype=torch.float32), inv)
    e = torch.cat((e, e), dim=-1)
    return e.cos().to(torch.bfloat16), e.sin().to(torch.bfloat16)


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def rmsnorm(x, w, eps):
    xf = x.float()
    xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return w * xf.to(x.dtype)


def layer_forward(a, W, x, cos, sin, R, quant, stops=None):
    """x [B, T, hidden] bf16. With `stops` (a set of GROUP_INPUT names) returns a dict of those
    linear inputs (as the linears see them) and stops after the last one; else the output."""
    out = {}
    want = set(stops or ())

    def site(name, t):
        if quant:
            t = act_quant(t, a.a_bits, a.a_clip)
        if name in want:
            out[name] = t
        return t

    B, T, _ = x.shape
    hd = a.head_dim
    h = site("qkv_in", rmsnorm(x, W["ln1"], a.rms_eps))
    if stops is not None and want <= out.keys():
        return out
    q = F.linear(h, W["q_proj"]).view(B, T, a.heads, hd).transpose(1, 2)
    k = F.linear(h, W["k_proj"]).view(B, T, a.kv_heads, hd).transpose(1, 2)
    v = F.linear(h, W["v_proj"]).view(B, T, a.kv_heads, hd).transpose(1, 2)
    del h
    q = q * cos + rotate_half(q) * sin
    k = k * cos + rotate_half(k) * sin
    if R is not None:                                        # R3, online, float32
        q = (q.float() @ R.H_hd).to(x.dtype)
        k = (k.float() @ R.H_hd).to(x.dtype)
    if quant:
        k = asym_group_quant(k, a.kv_bits, a.kv_groupsize)
        v = asym_group_quant(v, a.kv_bits, a.kv_groupsize)
    if a.kv_heads != a.heads:
        rep = a.heads // a.kv_heads
        k = k.repeat_interleave(rep, dim=1)
        v = v.repeat_interleave(rep, dim=1)
    o = F.scaled_dot_product_attention(q, k, v, is_causal=True)   # [B, heads, T, hd]
    del q, k, v
    if R is not None:                                        # cross-head half of H_d, online
        o = (R.H_heads.t() @ o.float().reshape(B, a.heads, T * hd)).view(B, a.heads, T, hd).to(x.dtype)
    o = site("o_in", o.transpose(1, 2).reshape(B, T, a.hidden))
    if stops is not None and want <= out.keys():
        return out
    x = x + F.linear(o, W["o_proj"])
    del o
    h = site("mlp_in", rmsnorm(x, W["ln2"], a.rms_eps))
    if stops is not None and want <= out.keys():
        return out
    m = F.silu(F.linear(h, W["gate_proj"])) * F.linear(h, W["up_proj"])
    del h
    if R is not None:                                        # R4, online, float32
        m = R.r4(m.float()).to(x.dtype)
    m = site("down_in", m)
    if stops is not None and want <= out.keys():
        return out
    return x + F.linear(m, W["down_proj"])


# ----------------------------------------------------------------------------- GPTQ

def gptq_solve(W, H, bits, blocksize, percdamp):
    """GPTQ of W [out, in] (float32) with Hessian H [in, in]; returns the dequantized weight."""
    W = W.clone()
    H = H.clone()
    cols = W.shape[1]
    maxq = 2 ** (bits - 1) - 1
    scale = W.abs().amax(dim=1, keepdim=True) / maxq          # fixed up front, per channel
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    dead = torch.diag(H) == 0
    H[dead, dead] = 1.0
    W[:, dead] = 0.0
    damp = percdamp * torch.mean(torch.diag(H))
    idx = torch.arange(cols, device=W.device)
    H[idx, idx] += damp
    L, info = torch.linalg.cholesky_ex(H)
    tries = 0
    while int(info) != 0 and tries < 6:                        # as lowbit: raise damping x10
        damp = damp * 10
        H[idx, idx] += damp
        L, info = torch.linalg.cholesky_ex(H)
        tries += 1
    Hinv = torch.cholesky_inverse(L)
    Hinv = torch.linalg.cholesky(Hinv, upper=True)
    Q = torch.zeros_like(W)
    for i1 in range(0, cols, blocksize):
        i2 = min(i1 + blocksize, cols)
        W1 = W[:, i1:i2].clone()
        Q1 = torch.zeros_like(W1)
        Err1 = torch.zeros_like(W1)
        Hinv1 = Hinv[i1:i2, i1:i2]
        for i in range(i2 - i1):
            w = W1[:, i]
            d = Hinv1[i, i]
            q = weight_quant(w.unsqueeze(1), scale, bits).squeeze(1)
            Q1[:, i] = q
            err = (w - q) / d
            W1[:, i:] -= err.unsqueeze(1).matmul(Hinv1[i, i:].unsqueeze(0))
            Err1[:, i] = err
        Q[:, i1:i2] = Q1
        W[:, i2:] -= Err1.matmul(Hinv[i1:i2, i2:])
    return Q


def rel_err(W, Q, H):
    D = W - Q
    return math.sqrt(float(((D @ H) * D).sum()) / float(((W @ H) * W).sum()))


# ----------------------------------------------------------------------------- driver

def main(argv=None):
    a = parse_args(argv)
    device = torch.device(a.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("CUDA requested but torch.cuda.is_available() is False")
    torch.set_grad_enabled(False)
    cuda = device.type == "cuda"
    dev_name = torch.cuda.get_device_name(device) if cuda else "cpu"

    def now():
        if cuda:
            torch.cuda.synchronize()
        return time.perf_counter()

    N, T, C = a.nsamples, a.seqlen, max(1, min(a.chunk, a.nsamples))
    log(f"torch {torch.__version__}, device {dev_name}; {a.layers} layers, hidden {a.hidden}, "
        f"ffn {a.intermediate}, heads {a.heads}/{a.kv_heads}; {N} x {T} calibration, chunk {C}")
    if cuda:
        torch.cuda.reset_peak_memory_stats()

    g = torch.Generator(device=device)
    g.manual_seed(a.seed)
    states = torch.empty(N, T, a.hidden, device=device, dtype=torch.bfloat16).normal_(0.0, 1.0, generator=g)
    cos, sin = rope_tables(a, T, device)
    R = Rotations(a, device) if a.rotate else None
    quant = a.aq_calibration
    in_dim = {"qkv_in": a.hidden, "o_in": a.hidden, "mlp_in": a.hidden, "down_in": a.intermediate}
    tokens = N * T

    def collect(W, sites):
        """Forward over all chunks up to the given sites; returns {site: H} (float32)."""
        Hs = {s: torch.zeros(in_dim[s], in_dim[s], device=device, dtype=torch.float32) for s in sites}
        for c0 in range(0, N, C):
            got = layer_forward(a, W, states[c0:c0 + C], cos, sin, R, quant, stops=set(sites))
            for s in sites:
                inp = got[s].reshape(-1, in_dim[s]).float()
                Hs[s].addmm_(inp.t(), inp)
            del got
        for s in sites:
            Hs[s].mul_(2.0 / tokens)
        return Hs

    # Untimed warm-up of the library handles/kernels (cuBLAS, cuSOLVER, SDPA) on tiny inputs.
    Hw = torch.randn(64, 64, device=device, generator=g)
    Hw = Hw @ Hw.t() + 64 * torch.eye(64, device=device)
    gptq_solve(torch.randn(8, 64, device=device, generator=g), Hw, a.w_bits, 32, a.percdamp)
    qw = torch.randn(1, a.heads, 16, a.head_dim, device=device, dtype=torch.bfloat16, generator=g)
    F.scaled_dot_product_attention(qw, qw, qw, is_causal=True)
    now()

    per_layer = []
    total_s = 0.0
    for li in range(a.layers):
        W = make_layer(a, device, g)
        rec = {"layer": li, "gptq_s_per_linear": {}}
        t0 = now()
        if R is not None:
            rotate_layer(a, W, R)
        rec["rotate_s"] = now() - t0
        calib_s = solve_s = 0.0
        errs = {}
        batches = [GROUPS] if not a.true_sequential else [(grp,) for grp in GROUPS]
        for batch in batches:
            sites = [GROUP_INPUT[grp[0]] for grp in batch]
            t0 = now()
            Hs = collect(W, sites)
            calib_s += now() - t0
            for grp in batch:
                H = Hs[GROUP_INPUT[grp[0]]]
                for name in grp:
                    t0 = now()
                    Wf = W[name].float()
                    Q = gptq_solve(Wf, H, a.w_bits, a.blocksize, a.percdamp)
                    W[name] = Q.to(torch.bfloat16)
                    dt = now() - t0
                    solve_s += dt
                    rec["gptq_s_per_linear"][name] = dt
                    if a.rel_err:
                        errs[name] = rel_err(Wf, Q, H)
                    del Wf, Q
            del Hs
        t0 = now()
        for c0 in range(0, N, C):
            states[c0:c0 + C] = layer_forward(a, W, states[c0:c0 + C], cos, sin, R, quant)
        rec["propagate_s"] = now() - t0
        rec["calib_s"] = calib_s
        rec["gptq_s"] = solve_s
        rec["layer_s"] = rec["rotate_s"] + calib_s + solve_s + rec["propagate_s"]
        rec["rel_err"] = errs
        total_s += rec["layer_s"]
        per_layer.append(rec)
        state_rms = float(states[0].float().pow(2).mean().sqrt())
        if not math.isfinite(state_rms):
            sys.exit(f"layer {li}: non-finite calibration states")
        log(f"layer {li}: rotate {rec['rotate_s']:.2f} s, calib {calib_s:.2f} s, gptq {solve_s:.2f} s, "
            f"propagate {rec['propagate_s']:.2f} s, total {rec['layer_s']:.2f} s; state rms {state_rms:.3f}; "
            + " ".join(f"{k}={v:.4f}" for k, v in errs.items()))
        del W

    L = max(1, a.layers)
    mean = lambda key: sum(r[key] for r in per_layer) / L  # noqa: E731
    peak = torch.cuda.max_memory_allocated(device) if cuda else None
    result = {
        "bench": "torch_quarot_gptq", "torch_version": torch.__version__, "device": dev_name,
        "model": {"layers": a.layers, "hidden": a.hidden, "intermediate": a.intermediate,
                  "heads": a.heads, "kv_heads": a.kv_heads, "head_dim": a.head_dim,
                  "rms_eps": a.rms_eps, "rope_theta": a.rope_theta, "dtype": "bfloat16"},
        "nsamples": N, "seqlen": T, "chunk": C,
        "config": {"w_bits": a.w_bits, "a_bits": a.a_bits, "a_clip": a.a_clip, "kv_bits": a.kv_bits,
                   "kv_groupsize": a.kv_groupsize, "percdamp": a.percdamp, "blocksize": a.blocksize,
                   "rotate": a.rotate, "true_sequential": a.true_sequential,
                   "aq_calibration": a.aq_calibration,
                   "ffn_rotation": (f"H_{R.ffn_block} per block + random orthogonal {R.ffn_mix}x{R.ffn_mix}"
                                    if R is not None else None)},
        "total_s": total_s,
        "mean_layer_s": total_s / L,
        "mean_layer_s_excl_first": (sum(r["layer_s"] for r in per_layer[1:]) / (L - 1)) if L > 1 else None,
        "mean_rotate_s": mean("rotate_s"), "mean_calib_s": mean("calib_s"),
        "mean_gptq_s": mean("gptq_s"), "mean_propagate_s": mean("propagate_s"),
        "per_layer": per_layer,
        "peak_mem_bytes": peak, "peak_mem_gib": (peak / 2 ** 30) if peak is not None else None,
    }
    line = json.dumps(result)
    print(line, flush=True)
    if a.json_out:
        with open(a.json_out, "w") as f:
            f.write(line + "\n")


if __name__ == "__main__":
    main()
