#!/usr/bin/env python3
"""Score lowbit's zero-shot task files with lm-evaluation-harness itself (issue 11).

The docs are ../shared/data/tasks/<task>.jsonl, written back into each dataset's original
schema (ARC's choices.text/label + answerKey, PIQA's goal/sol1/sol2/label, ...) into a temp
folder; each task is a yaml that `include:`s lm-eval's own installed task yaml (so the
templates, choices, targets and metrics are lm-eval's) and only swaps the dataset for those
files. lm-eval's HFLM (transformers, CPU, float32) runs them; results and per-item
loglikelihoods go to --out as JSON.

  python bench/lm_eval_zeroshot.py --model ../shared/models/stories260K --out r.json [--limit N]
"""
import argparse
import json
import os
import sys
import tempfile
import time

TASKS = ["arc_easy", "arc_challenge", "piqa", "openbookqa", "siqa", "winogrande", "lambada_openai"]
# our name -> (lm-eval task name, its yaml relative to lm_eval/tasks)
LM_EVAL = {
    "arc_easy": ("arc_easy", "arc/arc_easy.yaml"),
    "arc_challenge": ("arc_challenge", "arc/arc_challenge.yaml"),
    "piqa": ("piqa", "piqa/piqa.yaml"),
    "openbookqa": ("openbookqa", "openbookqa/openbookqa.yaml"),
    "siqa": ("social_iqa", "siqa/siqa.yaml"),
    "winogrande": ("winogrande", "winogrande/default.yaml"),
    "lambada_openai": ("lambada_openai", "lambada/lambada_openai.yaml"),
}
LABELS = "ABCDEFGHIJ"


def to_original(task, d):
    """One of our records in the schema lm-eval's yaml reads."""
    if task in ("arc_easy", "arc_challenge", "openbookqa"):
        labels = list(LABELS[: len(d["choices"])])
        key = "question_stem" if task == "openbookqa" else "question"
        return {"id": d["id"], key: d["question"], "choices": {"text": d["choices"], "label": labels},
                "answerKey": labels[d["answer"]]}
    if task == "piqa":
        return {"goal": d["question"], "sol1": d["choices"][0], "sol2": d["choices"][1], "label": d["answer"]}
    if task == "siqa":
        # Our question is "{context} {question}"; lm-eval renders "Q: {{context}} {{question}}\nA:",
        # so any split at a space renders the same string. Split at the last space.
        q = d["question"]
        k = q.rfind(" ")
        ctx, qq = (q[:k], q[k + 1:]) if k >= 0 else ("", q)
        assert ctx + " " + qq == q or k < 0
        c = d["choices"]
        return {"context": ctx, "question": qq, "answerA": c[0], "answerB": c[1], "answerC": c[2],
                "label": str(d["answer"] + 1)}
    if task == "winogrande":
        return {"sentence": d["sentence"], "option1": d["option1"], "option2": d["option2"],
                "answer": str(d["answer"])}
    if task == "lambada_openai":
        return {"text": d["text"]}
    raise ValueError(task)


def requests(task, d):
    """(context, continuation) pairs by lm-eval's templates, only to find items that cannot
    be scored (the scoring itself uses lm-eval's yaml)."""
    if task == "winogrande":
        i = d["sentence"].index("_")
        tgt = " " + d["sentence"][i + 1:].strip()
        return [(d["sentence"][:i] + d["option1"], tgt), (d["sentence"][:i] + d["option2"], tgt)]
    if task == "lambada_openai":
        w = d["text"].split(" ")
        return [(" ".join(w[:-1]), " " + w[-1])]
    ctx = {"openbookqa": "{q}", "siqa": "Q: {q}\nA:"}.get(task, "Question: {q}\nAnswer:").format(q=d["question"])
    return [(ctx, " " + c) for c in d["choices"]]


