#!/usr/bin/python3
"""Side-by-side table of bench_forward (lowbit, Google Benchmark JSON) and
torch_forward.py (PyTorch JSON): median tokens/s of each case and the ratio
lowbit ÷ torch (> 1: lowbit faster). Prints Markdown; --output writes it too.

  python3 bench/compare_forward.py bench/results/lowbit_forward.json bench/results/torch_forward.json
"""
import argparse
import json
import re
from pathlib import Path

# torch_forward.py key -> (bench_forward benchmark, argument)
CASES = [
    ("stories260K_prefill", "BM_Stories260K_Prefill", "512", "stories260K prefill, T=512"),
    ("stories260K_decode", "BM_Stories260K_Decode", "256", "stories260K decode, 256 tokens (KV cache)"),
    ("llama7b_layer_128", "BM_Llama7BLayer", "128", "7B-shaped layer, T=128"),
    ("llama7b_layer_512", "BM_Llama7BLayer", "512", "7B-shaped layer, T=512"),
    ("llama7b_layer_2048", "BM_Llama7BLayer", "2048", "7B-shaped layer, T=2048"),
]


def lowbit_medians(doc):
    """{(benchmark, arg): counters of the median aggregate (or the single run)}."""
    out, singles = {}, {}
    for b in doc.get("benchmarks", []):
        m = re.match(r"([^/]+)/(\d+)", b.get("run_name", b["name"]))
        if not m or b.get("error_occurred"):
            continue
        key = (m.group(1), m.group(2))
        if b.get("run_type") == "aggregate":
            if b.get("aggregate_name") == "median":
                out[key] = b
        else:
            singles.setdefault(key, b)
    for k, b in singles.items():
        out.setdefault(k, b)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("lowbit_json")
    ap.add_argument("torch_json")
    ap.add_argument("--output", help="also write the Markdown table here")
    a = ap.parse_args()
    lb = json.loads(Path(a.lowbit_json).read_text())
    th = json.loads(Path(a.torch_json).read_text())
    lmed = lowbit_medians(lb)
    tres = th.get("results", {})

    ctx = lb.get("context", {})
    lines = [
        f"lowbit: {ctx.get('lowbit_threads', '?')} threads, OpenBLAS core {ctx.get('openblas_core', '?')}; "
        f"torch {th.get('meta', {}).get('torch', '?')}: {th.get('meta', {}).get('threads', '?')} threads",
        "",
        "| case | lowbit tokens/s | torch tokens/s | lowbit ÷ torch | lowbit GFLOP/s | torch GFLOP/s |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for tkey, bname, arg, label in CASES:
        b, t = lmed.get((bname, arg)), tres.get(tkey)
        if not b and not t:
            continue
        ltps = b.get("tokens/s") if b else None
        ttps = t.get("tokens_per_s") if t else None
        lgf = b.get("GFLOP/s") if b else None
        tgf = t.get("gflops_per_s") if t else None
        fmt = lambda v, p=1: "n/a" if v is None else f"{v:,.{p}f}"  # noqa: E731
        ratio = f"{ltps / ttps:.2f}" if ltps and ttps else "n/a"
        lines.append(f"| {label} | {fmt(ltps)} | {fmt(ttps)} | {ratio} | {fmt(lgf)} | {fmt(tgf)} |")
    chk = tres.get("stories260K_check")
    if chk:
        lines += ["", f"torch twin vs HF golden: logits normalized error {chk['logits_normalized_error']:.2e}, "
                      f"greedy decode {chk['greedy_prefix_match']} golden tokens matched"]
    text = "\n".join(lines)
    print(text)
    if a.output:
        Path(a.output).write_text(text + "\n")


if __name__ == "__main__":
    main()
