#!/usr/bin/env bash
# eval vqa throughput on the tiny VLMs (BENCHMARKS.md, "VQA evaluation"): writes a VQAv2-format
# dataset of 24 questions on the two photos of ../shared/data/images (COCO naming) and answers it
# with each tiny model at the task's default answer length (32 new tokens), 2 threads; then the
# LLaVA-1.5-7B-shaped decoder cost: one LLaMA-2-7B-shaped layer at T = 616 (576 image tokens + 40
# text tokens) from bench_forward.
# Usage: bash bench/run_vqa.sh [build dir, default build]   (needs -DLOWBIT_BUILD_BENCH=ON for part 2)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${1:-$ROOT/build}
SHARED=${LOWBIT_SHARED:-$ROOT/../shared}
OUT=$ROOT/bench/results/vqa
THREADS=${LOWBIT_THREADS:-2}
VQA_THREADS=${VQA_THREADS:-"1 2"}  # eval vqa runs at each of these thread counts
rm -rf "$OUT" && mkdir -p "$OUT/images"
cp "$SHARED/data/images/extreme_ironing.jpg" "$OUT/images/COCO_val2014_000000000001.jpg"
cp "$SHARED/data/images/waterview.jpg" "$OUT/images/COCO_val2014_000000000002.jpg"
python3 - "$OUT/questions.json" <<'PY'
import json, sys
qs = ["What is the man doing?", "Is it raining?", "What color is the car?", "How many people are there?",
      "What is in the background?", "Is this a city?"]
questions = [{"question_id": 100 * img + i, "image_id": img, "question": q}
             for img in (1, 2) for i, q in enumerate(qs * 2)]
json.dump({"data_subtype": "val2014", "questions": questions}, open(sys.argv[1], "w"))
PY
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2), load: $(cut -d' ' -f1-3 /proc/loadavg)"
for t in $VQA_THREADS; do for m in tiny-llava-1.5 tiny-llava-next tiny-smolvlm; do
  echo "threads $t:"
  "$BUILD/lowbit" eval vqa --model "$SHARED/models/$m" --task vqav2 --questions "$OUT/questions.json" \
      --images "$OUT/images" --output "$OUT/$m-t$t" --threads "$t" --quiet
  python3 -c "
import json; r=[json.loads(l) for l in open('$OUT/$m-t$t/answers.jsonl')]
print('  $m: mean prompt tokens %.0f, mean new tokens %.1f, mean seconds/answer %.4f' % (
  sum(x['prompt_tokens'] for x in r)/len(r), sum(x['new_tokens'] for x in r)/len(r), sum(x['seconds'] for x in r)/len(r)))"
done; done
if [ -x "$BUILD/bench/bench_forward" ]; then
  echo "load: $(cut -d' ' -f1-3 /proc/loadavg)"
  LOWBIT_THREADS=$THREADS OMP_NUM_THREADS=$THREADS LOWBIT_SHARED=$SHARED \
      "$BUILD/bench/bench_forward" --benchmark_filter='BM_Llama7BLayer/(512|616)' | tee "$OUT/llama7b_layer.txt"
  echo "load: $(cut -d' ' -f1-3 /proc/loadavg)"
fi
