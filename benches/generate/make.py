"""benches/generate/run.sh helper: a random LLaMA (f32, untied) in the Hugging Face layout with the tiny-llama
fixture's tokenizer (vocabulary 1000, so the model's vocab_size is 1000 too). Prints the parameter count.

    python make.py OUT SHAPE FIXTURE        # SHAPE: 58m (hidden 512, 8 layers) or smollm2 (SmolLM2-135M's body)

The LM-head rows of <unk>, <s> and </s> (ids 0, 1, 2) are zeroed: their logit is exactly 0 while the maximum
of the 997 others is positive, so greedy decoding never emits a special token and every row runs to
max_new_tokens in both implementations (no early stop, no special-token decoding differences)."""
import shutil, sys

import torch
from transformers import LlamaConfig, LlamaForCausalLM

out, shape, fixture = sys.argv[1:4]
# hidden, intermediate, layers, heads, kv heads
shapes = {"58m": (512, 1376, 8, 8, 8), "smollm2": (576, 1536, 30, 9, 3)}
hidden, inter, layers, heads, kv = shapes[shape]
torch.manual_seed(0)
cfg = LlamaConfig(vocab_size=1000, hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
                  num_attention_heads=heads, num_key_value_heads=kv, max_position_embeddings=2048,
                  rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=False,
                  bos_token_id=1, eos_token_id=2)
model = LlamaForCausalLM(cfg)
with torch.no_grad():
    model.lm_head.weight[:3].zero_()
model.save_pretrained(out, safe_serialization=True)
for f in ["tokenizer.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"]:
    shutil.copy(f"{fixture}/{f}", f"{out}/{f}")
print(sum(p.numel() for p in model.parameters()))
