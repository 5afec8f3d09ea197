"""benches/gpu.sh helper: reads what the run left in OUT and prints the markdown section for RESULTS.md."""
import json, os, statistics, sys

out = sys.argv[1]
meta = json.load(open(f"{out}/meta.json"))


def load(name):
    try:
        return json.load(open(f"{out}/{name}.json"))
    except (OSError, ValueError):
        return None


def max_delta(a, b):
    if not a or not b:
        return None
    return max(abs(x - y) for ra, rb in zip(a["logprobs"], b["logprobs"]) for x, y in zip(ra, rb))


def metrics_tps(run):
    """Median tokens/s of the steps after the first two (kernel loading, allocator warm-up)."""
    path = f"{out}/{run}/metrics.jsonl"
    if not os.path.exists(path):
        return None
    tps = [m["tokens_per_s"] for m in map(json.loads, open(path)) if "tokens_per_s" in m]
    return statistics.median(tps[2:] or tps) if tps else None


def torch_tps(run):
    r = load(run)
    if not r:
        return None
    t = r["times"][2:] or r["times"]
    return meta["micro"] * meta["seq"] / statistics.median(t)


def mem(name):
    try:
        return int(open(f"{out}/{name}.peak_mib").read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def fmt(x, spec):
    return "n/a" if x is None else format(x, spec)


def ratio(a, b):
    return "n/a" if a is None or b is None or b == 0 else f"{a / b:.2f}×"


peak = meta.get("peak_flops")
n = meta["params"]
rows = []
cpu32, dev32, cpu16, dev16 = (load(k) for k in ("score-cpu-f32", "score-dev-f32", "score-cpu-bf16", "score-dev-bf16"))
s_ours, s_torch = load("score-1b"), load("score-1b-torch")
lines = [
    f"Machine: {meta['gpu']}; driver {meta['driver']}; langadapt {meta['commit']}; torch {meta['torch']}; "
    f"{meta['date']}. Model: random LLaMA, {n / 1e9:.2f}B parameters ({meta['size']}), seq {meta['seq']}, "
    f"micro-batch {meta['micro']}, {meta['steps']} steps (median of steps 3+), bf16 compute with f32 master "
    f"weights and AdamW state on both sides; MFU = 6·N·tokens/s (LoRA: 4·N) over {fmt(peak and peak / 1e12, '.0f')} "
    f"TFLOPS bf16.",
    "",
    f"Per-token log-probabilities of the fixture (4 × 127 tokens), {meta['device']} against CPU: "
    f"max |Δ| f32 {fmt(max_delta(cpu32, dev32), '.2e')}, bf16 {fmt(max_delta(cpu16, dev16), '.2e')}.",
    "",
    "| measure | langadapt | PyTorch | ratio |",
    "|---|---|---|---|",
    f"| scoring tokens/s (bf16, 8 × {meta['seq']}) | {fmt(s_ours and s_ours['tokens_per_s'], ',.0f')} | "
    f"{fmt(s_torch and s_torch['tokens_per_s'], ',.0f')} | "
    f"{ratio(s_ours and s_ours['tokens_per_s'], s_torch and s_torch['tokens_per_s'])} |",
]
for mode, flops in (("full", 6), ("lora", 4)):
    ours, theirs = metrics_tps(f"train-{mode}"), torch_tps(f"torch-{mode}")
    mfu = lambda t: None if t is None or not peak else 100 * flops * n * t / peak
    lines += [
        f"| {mode} training tokens/s | {fmt(ours, ',.0f')} | {fmt(theirs, ',.0f')} | {ratio(ours, theirs)} |",
        f"| {mode} MFU % | {fmt(mfu(ours), '.1f')} | {fmt(mfu(theirs), '.1f')} | |",
        f"| {mode} peak GPU memory, MiB (nvidia-smi) | {fmt(mem(f'train-{mode}'), ',')} | "
        f"{fmt(mem(f'torch-{mode}'), ',')} | {ratio(mem(f'train-{mode}'), mem(f'torch-{mode}'))} |",
    ]
failed = meta.get("failed") or []
if failed:
    lines += ["", "Did not finish (see the logs in the run's output folder): " + ", ".join(failed) + "."]
print("\n".join(lines))
