#!/usr/bin/env bash
# Issue 15's memory check on a 7B model: LoRA (r 8, 7 targets) on a random Llama-2-7B-shape checkpoint in bf16,
# langadapt then PyTorch + PEFT on the same card, peak GPU memory (nvidia-smi, sampled every 0.2 s) and step
# times. Run after benches/gpu.sh on the same machine (same binary and libraries):
#
#   benches/gpu-7b.sh --bin PATH [--out DIR] [--seq N] [--micro N] [--steps N]
#
# About 4 minutes on an H200 (making and saving the 13.5 GB model is one of them). Prints one JSON line per run.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin="" out=/tmp/langadapt-gpu-7b seq=2048 micro=2 steps=3 limit=150
while [ $# -gt 0 ]; do
  case "$1" in
    --bin) bin=$2; shift 2 ;; --out) out=$2; shift 2 ;; --seq) seq=$2; shift 2 ;;
    --micro) micro=$2; shift 2 ;; --steps) steps=$2; shift 2 ;;
    *) echo "usage: $0 --bin PATH [--out DIR] [--seq N] [--micro N] [--steps N]" >&2; exit 2 ;;
  esac
done
py=${PYTHON:-python3}
fixture=$root/tests/fixtures/tiny-llama
mkdir -p "$out"
dirs=$("$py" -c 'import glob, os, site; [print(d) for s in site.getsitepackages() for d in glob.glob(os.path.join(s, "nvidia", "*", "lib"))]' | paste -sd:)
export LD_LIBRARY_PATH="${dirs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
log() { echo "[gpu-7b.sh $(date +%H:%M:%S)] $*" >&2; }

# Peak used memory (MiB) of GPU 0 while the command runs, in NAME.peak_mib; output in NAME.json/.log.
measured() {
  local name=$1; shift
  ( peak=0; while sleep 0.2; do
      used=$(nvidia-smi -i 0 --query-gpu=memory.used --format=csv,noheader,nounits | head -1)
      [ "$used" -gt "$peak" ] && { peak=$used; echo "$peak" > "$out/$name.peak_mib"; }
    done ) &
  local sampler=$! rc=0 t0=$SECONDS
  timeout "$limit" "$@" > "$out/$name.json" 2> "$out/$name.log" || rc=$?
  kill "$sampler" 2>/dev/null || true
  log "$name: exit $rc, $((SECONDS - t0)) s, peak $(cat "$out/$name.peak_mib" 2>/dev/null) MiB; $(tail -c 300 "$out/$name.log" | tr '\n' ' ')"
}

if [ ! -f "$out/model/config.json" ]; then
  log "making the random 7B model in $out/model"
  "$py" "$root/benches/gpu/make_7b.py" "$out" > "$out/params.txt"
  cp "$fixture"/tokenizer* "$fixture"/special_tokens_map.json "$out/model/"
fi
"$bin" --quiet shards build --tokenizer "$fixture/tokenizer.json" --source "$out/text.jsonl" \
  --seq-len $((seq + 1)) --val-share 0 --out "$out/shards-$seq" > "$out/shards.log" 2>&1
measured "ours-lora-$seq" "$bin" --quiet train --model "$out/model" --train "$out/shards-$seq/train" \
  --out "$out/train-$seq" --mode lora --lora-r 8 --lora-alpha 16 --lora-dropout 0.05 --dtype bf16 \
  --device cuda:0 --micro-batch "$micro" --max-steps "$steps" --lr 1e-4 --warmup-steps 0 --json
cp "$out/train-$seq/metrics.jsonl" "$out/ours-lora-$seq.metrics.jsonl" 2>/dev/null || true
measured "peft-lora-$seq" "$py" "$root/benches/gpu/peft_7b.py" "$out/model" "$micro" "$seq" "$steps"
for f in "$out"/*-lora-"$seq".json "$out"/ours-lora-"$seq".metrics.jsonl; do echo "== $(basename "$f")"; cat "$f"; done
