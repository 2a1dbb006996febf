#!/usr/bin/env bash
# Zero-shot tasks: `lowbit eval zeroshot` next to lm-evaluation-harness itself (issue 11;
# see BENCHMARKS.md).
#
#   bash bench/run_zeroshot_lm_eval.sh                       # stories260K, all 7 tasks, every item
#   LIMIT=200 bash bench/run_zeroshot_lm_eval.sh             # the first 200 items of each task, both tools
#   MODEL=DIR TAG=name bash bench/run_zeroshot_lm_eval.sh    # another HF model directory
#   QUANT="--w_bits 4 --w_rtn" bash bench/run_zeroshot_lm_eval.sh
#        # quantized: lowbit scores the in-memory quantized model, `lowbit export --format
#        # hf-dequantized` writes the same weights as a plain HF checkpoint, lm-eval scores that
#
# 1. a venv in $LOWBIT_BENCH_VENV (default build-bench-venv/, not committed) with lm-eval,
#    torch, transformers and accelerate from PyPI (only here, never in the test path),
# 2. builds lowbit (Release) in $LOWBIT_BENCH_BUILD (default build-bench/),
# 3. lowbit eval zeroshot --log-samples and bench/lm_eval_zeroshot.py (lm-eval's own task
#    yamls on our jsonl docs) on $THREADS threads, each timed end to end (load included),
# 4. bench/compare_zeroshot.py: per task acc / acc_norm of both, items whose pick differs
#    and how many of those are float ties -> bench/results/zeroshot_<tag>.md.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SHARED="${LOWBIT_SHARED:-$ROOT/../shared}"
BUILD="${LOWBIT_BENCH_BUILD:-$ROOT/build-bench}"
VENV="${LOWBIT_BENCH_VENV:-$ROOT/build-bench-venv}"
RESULTS="$ROOT/bench/results"
MODEL="${MODEL:-$SHARED/models/stories260K}"
TASKS="${TASKS:-arc_easy,arc_challenge,piqa,openbookqa,siqa,winogrande,lambada_openai}"
THREADS="${THREADS:-2}"
LIMIT="${LIMIT:-}"
QUANT="${QUANT:-}"
TAG="${TAG:-$(basename "$MODEL")${QUANT:+-q}${LIMIT:+-limit$LIMIT}}"
LOWBIT="${LOWBIT_BIN:-$BUILD/lowbit}"
export OMP_NUM_THREADS="$THREADS"

if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c "import lm_eval, torch, transformers, accelerate" 2>/dev/null; then
  echo "== creating $VENV (lm-eval, torch, transformers, accelerate from PyPI)" >&2
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip
  "$VENV/bin/pip" install -q lm-eval torch transformers accelerate
fi
if [ -z "${LOWBIT_BIN:-}" ]; then
  cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DLOWBIT_CUDA=OFF >/dev/null
  cmake --build "$BUILD" -j"$(nproc)" --target lowbit
fi
mkdir -p "$RESULTS"
limit_flag=()
[ -n "$LIMIT" ] && limit_flag=(--limit "$LIMIT")
echo "== machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc --all) CPUs; threads: $THREADS; load: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "== lm-eval $("$VENV/bin/pip" show lm-eval | sed -n 's/^Version: //p'), torch $("$VENV/bin/python" -c 'import torch; print(torch.__version__)'), transformers $("$VENV/bin/python" -c 'import transformers; print(transformers.__version__)')"

LM_MODEL="$MODEL"
if [ -n "$QUANT" ]; then
  LM_MODEL="$BUILD/zeroshot-export-$TAG"
  echo "== lowbit export --format hf-dequantized $QUANT -> $LM_MODEL"
  rm -rf "$LM_MODEL"
  # shellcheck disable=SC2086
  "$LOWBIT" export --model "$MODEL" $QUANT --out "$LM_MODEL" --format hf-dequantized --quiet
fi

# Items lm-eval cannot score on this model (a continuation longer than the context window)
# are left out for both tools; the counts are printed.
TASKS_DIR="$BUILD/zeroshot-tasks-$TAG"
echo "== task files without unscorable items -> $TASKS_DIR"
"$VENV/bin/python" "$ROOT/bench/lm_eval_zeroshot.py" --model "$MODEL" --tasks "$TASKS" \
  --tasks-dir "$SHARED/data/tasks" --filter-to "$TASKS_DIR"

echo "== lowbit eval zeroshot"
t0=$(date +%s.%N)
# shellcheck disable=SC2086
"$LOWBIT" eval zeroshot --model "$MODEL" $QUANT --tasks "$TASKS" --tasks-dir "$TASKS_DIR" \
  "${limit_flag[@]}" --threads "$THREADS" --log-samples --output-json "$RESULTS/zeroshot_lowbit_$TAG.json"
t1=$(date +%s.%N)
python3 - "$RESULTS/zeroshot_lowbit_$TAG.json" "$t0" "$t1" <<'EOF'
import json, sys
p = sys.argv[1]; j = json.load(open(p)); j["wall_seconds"] = float(sys.argv[3]) - float(sys.argv[2])
json.dump(j, open(p, "w"), indent=1)
EOF

echo "== lm-eval (HFLM, CPU, float32) on $LM_MODEL"
"$VENV/bin/python" "$ROOT/bench/lm_eval_zeroshot.py" --model "$LM_MODEL" --tasks "$TASKS" \
  --tasks-dir "$TASKS_DIR" ${LIMIT:+--limit "$LIMIT"} --threads "$THREADS" \
  --out "$RESULTS/zeroshot_lm_eval_$TAG.json" >/dev/null

echo "== side by side"
python3 "$ROOT/bench/compare_zeroshot.py" "$RESULTS/zeroshot_lowbit_$TAG.json" "$RESULTS/zeroshot_lm_eval_$TAG.json" \
  --tasks-dir "$TASKS_DIR" --md "$RESULTS/zeroshot_$TAG.md"
