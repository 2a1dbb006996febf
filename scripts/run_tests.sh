#!/usr/bin/env bash
# Sets up, builds and runs the whole test suite (ctest), then a bounded fuzz run
# of the untrusted-file parsers (scripts/fuzz.sh). Tests that need ../shared skip without it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --tests
export LOWBIT_SHARED="${LOWBIT_SHARED:-$(pwd)/../shared}"
# One thread per test process, tests in parallel: OpenMP threads spin while they wait,
# so N processes x N threads on N cores crawl.
(cd build && OMP_NUM_THREADS=1 ctest --output-on-failure -j"$(nproc)" --timeout 1500)
# Seconds per fuzz target (four targets: about 32 s in all, plus the build).
bash scripts/fuzz.sh "${LOWBIT_FUZZ_SECONDS:-8}"
