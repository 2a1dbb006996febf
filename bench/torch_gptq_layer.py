#!/usr/bin/python3
"""PyTorch-on-CPU twin of the C++ GPTQ layer benchmark: GPTQ-quantize one LLaMA-2-7B layer.

What is timed (time.perf_counter), for ONE synthesized LLaMA-2-7B-shaped decoder layer
(hidden 4096, FFN 11008, 32 heads / 32 KV heads, head_dim 128, RMSNorm eps 1e-5 with
unit weights, rotate-half RoPE theta 10000, causal attention, SwiGLU MLP, residuals;
f32 weights N(0, 0.02) from torch.manual_seed(0), HF layout [out, in]):

  True-sequential GPTQ over 4 groups in order [q,k,v] -> [o] -> [gate,up] -> [down].
  For each group the layer forward runs over all N calibration samples (earlier
  groups already quantized; the forward stops once the group's input exists) and
  the f32 Hessian H = 2/n sum x x^T of that input is accumulated in the GPTQ
  reference's running-mean form (n counted in tokens). Each linear of the group is
  then solved with GPTQ (4-bit symmetric per-output-channel grid, scale =
  max|w_row|/7, q in [-8, 7]; 1% damping; dead columns; Cholesky of the inverse;
  lazy 128-column blocks; f32) and its weight replaced by the dequantized one.
  A final full forward over all samples (the next layer's inputs) is included.

Reported: total_s; stats_s (all forward passes + Hessian accumulation); solve_s (sum
of the 7 GPTQ solves, and per linear); stats_s_per_sample, so a small run can be
extrapolated: total(128 x 2048) ~= solve_s + 128 * stats_s_per_sample (scaled by
2048 / seqlen in tokens when seqlen != 2048 -- then approximate, since attention is
quadratic in T). rel_err per linear = sqrt(tr(D H D^T) / tr(W H W^T)), D = W - Q,
H the undamped Hessian, i.e. ||(W-Q)X||_F / ||WX||_F on the calibration inputs;
it is computed outside the timed regions.

Calibration inputs X[n] ~ N(0, 1) [T, 4096] come from a per-sample seeded generator;
they are kept in memory when N*T*4096*4 bytes < 8 GB (generated before timing),
otherwise regenerated on every pass (generation time is excluded from the timings).

Run: /usr/bin/python3 bench/torch_gptq_layer.py [--nsamples 128] [--seqlen 2048]
     [--threads 2] [--seed 0] [--output-json F]
"""
import argparse
import json
import math
import os
import sys
import time

HIDDEN, FFN, HEADS, HEAD_DIM = 4096, 11008, 32, 128
EPS, ROPE_THETA, BITS, BLOCK, PERCDAMP = 1e-5, 10000.0, 4, 128, 0.01
GROUPS = [["q_proj", "k_proj", "v_proj"], ["o_proj"], ["gate_proj", "up_proj"], ["down_proj"]]
STOP = {"q_proj": "ln1", "o_proj": "attn", "gate_proj": "ln2", "down_proj": "act"}


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nsamples", type=int, default=128)
    ap.add_argument("--seqlen", type=int, default=2048)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0, help="seed of the calibration inputs")
    ap.add_argument("--output-json", default=None)
    return ap.parse_args()


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def make_weights(torch):
    torch.manual_seed(0)
    shapes = {"q_proj": (HIDDEN, HIDDEN), "k_proj": (HIDDEN, HIDDEN), "v_proj": (HIDDEN, HIDDEN),
              "o_proj": (HIDDEN, HIDDEN), "gate_proj": (FFN, HIDDEN), "up_proj": (FFN, HIDDEN),
              "down_proj": (HIDDEN, FFN)}
    return {name: torch.randn(*shape) * 0.02 for name, shape in shapes.items()}


def rope_tables(torch, T):
    inv_freq = 1.0 / (ROPE_THETA ** (torch.arange(0, HEAD_DIM, 2, dtype=torch.float32) / HEAD_DIM))
    freqs = torch.outer(torch.arange(T, dtype=torch.float32), inv_freq)
    emb = torch.cat([freqs, freqs], dim=-1)          # [T, head_dim], rotate-half layout
    return emb.cos(), emb.sin()


def rmsnorm(torch, x):                               # weights are all 1
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + EPS)


def rotate_half(torch, x):
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


def forward(torch, W, x, cos, sin, mask, stop=None):
    """Layer forward of one sample x [T, hidden]; returns the tensor named `stop` if given."""
    T = x.shape[0]
    h = rmsnorm(torch, x)
    if stop == "ln1":
        return h
    q = (h @ W["q_proj"].t()).view(T, HEADS, HEAD_DIM).transpose(0, 1)
    k = (h @ W["k_proj"].t()).view(T, HEADS, HEAD_DIM).transpose(0, 1)
    v = (h @ W["v_proj"].t()).view(T, HEADS, HEAD_DIM).transpose(0, 1)
    q = q * cos + rotate_half(torch, q) * sin
    k = k * cos + rotate_half(torch, k) * sin
    scores = (q @ k.transpose(1, 2)) * (1.0 / math.sqrt(HEAD_DIM))   # [heads, T, T]
    scores.masked_fill_(mask, float("-inf"))
    attn = (torch.softmax(scores, dim=-1) @ v).transpose(0, 1).reshape(T, HIDDEN)
    del scores
    if stop == "attn":
        return attn
    x = x + attn @ W["o_proj"].t()
    h2 = rmsnorm(torch, x)
    if stop == "ln2":
        return h2
    act = torch.nn.functional.silu(h2 @ W["gate_proj"].t()) * (h2 @ W["up_proj"].t())
    if stop == "act":
        return act
    return x + act @ W["down_proj"].t()


