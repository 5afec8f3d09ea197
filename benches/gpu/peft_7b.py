"""benches/gpu-7b.sh helper: the peer for LoRA on a 7B model as people run it: the checkpoint loaded in bf16,
PEFT LoRA (r 8, alpha 16, dropout 0.05 on q/k/v/o/gate/up/down; PEFT keeps the adapters in f32), bf16
autocast, SDPA attention, AdamW, no gradient checkpointing. Prints JSON with the peak allocated memory."""
import json, sys, time

import torch
from peft import LoraConfig, get_peft_model
from transformers import LlamaForCausalLM

ckpt, micro, seq, steps = sys.argv[1], *map(int, sys.argv[2:5])
torch.manual_seed(0)
model = LlamaForCausalLM.from_pretrained(ckpt, dtype=torch.bfloat16, attn_implementation="sdpa").to("cuda")
model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.05, task_type="CAUSAL_LM",
                                         target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                         "up_proj", "down_proj"]))
model.train()
params = [p for p in model.parameters() if p.requires_grad]
opt = torch.optim.AdamW(params, lr=1e-4)
gen = torch.Generator().manual_seed(0)
torch.cuda.reset_peak_memory_stats()
times, losses = [], []
for s in range(steps):
    batch = torch.randint(3, 32000, (micro, seq + 1), generator=gen).to("cuda")
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    with torch.autocast(device_type="cuda", dtype=torch.bfloat16):
        out = model(input_ids=batch[:, :-1], labels=batch[:, :-1])
    out.loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    losses.append(out.loss.item())
    times.append(time.perf_counter() - t0)
print(json.dumps({"times": times, "losses": losses, "max_allocated": torch.cuda.max_memory_allocated(),
                  "trained_parameters": sum(p.numel() for p in params), "torch": torch.__version__}))
