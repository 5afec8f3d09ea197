"""benches/train_memory/run.sh helper: the PyTorch peer of one `langadapt train` run on the CPU: the same model
(f32), the same AdamW, `full` (every weight), `lora` (PEFT r 8, alpha 16, dropout 0.05 on q/k/v/o/gate/up/down)
or `embed-align` (embed_tokens and lm_head only); `steps` steps of `micro` random rows of `seq` tokens."""
import sys, time

import torch
from transformers import LlamaForCausalLM

ckpt, mode, micro, seq, steps = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:6])
per_step = "--per-step" in sys.argv[6:]
torch.manual_seed(0)
model = LlamaForCausalLM.from_pretrained(ckpt, dtype=torch.float32, attn_implementation="sdpa").train()
if mode == "lora":
    from peft import LoraConfig, get_peft_model
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.05, task_type="CAUSAL_LM",
                                             target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                             "up_proj", "down_proj"]))
elif mode == "embed-align":
    for name, p in model.named_parameters():
        p.requires_grad_("embed_tokens" in name or "lm_head" in name)
params = [p for p in model.parameters() if p.requires_grad]
opt = torch.optim.AdamW(params, lr=1e-4)
times = []
for _ in range(steps):
    t0 = time.time()
    x = torch.randint(3, model.config.vocab_size, (micro, seq))
    model(input_ids=x, labels=x).loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    times.append(time.time() - t0)
print(f"{sum(p.numel() for p in params)} trained, {sum(times):.1f} s, last step {micro * seq / times[-1]:.1f} tokens/s")
if per_step:
    print("per-step:", " ".join(f"{micro * seq / t:.1f}" for t in times))
