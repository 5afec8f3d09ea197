#!/usr/bin/env bash
# Issue 21's training comparison on one model: `langadapt train` in full and LoRA mode (r 8, 7 targets) beside
# PyTorch (+ PEFT) with the same model, AdamW and batch, in interleaved rounds: peak RSS and the median
# tokens/s of steps 2.. for each. Prints markdown rows for benches/RESULTS.md.
#
#   PYTHON=/path/to/python benches/train_memory/speed.sh [SIZE] [MICRO] [SEQ] [STEPS] [ROUNDS]
#   (defaults: 135m 4 256 5 2; SIZE as benches/train_memory/make.py)
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
py=${PYTHON:-python3}
bin=${BIN:-$root/target/release/langadapt}
work=${WORK:-$root/target/bench-data/train-memory}
size=${1:-135m} micro=${2:-4} seq=${3:-256} steps=${4:-5} rounds=${5:-2}
threads=${THREADS:-2}
fixture=$root/tests/fixtures/tiny-llama
mkdir -p "$work"
if [ ! -d "$work/shards-$seq/train" ]; then
  for _ in 1 2 3 4 5 6 7 8; do cat "$root/datasets/samples/tr-text.txt"; done > "$work/text.txt"
  "$bin" --quiet shards build --tokenizer "$fixture/tokenizer.json" --source "$work/text.txt" \
    --seq-len $((seq + 1)) --val-share 0 --out "$work/shards-$seq" > /dev/null
fi
model=$work/model-$size
[ -f "$model/config.json" ] || "$py" "$root/benches/train_memory/make.py" "$model" "$size" "$fixture" > "$work/params-$size"
export RAYON_NUM_THREADS=$threads OMP_NUM_THREADS=$threads
echo "| round | mode | langadapt peak RSS | PyTorch peak RSS | RSS ratio | langadapt tokens/s | PyTorch tokens/s | speed ratio |"
echo "|--:|---|--:|--:|--:|--:|--:|--:|"
for round in $(seq 1 "$rounds"); do
  for mode in full lora; do
    extra=()
    [ "$mode" = lora ] && extra=(--lora-r 8 --lora-alpha 16 --lora-dropout 0.05)
    rm -rf "$work/run"
    /usr/bin/time -f "%M" -o "$work/time-ours" "$bin" --quiet --threads "$threads" train --model "$model" \
      --train "$work/shards-$seq/train" --out "$work/run" --mode "$mode" "${extra[@]}" --micro-batch "$micro" \
      --max-steps "$steps" --lr 1e-4 > /dev/null
    /usr/bin/time -f "%M" -o "$work/time-peer" "$py" "$root/benches/train_memory/peer.py" "$model" "$mode" \
      "$micro" "$seq" "$steps" --per-step > "$work/peer-out"
    "$py" - "$round" "$mode" "$work" <<'PY'
import json, statistics, sys
rnd, mode, work = sys.argv[1:4]
ours_rss = int(open(f"{work}/time-ours").read().split()[-1]) / 1e6
peer_rss = int(open(f"{work}/time-peer").read().split()[-1]) / 1e6
ours = [json.loads(l)["tokens_per_s"] for l in open(f"{work}/run/metrics.jsonl") if "tokens_per_s" in l]
peer = [float(x) for x in open(f"{work}/peer-out").read().split("per-step:")[1].split()]
o, p = statistics.median(ours[1:]), statistics.median(peer[1:])
print(f"| {rnd} | {mode} | {ours_rss:.2f} GB | {peer_rss:.2f} GB | {ours_rss / peer_rss:.2f} | {o:.0f} | {p:.0f} | {o / p:.2f} |")
PY
  done
done
