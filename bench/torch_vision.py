#!/usr/bin/python3
"""PyTorch twin of bench/bench_vision.cpp: the same vision towers, timed on the CPU.

A plain PyTorch ViT tower of the CLIP family (no transformers), float32, batch 1:
patch-embedding convolution (stride = kernel = patch), [class token +] position
embedding, [pre-layernorm], L pre-norm encoder layers (LayerNorm, q/k/v/out linears
with bias, full attention through the fused scaled-dot-product attention, LayerNorm,
fc1, quick_gelu or gelu_pytorch_tanh, fc2), [post-layernorm]:

  clip-l14-336    24 layers, hidden 1024, MLP 4096, 16 heads, patch 14, 336 px -> 577 tokens
  siglip-so400m   27 layers, hidden 1152, MLP 4304, 16 heads, patch 14, 384 px -> 729 tokens

Weights are random (torch.Generator seeded; N(0, 0.02), norms 1 + N(0, 0.02)), images
N(0, 1). Timing: --warmup untimed images, then --reps repetitions of --images images
one at a time (time.perf_counter), images/s = the median.

  --verify FILE   instead: read the small towers bench_vision --verify wrote (weights,
                  pixel values, lowbit's output), compute them here, print the normalized
                  error ||lowbit - torch|| / ||torch|| (and torch f32 vs f64) and fail
                  above 1e-5.
  --lowbit-json F prints the side-by-side table (lowbit images/s / torch images/s).

Threads: --threads N (default 2) -> torch.set_num_threads(N), OMP/OpenBLAS thread counts
set before torch is imported. Run with Debian's interpreter: /usr/bin/python3.
"""
import argparse
import json
import os
import statistics
import struct
import sys
import time
from pathlib import Path


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=int(os.environ.get("LOWBIT_THREADS", "2")))
    ap.add_argument("--only", default="", help="clip | siglip (prefix of the case name)")
    ap.add_argument("--images", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--json", default=None, help="write the results here")
    ap.add_argument("--verify", default=None, help="check bench_vision --verify's file instead of timing")
    ap.add_argument("--lowbit-json", default=None, help="bench_vision --json output: print the side-by-side table")
    ap.add_argument("--table", default=None, help="also write the table (markdown) here")
    return ap.parse_args()


ARGS = parse_args()
os.environ["OMP_NUM_THREADS"] = str(ARGS.threads)
os.environ["OPENBLAS_NUM_THREADS"] = str(ARGS.threads)

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

torch.set_num_threads(ARGS.threads)

if hasattr(F, "scaled_dot_product_attention"):  # torch >= 2.0
    def sdpa(q, k, v):
        return F.scaled_dot_product_attention(q, k, v)
else:  # torch 1.13 (Debian 12): the same fused op under its pre-2.0 private name
    def sdpa(q, k, v):
        return F._scaled_dot_product_attention(q, k, v, None, 0.0, False, False)[0]

CASES = {
    "clip-l14-336": dict(model_type="clip_vision_model", hidden_size=1024, intermediate_size=4096,
                         num_hidden_layers=24, num_attention_heads=16, num_channels=3, image_size=336,
                         patch_size=14, layer_norm_eps=1e-5, hidden_act="quick_gelu"),
    "siglip-so400m": dict(model_type="siglip_vision_model", hidden_size=1152, intermediate_size=4304,
                          num_hidden_layers=27, num_attention_heads=16, num_channels=3, image_size=384,
                          patch_size=14, layer_norm_eps=1e-6, hidden_act="gelu_pytorch_tanh"),
}


def is_siglip(cfg):
    return cfg["model_type"].startswith("siglip")


# ---- safetensors (header parsed by hand) ------------------------------------------------

def read_safetensors(path):
    """({name: torch tensor}, metadata) from a .safetensors file (F32 only here)."""
    blob = Path(path).read_bytes()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n])
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        assert info["dtype"] == "F32", (name, info["dtype"])
        b, e = info["data_offsets"]
        arr = np.frombuffer(blob, dtype=np.float32, count=(e - b) // 4, offset=base + b)
        out[name] = torch.from_numpy(arr.copy().reshape(info["shape"]))
    return out, header.get("__metadata__", {})


# ---- the tower ------------------------------------------------------------------------------

def random_weights(cfg, seed):
    """HF-named tensors (root ''), like bench_vision's random_weights (other values)."""
    g = torch.Generator().manual_seed(seed)
    d, f, p, C = cfg["hidden_size"], cfg["intermediate_size"], cfg["patch_size"], cfg["num_channels"]
    G = cfg["image_size"] // p
    T = G * G + (0 if is_siglip(cfg) else 1)
    w = {}

    def add(name, shape, mean=0.0, std=0.02):
        w[name] = torch.randn(*shape, generator=g) * std + mean

    def norm(name):
        add(name + ".weight", (d,), 1.0)
        add(name + ".bias", (d,))

    add("embeddings.patch_embedding.weight", (d, C, p, p))
    if is_siglip(cfg):
        add("embeddings.patch_embedding.bias", (d,))
    else:
        add("embeddings.class_embedding", (d,))
        norm("pre_layrnorm")
    add("embeddings.position_embedding.weight", (T, d))
    for l in range(cfg["num_hidden_layers"]):
        pre = f"encoder.layers.{l}."
        norm(pre + "layer_norm1")
        norm(pre + "layer_norm2")
        for name, o, i in (("self_attn.q_proj", d, d), ("self_attn.k_proj", d, d), ("self_attn.v_proj", d, d),
                           ("self_attn.out_proj", d, d), ("mlp.fc1", f, d), ("mlp.fc2", d, f)):
            add(pre + name + ".weight", (o, i))
            add(pre + name + ".bias", (o,))
    if is_siglip(cfg):
        norm("post_layernorm")
    return w


class Tower:
    """CLIPVisionModel (last_hidden_state, all layers) / SiglipVisionTransformer semantics."""

    def __init__(self, cfg, w):
        self.cfg, self.w = cfg, w
        self.d, self.H = cfg["hidden_size"], cfg["num_attention_heads"]
        self.D = self.d // self.H
        self.eps = cfg["layer_norm_eps"]
        self.siglip = is_siglip(cfg)
        act = cfg["hidden_act"]
        if act == "quick_gelu":
            self.act = lambda x: x * torch.sigmoid(1.702 * x)
        elif act in ("gelu_pytorch_tanh", "gelu_new"):
            self.act = lambda x: F.gelu(x, approximate="tanh")
        else:
            self.act = F.gelu
        self.layers = []
        for l in range(cfg["num_hidden_layers"]):
            pre = f"encoder.layers.{l}."
            self.layers.append({k[len(pre):]: v for k, v in w.items() if k.startswith(pre)})

    def ln(self, x, name, src=None):
        src = self.w if src is None else src
        return F.layer_norm(x, (self.d,), src[name + ".weight"], src[name + ".bias"], self.eps)

    def __call__(self, px):  # px [B, C, S, S] -> [B, T, d]
        w, d, H, D = self.w, self.d, self.H, self.D
        x = F.conv2d(px, w["embeddings.patch_embedding.weight"], w.get("embeddings.patch_embedding.bias"),
                     stride=self.cfg["patch_size"])  # [B, d, G, G]
        x = x.flatten(2).transpose(1, 2)             # [B, P, d]
        B = x.shape[0]
        if not self.siglip:
            x = torch.cat([w["embeddings.class_embedding"].expand(B, 1, d), x], dim=1)
        x = x + w["embeddings.position_embedding.weight"]
        if not self.siglip:
            x = self.ln(x, "pre_layrnorm")
        T = x.shape[1]
        for L in self.layers:
            h = self.ln(x, "layer_norm1", L)
            q = F.linear(h, L["self_attn.q_proj.weight"], L["self_attn.q_proj.bias"]).view(B, T, H, D).transpose(1, 2)
            k = F.linear(h, L["self_attn.k_proj.weight"], L["self_attn.k_proj.bias"]).view(B, T, H, D).transpose(1, 2)
            v = F.linear(h, L["self_attn.v_proj.weight"], L["self_attn.v_proj.bias"]).view(B, T, H, D).transpose(1, 2)
            a = sdpa(q, k, v).transpose(1, 2).reshape(B, T, d)
            x = x + F.linear(a, L["self_attn.out_proj.weight"], L["self_attn.out_proj.bias"])
            h = self.ln(x, "layer_norm2", L)
            h = self.act(F.linear(h, L["mlp.fc1.weight"], L["mlp.fc1.bias"]))
            x = x + F.linear(h, L["mlp.fc2.weight"], L["mlp.fc2.bias"])
        if self.siglip:
            x = self.ln(x, "post_layernorm")
        return x


# ---- modes ------------------------------------------------------------------------------------

def verify(path):
    tensors, meta = read_safetensors(path)
    towers = json.loads(meta["towers"])
    worst = 0.0
    for name, cfg in towers.items():
        pre = name + "/"
        w = {k[len(pre):]: v for k, v in tensors.items() if k.startswith(pre)}
        px, want = w.pop("pixel_values"), w.pop("output")
        with torch.inference_mode():
            got = Tower(cfg, w)(px)
            ref64 = Tower(cfg, {k: v.double() for k, v in w.items()})(px.double())
        err = ((want.double() - got.double()).norm() / got.double().norm()).item()
        err64 = ((got.double() - ref64).norm() / ref64.norm()).item()
        err_lb64 = ((want.double() - ref64).norm() / ref64.norm()).item()
        print(f"verify {name:<7} tokens {cfg['tokens']:>4} hidden {cfg['hidden_size']:>3} "
              f"layers {cfg['num_hidden_layers']}: ||lowbit - torch|| / ||torch|| = {err:.2e}  "
              f"(torch f32 vs f64 {err64:.2e}, lowbit vs torch f64 {err_lb64:.2e})")
        worst = max(worst, err)
    ok = worst < 1e-5
    print(f"verify: worst normalized error {worst:.2e} -> {'OK' if ok else 'FAIL'} (< 1e-5)")
    return 0 if ok else 1


def bench():
    results = {"threads": torch.get_num_threads(), "torch": torch.__version__, "cases": []}
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    for name, cfg in CASES.items():
        if ARGS.only and not name.startswith(ARGS.only):
            continue
        tower = Tower(cfg, random_weights(cfg, 7))
        g = torch.Generator().manual_seed(11)
        S = cfg["image_size"]
        px = [torch.randn(1, cfg["num_channels"], S, S, generator=g) for _ in range(ARGS.images)]
        secs = []
        with torch.inference_mode():
            for i in range(ARGS.warmup):
                tower(px[i % ARGS.images])
            for _ in range(ARGS.reps):
                t0 = time.perf_counter()
                for x in px:
                    tower(x)
                secs.append(time.perf_counter() - t0)
        med = statistics.median(secs)
        ips = ARGS.images / med
        print(f"{name:<15} {ips:.3f} images/s  ({1e3 * med / ARGS.images:.0f} ms/image, "
              f"median of {ARGS.reps} x {ARGS.images} images)", flush=True)
        results["cases"].append({"name": name, "images": ARGS.images, "reps": ARGS.reps, "seconds": secs,
                                 "images_per_s": ips})
        del tower
    if ARGS.json:
        Path(ARGS.json).write_text(json.dumps(results, indent=2))
    return results


def table(lowbit, torch_res):
    tb = {c["name"]: c for c in torch_res["cases"]}
    lines = ["| tower | tokens | lowbit images/s | PyTorch images/s | lowbit / PyTorch |",
             "|---|---:|---:|---:|---:|"]
    for c in lowbit["cases"]:
        t = tb.get(c["name"])
        if not t:
            continue
        lines.append(f"| {c['name']} | {c['config']['tokens']} | {c['images_per_s']:.3f} | "
                     f"{t['images_per_s']:.3f} | {c['images_per_s'] / t['images_per_s']:.2f} |")
    text = "\n".join(lines)
    print(text)
    if ARGS.table:
        Path(ARGS.table).write_text(text + "\n")


def main():
    if ARGS.verify:
        return verify(ARGS.verify)
    res = bench()
    if ARGS.lowbit_json:
        table(json.loads(Path(ARGS.lowbit_json).read_text()), res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
