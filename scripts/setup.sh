#!/usr/bin/env bash
# Installs what a fresh Debian 12 machine lacks (apt-get) and builds lowbit (Release) in ./build.
# Usage: scripts/setup.sh [--tests]   (--tests also installs clang for the fuzz target)
set -euo pipefail
cd "$(dirname "$0")/.."

pkgs=(build-essential cmake pkg-config libopenblas-openmp-dev liblapacke-dev nlohmann-json3-dev libcli11-dev
      libgtest-dev libgmock-dev libbenchmark-dev libsentencepiece-dev libfmt-dev
      libjpeg62-turbo-dev libpng-dev)  # image decoding: libjpeg-turbo is the decoder PIL uses
if [[ "${1:-}" == "--tests" ]]; then pkgs+=(clang libclang-rt-14-dev libomp-dev); fi

missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if (( ${#missing[@]} )); then
  sudo=""; [[ $(id -u) -ne 0 ]] && sudo="sudo"
  echo "setup: installing ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)"
