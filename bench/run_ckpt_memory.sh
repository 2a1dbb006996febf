#!/usr/bin/env bash
# Peak memory of loading and evaluating a LLaMA-2-7B-shaped W4 checkpoint (issue 7).
#
#   bash bench/run_ckpt_memory.sh [LAYERS...]      (default: 2 4)
#
# For each layer count L: a synthetic f16 model with LLaMA-2-7B's layer shapes
# (hidden 4096, FFN 11008, 32 heads, context 4096; byte vocabulary, so embedding
# and lm_head are negligible) -> `lowbit quantize --recipe rtn-w4a16` -> peak RSS of
# `lowbit eval ppl` (one 2048-token window) on the W4 checkpoint and on the f16
# model, from /usr/bin/time. Peak RSS grows linearly in L; the per-layer slope and
# the intercept extrapolate to 32 layers (plus LLaMA-2-7B's 32000-token embedding
# and lm_head, added by arithmetic in BENCHMARKS.md).
# Set LOWBIT_OLD=/path/to/old/lowbit to measure another build side by side (it quantizes
# and loads its own checkpoint).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LB="${LOWBIT:-$ROOT/build/lowbit}"
WORK="${LOWBIT_BENCH_DIR:-/tmp/lowbit_ckpt_memory}"
LAYERS=("$@"); [ ${#LAYERS[@]} -eq 0 ] && LAYERS=(2 4)
mkdir -p "$WORK"
text="$WORK/text.txt"
peak() {  # peak RSS in MB of a command
  /usr/bin/time -f "%M" -o "$WORK/time.txt" "$@" > "$WORK/out.txt" 2>&1 || { cat "$WORK/out.txt"; exit 1; }
  echo $(( $(cat "$WORK/time.txt") / 1024 ))
}
printf "%-7s %12s %12s %14s %14s" layers f16_MB w4_MB "eval_f16_MB" "eval_w4_MB"
[ -n "${LOWBIT_OLD:-}" ] && printf " %14s" "eval_w4_old_MB"
echo
for L in "${LAYERS[@]}"; do
  m="$WORK/f16_L$L" q="$WORK/w4_L$L"
  [ -f "$m/model.safetensors" ] || "$LB" synth --out "$m" --hidden 4096 --ffn 11008 --layers "$L" --heads 32 \
      --kv-heads 32 --context 4096 --dtype f16 --text "$text" --text-bytes 40000 > /dev/null
  rm -rf "$q"
  "$LB" quantize --model "$m" --out "$q" --recipe rtn-w4a16 --quiet > /dev/null
  f16=$(du -m "$m/model.safetensors" | cut -f1) w4=$(du -m "$q/model.safetensors" | cut -f1)
  ev=(eval ppl --data "$text" --seqlen 2048 --max-windows 1 --quiet)
  e16=$(peak "$LB" "${ev[@]}" --model "$m")
  e4=$(peak "$LB" "${ev[@]}" --model "$q")
  printf "%-7s %12s %12s %14s %14s" "$L" "$f16" "$w4" "$e16" "$e4"
  if [ -n "${LOWBIT_OLD:-}" ]; then  # the other build writes and reads its own checkpoint
    rm -rf "$q.old"
    "$LOWBIT_OLD" quantize --model "$m" --out "$q.old" --recipe rtn-w4a16 --quiet > /dev/null
    printf " %14s" "$(peak "$LOWBIT_OLD" "${ev[@]}" --model "$q.old")"
  fi
  echo
done
