"""benches/train_memory/run.sh helper: a random LLaMA (32k vocabulary, untied, f32) of size 60m, 250m or 1b,
saved as safetensors with the fixture's tokenizer. Prints the parameter count."""
import shutil, sys

import torch
from transformers import LlamaConfig, LlamaForCausalLM

out, size, fixture = sys.argv[1:4]
shapes = {"60m": (512, 1376, 8, 8), "250m": (1024, 2752, 12, 16), "1b": (2048, 5632, 16, 32)}
hidden, inter, layers, heads = shapes[size]
torch.manual_seed(0)
cfg = LlamaConfig(vocab_size=32000, hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
                  num_attention_heads=heads, num_key_value_heads=heads, max_position_embeddings=2048,
                  tie_word_embeddings=False, bos_token_id=1, eos_token_id=2)
model = LlamaForCausalLM(cfg)
model.save_pretrained(out, safe_serialization=True)
for f in ["tokenizer.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"]:
    shutil.copy(f"{fixture}/{f}", f"{out}/{f}")
print(sum(p.numel() for p in model.parameters()))
