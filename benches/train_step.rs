//! Training throughput on CPU: tokens/s of `langadapt train` (full mode, AdamW) against a PyTorch/transformers
//! loop on the same random ~58M-parameter LLaMA, the same rows, batch and threads, in the same run.
//!
//! `cargo bench --bench train_step`; `LANGADAPT_BENCH_PYTHON` (default `python3`) must have torch and
//! transformers; `LANGADAPT_BENCH_THREADS` (default: all cores). Rewrites the train-step section of
//! benches/RESULTS.md. (On a GPU machine the same comparison with `--features cuda` and `device = "cuda:0"`
//! is the one issue 8 asks for; this one is the CPU baseline.)

use std::path::PathBuf;
use std::process::Command;

use langadapt::shards::{self, BuildConfig, SourceConfig, TokenShardReader};
use langadapt::train::{self, Metrics, TrainConfig};
use langadapt::{Env, Progress};

#[path = "common/mod.rs"]
mod common;

const VOCAB: usize = 32_000;
const SEQ_LEN: usize = 257;
const MICRO: usize = 4;
const STEPS: usize = 6;

const PEER: &str = r#"
import json, sys, time, torch
from transformers import LlamaForCausalLM
ckpt, rows_path, threads, micro, steps = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
torch.set_num_threads(threads)
torch.manual_seed(0)
model = LlamaForCausalLM.from_pretrained(ckpt, dtype=torch.float32, attn_implementation="sdpa").train()
opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
rows = json.load(open(rows_path))
times, losses = [], []
for s in range(steps):
    batch = torch.tensor(rows[(s * micro) % len(rows):][:micro])
    t0 = time.perf_counter()
    out = model(input_ids=batch, labels=batch)
    out.loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step(); opt.zero_grad(set_to_none=True)
    times.append(time.perf_counter() - t0); losses.append(out.loss.item())
print(json.dumps({"times": times, "losses": losses, "torch": torch.__version__}))
"#;

fn main() {
    // The allocator settings `langadapt`'s own main applies (src/alloc.rs): without them every op's fresh
    // buffer pays page faults, which the CLI does not.
    langadapt::alloc::tune_allocator();
    let threads = common::bench_threads();
    let python = common::bench_python();
    std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let data = root.join("target/bench-data/train-step");
    let ckpt = root.join("target/bench-data/model-score/llama-60m");
    common::write_random_llama(&ckpt, VOCAB);
    let _ = std::fs::remove_dir_all(&data);
    std::fs::create_dir_all(&data).unwrap();

    // Rows from Turkish-like text, tokenized with the tiny fixture tokenizer (ids < 1000 fit any vocab).
    let mut rng = common::XorShift(7);
    let words = ["kedi", "köpek", "ev", "bahçe", "uyuyor", "koşuyor", "ve", "bir", "çok", "güzel", "yıl"];
    let docs: Vec<String> = (0..200)
        .map(|_| (0..120).map(|_| words[(rng.next() % words.len() as u64) as usize]).collect::<Vec<_>>().join(" "))
        .collect();
    std::fs::write(data.join("text.txt"), docs.join("\n\n")).unwrap();
    let env = Env { threads, progress: Progress { quiet: true } };
    let src = SourceConfig {
        name: "tr".into(),
        path: data.join("text.txt"),
        lang: "tr".into(),
        share: Some(1.0),
        epochs: None,
        limit: None,
    };
    let shards_dir = data.join("shards");
    shards::run(
        &BuildConfig::single(root.join("tests/fixtures/tiny-llama"), src, SEQ_LEN, shards_dir.clone())
            .expect("bench config"),
        &data,
        &env,
    )
    .unwrap();
    let files = langadapt::corpus::list_shards(&shards_dir.join("train")).unwrap();
    let rows: Vec<Vec<u32>> =
        files.iter().flat_map(|f| TokenShardReader::open(f).unwrap().map(|r| r.unwrap().input_ids)).collect();
    std::fs::write(data.join("rows.json"), serde_json::to_string(&rows).unwrap()).unwrap();
    std::fs::write(data.join("peer.py"), PEER).unwrap();

    let text = format!(
        "model = {:?}\ntrain = {:?}\nout = {:?}\nmax_steps = {STEPS}\nmicro_batch = {MICRO}\nlr = 1e-4\nclip = 1.0\n",
        ckpt,
        shards_dir.join("train"),
        data.join("run")
    );
    let cfg: TrainConfig = toml::from_str(&text).unwrap();
    train::run(&cfg, None, &env).unwrap();
    let ours: Vec<f64> = std::fs::read_to_string(data.join("run/metrics.jsonl"))
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<Metrics>(l).ok()?.tokens_per_s)
        .collect();
    let out = Command::new(&python)
        .arg(data.join("peer.py"))
        .args([ckpt.to_str().unwrap(), data.join("rows.json").to_str().unwrap()])
        .args([threads.to_string(), MICRO.to_string(), STEPS.to_string()])
        .output()
        .expect("run the Python peer (set LANGADAPT_BENCH_PYTHON)");
    assert!(out.status.success(), "peer failed: {}", String::from_utf8_lossy(&out.stderr));
    let peer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let tokens = (MICRO * (SEQ_LEN - 1)) as f64;
    let theirs: Vec<f64> = peer["times"].as_array().unwrap().iter().map(|t| tokens / t.as_f64().unwrap()).collect();
    // The first step warms caches and allocators in both; the median of the rest is compared.
    let median = |v: &[f64]| {
        let mut v = v[1..].to_vec();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (o, t) = (median(&ours), median(&theirs));
    let section = format!(
        "## train step (`cargo bench --bench train_step`): full-mode AdamW steps, CPU\n\n\
         Random LLaMA, 58.1M parameters (vocab {VOCAB}, hidden 512, 8 layers), f32; micro-batch {MICRO} rows of {} \
         tokens, {threads} threads; median tokens/s of steps 2..{STEPS}; transformers with SDPA attention, AdamW, \
         clip 1.0, torch {}.\n\n\
         | tool | tokens/s | ratio (ours / transformers) |\n|---|---|---|\n\
         | langadapt train (candle) | {o:.0} | {:.2} |\n| PyTorch + transformers | {t:.0} | 1.00 |\n",
        SEQ_LEN - 1,
        peer["torch"].as_str().unwrap_or_default(),
        o / t
    );
    println!("{section}");
    common::update_results(&root.join("benches/RESULTS.md"), "train_step", &section);
}