def quantize(torch, w, scale):
    """4-bit symmetric grid, dequantized: scale * clamp(round(w / scale), -8, 7)."""
    return torch.clamp(torch.round(w / scale), -(2 ** (BITS - 1)), 2 ** (BITS - 1) - 1) * scale


def gptq(torch, W, H):
    """GPTQ solve of W [out, in] with Hessian H [in, in]; returns the dequantized weight."""
    W = W.clone()
    H = H.clone()
    cols = W.shape[1]
    scale = W.abs().amax(dim=1, keepdim=True) / (2 ** (BITS - 1) - 1)
    scale[scale == 0] = 1.0
    dead = torch.diag(H) == 0
    H[dead, dead] = 1.0
    W[:, dead] = 0.0
    idx = torch.arange(cols)
    H[idx, idx] += PERCDAMP * torch.mean(torch.diag(H))
    Hinv = torch.cholesky_inverse(torch.linalg.cholesky(H))
    Hinv = torch.linalg.cholesky(Hinv, upper=True)
    Q = torch.zeros_like(W)
    for i1 in range(0, cols, BLOCK):
        i2 = min(i1 + BLOCK, cols)
        W1 = W[:, i1:i2].clone()
        Q1 = torch.zeros_like(W1)
        Err1 = torch.zeros_like(W1)
        Hinv1 = Hinv[i1:i2, i1:i2]
        for i in range(i2 - i1):
            w = W1[:, i]
            q = quantize(torch, w.unsqueeze(1), scale).squeeze(1)
            Q1[:, i] = q
            err = (w - q) / Hinv1[i, i]
            W1[:, i:] -= err.unsqueeze(1) @ Hinv1[i, i:].unsqueeze(0)
            Err1[:, i] = err
        Q[:, i1:i2] = Q1
        W[:, i2:] -= Err1 @ Hinv[i1:i2, i2:]
    return Q


def rel_err(W, Q, H):
    D = W - Q
    return math.sqrt(float(((D @ H) * D).sum()) / float(((W @ H) * W).sum()))


def main():
    args = parse_args()
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    import torch
    torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    N, T = args.nsamples, args.seqlen

    W = make_weights(torch)
    cos, sin = rope_tables(torch, T)
    mask = torch.ones(T, T, dtype=torch.bool).triu(1)

    def gen_sample(n):
        g = torch.Generator().manual_seed(args.seed * 1_000_003 + n)
        return torch.randn(T, HIDDEN, generator=g)

    keep = N * T * HIDDEN * 4 < 8 * 2 ** 30
    X = [gen_sample(n) for n in range(N)] if keep else None
    log(f"torch {torch.__version__}, threads {args.threads}, nsamples {N}, seqlen {T}, "
        f"inputs {'kept in memory' if keep else 'regenerated per pass'}")

    gen_s = 0.0

    def sample(n):
        nonlocal gen_s
        if keep:
            return X[n]
        t = time.perf_counter()
        x = gen_sample(n)
        gen_s += time.perf_counter() - t
        return x

    stats_s, solve_s, solve_per, errs = 0.0, 0.0, {}, {}
    t_total = time.perf_counter()
    for group in GROUPS:
        dim = W[group[0]].shape[1]
        log(f"group {'/'.join(group)}: forward + Hessian over {N} samples")
        t0 = time.perf_counter()
        gen0 = gen_s
        H = torch.zeros(dim, dim)
        count = 0
        for n in range(N):
            inp = forward(torch, W, sample(n), cos, sin, mask, stop=STOP[group[0]])
            H *= count / (count + T)
            count += T
            inp = inp * math.sqrt(2.0 / count)
            H.addmm_(inp.t(), inp)
        dt = time.perf_counter() - t0 - (gen_s - gen0)
        stats_s += dt
        log(f"  stats {dt:.2f} s")
        for name in group:
            t0 = time.perf_counter()
            Q = gptq(torch, W[name], H)
            dt = time.perf_counter() - t0
            solve_s += dt
            solve_per[name] = dt
            t_err = time.perf_counter()           # error metric: excluded from the timings
            errs[name] = rel_err(W[name], Q, H)
            t_total += time.perf_counter() - t_err
            W[name] = Q
            log(f"  gptq {name} {tuple(Q.shape)}: {dt:.2f} s, rel_err {errs[name]:.4f}")
        del H
    log(f"final forward over {N} samples")
    t0 = time.perf_counter()
    gen0 = gen_s
    out_sq = 0.0
    for n in range(N):
        out_sq += float(forward(torch, W, sample(n), cos, sin, mask).pow(2).sum())
    dt = time.perf_counter() - t0 - (gen_s - gen0)
    stats_s += dt
    total_s = time.perf_counter() - t_total - gen_s
    log(f"  final forward {dt:.2f} s, output rms {math.sqrt(out_sq / (N * T * HIDDEN)):.4f}")

    per_sample = stats_s / N
    extrapolated = solve_s + 128 * per_sample * (2048 / T)
    result = {
        "threads": args.threads, "nsamples": N, "seqlen": T,
        "total_s": total_s, "stats_s": stats_s, "solve_s": solve_s,
        "solve_s_per_linear": solve_per, "stats_s_per_sample": per_sample,
        "extrapolated_total_s_128x2048": extrapolated,
        "extrapolation_note": ("exact formula" if T == 2048 else
                               f"stats scaled linearly by tokens from seqlen {T} (attention is quadratic)"),
        "torch_version": torch.__version__, "rel_err": errs,
    }
    log(f"total {total_s:.2f} s = stats {stats_s:.2f} s + solve {solve_s:.2f} s; "
        f"extrapolated 128x2048: {extrapolated:.1f} s")
    text = json.dumps(result, indent=2)
    print(text)
    if args.output_json:
        with open(args.output_json, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
