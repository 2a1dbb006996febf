#!/usr/bin/env bash
# The main job: set up, build, then evaluate a model end to end.
# Usage: scripts/run_main.sh [MODEL_DIR]
# With no argument it uses ../shared/models/stories260K when present; otherwise it
# writes a small deterministic synthetic model and text whose numbers mean nothing.
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
elif [[ -z "$model" ]]; then
  echo "=== ../shared not found: using a SYNTHETIC random model; its numbers mean nothing ==="
  model="$out/synthetic-model"
  data="$out/synthetic-text.txt"
  "$lb" synth --out "$model" --text "$data" --layers 2 --hidden 64 --ffn 172 --context 512
  range=()
  seqlen=256
else
  data="${LOWBIT_DATA:-$shared/data/text/wikitext2_test.txt}"
  range=()
  seqlen="${LOWBIT_SEQLEN:-2048}"
fi

echo "=== inspect $model ==="
"$lb" inspect "$model" --output-json "$out/inspect.json"
echo "=== perplexity (seqlen $seqlen) ==="
"$lb" eval ppl --model "$model" --data "$data" "${range[@]}" --seqlen "$seqlen" --output-json "$out/ppl.json"
echo "=== greedy generation from BOS ==="
"$lb" generate --model "$model" --prompt "" --max-new-tokens 80 --output-json "$out/generate.json"
echo "results in $out/"
