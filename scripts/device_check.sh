#!/usr/bin/env bash
# The one prepared GPU run (see README "CUDA backend"). Run from the repository root on the
# GPU machine, with .devpack/ from scripts/device_pack.sh carried along:
#   bash scripts/device_check.sh [STEP...]      steps: env tests golden quarot forward quant (default: all)
# Every step has its own time limit and records its status; one failing step does not stop
# the others. Writes $OUT/summary.md (the table printed at the end), $OUT/log.txt and
# $OUT/results.tgz (each step's log and JSON). Budget: about 6 minutes in all.
set -uo pipefail
ROOT="$(pwd)"
P="$ROOT/.devpack"
OUT="${OUT:-/tmp/lowbit-device-out}"
W="$OUT/work"
mkdir -p "$W"
exec > >(tee -a "$OUT/log.txt") 2>&1
[[ -d "$P/lib" ]] || tar -xJf "$P/lib.tar.xz" -C "$P"
# CUDA 13 libraries of the machine: the toolkit's, or the ones PyTorch's wheels carry; any
# library still missing is searched for. Only lowbit's binaries see this path (through
# wrappers): PyTorch must keep its own libstdc++.
libpath="$P/lib"
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib $(ls -d /opt/torch/.venv/lib/python3*/site-packages/nvidia/*/lib 2>/dev/null); do
  [[ -d "$d" ]] && libpath="$libpath:$d"
done
for lib in $(LD_LIBRARY_PATH="$libpath" ldd "$P/bin/lowbit" "$P/bin/cuda_forward" | awk '/not found/{print $1}' | sort -u); do
  f=$(timeout 30 find / -xdev -name "$lib" 2>/dev/null | head -n 1)
  echo "resolving $lib: ${f:-NOT FOUND}"
  [[ -n "$f" ]] && libpath="$libpath:$(dirname "$f")"
done
mkdir -p "$P/wrap"
for b in "$P"/bin/*; do
  printf '#!/usr/bin/env bash\nLD_LIBRARY_PATH="%s" exec "%s" "$@"\n' "$libpath" "$b" > "$P/wrap/$(basename "$b")"
  chmod +x "$P/wrap/$(basename "$b")"
done
export LOWBIT_SHARED="$P/shared" OMP_NUM_THREADS="${OMP_NUM_THREADS:-16}"
LB="$P/wrap/lowbit"
S="$P/shared"
PY="${PYTHON:-python3}"
steps=("$@")
[[ ${#steps[@]} -eq 0 ]] && steps=(env tests golden quarot forward quant)
SUM="$OUT/summary.md"
echo "| step | check | result |" > "$SUM"
echo "| --- | --- | --- |" >> "$SUM"
row() { echo "| $1 | $2 | $3 |" >> "$SUM"; }
# run NAME LIMIT cmd...: logs to $W/NAME.log; prints and records the exit status and seconds.
run() {
  local name=$1 lim=$2; shift 2
  local t0=$(date +%s%N)
  echo "=== $name: $*"
  timeout "$lim" "$@" > "$W/$name.log" 2>&1
  local rc=$?
  local ms=$(( ($(date +%s%N) - t0) / 1000000 ))
  local dt="$((ms / 1000)).$(printf %03d $((ms % 1000)))"
  tail -n 25 "$W/$name.log"
  echo "=== $name: exit $rc in ${dt}s"
  row "$name" "exit status ($lim s limit)" "$rc in $dt s"
  return $rc
}
json() { "$PY" -c "import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))" "$@"; }

has() { local s; for s in "${steps[@]}"; do [[ $s == "$1" ]] && return 0; done; return 1; }

if has env; then
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv | tee "$W/gpu.csv"
  LD_LIBRARY_PATH="$libpath" ldd "$P/bin/lowbit" | grep -E "not found|cublas|cusolver|openblas" | tee "$W/ldd.txt"
  "$LB" --version
  row env gpu "$(tail -n 1 "$W/gpu.csv")"
fi

if has tests; then
  for t in test_cuda_ops test_cuda_gptq test_cuda_backend; do
    run "$t" 240 "$P/wrap/$t" --gtest_color=no
    row "$t" "tests" "$(grep -E '^\[  PASSED  \] [0-9]+ tests?|^\[  SKIPPED \] [0-9]+ tests?|^\[  FAILED  \] [A-Za-z]' "$W/$t.log" | sed 's/ ([0-9]* ms)//' | sort -u | tr '\n' ' ')"
  done
fi

if has golden; then
  G="$S/golden/stories260K.json"
  ppl() {  # name device data begin seqlen
    run "$1" 120 "$LB" eval ppl --device "$2" --model "$S/models/stories260K" --data "$3" --data-begin "$4" \
      --seqlen "$5" --output-json "$W/$1.json" --quiet
  }
  ppl golden_ts512 cuda "$S/data/text/tinystories_val.txt" 396696 512
  ppl golden_ts256 cuda "$S/data/text/tinystories_val.txt" 396696 256
  ppl golden_wt512 cuda "$S/data/text/wikitext2_test.txt" 0 512
  run golden_generate 60 "$LB" generate --device cuda --model "$S/models/stories260K" --max-new-tokens 80 \
    --output-json "$W/golden_generate.json" --quiet
  [[ -f "$W/golden_generate.json" ]] && row "golden generate" "greedy from BOS, cuda (device KV cache) vs HF golden" \
    "$(json "$W/golden_generate.json" "(lambda g: f\"{sum(a == b for a, b in zip(d['ids'], g))}/{len(g)} tokens equal\")(json.load(open('$G'))['greedy_from_bos_ids'][1:])")"
  for k in ts512:tinystories_eval ts256:tinystories_eval_256 wt512:wikitext2_test; do
    f="$W/golden_${k%%:*}.json"
    [[ -f $f ]] && row "golden ${k%%:*}" "ppl cuda vs HF golden" \
      "$(json "$f" "f\"{d['ppl']:.4f} vs {json.load(open('$G'))['${k#*:}']['ppl']:.4f} ({d['device']}, {d['tokens_per_second']:.0f} tok/s)\"")"
  done
fi

if has quarot; then
  cal=(--recipe quarot-gptq-w4a4kv4 --cal_dataset "$S/data/text/tinystories_val.txt" --cal_end 396694 --nsamples 128
    --cal_seqlen 512 --seed 0)
  for dev in cpu cuda; do
    rm -rf "$W/q_$dev"
    run "quarot_quant_$dev" 240 "$LB" quantize --device "$dev" --model "$S/models/stories260K" --out "$W/q_$dev" \
      "${cal[@]}" --report-json "$W/quarot_report_$dev.json" --quiet
    run "quarot_ppl_$dev" 120 "$LB" eval ppl --device "$dev" --model "$W/q_$dev" --data "$S/data/text/tinystories_val.txt" \
      --data-begin 396696 --seqlen 512 --output-json "$W/quarot_ppl_$dev.json" --quiet
  done
  if [[ -f "$W/quarot_ppl_cpu.json" && -f "$W/quarot_ppl_cuda.json" ]]; then
    a=$(json "$W/quarot_ppl_cpu.json" "d['ppl']")
    b=$(json "$W/quarot_ppl_cuda.json" "d['ppl']")
    row quarot "QuaRot-GPTQ W4A4KV4 stories260K ppl, quantized+evaluated on cpu vs cuda" \
      "$a vs $b ($("$PY" -c "print(f'{100*abs($b-$a)/$a:.3f}')")% apart; quantize $(json "$W/quarot_report_cpu.json" "round(d['seconds'],1)") s vs $(json "$W/quarot_report_cuda.json" "round(d['seconds'],1)") s)"
  fi
fi

if has forward; then
  run forward_lowbit 240 "$P/wrap/cuda_forward" --windows 40 --seqlen 2048 --output-json "$W/forward_lowbit.json"
  run forward_lowbit_flash 240 "$P/wrap/cuda_forward" --windows 40 --seqlen 2048 --flash 1 \
    --output-json "$W/forward_lowbit_flash.json"
  run forward_torch 300 env PYTHONUNBUFFERED=1 "$PY" bench/torch_llama_forward.py --windows 40 --seqlen 2048 \
    --json-out "$W/forward_torch.json"
  if [[ -f "$W/forward_lowbit.json" ]]; then
    row forward "lowbit 7B-shaped bf16, 40x2048" \
      "$(json "$W/forward_lowbit.json" "f\"{d['tokens_per_second']:.0f} tok/s; linears {d['linear_tflops']:.0f} TFLOP/s = {100*d['linear_fraction_of_peak']:.1f}% of measured peak {d['gemm_peak_tflops']:.0f}; peak mem {d['peak_device_bytes']/1e9:.1f} GB\"")"
  fi
  if [[ -f "$W/forward_lowbit_flash.json" ]]; then
    row forward "lowbit, fused flash attention" \
      "$(json "$W/forward_lowbit_flash.json" "f\"{d['tokens_per_second']:.0f} tok/s; linears {100*d['linear_fraction_of_peak']:.1f}% of peak\"")"
  fi
  if [[ -f "$W/forward_torch.json" ]]; then
    row forward "PyTorch eager (SDPA), same shape" "$(json "$W/forward_torch.json" "f\"{d['tokens_per_s']:.0f} tok/s; peak {d['gemm_peak_tflops']:.0f} TFLOP/s\"")"
  fi
fi

if has quant; then
  L="${QUANT_LAYERS:-2}"
  M="$W/synth7b"
  rm -rf "$M"
  run quant_synth 180 "$LB" synth --out "$M" --text "$W/synth7b.txt" --text-bytes 3000000 --hidden 4096 --ffn 11008 \
    --layers "$L" --heads 32 --kv-heads 32 --context 4096 --dtype bf16
  rm -rf "$W/synth7b_q"
  run quant_lowbit 420 "$LB" quantize --device cuda --model "$M" --out "$W/synth7b_q" --recipe quarot-gptq-w4a4kv4 \
    --cal_dataset "$W/synth7b.txt" --nsamples 128 --cal_seqlen 2048 --report-json "$W/quant_report.json"
  [[ "${QUANT_TORCH:-1}" == 1 ]] && run quant_torch 300 env PYTHONUNBUFFERED=1 "$PY" bench/torch_quarot_gptq.py --layers "$L" --nsamples 128 --seqlen 2048 \
    --json-out "$W/quant_torch.json"
  [[ -f "$W/quant_report.json" ]] && row quant "lowbit QuaRot-GPTQ W4A4KV4, $L 7B-shaped layers, 128x2048" \
    "$(json "$W/quant_report.json" "f\"{d['seconds']:.1f} s total; per layer {[round(l['seconds'],1) for l in d['layers']]} s (solves {[round(l['solve_seconds'],1) for l in d['layers']]}); peak device {d.get('peak_device_mb',0)/1024:.1f} GiB; peak RSS {d['peak_rss_mb']/1024:.1f} GiB\"")"
  [[ -f "$W/quant_torch.json" ]] && row quant "PyTorch, same steps" \
    "$(json "$W/quant_torch.json" "f\"{d['total_s']:.1f} s total; per layer {[round(l['layer_s'],1) for l in d['per_layer']]} s; peak {d['peak_mem_bytes']/2**30:.1f} GiB\"")"
fi

rm -rf "$W/q_cpu" "$W/q_cuda" "$W/synth7b" "$W/synth7b_q" "$W/synth7b.txt"
tar -czf "$OUT/results.tgz" -C "$OUT" work
echo
cat "$SUM"
