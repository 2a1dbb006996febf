#!/usr/bin/env bash
# Builds lowbit with the CUDA backend for the GPU machine and packs what
# scripts/device_check.sh needs into .devpack/ (ignored by git; the device tool carries it):
#   bin/   lowbit, the CUDA test binaries, the cuda_forward benchmark
#   lib.tar.xz  the shared libraries they link (OpenBLAS, LAPACKE, sentencepiece, fmt, gfortran,
#               ...; not the CUDA libraries: the GPU machine has its own CUDA 13)
#   shared/ the test assets the checks read (a subset of ../shared)
# Portable build: -march=x86-64-v3 instead of -march=native (the GPU machine's CPU differs).
#   bash scripts/device_pack.sh
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
B="${LOWBIT_DEV_BUILD:-$ROOT/build-dev}"
P="$ROOT/.devpack"
S="${LOWBIT_SHARED:-$ROOT/../shared}"
EXCLUDE="$(git -C "$ROOT" rev-parse --git-common-dir)/info/exclude"
grep -qx '/.devpack/' "$EXCLUDE" 2>/dev/null || echo '/.devpack/' >> "$EXCLUDE"
cmake -S "$ROOT" -B "$B" -DCMAKE_BUILD_TYPE=Release -DLOWBIT_NATIVE=OFF -DLOWBIT_CUDA=ON \
  -DLOWBIT_BUILD_TESTS=ON -DLOWBIT_BUILD_BENCH=ON >/dev/null
targets=(lowbit test_cuda_ops test_cuda_gptq test_cuda_backend cuda_forward)
cmake --build "$B" -j"$(nproc)" --target "${targets[@]}"
rm -rf "$P"
mkdir -p "$P/bin" "$P/lib"
cp "$B/lowbit" "$B/test_cuda_ops" "$B/test_cuda_gptq" "$B/test_cuda_backend" "$B/bench/cuda_forward" "$P/bin/"
# Every non-system, non-CUDA library the binaries load, under its soname.
for f in "$P"/bin/*; do ldd "$f"; done | awk '/=> \//{print $1, $3}' | sort -u |
  grep -Ev '^(libc|libm|libdl|librt|libpthread|ld-linux|libcuda|libcublas|libcublasLt|libcusolver|libcusparse|libnvJitLink|libcudart)\.' |
  while read -r soname path; do cp -L "$path" "$P/lib/$soname"; done
tar -cJf "$P/lib.tar.xz" -C "$P" lib && rm -rf "$P/lib"
for rel in models/stories260K models/tiny-llama3 golden/stories260K.json golden/stories260K_forward.safetensors \
  golden/tiny-llama3_forward.safetensors data/text/tinystories_val.txt data/text/wikitext2_test.txt; do
  mkdir -p "$P/shared/$(dirname "$rel")"
  cp -r "$S/$rel" "$P/shared/$rel"
done
du -sh "$P"
