#!/usr/bin/env bash
# The main job: set up, build, then evaluate a model end to end.
# Usage: scripts/run_main.sh [MODEL_DIR]
# With no argument it uses ../shared/models/stories260K when present; otherwise it
# writes a small deterministic synthetic model and text whose numbers mean nothing.
# Steps: inspect, FP perplexity, greedy generation, then quantization
# ($LOWBIT_RECIPE, default quarot-gptq-w4a4kv4) to a checkpoint, its perplexity
# and generation, and a one-line FP vs quantized summary.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
lb=./build/lowbit
shared="${LOWBIT_SHARED:-$(pwd)/../shared}"
out=out/main
mkdir -p "$out"

model="${1:-}"
if [[ -z "$model" && -d "$shared/models/stories260K" ]]; then
  model="$shared/models/stories260K"
  data="$shared/data/text/tinystories_val.txt"
  range=(--data-begin 396696)   # the TinyStories eval half (see ../shared/README.md)
  seqlen=512
  cal=(--cal_dataset "$data" --cal_end 396694 --nsamples 128 --cal_seqlen 512)  # the calibration half
elif [[ -z "$model" ]]; then
  echo "=== ../shared not found: using a SYNTHETIC random model; its numbers mean nothing ==="
  model="$out/synthetic-model"
  data="$out/synthetic-text.txt"
  "$lb" synth --out "$model" --text "$data" --layers 2 --hidden 64 --ffn 172 --context 512
  range=()
  seqlen=256
  cal=(--cal_dataset "$data" --nsamples 8 --cal_seqlen 256)
else
  data="${LOWBIT_DATA:-$shared/data/text/wikitext2_test.txt}"
  range=()
  seqlen="${LOWBIT_SEQLEN:-2048}"
  cal=(--cal_dataset "${LOWBIT_CAL_DATA:-$shared/data/text/ptb.valid.txt}" --nsamples "${LOWBIT_NSAMPLES:-128}")
fi
recipe="${LOWBIT_RECIPE:-quarot-gptq-w4a4kv4}"

echo "=== inspect $model ==="
"$lb" inspect "$model" --output-json "$out/inspect.json"
echo "=== perplexity (seqlen $seqlen) ==="
"$lb" eval ppl --model "$model" --data "$data" "${range[@]}" --seqlen "$seqlen" --output-json "$out/ppl.json"
echo "=== greedy generation from BOS ==="
"$lb" generate --model "$model" --prompt "" --max-new-tokens 80 --output-json "$out/generate.json"
echo "=== quantize ($recipe) ==="
rm -rf "$out/quantized"
"$lb" quantize --model "$model" --out "$out/quantized" --recipe "$recipe" "${cal[@]}" --report-json "$out/quant_report.json"
echo "=== perplexity of the quantized checkpoint ==="
"$lb" eval ppl --model "$out/quantized" --data "$data" "${range[@]}" --seqlen "$seqlen" --output-json "$out/ppl_quantized.json"
echo "=== greedy generation from the quantized checkpoint ==="
"$lb" generate --model "$out/quantized" --prompt "" --max-new-tokens 80 --output-json "$out/generate_quantized.json"
fp=$(sed -n 's/^ *"ppl": \([0-9.e+-]*\).*/\1/p' "$out/ppl.json" | head -1)
qp=$(sed -n 's/^ *"ppl": \([0-9.e+-]*\).*/\1/p' "$out/ppl_quantized.json" | head -1)
echo "=== summary: perplexity FP $fp -> $recipe $qp (seqlen $seqlen) ==="
echo "results in $out/ (quantized checkpoint in $out/quantized)"