def filter_too_long(a):
    """Writes our jsonl files without the items lm-eval cannot score on this model: a
    continuation longer than the context window trips HFLM's
    `assert len(continuation_enc) <= self.max_length`."""
    from transformers import AutoConfig, AutoTokenizer
    tok = AutoTokenizer.from_pretrained(a.model)
    max_len = AutoConfig.from_pretrained(a.model).max_position_embeddings
    os.makedirs(a.filter_to, exist_ok=True)
    for t in a.tasks.split(","):
        kept = dropped = 0
        with open(os.path.join(a.tasks_dir, t + ".jsonl"), encoding="utf-8") as f, \
                open(os.path.join(a.filter_to, t + ".jsonl"), "w", encoding="utf-8") as g:
            for line in f:
                if not line.strip():
                    continue
                d = json.loads(line)
                worst = 0
                for ctx, cont in requests(t, d):
                    n = len(ctx) - len(ctx.rstrip())
                    if n:
                        ctx, cont = ctx[:-n], ctx[-n:] + cont
                    worst = max(worst, len(tok.encode(ctx + cont)) - len(tok.encode(ctx)))
                if worst > max_len:
                    dropped += 1
                    print(f"{t}: leaving out {d.get('id')} (a continuation of {worst} tokens > {max_len})", file=sys.stderr)
                else:
                    kept += 1
                    g.write(line if line.endswith("\n") else line + "\n")
        print(f"{t}: {kept} items kept, {dropped} left out", file=sys.stderr)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--tasks", default=",".join(TASKS))
    ap.add_argument("--tasks-dir", default=os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "tasks"))
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--batch-size", default="16")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out")
    ap.add_argument("--filter-to", help="only write the task files without unscorable items to this folder")
    a = ap.parse_args()
    if a.filter_to:
        filter_too_long(a)
        return

    import torch
    torch.set_num_threads(a.threads)
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    tasks_root = os.path.join(os.path.dirname(lm_eval.__file__), "tasks")
    tmp = tempfile.mkdtemp(prefix="lowbit-lm-eval-")
    names = []
    for t in a.tasks.split(","):
        name, yaml_rel = LM_EVAL[t]
        data = os.path.join(tmp, t + ".jsonl")
        with open(os.path.join(a.tasks_dir, t + ".jsonl"), encoding="utf-8") as f, open(data, "w", encoding="utf-8") as g:
            for line in f:
                if line.strip():
                    g.write(json.dumps(to_original(t, json.loads(line)), ensure_ascii=False) + "\n")
        # `include` takes lm-eval's yaml (templates, choices, targets, metrics); the keys
        # below only replace where the docs come from.
        cfg = [f"include: {os.path.join(tasks_root, yaml_rel)}", f"task: lowbit_{name}", "tag: []",
               "dataset_path: json", "dataset_name: null", f"dataset_kwargs:\n  data_files:\n    test: {data}",
               "training_split: null", "validation_split: null", "test_split: test", "fewshot_split: null"]
        with open(os.path.join(tmp, f"lowbit_{name}.yaml"), "w") as g:
            g.write("\n".join(cfg) + "\n")
        names.append((t, f"lowbit_{name}"))

    t0 = time.time()
    lm = HFLM(pretrained=a.model, device="cpu", dtype="float32", batch_size=a.batch_size)
    tm = TaskManager(include_path=tmp, include_defaults=True)
    r = lm_eval.simple_evaluate(model=lm, tasks=[n for _, n in names], task_manager=tm, limit=a.limit,
                                log_samples=True, num_fewshot=0)
    wall = time.time() - t0

    out = {"results": {}, "samples": {}, "seconds": wall, "lm_eval_version": lm_eval.__version__ if hasattr(lm_eval, "__version__") else None,
           "torch": torch.__version__, "threads": a.threads, "batch_size": a.batch_size, "limit": a.limit}
    for ours, name in names:
        res = r["results"][name]
        out["results"][ours] = {k.split(",")[0]: v for k, v in res.items() if "," in k}
        samples = sorted(r["samples"][name], key=lambda s: s["doc_id"])
        out["samples"][ours] = [{"doc_id": s["doc_id"], "loglikelihoods": [float(x[0]) for x in s["filtered_resps"]],
                                 "greedy": [bool(x[1]) for x in s["filtered_resps"]],
                                 "tokens": None} for s in samples]
    with open(a.out, "w") as g:
        json.dump(out, g, indent=1)
    print(json.dumps(out["results"], indent=1))
    print(f"lm-eval wall time {wall:.1f}s", file=sys.stderr)


if __name__ == "__main__":
    main()
