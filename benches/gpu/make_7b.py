"""benches/gpu-7b.sh helper: a random Llama-2-7B-shape model (6.74B parameters, 32k vocabulary) made on the GPU
in bf16 and saved as safetensors, and its training text. Prints the parameter count."""
import json, random, sys

import torch
from transformers import LlamaConfig, LlamaForCausalLM

out = sys.argv[1]
cfg = LlamaConfig(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                  num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=4096,
                  rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=False, bos_token_id=1, eos_token_id=2)
torch.manual_seed(0)
with torch.device("cuda"):
    model = LlamaForCausalLM(cfg).to(torch.bfloat16)
model.save_pretrained(f"{out}/model", safe_serialization=True, max_shard_size="20GB")
print(sum(p.numel() for p in model.parameters()))
rng = random.Random(0)
words = ["kedi", "köpek", "ev", "bahçe", "uyuyor", "koşuyor", "ve", "bir", "çok", "güzel", "yıl", "şehir"]
with open(f"{out}/text.jsonl", "w") as f:
    for _ in range(200):
        f.write(json.dumps({"text": " ".join(rng.choice(words) for _ in range(2000))}, ensure_ascii=False) + "\n")
