"""benches/train_memory helper: a random LLaMA (f32) of size 60m, 250m or 1b (32k vocabulary, untied) or 135m
(SmolLM2-135M's shapes: 30 layers, 9 query / 3 kv heads, tied 49,152 vocabulary), saved as safetensors with the
fixture's tokenizer. Prints the parameter count."""
import shutil, sys

import torch
from transformers import LlamaConfig, LlamaForCausalLM

out, size, fixture = sys.argv[1:4]
shapes = {"60m": (512, 1376, 8, 8, 8), "250m": (1024, 2752, 12, 16, 16), "1b": (2048, 5632, 16, 32, 32),
          "135m": (576, 1536, 30, 9, 3)}
hidden, inter, layers, heads, kv_heads = shapes[size]
smollm = size == "135m"
torch.manual_seed(0)
cfg = LlamaConfig(vocab_size=49152 if smollm else 32000, hidden_size=hidden, intermediate_size=inter,
                  num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
                  max_position_embeddings=8192 if smollm else 2048, rope_theta=100000.0 if smollm else 10000.0,
                  tie_word_embeddings=smollm, bos_token_id=1, eos_token_id=2)
model = LlamaForCausalLM(cfg)
model.save_pretrained(out, safe_serialization=True)
for f in ["tokenizer.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"]:
    shutil.copy(f"{fixture}/{f}", f"{out}/{f}")
print(sum(p.numel() for p in model.parameters()))
