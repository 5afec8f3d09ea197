#!/usr/bin/env bash
# Issue 18: greedy generation throughput (new tokens/s) and peak RSS of the harness's `generate_until`
# (`langadapt eval run`, local candle backend, f32 on the CPU) against transformers' `model.generate`, same
# random LLaMA, prompts, batch sizes, new-token count and threads, interleaved in one run. Prints markdown.
#
#   PYTHON=/path/to/python benches/generate/run.sh [SHAPES...]      # default: 58m smollm2
#
# Env: BIN (langadapt binary; default target/release/langadapt), WORK (scratch; default
# target/bench-data/generate), FLORES (FLORES-200 root with devtest/{eng_Latn,est_Latn}.devtest; default
# /tmp/flores; without it, generated English sentences are used), PROMPTS (16), NEW (64), BATCHES (1,8),
# THREADS (2), REPEATS (rounds; default 3 for 58m and 1 for smollm2, about 10 minutes in all on 2 cores).
# Needs Python with torch and transformers. Models: tiny-llama fixture's tokenizer (vocabulary 1000), random
# weights with the special tokens' LM-head rows zeroed (make.py), so no row ever stops early; the task
# (evals/genbench.toml) is FLORES's zero-shot prompt with a stop string that cannot occur.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
here=$root/benches/generate
py=${PYTHON:-python3}
bin=${BIN:-$root/target/release/langadapt}
work=${WORK:-$root/target/bench-data/generate}
flores=${FLORES:-/tmp/flores}
prompts=${PROMPTS:-16}
shapes=("$@")
[ $# -eq 0 ] && shapes=(58m smollm2)
fixture=$root/tests/fixtures/tiny-llama
mkdir -p "$work/data/flores200_dataset/devtest"
for code in eng_Latn est_Latn; do
  f=$work/data/flores200_dataset/devtest/$code.devtest
  if [ -f "$flores/devtest/$code.devtest" ]; then
    head -n "$prompts" "$flores/devtest/$code.devtest" > "$f"
  else
    "$py" - "$prompts" > "$f" <<'PY'
import random, sys
rng = random.Random(0)
words = "the a of to in and is was for on that with as by at from it his an are this be which or new has".split()
words += "city river government people year school music water council team village house road".split()
for _ in range(int(sys.argv[1])):
    print(" ".join(rng.choice(words) for _ in range(rng.randint(12, 40))).capitalize() + ".")
PY
  fi
done
echo "langadapt HEAD $(git -C "$root" rev-parse --short HEAD), binary $bin of $(date -r "$bin" '+%F %T'), $(nproc) cores: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo
for shape in "${shapes[@]}"; do
  model=$work/model-$shape
  [ -f "$model/config.json" ] || "$py" "$here/make.py" "$model" "$shape" "$fixture" 2>/dev/null | tail -1 > "$work/params-$shape"
  "$py" "$here/bench.py" --bin "$bin" --python "$py" --model "$model" --label "$shape" \
    --params "$(cat "$work/params-$shape")" --data "$work/data" --work "$work/runs-$shape" \
    --new "${NEW:-64}" --prompts "$prompts" --batches "${BATCHES:-1,8}" --threads "${THREADS:-2}" \
    --repeats "${REPEATS:-$([ "$shape" = smollm2 ] && echo 1 || echo 3)}"
  echo
done
