#!/usr/bin/env bash
# GPTQ of one LLaMA-2-7B-shaped layer, lowbit vs PyTorch on the same CPU threads
# (see BENCHMARKS.md). Each side prints seconds for the layer split into GPTQ solves
# and forwards + Hessians, and extrapolates to 128 x 2048 calibration tokens.
#
#   bash bench/run_gptq_layer.sh [NSAMPLES=4] [SEQLEN=2048]
#
# The full 128 x 2048 run takes 30-35 minutes per side on 2 cores; 4 2048 predicts it
# within ~8 % (smaller runs extrapolate poorly: fixed per-layer costs dominate them).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="${LOWBIT_BENCH_BUILD:-$ROOT/build-bench}"
RESULTS="$ROOT/bench/results"
N="${1:-4}" T="${2:-2048}" THREADS="${LOWBIT_THREADS:-2}"
PY=/usr/bin/python3
if ! "$PY" -c "import torch" 2>/dev/null; then
  SUDO=""; [ "$(id -u)" != 0 ] && SUDO="sudo"
  $SUDO apt-get install -y --no-install-recommends python3-torch python3-numpy
fi
cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DLOWBIT_BUILD_BENCH=ON -DLOWBIT_BUILD_TESTS=OFF >/dev/null
cmake --build "$BUILD" -j"$(nproc)" --target gptq_layer
mkdir -p "$RESULTS"
echo "== machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) CPUs; threads: $THREADS"
echo "== lowbit"
"$BUILD/bench/gptq_layer" --nsamples "$N" --seqlen "$T" --threads "$THREADS" --output-json "$RESULTS/gptq_layer_lowbit.json"
echo "== PyTorch"
"$PY" "$ROOT/bench/torch_gptq_layer.py" --nsamples "$N" --seqlen "$T" --threads "$THREADS" \
  --output-json "$RESULTS/gptq_layer_torch.json" >/dev/null
"$PY" - "$RESULTS/gptq_layer_lowbit.json" "$RESULTS/gptq_layer_torch.json" <<'PYEOF'
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
print(f"{'':28s}{'lowbit':>10s}{'torch':>10s}{'torch/lowbit':>14s}")
for k, label in [("total_s", "layer total s"), ("solve_s", "GPTQ solves s"), ("stats_s", "forwards + H s"),
                 ("extrapolated_total_s_128x2048", "extrapolated 128x2048 s")]:
    print(f"{label:28s}{a[k]:10.1f}{b[k]:10.1f}{b[k] / a[k]:14.2f}")
PYEOF
