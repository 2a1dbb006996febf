#!/usr/bin/env bash
# Vision-tower throughput, lowbit vs PyTorch on the same CPU threads (issue 9; see BENCHMARKS.md).
#
#   bash bench/run_vision.sh                 # LOWBIT_THREADS=2 by default
#   bash bench/run_vision.sh --only clip     # extra arguments go to both sides
#
# 1. builds bench_vision (Release) in $LOWBIT_BENCH_BUILD (default build-bench/),
# 2. checks that both sides compute the same function: bench_vision --verify writes small
#    towers (real token counts 577 / 729, 2 layers) with weights, inputs and lowbit's outputs,
#    bench/torch_vision.py --verify recomputes them (normalized error < 1e-5 or the script fails),
# 3. runs bench_vision -> bench/results/lowbit_vision.json, then bench/torch_vision.py with
#    Debian's python3 -> bench/results/torch_vision.json (installs python3-torch with apt-get
#    when it is missing),
# 4. prints the side-by-side table (lowbit images/s ÷ torch images/s), also written to
#    bench/results/vision_table.md.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="${LOWBIT_BENCH_BUILD:-$ROOT/build-bench}"
RESULTS="$ROOT/bench/results"
export LOWBIT_THREADS="${LOWBIT_THREADS:-2}"
export OMP_NUM_THREADS="$LOWBIT_THREADS"
PY=/usr/bin/python3

if ! "$PY" -c "import torch" 2>/dev/null; then
  echo "run_vision.sh: python3-torch missing, installing it with apt-get" >&2
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get install -y --no-install-recommends python3-torch python3-numpy
fi

cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DLOWBIT_BUILD_BENCH=ON >/dev/null
cmake --build "$BUILD" -j"$(nproc)" --target bench_vision

mkdir -p "$RESULTS"
echo "== machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) CPUs; threads: $LOWBIT_THREADS; load: $(cut -d' ' -f1-3 /proc/loadavg)"

echo "== same function? (small towers, real token counts)"
"$BUILD/bench/bench_vision" --verify "$RESULTS/vision_verify.safetensors"
"$PY" "$ROOT/bench/torch_vision.py" --threads "$LOWBIT_THREADS" --verify "$RESULTS/vision_verify.safetensors"

echo "== lowbit (bench_vision)"
"$BUILD/bench/bench_vision" --json "$RESULTS/lowbit_vision.json" "$@"

echo "== PyTorch (torch_vision.py)"
"$PY" "$ROOT/bench/torch_vision.py" --threads "$LOWBIT_THREADS" --json "$RESULTS/torch_vision.json" \
  --lowbit-json "$RESULTS/lowbit_vision.json" --table "$RESULTS/vision_table.md" "$@"
echo "== load after: $(cut -d' ' -f1-3 /proc/loadavg)"
