"""benches/gpu.sh helper: the scoring peer. Per-token log-probabilities of the same sequences with
transformers in bf16 (SDPA), batch as given; fastest of `rounds` after the first. Prints JSON like
`langadapt model score --no-logprobs`."""
import json, sys, time

import torch
from transformers import LlamaForCausalLM

ckpt, ids_path, device, batch, rounds = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
model = LlamaForCausalLM.from_pretrained(ckpt, dtype=torch.bfloat16, attn_implementation="sdpa").to(device).eval()
seqs = [json.loads(l) for l in open(ids_path) if l.strip()]
cuda = device.startswith("cuda")
best = float("inf")
with torch.no_grad():
    for r in range(max(rounds, 1)):
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for i in range(0, len(seqs), batch):
            ids = torch.tensor(seqs[i:i + batch], device=device)
            logits = model(input_ids=ids[:, :-1]).logits.float()
            lp = torch.log_softmax(logits, -1).gather(-1, ids[:, 1:, None]).squeeze(-1)
            lp.cpu()
        if cuda:
            torch.cuda.synchronize()
        if r > 0 or rounds <= 1:
            best = min(best, time.perf_counter() - t0)
tokens = sum(len(s) - 1 for s in seqs)
print(json.dumps({"sequences": len(seqs), "tokens": tokens, "seconds": best, "tokens_per_s": tokens / best}))
