#!/usr/bin/env python3
"""The stories260K quantization table of BENCHMARKS.md (issue 3).

Each row is one `lowbit eval ppl` run that quantizes stories260K in memory
(calibration: the TinyStories calibration half, characters [0, 396694)) and then
evaluates on the eval half (characters from 396696) at seqlen 512, for seeds
0, 1, 2 (the seed picks the calibration windows and QuaRot's random signs).
Reports perplexity mean ± std over the seeds, and the quantization wall time and
the process's peak RSS (from the run's report).

  python3 bench/quant_table.py [--lowbit build/lowbit] [--shared ../shared] [--seeds 0 1 2] [--rows I ...]

Writes bench/results/quant_table.{json,md}. Standard library only.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

ROWS = [
    ("FP32", []),
    ("W4A16 RTN (per-channel)", ["--recipe", "rtn-w4a16"]),
    ("W4A16 RTN g128", ["--recipe", "rtn-w4a16", "--w_groupsize", "128"]),
    ("W4A16 GPTQ (per-channel)", ["--recipe", "gptq-w4a16"]),
    ("W4A16 GPTQ g128", ["--recipe", "gptq-w4a16-g128"]),
    ("W4A4KV4 RTN (no rotation)", ["--recipe", "rtn-w4a4kv4"]),
    ("QuaRot-RTN W4A4KV4", ["--recipe", "quarot-w4a4kv4"]),
    ("QuaRot-GPTQ W4A4KV4", ["--recipe", "quarot-gptq-w4a4kv4"]),
    ("QuaRot-GPTAQ W4A4KV4", ["--recipe", "quarot-gptaq-w4a4kv4"]),
    ("QuaRot-GPTAQ W4A4KV4 + enable_aq_calibration", ["--recipe", "quarot-gptaq-w4a4kv4", "--enable_aq_calibration"]),
    ("QuaRot-GPTQ W4A4KV4, random orthogonal R1", ["--recipe", "quarot-gptq-w4a4kv4", "--rotate_mode", "random"]),
    ("QuaRot-GPTQ W4A4KV4 + auto-asym (the seed's rule)", ["--recipe", "quarot-gptq-w4a4kv4", "--a_auto_asym"]),
    ("QuaRot-GPTQ W4A4KV4 + auto-asym (lowbit's rule)", ["--recipe", "quarot-gptq-w4a4kv4", "--a_auto_asym_lowbit"]),
    ("W8A8 RTN", ["--recipe", "w8a8"]),
]


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap = argparse.ArgumentParser()
    ap.add_argument("--lowbit", default=os.path.join(root, "build", "lowbit"))
    ap.add_argument("--shared", default=os.environ.get("LOWBIT_SHARED", os.path.join(root, "..", "shared")))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--nsamples", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=os.path.join(root, "bench", "results"))
    ap.add_argument("--rows", nargs="+", type=int, help="only these rows (0-based indices into ROWS)")
    a = ap.parse_args()
    model = os.path.join(a.shared, "models", "stories260K")
    text = os.path.join(a.shared, "data", "text", "tinystories_val.txt")
    os.makedirs(a.out, exist_ok=True)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, flags) in enumerate(ROWS):
            if a.rows is not None and i not in a.rows:
                continue
            runs = []
            for seed in (a.seeds if flags else a.seeds[:1]):
                js = os.path.join(tmp, "r.json")
                cmd = [a.lowbit, "eval", "ppl", "--model", model, "--data", text, "--data-begin", "396696",
                       "--seqlen", "512", "--threads", str(a.threads), "--quiet", "--output-json", js]
                if flags:
                    cmd += flags + ["--cal_dataset", text, "--cal_end", "396694", "--nsamples", str(a.nsamples),
                                    "--cal_seqlen", "512", "--seed", str(seed)]
                p = subprocess.run(cmd, capture_output=True, text=True)
                if p.returncode != 0:
                    sys.exit(f"{' '.join(cmd)} failed:\n{p.stdout}{p.stderr}")
                j = json.load(open(js))
                rep = j.get("quantization", {}).get("report", {})
                runs.append({"seed": seed, "ppl": j["ppl"], "quant_seconds": rep.get("seconds", 0.0),
                             "peak_rss_mb": rep.get("peak_rss_mb"), "eval_seconds": j["seconds"],
                             "summary": j.get("quantization", {}).get("summary", "fp")})
                print(f"{name:34s} seed {seed}: ppl {j['ppl']:.4f}  quant {runs[-1]['quant_seconds']:.2f}s",
                      flush=True)
            ppl = [r["ppl"] for r in runs]
            results.append({"row": name, "flags": flags, "runs": runs, "ppl_mean": statistics.mean(ppl),
                            "ppl_std": statistics.stdev(ppl) if len(ppl) > 1 else 0.0,
                            "quant_seconds_mean": statistics.mean(r["quant_seconds"] for r in runs),
                            "peak_rss_mb": max((r["peak_rss_mb"] or 0) for r in runs)})
    json.dump(results, open(os.path.join(a.out, "quant_table.json"), "w"), indent=2)
    lines = ["| configuration | lowbit flags | ppl (mean ± std) | quantize s | peak RSS MB |",
             "|---|---|---|---|---|"]
    for r in results:
        n = len(r["runs"])
        ppl = f"{r['ppl_mean']:.3f} ± {r['ppl_std']:.3f}" if n > 1 else f"{r['ppl_mean']:.3f}"
        rss = f"{r['peak_rss_mb']:.0f}" if r["peak_rss_mb"] else "–"
        lines.append(f"| {r['row']} | `{' '.join(r['flags']) or '(none)'}` | {ppl} | "
                     f"{r['quant_seconds_mean']:.2f} | {rss} |")
    md = "\n".join(lines) + "\n"
    open(os.path.join(a.out, "quant_table.md"), "w").write(md)
    print(md)


if __name__ == "__main__":
    main()
