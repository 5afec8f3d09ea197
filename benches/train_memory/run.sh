#!/usr/bin/env bash
# Issue 15's memory table: peak RSS per parameter of `langadapt train` in full, lora (r 8, 7 targets) and
# embed-align mode on random LLaMAs of three sizes, each beside PyTorch (+ PEFT for LoRA) with the same model,
# optimizer and batch in the same run, on the CPU in f32. Prints a markdown table for benches/RESULTS.md.
#
#   PYTHON=/path/to/python benches/train_memory/run.sh [SIZES...]     # default: 60m 250m 1b
#
# Needs a release build (cargo build --release), Python with torch, transformers and peft. Micro-batch 1 × 256
# tokens and 2 steps, so the table shows what each mode keeps per parameter, not activations.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
py=${PYTHON:-python3}
bin=${BIN:-$root/target/release/langadapt}
work=${WORK:-$root/target/bench-data/train-memory}
sizes=("${@:-60m 250m 1b}")
[ $# -eq 0 ] && sizes=(60m 250m 1b)
fixture=$root/tests/fixtures/tiny-llama
mkdir -p "$work"
peak() { /usr/bin/time -f "%M %e" -o "$work/time" "$@" > "$work/out" 2> "$work/err" || { tail -3 "$work/err" >&2; echo "- -"; return; }; cat "$work/time"; }
if [ ! -d "$work/shards/train" ]; then
  for _ in 1 2 3 4 5 6 7 8; do cat "$root/datasets/samples/tr-text.txt"; done > "$work/text.txt"
  "$bin" --quiet shards build --tokenizer "$fixture/tokenizer.json" --source "$work/text.txt" --seq-len 257 \
    --val-share 0 --out "$work/shards" > /dev/null
fi
echo "| model | parameters | mode | langadapt peak RSS | bytes / parameter | PyTorch peak RSS | bytes / parameter | ratio |"
echo "|---|--:|---|--:|--:|--:|--:|--:|"
for size in "${sizes[@]}"; do
  model=$work/model-$size
  [ -f "$model/config.json" ] || "$py" "$root/benches/train_memory/make.py" "$model" "$size" "$fixture" > "$work/params-$size"
  params=$(cat "$work/params-$size")
  for mode in full lora embed-align; do
    extra=()
    [ "$mode" = lora ] && extra=(--lora-r 8 --lora-alpha 16 --lora-dropout 0.05)
    rm -rf "$work/run"
    read -r ours ours_s < <(peak "$bin" --quiet train --model "$model" --train "$work/shards/train" --out "$work/run" \
      --mode "$mode" "${extra[@]}" --micro-batch 1 --max-steps 2 --lr 1e-4)
    read -r peer peer_s < <(peak "$py" "$root/benches/train_memory/peer.py" "$model" "$mode" 1 256 2)
    "$py" - "$size" "$params" "$mode" "$ours" "$peer" <<'PY'
import sys
size, params, mode, ours, peer = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
gb = lambda kb: f"{int(kb) / 1e6:.2f} GB" if kb != "-" else "failed"
per = lambda kb: f"{int(kb) * 1e3 / params:.1f}" if kb != "-" else "-"
ratio = f"{int(ours) / int(peer):.2f}" if "-" not in (ours, peer) else "-"
print(f"| {size} | {params / 1e6:.0f}M | {mode} | {gb(ours)} | {per(ours)} | {gb(peer)} | {per(peer)} | {ratio} |")
PY
  done
done
