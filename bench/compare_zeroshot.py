#!/usr/bin/env python3
"""Side-by-side table of `lowbit eval zeroshot --log-samples` and bench/lm_eval_zeroshot.py.

  python3 bench/compare_zeroshot.py lowbit.json lm_eval.json [--tasks-dir DIR] [--md out.md]

Per task: acc / acc_norm of both; items whose chosen answer differs (acc's argmax, and
acc_norm's argmax of ll/len(choice)); for those, whether lm-eval's two best scores are
within TIE of each other (a float tie: the pick is rounding); the largest per-request
|ll difference|; lambada: greedy-match differences and perplexity. Plain python3.
"""
import argparse
import json
import os

TIE = 1e-4  # |ll| differences below this are float32 noise (lm-eval sums f32 log-softmax)


def argmax(v):
    best = 0
    for i in range(1, len(v)):
        if v[i] > v[best]:
            best = i
    return best


def gap(v):
    s = sorted(v, reverse=True)
    return s[0] - s[1] if len(s) > 1 else float("inf")


def choice_lens(task, doc):
    if task in ("arc_easy", "arc_challenge", "piqa", "openbookqa", "siqa"):
        return [len(c) for c in doc["choices"]]
    if task == "winogrande":
        i = doc["sentence"].index("_")
        return [len(doc["sentence"][:i] + doc["option1"]), len(doc["sentence"][:i] + doc["option2"])]
    return [1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("lowbit")
    ap.add_argument("lm_eval")
    ap.add_argument("--tasks-dir", default=os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "tasks"))
    ap.add_argument("--md")
    a = ap.parse_args()
    lb = json.load(open(a.lowbit))
    le = json.load(open(a.lm_eval))
    lines = ["| task | n | acc lowbit | acc lm-eval | acc_norm lowbit | acc_norm lm-eval | acc picks differ (ties) |"
             " acc_norm picks differ (ties) | max \\|Δll\\| | lambada ppl lowbit / lm-eval |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for task, lr in lb["results"].items():
        if task not in le["results"]:
            continue
        er = le["results"][task]
        ls, es = lb["samples"][task], le["samples"][task]
        n = min(len(ls), len(es))
        docs = []
        with open(os.path.join(a.tasks_dir, task + ".jsonl"), encoding="utf-8") as f:
            for line in f:
                if line.strip() and len(docs) < n:
                    docs.append(json.loads(line))
        diff = ties = ndiff = nties = 0
        maxd = 0.0
        for k in range(n):
            x, y = ls[k]["loglikelihoods"], es[k]["loglikelihoods"]
            maxd = max([maxd] + [abs(p - q) for p, q in zip(x, y)])
            if task == "lambada_openai":
                if ls[k]["greedy"][0] != es[k]["greedy"][0]:
                    diff += 1
                continue
            if argmax(x) != argmax(y):
                diff += 1
                ties += gap(y) < TIE
            L = choice_lens(task, docs[k])
            xn, yn = [v / l for v, l in zip(x, L)], [v / l for v, l in zip(y, L)]
            if argmax(xn) != argmax(yn):
                ndiff += 1
                nties += gap(yn) < TIE
        f = lambda r, key: f"{r[key]:.4f}" if key in r else "-"
        ppl = (f"{lr['perplexity']:.6g} / {er['perplexity']:.6g}" if "perplexity" in lr else "-")
        norm_col = f"{ndiff} ({nties})" if "acc_norm" in lr else "-"
        lines.append(f"| {task} | {n} | {f(lr, 'acc')} | {f(er, 'acc')} | {f(lr, 'acc_norm')} | {f(er, 'acc_norm')} | "
                     f"{diff} ({ties}) | {norm_col} | {maxd:.2e} | {ppl} |")
    lines.append("")
    lines.append(f"wall time: lowbit {lb.get('wall_seconds', float('nan')):.1f} s, lm-eval {le['seconds']:.1f} s")
    text = "\n".join(lines)
    print(text)
    if a.md:
        with open(a.md, "w") as g:
            g.write(text + "\n")


if __name__ == "__main__":
    main()
