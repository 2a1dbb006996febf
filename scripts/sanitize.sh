#!/usr/bin/env bash
# The test suite under AddressSanitizer + UndefinedBehaviorSanitizer (g++), in build-asan/.
#   bash scripts/sanitize.sh [ctest args...]
# Not part of CI (it roughly doubles the suite's time); see the README for how long it takes.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --tests >/dev/null
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DLOWBIT_BUILD_BENCH=OFF -DLOWBIT_NATIVE=OFF -DLOWBIT_CUDA=OFF \
  -DCMAKE_CXX_FLAGS="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined" \
  -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=address,undefined" >/dev/null
cmake --build build-asan -j"$(nproc)"
export LOWBIT_SHARED="${LOWBIT_SHARED:-$(pwd)/../shared}"
# detect_leaks=0: OpenBLAS/OpenMP keep thread pools alive until exit (not lowbit's leaks).
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1" UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
(cd build-asan && OMP_NUM_THREADS=1 ctest --output-on-failure -j"$(nproc)" --timeout 3000 "$@")
