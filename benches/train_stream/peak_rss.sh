#!/usr/bin/env bash
# Issue 16: peak RSS of `train --max-steps 50` on a 20-million-token and a 2-billion-token shard set (streamed
# loader), and of the in-memory loader it replaced on the 20M set, in the same run. Prints a markdown section.
#
#   benches/train_stream/peak_rss.sh NEW_BIN [OLD_BIN]
#
# NEW_BIN: a langadapt binary with the streamed loader; OLD_BIN: one built before it (e.g. from commit
# 00bae53), run on the 20M set only (it would hold the 2B set in memory: 10 GB). The shard sets are generated
# under $DATA (default target/bench-data/train-stream, ~2.6 GB) with `nice` and deleted at the end unless
# KEEP=1. Needs a Python with pyarrow and numpy ($PYTHON).
set -euo pipefail
NEW=$(realpath "$1")
OLD=${2:+$(realpath "$2")}
PYTHON=${PYTHON:-/tmp/stream-venv/bin/python}
DATA=${DATA:-target/bench-data/train-stream}
HERE=$(dirname "$0")
MODEL=tests/fixtures/tiny-llama
mkdir -p "$DATA"
for set in 20m:20000000 2b:2000000000; do
  name=${set%%:*}; tokens=${set#*:}
  [ -d "$DATA/$name" ] || nice "$PYTHON" "$HERE/gen_token_shards.py" --tokens "$tokens" --seq-len 256 --out "$DATA/$name" >&2
done

# One run: prints "peak_kb seconds sha256-of-final-weights".
run() {
  local bin=$1 shards=$2 out=$DATA/out-$RANDOM
  /usr/bin/time -f "%M %e" -o "$DATA/time.txt" "$bin" --quiet --threads 2 train --model "$MODEL" --train "$shards" \
    --out "$out" --max-steps 50 --micro-batch 8 --lr 1e-3 --seed 3 >/dev/null
  echo "$(cat "$DATA/time.txt") $(sha256sum "$out/final/model.safetensors" | cut -c1-16)"
  rm -rf "$out"
}

new20=$(run "$NEW" "$DATA/20m")
new2b=$(run "$NEW" "$DATA/2b")
old20=${OLD:+$(run "$OLD" "$DATA/20m")}
mb() { echo "scale=1; $1 / 1024" | bc; }
set -- $new20; n20=$1; t20=$2; h20=$3
set -- $new2b; n2b=$1; t2b=$2; h2b=$3
size20=$(du -sm "$DATA/20m" | cut -f1); size2b=$(du -sm "$DATA/2b" | cut -f1)
cat <<MD
## train data streaming (issue 16; \`benches/train_stream/peak_rss.sh\`)

$(date -u +%Y-%m-%d), $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), commit $(git rev-parse --short HEAD), load average $(cut -d' ' -f1-3 /proc/loadavg) at the end.
\`langadapt --threads 2 train --model tests/fixtures/tiny-llama --max-steps 50 --micro-batch 8\` (full mode, CPU) on
generated token shards (256 tokens a row, 2,048-row row groups, LZ4, ids uniform in [3, 1000)); peak RSS from
\`/usr/bin/time -f %M\`.

| loader | shards | tokens | rows | on disk | peak RSS | wall |
|---|---|---:|---:|---:|---:|---:|
| streamed | 20m | 20,000,000 | 78,125 | ${size20} MB | $(mb "$n20") MB | ${t20} s |
| streamed | 2b | 2,000,000,000 | 7,812,500 | ${size2b} MB | $(mb "$n2b") MB | ${t2b} s |
MD
if [ -n "$old20" ]; then
  set -- $old20; o20=$1; ot20=$2; oh20=$3
  echo "| in memory (before issue 16) | 20m | 20,000,000 | 78,125 | ${size20} MB | $(mb "$o20") MB | ${ot20} s |"
  echo
  echo "2B − 20M peak (streamed): $(mb $((n2b - n20))) MB (target < 100 MB). Streamed / in-memory peak on 20M:" \
    "$(echo "scale=2; $n20 / $o20" | bc). Final weights: streamed $h20, in-memory $oh20 ($( [ "$h20" = "$oh20" ] && echo identical || echo DIFFERENT ))."
else
  echo
  echo "2B − 20M peak (streamed): $(mb $((n2b - n20))) MB (target < 100 MB)."
fi
[ "${KEEP:-0}" = 1 ] || rm -rf "$DATA/20m" "$DATA/2b"
