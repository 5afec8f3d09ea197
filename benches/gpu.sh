#!/usr/bin/env bash
# The one GPU check of issue 15: langadapt's CUDA path against PyTorch on the same card, in one run.
#
#   benches/gpu.sh [--device cuda:0] [--bin PATH] [--out DIR] [--small] [--no-results]
#   benches/gpu.sh --device cpu --small          # the dry run, on any machine with torch + transformers
#
# Needs: the langadapt binary built elsewhere with `--features cuda` (see benches/README.md), Python with
# torch and transformers, and for CUDA the driver plus the CUDA 13 libraries the binary links (libcudart,
# libcublas with libcublasLt, libcurand: a CUDA 13 toolkit, or PyTorch's cu13 wheels). No Rust, no
# network. Measures: per-token log-probabilities of the fixture on the device against the CPU (f32, bf16);
# scoring tokens/s; full and LoRA training tokens/s, MFU and peak GPU memory at seq 2,048 on a random ~1.1B
# LLaMA made here with transformers; the same scoring and training in PyTorch, as ratios. Prints a markdown
# section and writes it between the gpu markers of benches/RESULTS.md (unless --no-results). About 6
# minutes on an H100/H200; every measured command has a time limit so the whole stays under 10 (a training
# run cut short still reports the steps it finished).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
device=cuda:0 bin="" out="" size=1b results=1
while [ $# -gt 0 ]; do
  case "$1" in
    --device) device=$2; shift 2 ;;
    --bin) bin=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --small) size=small; shift ;;
    --no-results) results=0; shift ;;
    *) echo "usage: $0 [--device cuda:0|cpu] [--bin PATH] [--out DIR] [--small] [--no-results]" >&2; exit 2 ;;
  esac
