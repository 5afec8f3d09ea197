"""benches/generate/run.sh helper: transformers' greedy `model.generate` on the prompts langadapt's harness
logged, batched and padded as langadapt's `generate_until` batches them (longest prompt first, stable order,
`batch` rows at a time, left padding), exactly `new` new tokens per row (EOS ignored).

    python hf_generate.py MODEL SAMPLES.jsonl NEW BATCH THREADS OUT.json

SAMPLES.jsonl is a `--log-samples` file of `langadapt eval run` (its `arguments.context` are the prompts).
Timed: the `generate` calls only (prompt tokenization and model load are outside; no warm-up call, as the
langadapt process has none). OUT.json: seconds, new-token count, and each prompt's prompt and new ids and text."""
import json, sys, time

import torch
from transformers import AutoTokenizer, LlamaForCausalLM

model_dir, samples, new, batch, threads, out = sys.argv[1:7]
new, batch, threads = int(new), int(batch), int(threads)
torch.set_num_threads(threads)
torch.set_num_interop_threads(1)
contexts = [json.loads(l)["arguments"]["context"] for l in open(samples, encoding="utf-8")]

tok = AutoTokenizer.from_pretrained(model_dir)
tok.padding_side = "left"
tok.pad_token = tok.unk_token
model = LlamaForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
# No EOS, so no row stops early (the checkpoint's special-token logits are zeroed too; checked below).
model.generation_config.eos_token_id = None
model.generation_config.pad_token_id = tok.pad_token_id

enc = [tok(c).input_ids for c in contexts]  # add_special_tokens=True: BOS first, as langadapt encodes
order = sorted(range(len(enc)), key=lambda i: -len(enc[i]))  # stable, like Rust's sort_by_key
batches = []
for s in range(0, len(order), batch):
    rows = order[s:s + batch]
    width = max(len(enc[i]) for i in rows)
    ids = torch.tensor([[tok.pad_token_id] * (width - len(enc[i])) + enc[i] for i in rows])
    mask = torch.tensor([[0] * (width - len(enc[i])) + [1] * len(enc[i]) for i in rows])
    batches.append((rows, ids, mask))

gen = [None] * len(enc)
t0 = time.perf_counter()
with torch.inference_mode():
    for rows, ids, mask in batches:
        o = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new, min_new_tokens=new,
                           do_sample=False, num_beams=1, use_cache=True)
        for r, i in enumerate(rows):
            gen[i] = o[r, ids.shape[1]:].tolist()
seconds = time.perf_counter() - t0
assert all(len(g) == new for g in gen), "a row stopped early"
json.dump({"seconds": seconds, "new_tokens": sum(len(g) for g in gen), "threads": torch.get_num_threads(),
           "torch": torch.__version__, "transformers": __import__("transformers").__version__,
           "rows": [{"prompt_ids": e, "ids": g, "text": tok.decode(g, skip_special_tokens=False)}
                    for e, g in zip(enc, gen)]}, open(out, "w"), ensure_ascii=False)
