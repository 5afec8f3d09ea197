//! Scoring throughput: tokens/s of full-sequence log-probabilities, langadapt (candle) against transformers.
//!
//! `cargo bench --bench model_score` writes a random ~60M-parameter LLaMA checkpoint (vocab 32000, hidden
//! 512, 8 layers, 8 heads, MLP 1376, f32) under target/bench-data/, scores the same random token sequences
//! with `model::Scorer` and with transformers (`LANGADAPT_BENCH_PYTHON`, default `python3`, must have torch
//! and transformers), both on `LANGADAPT_BENCH_THREADS` threads (default: all cores), in interleaved rounds,
//! checks that both give the same log-probabilities (max abs diff), and rewrites the model-score section of
//! benches/RESULTS.md. `LANGADAPT_BENCH_MODEL=DIR` scores an existing checkpoint instead (e.g. the 135M-shape
//! model of benches/train_memory/make.py) and writes its own section, `model_score_<DIR name>`.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use candle_core::{DType, Device};
use langadapt::model::{Checkpoint, Scorer};

#[path = "common/mod.rs"]
mod common;

const SEQS: usize = 16;
const SEQ_LEN: usize = 512;
const BATCH: usize = 4;
const VOCAB: usize = 32_000;

const PEER: &str = r#"
import json, sys, time, torch
from transformers import LlamaForCausalLM
ckpt, ids_path, threads, batch = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
torch.set_num_threads(threads)
model = LlamaForCausalLM.from_pretrained(ckpt, dtype=torch.float32, attn_implementation="sdpa").eval()
seqs = json.load(open(ids_path))
first = None
t0 = time.perf_counter()
with torch.inference_mode():
    for i in range(0, len(seqs), batch):
        ids = torch.tensor(seqs[i:i + batch])
        lp = torch.log_softmax(model(ids).logits[:, :-1].float(), -1).gather(-1, ids[:, 1:, None])[..., 0]
        if first is None:
            first = lp[0].tolist()
secs = time.perf_counter() - t0
import resource
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"seconds": secs, "first": first, "torch": torch.__version__, "peak_rss": rss}))
"#;

fn main() {
    // The allocator settings `langadapt`'s own main applies (src/alloc.rs): without them every op's fresh
    // buffer pays page faults, which the CLI does not.
    langadapt::alloc::tune_allocator();
    let threads = common::bench_threads();
    let rounds = common::env_number("LANGADAPT_BENCH_RUNS").unwrap_or(3);
    let python = common::bench_python();
    // candle's CPU matmul (gemm) sizes its pool from RAYON_NUM_THREADS.
    std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let data = root.join("target/bench-data/model-score");
    let given = std::env::var_os("LANGADAPT_BENCH_MODEL").map(PathBuf::from);
    let ckpt_dir = given.clone().unwrap_or_else(|| data.join("llama-60m"));
    if given.is_none() {
        common::write_random_llama(&ckpt_dir, VOCAB);
    }
    std::fs::create_dir_all(&data).unwrap();
    let peer_path = data.join("peer.py");
    std::fs::write(&peer_path, PEER).unwrap();

    let ckpt = Checkpoint::open(&ckpt_dir).unwrap();
    let seqs = token_sequences(ckpt.config.vocab_size);
    let ids_path = data.join("ids.json");
    std::fs::write(&ids_path, serde_json::to_string(&seqs).unwrap()).unwrap();
    let scorer = Scorer::new(ckpt.load(&Device::Cpu, DType::F32).unwrap(), BATCH);
    let requests: Vec<(Vec<u32>, usize)> = seqs.iter().map(|s| (s.clone(), s.len() - 1)).collect();
    let tokens = (SEQS * (SEQ_LEN - 1)) as f64;
    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    let mut max_diff = 0f64;
    let mut torch_version = String::new();
    let mut peer_rss = 0f64;
    for round in 0..rounds {
        let t0 = Instant::now();
        let scores = scorer.score(&requests).unwrap();
        ours.push(t0.elapsed().as_secs_f64());
        let out = Command::new(&python)
            .args([peer_path.to_str().unwrap(), ckpt_dir.to_str().unwrap(), ids_path.to_str().unwrap()])
            .args([threads.to_string(), BATCH.to_string()])
            .output()
            .expect("run the Python peer (set LANGADAPT_BENCH_PYTHON)");
        assert!(out.status.success(), "peer failed: {}", String::from_utf8_lossy(&out.stderr));
        let peer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        theirs.push(peer["seconds"].as_f64().unwrap());
        torch_version = peer["torch"].as_str().unwrap_or_default().to_string();
        peer_rss = peer_rss.max(peer["peak_rss"].as_f64().unwrap_or(0.0));
        for (a, b) in scores[0].logprobs.iter().zip(peer["first"].as_array().unwrap()) {
            max_diff = max_diff.max((f64::from(*a) - b.as_f64().unwrap()).abs());
        }
        eprintln!("round {round}: langadapt {:.2}s, transformers {:.2}s", ours[round], theirs[round]);
    }
    let best = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
    let (o, t) = (best(&ours), best(&theirs));
    // Peak RSS of this process (model load + scoring; the bench's own buffers are small) and of the peer's.
    let ours_rss = common::peak_rss_bytes();
    let mut section = String::new();
    let _ = writeln!(
        section,
        "## model scoring (`cargo bench --bench model_score`): full-sequence log-probabilities, CPU\n"
    );
    let _ = writeln!(
        section,
        "{} LLaMA, {:.1}M parameters (vocab {}, hidden {}, {} layers, {} heads / {} kv heads, MLP {}), f32; {SEQS} \
         sequences of {SEQ_LEN} tokens, batch {BATCH}, {threads} threads, best of {rounds} interleaved rounds; \
         transformers with SDPA attention, torch {torch_version}. Max |Δ log-prob| between the two: {max_diff:.2e}.\n",
        if given.is_some() { format!("`{}`:", ckpt_dir.display()) } else { "Random".into() },
        ckpt.config.num_parameters() as f64 / 1e6,
        ckpt.config.vocab_size,
        ckpt.config.hidden_size,
        ckpt.config.num_layers,
        ckpt.config.num_heads,
        ckpt.config.num_kv_heads,
        ckpt.config.intermediate_size,
    );
    let _ = writeln!(
        section,
        "| tool | seconds | tokens/s | ratio (transformers time / ours) | peak RSS | RSS ratio |\n|---|---|---|---|---|---|"
    );
    let gb = |b: f64| b / 1e9;
    let _ = writeln!(
        section,
        "| langadapt (candle) | {o:.2} | {:.0} | {:.2} | {:.2} GB | {:.2} |",
        tokens / o,
        t / o,
        gb(ours_rss),
        ours_rss / peer_rss
    );
    let _ = writeln!(section, "| transformers | {t:.2} | {:.0} | 1.00 | {:.2} GB | 1.00 |", tokens / t, gb(peer_rss));
    println!("{section}");
    let key = match &given {
        Some(dir) => format!("model_score_{}", dir.file_name().map(|n| n.to_string_lossy()).unwrap_or_default()),
        None => "model_score".into(),
    };
    common::update_results(&root.join("benches/RESULTS.md"), &key, &section);
}

/// Random ids below `vocab` from a fixed seed, BOS first.
fn token_sequences(vocab: usize) -> Vec<Vec<u32>> {
    let mut rng = common::XorShift(0x9E37_79B9_7F4A_7C15);
    (0..SEQS)
        .map(|_| std::iter::once(1).chain((1..SEQ_LEN).map(|_| 3 + (rng.next() % (vocab as u64 - 3)) as u32)).collect())
        .collect()
}