done
py=${PYTHON:-python3}
bin=${bin:-$root/target/release/langadapt}
out=${out:-$(mktemp -d /tmp/langadapt-gpu.XXXXXX)}
mkdir -p "$out"
fixture=$root/tests/fixtures/tiny-llama
# limit: seconds per measured command; 6 of them at most plus ~1 minute of set-up stay under 10 minutes.
if [ "$size" = small ]; then seq=128 micro=2 steps=4 limit=120; else seq=2048 micro=2 steps=8 limit=80; fi
cuda=0 idx=0
case "$device" in cuda*) cuda=1 idx=${device#cuda}; idx=${idx#:}; idx=${idx:-0} ;; esac
log() { echo "[gpu.sh $(date +%H:%M:%S)] $*" >&2; }
failed=()

[ -x "$bin" ] || { echo "$bin: no langadapt binary (build it with --features cuda, see benches/README.md)" >&2; exit 2; }
"$py" -c 'import torch, transformers' || { echo "$py: needs torch and transformers" >&2; exit 2; }
if [ "$cuda" = 1 ]; then
  # The libraries the binary was linked against, from a CUDA 13 toolkit or PyTorch's wheels.
  dirs=$({ ls -d "${CUDA_HOME:-/nonexistent}"/lib64 /usr/local/cuda/lib64 /usr/local/cuda-13*/lib64 2>/dev/null
           "$py" -c 'import glob, os, site; [print(d) for s in site.getsitepackages() for d in glob.glob(os.path.join(s, "nvidia", "*", "lib"))]'
         } | paste -sd:)
  export LD_LIBRARY_PATH="${dirs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  missing=$(ldd "$bin" | grep 'not found' || true)
  if [ -n "$missing" ]; then
    echo "$bin cannot load (install CUDA 13's runtime libraries or set LD_LIBRARY_PATH):" >&2
    echo "$missing" >&2
    exit 2
  fi
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader >&2
fi

# Samples the card's used memory every 0.2 s while a command runs; writes the peak (MiB) to NAME.peak_mib.
run_measured() {
  local name=$1; shift
  local sampler=""
  if [ "$cuda" = 1 ]; then
    ( peak=0; while sleep 0.2; do
        used=$(nvidia-smi -i "$idx" --query-gpu=memory.used --format=csv,noheader,nounits 2>/dev/null | head -1)
        [ -n "$used" ] && [ "$used" -gt "$peak" ] && { peak=$used; echo "$peak" > "$out/$name.peak_mib"; }
      done ) &
    sampler=$!
  fi
  local rc=0
  timeout "$limit" "$@" > "$out/$name.json" 2> "$out/$name.log" || rc=$?
  [ -n "$sampler" ] && kill "$sampler" 2>/dev/null
  if [ "$rc" != 0 ]; then
    log "$name failed (exit $rc; 124 = over ${limit}s): $(tail -2 "$out/$name.log" | tr '\n' ' ')"
    failed+=("$name")
  fi
  return 0
}

log "inputs and the random $size LLaMA in $out"
params=$("$py" "$root/benches/gpu/make_inputs.py" "$out" "$size" "$fixture/config.json" "$seq" 2> "$out/make_inputs.log")
cp "$fixture"/tokenizer* "$fixture"/special_tokens_map.json "$out/model/"
"$bin" --quiet shards build --tokenizer "$fixture/tokenizer.json" --source "$out/text.jsonl" \
  --seq-len $((seq + 1)) --val-share 0 --out "$out/shards" > "$out/shards.log" 2>&1

log "fixture log-probabilities: cpu and $device, f32 and bf16"
for dt in f32 bf16; do
  run_measured "score-cpu-$dt" "$bin" --quiet model score "$fixture" --ids "$out/fixture-ids.jsonl" --batch-size 4 --device cpu --dtype "$dt"
  run_measured "score-dev-$dt" "$bin" --quiet model score "$fixture" --ids "$out/fixture-ids.jsonl" --batch-size 4 --device "$device" --dtype "$dt"
done

log "scoring speed, langadapt then PyTorch"
run_measured score-1b "$bin" --quiet model score "$out/model" --ids "$out/score-ids.jsonl" --batch-size 4 --rounds 3 --no-logprobs --device "$device" --dtype bf16
run_measured score-1b-torch "$py" "$root/benches/gpu/torch_score.py" "$out/model" "$out/score-ids.jsonl" "$device" 4 3

for mode in full lora; do
  log "$mode training, langadapt then PyTorch"
  extra=()
  [ "$mode" = lora ] && extra=(--lora-r 8 --lora-alpha 16 --lora-dropout 0.05)
  run_measured "train-$mode" "$bin" --quiet train --model "$out/model" --train "$out/shards/train" --out "$out/train-$mode" \
    --mode "$mode" "${extra[@]}" --dtype bf16 --device "$device" --micro-batch "$micro" --max-steps "$steps" \
    --lr 1e-5 --warmup-steps 0 --json
  run_measured "torch-$mode" "$py" "$root/benches/gpu/torch_train.py" "$out/model" "$mode" "$device" "$micro" "$seq" "$steps"
done

gpu=cpu driver=n/a peak=""
if [ "$cuda" = 1 ]; then
  IFS=, read -r gpu driver < <(nvidia-smi -i "$idx" --query-gpu=name,driver_version --format=csv,noheader)
  # Dense bf16 tensor-core peaks (no sparsity), by product name; PEAK_TFLOPS overrides.
  case "$gpu" in
    *H100*PCIe*) peak=756e12 ;; *H100*|*H200*|*GH200*) peak=989e12 ;; *A100*) peak=312e12 ;;
    *L40S*) peak=362e12 ;; *B200*) peak=2250e12 ;; *) peak="" ;;
  esac
fi
[ -n "${PEAK_TFLOPS:-}" ] && peak=${PEAK_TFLOPS}e12
"$py" - "$out" <<EOF
import json, subprocess, sys, time, torch
meta = {"gpu": "$gpu".strip(), "driver": "$driver".strip(), "device": "$device", "size": "$size", "params": $params,
        "seq": $seq, "micro": $micro, "steps": $steps, "peak_flops": float("$peak") if "$peak" else None,
        "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"), "failed": "${failed[*]:-}".split(),
        "commit": subprocess.run(["git", "-C", "$root", "rev-parse", "--short", "HEAD"], capture_output=True,
                                 text=True).stdout.strip() or "unknown"}
json.dump(meta, open(sys.argv[1] + "/meta.json", "w"))
EOF
section=$("$py" "$root/benches/gpu/report.py" "$out")
echo "$section"
if [ "$results" = 1 ]; then
  "$py" - "$root/benches/RESULTS.md" "$section" <<'EOF'
import sys
path, section = sys.argv[1], sys.argv[2]
text = open(path).read()
start, end = "<!-- gpu:start -->", "<!-- gpu:end -->"
body = f"{start}\n{section}\n{end}"
if start in text and end in text:
    text = text[:text.index(start)] + body + text[text.index(end) + len(end):]
else:
    text = text.rstrip("\n") + "\n\n## GPU: `benches/gpu.sh` (CUDA against PyTorch)\n\n" + body + "\n"
open(path, "w").write(text)
EOF
  log "wrote the section into benches/RESULTS.md"
fi
log "outputs and logs in $out"
