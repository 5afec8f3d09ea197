"""HF tokenizers (Python) encode_batch on the texts of a JSONL file: the peer of `langadapt shards build`.
Usage: RAYON_NUM_THREADS=N python hf_encode_batch.py TOKENIZER.json CORPUS.jsonl  (reading the file is not timed)."""
import json, sys, time, os
from tokenizers import Tokenizer
tok = Tokenizer.from_file(sys.argv[1])
texts = [json.loads(l)["text"] for l in open(sys.argv[2], encoding="utf-8")]
t = time.perf_counter()
enc = tok.encode_batch(texts, add_special_tokens=False)
dt = time.perf_counter() - t
n = sum(len(e.ids) for e in enc)
print(json.dumps({"docs": len(texts), "tokens": n, "seconds": dt, "tokens_per_s": n / dt, "threads": os.environ.get("RAYON_NUM_THREADS")}))
