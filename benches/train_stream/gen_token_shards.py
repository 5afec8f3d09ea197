"""Writes a synthetic token-shard directory in the layout `langadapt shards build` writes (DESIGN.md "Data
contracts": input_ids list<uint32>, loss_mask list<uint8>, source utf8; LZ4_RAW; 2,048-row row groups), for
measuring `train` on corpora too big to tokenize for a benchmark.

    python gen_token_shards.py --tokens 2000000000 --seq-len 256 --out DIR

Ids are uniform in [3, vocab) from a fixed seed; every loss-mask value is 1. Parts hold --rows-per-part rows.
"""

import argparse
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

GROUP_ROWS = 2048


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, required=True)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--vocab", type=int, default=1000)
    ap.add_argument("--rows-per-part", type=int, default=262144)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    rng = np.random.default_rng(a.seed)
    rows = a.tokens // a.seq_len
    ids_t = pa.list_(pa.field("item", pa.uint32(), nullable=False))
    mask_t = pa.list_(pa.field("item", pa.uint8(), nullable=False))
    schema = pa.schema(
        [
            pa.field("input_ids", ids_t, nullable=False),
            pa.field("loss_mask", mask_t, nullable=False),
            pa.field("source", pa.string(), nullable=False),
        ]
    )
    part, done = 0, 0
    while done < rows:
        n_part = min(a.rows_per_part, rows - done)
        path = os.path.join(a.out, f"part-{part:05d}.parquet")
        with pq.ParquetWriter(path, schema, compression="lz4") as w:
            written = 0
            while written < n_part:
                n = min(GROUP_ROWS, n_part - written)
                offsets = pa.array(np.arange(n + 1, dtype=np.int32) * a.seq_len)
                ids = pa.array(rng.integers(3, a.vocab, size=n * a.seq_len, dtype=np.uint32))
                mask = pa.array(np.ones(n * a.seq_len, dtype=np.uint8))
                batch = pa.record_batch(
                    [
                        pa.ListArray.from_arrays(offsets, ids, type=ids_t),
                        pa.ListArray.from_arrays(offsets, mask, type=mask_t),
                        pa.array(["bench"] * n, type=pa.string()),
                    ],
                    schema=schema,
                )
                w.write_batch(batch, row_group_size=GROUP_ROWS)
                written += n
        done += n_part
        part += 1
    print(f"{a.out}: {rows} rows of {a.seq_len} tokens ({rows * a.seq_len} tokens) in {part} parts")


if __name__ == "__main__":
    main()
