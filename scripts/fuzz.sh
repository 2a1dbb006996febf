#!/usr/bin/env bash
# Bounded libFuzzer runs (ASan + UBSan) of the parsers of untrusted files:
#   fuzz_safetensors_header  the safetensors header
#   fuzz_config_json         config.json (LlamaConfig)
#   fuzz_tokenizer_json      tokenizer.json (then a short encode/decode)
#   fuzz_checkpoint_meta     lowbit_quant.json of a quantized checkpoint (+ PackedWeight::validate)
# Usage: scripts/fuzz.sh [SECONDS_PER_TARGET=8] [TARGET...]   (default: all four, one after another)
# Inputs up to 1 MB (-max_len=1048576). Seeds: fuzz/corpus/<target>/, plus for config.json and
# tokenizer.json the files of the models under $LOWBIT_SHARED/models (default ../shared), copied
# at run time. Exits non-zero on a crash, a leak, a timeout (>10 s per input), an out-of-memory
# (>2 GB) or any sanitizer report; the input is kept under build-fuzz/artifacts/.
# LOWBIT_FUZZ_LOGS=DIR keeps every target's full libFuzzer log there (DIR/<target>.log).
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-8}"
shift || true
targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || targets=(fuzz_safetensors_header fuzz_config_json fuzz_tokenizer_json fuzz_checkpoint_meta)
if ! command -v clang++ >/dev/null; then echo "fuzz: clang++ not installed (scripts/setup.sh --tests installs it)"; exit 1; fi
CC=clang CXX=clang++ cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=Release -DLOWBIT_BUILD_TESTS=OFF -DLOWBIT_CUDA=OFF \
  -DLOWBIT_BUILD_BENCH=OFF -DLOWBIT_NATIVE=OFF >/dev/null
cmake --build build-fuzz -j"$(nproc)" --target "${targets[@]}" >/dev/null
shared="${LOWBIT_SHARED:-$(pwd)/../shared}"
mkdir -p build-fuzz/artifacts
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failed=0
for t in "${targets[@]}"; do
  corpus="$work/$t"
  mkdir -p "$corpus"
  cp fuzz/corpus/"$t"/* "$corpus"/
  # Real files as extra seeds (not committed): the small models' config.json / tokenizer.json.
  case "$t" in
    fuzz_config_json) pattern=config.json ;;
    fuzz_tokenizer_json) pattern=tokenizer.json ;;
    *) pattern= ;;
  esac
  if [[ -n "$pattern" && -d "$shared/models" ]]; then
    for f in "$shared"/models/*/"$pattern"; do
      [[ -f "$f" && $(stat -c %s "$f") -le 1048576 ]] && cp "$f" "$corpus/shared-$(basename "$(dirname "$f")")"
    done
  fi
  log="$work/$t.log"
  status=0
  ./build-fuzz/fuzz/"$t" "$corpus" -max_total_time="$secs" -max_len=1048576 -timeout=10 -rss_limit_mb=2048 \
    -artifact_prefix=build-fuzz/artifacts/"$t"- -print_final_stats=1 >"$log" 2>&1 || status=$?
  runs=$(grep -oE "^stat::number_of_executed_units: *[0-9]+" "$log" | grep -oE "[0-9]+$" || echo "?")
  if [[ $status -ne 0 ]]; then
    grep -E "==[0-9]+==ERROR|runtime error|SUMMARY|Test unit written|ALARM|out-of-memory|deadly signal" "$log" | head -20
    echo "fuzz: $t FAILED after $runs runs (full log kept in build-fuzz/artifacts/$t.log)"
    cp "$log" build-fuzz/artifacts/"$t".log
    failed=1
  else
    echo "fuzz: $t ${secs}s, $runs runs, no crash"
  fi
  if [[ -n "${LOWBIT_FUZZ_LOGS:-}" ]]; then mkdir -p "$LOWBIT_FUZZ_LOGS" && cp "$log" "$LOWBIT_FUZZ_LOGS/$t.log"; fi
done
exit $failed
