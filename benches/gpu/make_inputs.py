"""benches/gpu.sh helper: the random LLaMA (transformers, saved as bf16 safetensors), its training text, and
random token ids for the scoring checks. Deterministic (seed 0). Prints the model's parameter count."""
import json, random, sys

import torch
from transformers import LlamaConfig, LlamaForCausalLM

out, size = sys.argv[1], sys.argv[2]
shapes = {
    # TinyLlama-1.1B's shape: 1.10B parameters.
    "1b": dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32,
               num_key_value_heads=4, max_position_embeddings=2048),
    # The CPU dry run: same code path, seconds instead of minutes.
    "small": dict(hidden_size=256, intermediate_size=688, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=512),
}
torch.manual_seed(0)
cfg = LlamaConfig(vocab_size=32000, rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=False,
                  bos_token_id=1, eos_token_id=2, **shapes[size])
model = LlamaForCausalLM(cfg).to(torch.bfloat16)
model.save_pretrained(f"{out}/model", safe_serialization=True)
params = sum(p.numel() for p in model.parameters())

rng = random.Random(0)
words = ["kedi", "köpek", "ev", "bahçe", "uyuyor", "koşuyor", "ve", "bir", "çok", "güzel", "yıl", "şehir",
         "deniz", "kitap", "okul", "yol", "gün", "akşam", "sabah", "çocuk"]
with open(f"{out}/text.jsonl", "w") as f:
    for _ in range(600):
        f.write(json.dumps({"text": " ".join(rng.choice(words) for _ in range(400))}, ensure_ascii=False) + "\n")

def ids(path, n, length, vocab):
    with open(path, "w") as f:
        for _ in range(n):
            f.write(json.dumps([rng.randrange(3, vocab) for _ in range(length)]) + "\n")

fixture_vocab = json.load(open(sys.argv[3]))["vocab_size"]
ids(f"{out}/fixture-ids.jsonl", 4, 128, fixture_vocab)
ids(f"{out}/score-ids.jsonl", 8, int(sys.argv[4]), cfg.vocab_size)
print(params)
