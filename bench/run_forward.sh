#!/usr/bin/env bash
# Forward throughput, lowbit vs PyTorch on the same CPU threads (see BENCHMARKS.md).
#
#   bash bench/run_forward.sh            # LOWBIT_THREADS=2 by default
#   LOWBIT_THREADS=1 bash bench/run_forward.sh
#
# 1. builds bench_forward (Release) in $LOWBIT_BENCH_BUILD (default build-bench/),
# 2. runs it -> bench/results/lowbit_forward.json (Google Benchmark JSON),
# 3. runs bench/torch_forward.py with Debian's python3 -> bench/results/torch_forward.json
#    (installs python3-torch with apt-get when it is missing),
# 4. prints the side-by-side table (lowbit tokens/s ÷ torch tokens/s), also written to
#    bench/results/forward_table.md.
# Shared assets come from $LOWBIT_SHARED (default ../shared next to the repository).
# Extra arguments go to bench_forward (e.g. --benchmark_filter=Stories).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="${LOWBIT_BENCH_BUILD:-$ROOT/build-bench}"
RESULTS="$ROOT/bench/results"
export LOWBIT_THREADS="${LOWBIT_THREADS:-2}"
export LOWBIT_SHARED="${LOWBIT_SHARED:-$ROOT/../shared}"
PY=/usr/bin/python3

if ! "$PY" -c "import torch" 2>/dev/null; then
  echo "run_forward.sh: python3-torch missing, installing it with apt-get" >&2
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get install -y --no-install-recommends python3-torch python3-numpy
fi

cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DLOWBIT_BUILD_BENCH=ON -DLOWBIT_BUILD_TESTS=OFF >/dev/null
cmake --build "$BUILD" -j"$(nproc)" --target bench_forward

mkdir -p "$RESULTS"
echo "== machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) CPUs; threads: $LOWBIT_THREADS; load: $(cut -d' ' -f1-3 /proc/loadavg)"

echo "== lowbit (bench_forward)"
"$BUILD/bench/bench_forward" --benchmark_out="$RESULTS/lowbit_forward.json" --benchmark_out_format=json "$@"

echo "== PyTorch (torch_forward.py)"
"$PY" "$ROOT/bench/torch_forward.py" --threads "$LOWBIT_THREADS" --shared "$LOWBIT_SHARED" \
  --output-json "$RESULTS/torch_forward.json"

echo "== side by side (medians)"
"$PY" "$ROOT/bench/compare_forward.py" "$RESULTS/lowbit_forward.json" "$RESULTS/torch_forward.json" \
  --output "$RESULTS/forward_table.md"
