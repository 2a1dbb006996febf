#!/usr/bin/env bash
# Bounded libFuzzer run of the safetensors header parser (ASan + UBSan).
# Usage: scripts/fuzz.sh [SECONDS=60]. Exits non-zero on a crash.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-60}"
if ! command -v clang++ >/dev/null; then echo "fuzz: clang++ not installed (scripts/setup.sh --tests installs it)"; exit 1; fi
CC=clang CXX=clang++ cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=Release -DLOWBIT_BUILD_TESTS=OFF \
  -DLOWBIT_BUILD_BENCH=OFF -DLOWBIT_NATIVE=OFF >/dev/null
cmake --build build-fuzz -j"$(nproc)" --target fuzz_safetensors_header >/dev/null
corpus=$(mktemp -d)
cp fuzz/corpus/* "$corpus"/
./build-fuzz/fuzz/fuzz_safetensors_header "$corpus" -max_total_time="$secs" -max_len=4096 -timeout=10 \
  -print_final_stats=1 2>&1 | grep -E "^(#[0-9]+.*DONE|Done|stat::number_of_executed_units|==[0-9]+==ERROR|SUMMARY)" || true
status=${PIPESTATUS[0]}
rm -rf "$corpus"
if [[ $status -ne 0 ]]; then echo "fuzz: FAILED (crash found, see above)"; exit 1; fi
echo "fuzz: ${secs}s without a crash"
