#!/usr/bin/python3
"""PyTorch twin of bench/bench_forward.cpp: the same LLaMA computations, timed on the CPU.

A plain PyTorch LLaMA (RMSNorm, rotate-half RoPE, GQA attention through the fused
scaled-dot-product attention, SwiGLU), float32, no transformers:

  (a) stories260K (../shared/models/stories260K, weights read by parsing the
      safetensors header with json + struct + numpy): the logits are checked against
      ../shared/golden/stories260K_forward.safetensors (normalized error < 1e-5) and
      the greedy decode against the golden continuation, to show this is the same
      computation; then prefill of 512 fixed ids (all logits) and greedy KV-cache
      decode of 256 tokens from BOS are timed;
  (b) one LLaMA-2-7B-shaped decoder layer (hidden 4096, FFN 11008, 32 heads, 32 KV
      heads, head_dim 128) with random f32 weights N(0, 0.02), T = 128/512/2048.

Threads: --threads N (default 2) -> torch.set_num_threads(N), and OMP/OpenBLAS
thread counts set before torch is imported. Every case runs warm-up passes, then
the median of several timed runs (time.perf_counter) is reported.

Run with Debian's interpreter: /usr/bin/python3 bench/torch_forward.py --output-json F
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
    here = Path(__file__).resolve().parent
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=int(os.environ.get("LOWBIT_THREADS", "2")))
    ap.add_argument("--shared", default=os.environ.get("LOWBIT_SHARED") or str(here.parent.parent / "shared"))
    ap.add_argument("--output-json", default=None)
    ap.add_argument("--layer-tokens", default="128,512,2048", help="comma-separated T for the 7B layer ('' skips)")
    ap.add_argument("--skip-stories", action="store_true")
    ap.add_argument("--prefill-tokens", type=int, default=512)
    ap.add_argument("--decode-tokens", type=int, default=256)
    ap.add_argument("--flush-denormal", action="store_true",
                    help="torch.set_flush_denormal(True) (off by default, like PyTorch; lowbit does not flush)")
    return ap.parse_args()


ARGS = parse_args()
# Thread pools must be sized before torch (and its OpenBLAS) start.
os.environ["OMP_NUM_THREADS"] = str(ARGS.threads)
os.environ["OPENBLAS_NUM_THREADS"] = str(ARGS.threads)

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

torch.set_num_threads(ARGS.threads)
if ARGS.flush_denormal:
    torch.set_flush_denormal(True)

if hasattr(F, "scaled_dot_product_attention"):  # torch >= 2.0
    def sdpa(q, k, v, is_causal):
        return F.scaled_dot_product_attention(q, k, v, is_causal=is_causal)
else:  # torch 1.13 (Debian 12): the same fused op under its pre-2.0 private name
    def sdpa(q, k, v, is_causal):
        return F._scaled_dot_product_attention(q, k, v, None, 0.0, False, is_causal)[0]


# ---- safetensors (header parsed by hand) ------------------------------------------------

_ST_DTYPES = {"F32": np.float32, "F64": np.float64, "I32": np.int32, "I64": np.int64,
              "F16": np.float16, "I8": np.int8, "U8": np.uint8, "I16": np.int16}


def read_safetensors(path):
    """{name: torch tensor} from a .safetensors file: u64 LE header size N, N bytes of
    JSON {name: {dtype, shape, data_offsets}}, then the data section."""
    blob = Path(path).read_bytes()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n])
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        b, e = info["data_offsets"]
        if info["dtype"] == "BF16":
            raw = np.frombuffer(blob, dtype=np.uint16, count=(e - b) // 2, offset=base + b)
            arr = (raw.astype(np.uint32) << 16).view(np.float32)
        else:
            dt = np.dtype(_ST_DTYPES[info["dtype"]])
            arr = np.frombuffer(blob, dtype=dt, count=(e - b) // dt.itemsize, offset=base + b)
        out[name] = torch.from_numpy(arr.copy().reshape(info["shape"]))
    return out


# ---- the model ------------------------------------------------------------------------------

def rmsnorm(x, w, eps):
    return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


class Layer:
    def __init__(self, attn_norm, mlp_norm, wq, wk, wv, wo, wg, wu, wd):
        self.attn_norm, self.mlp_norm = attn_norm, mlp_norm
        self.wq, self.wk, self.wv, self.wo, self.wg, self.wu, self.wd = wq, wk, wv, wo, wg, wu, wd


class Llama:
    """LlamaForCausalLM semantics on [T, d] activations (batch 1)."""

    def __init__(self, cfg, layers, embed=None, final_norm=None, lm_head=None):
        self.d = cfg["hidden_size"]
        self.Hq = cfg["num_attention_heads"]
        self.Hkv = cfg.get("num_key_value_heads", self.Hq)
        self.D = cfg.get("head_dim") or self.d // self.Hq
        self.eps = cfg.get("rms_norm_eps", 1e-6)
        theta = cfg.get("rope_theta", 10000.0)
        self.inv_freq = 1.0 / (theta ** (torch.arange(0, self.D, 2, dtype=torch.int64).float() / self.D))
        self.layers, self.embed, self.final_norm, self.lm_head = layers, embed, final_norm, lm_head
        self.bos = cfg.get("bos_token_id", 1)

    def rope_tables(self, start, T):
        pos = torch.arange(start, start + T, dtype=torch.float32)
        freqs = pos[:, None] * self.inv_freq[None, :]        # [T, D/2], f32 product like HF
        emb = torch.cat((freqs, freqs), dim=-1)               # [T, D]
        return emb.cos(), emb.sin()

    def make_cache(self, max_seq):
        z = lambda: torch.zeros(self.Hkv, max_seq, self.D)  # noqa: E731
        return {"len": 0, "k": [z() for _ in self.layers], "v": [z() for _ in self.layers]}

    def layer_forward(self, i, x, cos, sin, cache=None, start=0):
        L, T = self.layers[i], x.shape[0]
        Hq, Hkv, D = self.Hq, self.Hkv, self.D
        h = rmsnorm(x, L.attn_norm, self.eps)
        q = F.linear(h, L.wq).view(T, Hq, D).transpose(0, 1)   # [Hq, T, D]
        k = F.linear(h, L.wk).view(T, Hkv, D).transpose(0, 1)  # [Hkv, T, D]
        v = F.linear(h, L.wv).view(T, Hkv, D).transpose(0, 1)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        if cache is not None:
            cache["k"][i][:, start:start + T] = k
            cache["v"][i][:, start:start + T] = v
            k = cache["k"][i][:, :start + T]
            v = cache["v"][i][:, :start + T]
        if Hkv != Hq:  # GQA: HF's repeat_kv
            k = k.repeat_interleave(Hq // Hkv, dim=0)
            v = v.repeat_interleave(Hq // Hkv, dim=0)
        if T == 1:
            o = sdpa(q, k, v, is_causal=False)  # one query sees every cached key
        else:
            assert start == 0, "prefill after a cached prefix needs an explicit mask"
            o = sdpa(q, k, v, is_causal=True)
        o = o.transpose(0, 1).reshape(T, Hq * D)
        x = x + F.linear(o, L.wo)
        h = rmsnorm(x, L.mlp_norm, self.eps)
        return x + F.linear(F.silu(F.linear(h, L.wg)) * F.linear(h, L.wu), L.wd)

    def forward(self, ids, cache=None, last_only=False):
        T = ids.shape[0]
        start = cache["len"] if cache is not None else 0
        x = self.embed[ids]
        cos, sin = self.rope_tables(start, T)
        for i in range(len(self.layers)):
            x = self.layer_forward(i, x, cos, sin, cache, start)
        if cache is not None:
            cache["len"] = start + T
        if last_only:
            x = x[-1:]
        return F.linear(rmsnorm(x, self.final_norm, self.eps), self.lm_head)


def load_llama(model_dir):
    cfg = json.loads((Path(model_dir) / "config.json").read_text())
    w = read_safetensors(Path(model_dir) / "model.safetensors")
    layers = []
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        layers.append(Layer(w[p + "input_layernorm.weight"], w[p + "post_attention_layernorm.weight"],
                            *(w[p + n + ".weight"] for n in ("self_attn.q_proj", "self_attn.k_proj",
                                                             "self_attn.v_proj", "self_attn.o_proj",
                                                             "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"))))
    embed = w["model.embed_tokens.weight"]
    lm_head = w.get("lm_head.weight", embed)
    return Llama(cfg, layers, embed, w["model.norm.weight"], lm_head), cfg


# ---- timing -------------------------------------------------------------------------------

def median_seconds(fn, warmup, runs):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times


def prefill_ids(T, vocab, bos):
    """Same ids as bench_forward.cpp: BOS, then 3 + (t*7919 + 13) mod (vocab-3)."""
    return torch.tensor([bos if t == 0 else 3 + (t * 7919 + 13) % (vocab - 3) for t in range(T)], dtype=torch.int64)


def greedy_decode(model, steps):
    cache = model.make_cache(steps)
    tok, out = model.bos, []
    for _ in range(steps):
        logits = model.forward(torch.tensor([tok]), cache, last_only=True)
        tok = int(logits[0].argmax())
        out.append(tok)
    return out


def bench_stories(shared, results):
    mdir = Path(shared) / "models" / "stories260K"
    golden = Path(shared) / "golden" / "stories260K_forward.safetensors"
    if not (mdir / "model.safetensors").exists():
        print(f"stories260K: {mdir} not found (set LOWBIT_SHARED); skipped")
        return
    model, cfg = load_llama(mdir)

    # Correctness: logits vs HF transformers' golden, greedy ids vs the golden continuation.
    with torch.inference_mode():
        g = read_safetensors(golden)
        ids = g["input_ids"].reshape(-1).long()
        ref = g["logits"].reshape(ids.shape[0], -1).double()
        got = model.forward(ids).double()
        err = float((got - ref).norm() / ref.norm())
        print(f"stories260K logits vs golden ({ids.shape[0]} tokens): normalized error {err:.3e}")
        if not err < 1e-5:
            sys.exit(f"torch_forward.py: logits differ from the golden (normalized error {err:.3e} >= 1e-5)")
        gj = Path(shared) / "golden" / "stories260K.json"
        greedy_match = None
        if gj.exists():
            want = json.loads(gj.read_text())["greedy_from_bos_ids"][1:]
            got_ids = greedy_decode(model, len(want))
            greedy_match = 0
            while greedy_match < len(want) and got_ids[greedy_match] == want[greedy_match]:
                greedy_match += 1
            print(f"stories260K greedy decode from BOS: {greedy_match}/{len(want)} tokens match the golden")
        results["stories260K_check"] = {"logits_normalized_error": err, "golden_tokens": int(ids.shape[0]),
                                        "greedy_prefix_match": greedy_match}

        T = ARGS.prefill_tokens
        pids = prefill_ids(T, cfg["vocab_size"], model.bos)
        sec, times = median_seconds(lambda: model.forward(pids), warmup=3, runs=21)
        results["stories260K_prefill"] = {"tokens": T, "seconds": sec, "tokens_per_s": T / sec, "runs": times}
        steps = ARGS.decode_tokens
        sec, times = median_seconds(lambda: greedy_decode(model, steps), warmup=2, runs=9)
        results["stories260K_decode"] = {"tokens": steps, "seconds": sec, "tokens_per_s": steps / sec,
                                         "runs": times}


# ---- one LLaMA-2-7B-shaped decoder layer ---------------------------------------------------

L7B = {"hidden_size": 4096, "intermediate_size": 11008, "num_attention_heads": 32, "num_key_value_heads": 32,
       "head_dim": 128, "rms_norm_eps": 1e-5, "rope_theta": 10000.0}


def layer_flops(T):
    """Same count as bench_forward.cpp: linears 2·T·(4·d² + 3·d·f) + causal attention 2·T²·d."""
    d, f = L7B["hidden_size"], L7B["intermediate_size"]
    qd = L7B["num_attention_heads"] * L7B["head_dim"]
    kvd = L7B["num_key_value_heads"] * L7B["head_dim"]
    return 2.0 * T * (d * qd + 2 * d * kvd + qd * d + 3 * d * f) + 2.0 * 2.0 * qd * T * T / 2.0


def bench_7b_layer(tokens, results):
    d, f = L7B["hidden_size"], L7B["intermediate_size"]
    qd = L7B["num_attention_heads"] * L7B["head_dim"]
    kvd = L7B["num_key_value_heads"] * L7B["head_dim"]
    gen = torch.Generator().manual_seed(7)
    rnd = lambda *s: torch.randn(*s, generator=gen) * 0.02  # noqa: E731
    layer = Layer(torch.ones(d), torch.ones(d), rnd(qd, d), rnd(kvd, d), rnd(kvd, d), rnd(d, qd),
                  rnd(f, d), rnd(f, d), rnd(d, f))
    model = Llama(L7B, [layer])
    with torch.inference_mode():
        for T in tokens:
            x = torch.randn(T, d, generator=torch.Generator().manual_seed(11))
            cos, sin = model.rope_tables(0, T)
            runs = 5 if T <= 512 else 3
            sec, times = median_seconds(lambda: model.layer_forward(0, x, cos, sin), warmup=1, runs=runs)
            results[f"llama7b_layer_{T}"] = {"tokens": T, "seconds": sec, "tokens_per_s": T / sec,
                                             "gflops_per_s": layer_flops(T) / sec * 1e-9, "runs": times}
            print(f"  7B layer T={T}: {sec * 1e3:.1f} ms")


def main():
    results = {}
    meta = {"torch": torch.__version__, "numpy": np.__version__, "threads": torch.get_num_threads(),
            "python": sys.version.split()[0], "shared": ARGS.shared,
            "flush_denormal": ARGS.flush_denormal}
    print(f"torch {meta['torch']}, {meta['threads']} threads")
    if not ARGS.skip_stories:
        bench_stories(ARGS.shared, results)
    tokens = [int(t) for t in ARGS.layer_tokens.split(",") if t.strip()]
    if tokens:
        bench_7b_layer(tokens, results)

    print(f"\n{'case':<28}{'tokens':>8}{'median ms':>12}{'tokens/s':>12}{'GFLOP/s':>10}")
    for name, r in results.items():
        if "tokens_per_s" not in r:
            continue
        gf = f"{r['gflops_per_s']:.1f}" if "gflops_per_s" in r else "-"
        print(f"{name:<28}{r['tokens']:>8}{r['seconds'] * 1e3:>12.2f}{r['tokens_per_s']:>12.1f}{gf:>10}")
    if ARGS.output_json:
        Path(ARGS.output_json).parent.mkdir(parents=True, exist_ok=True)
        Path(ARGS.output_json).write_text(json.dumps({"meta": meta, "results": results}, indent=1) + "\n")


if __name__ == "__main__":
    main()
