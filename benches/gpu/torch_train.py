"""benches/gpu.sh helper: the peer. The same training step as `langadapt train --dtype bf16` in PyTorch on
the same card: f32 master weights and AdamW state, bf16 autocast, SDPA attention, clip 1.0; full or LoRA
(r 8, alpha 16, dropout 0.05 on q/k/v/o/gate/up/down, written here so PEFT is not needed). Prints JSON."""
import json, sys, time

import torch
from transformers import LlamaForCausalLM

ckpt, mode, device, micro, seq, steps = sys.argv[1], sys.argv[2], sys.argv[3], *map(int, sys.argv[4:7])
torch.manual_seed(0)
model = LlamaForCausalLM.from_pretrained(ckpt, dtype=torch.float32, attn_implementation="sdpa").to(device).train()


class Lora(torch.nn.Module):
    def __init__(self, base, r=8, alpha=16, dropout=0.05):
        super().__init__()
        self.base, self.scale = base, alpha / r
        self.a = torch.nn.Parameter(torch.empty(r, base.in_features, device=base.weight.device))
        self.b = torch.nn.Parameter(torch.zeros(base.out_features, r, device=base.weight.device))
        torch.nn.init.kaiming_uniform_(self.a, a=5 ** 0.5)
        self.drop = torch.nn.Dropout(dropout)

    def forward(self, x):
        return self.base(x) + (self.drop(x) @ self.a.t() @ self.b.t()) * self.scale


if mode == "lora":
    for p in model.parameters():
        p.requires_grad_(False)
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    for layer in model.model.layers:
        for parent in (layer.self_attn, layer.mlp):
            for name in targets:
                if hasattr(parent, name):
                    setattr(parent, name, Lora(getattr(parent, name)))
params = [p for p in model.parameters() if p.requires_grad]
opt = torch.optim.AdamW(params, lr=1e-5, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
gen = torch.Generator().manual_seed(0)
cuda = device.startswith("cuda")
if cuda:
    torch.cuda.reset_peak_memory_stats()
times, losses = [], []
for s in range(steps):
    batch = torch.randint(3, model.config.vocab_size, (micro, seq + 1), generator=gen).to(device)
    if cuda:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    with torch.autocast(device_type="cuda" if cuda else "cpu", dtype=torch.bfloat16):
        out = model(input_ids=batch[:, :-1], labels=batch[:, :-1])
    out.loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    loss = out.loss.item()
    times.append(time.perf_counter() - t0)
    losses.append(loss)
peak = torch.cuda.max_memory_allocated() if cuda else None
print(json.dumps({"times": times, "losses": losses, "torch": torch.__version__, "max_allocated": peak,
                  "trained_parameters": sum(p.numel() for p in params)}))
