//! Evaluation throughput on CPU: `langadapt eval run` against transformers on the same requests.
//!
//! `cargo bench --bench eval_score` scores (1) XCOPA-tr test (500 documents, 1000 loglikelihood requests, the
//! fixture copy of the official file) and (2) rolling perplexity over `LANGADAPT_BENCH_PPL_KB` KB of
//! generated Turkish-like text (default 100) with max length 1024, with the random ~58M-parameter LLaMA of the
//! model_score bench (the tiny fixture tokenizer, so ids fit). The peer is transformers in a Python script that
//! builds the same requests the lm-evaluation-harness way (HFLM: trailing context space moved to the
//! continuation, whole/context encodings, left truncation; `get_rolling_token_windows` + `make_disjoint_window`
//! for perplexity), sorts by length and scores in batches of the same size. Both are timed as whole commands
//! (load + tokenize + score) in interleaved rounds; accuracy and perplexity must agree. Rewrites the
//! eval-score section of benches/RESULTS.md. `LANGADAPT_BENCH_PYTHON` must have torch and transformers.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

#[path = "common/mod.rs"]
mod common;

const BATCH: usize = 16;

const PEER: &str = r#"
import json, math, sys, time, torch
from transformers import LlamaForCausalLM, PreTrainedTokenizerFast
ckpt, task, data, threads, batch = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
t0 = time.perf_counter()
torch.set_num_threads(threads)
model = LlamaForCausalLM.from_pretrained(ckpt, dtype=torch.float32, attn_implementation="sdpa").eval()
tok = PreTrainedTokenizerFast(tokenizer_file=ckpt + "/tokenizer.json")
max_len = model.config.max_position_embeddings
def enc(s): return tok(s, add_special_tokens=False)["input_ids"]
reqs = []  # (tokens, n_cont)
if task == "xcopa":
    conn = {"cause": "çünkü", "effect": "bu yüzden"}
    docs = [json.loads(l) for l in open(data)]
    for d in docs:
        ctx = d["premise"].strip()[:-1] + " " + conn[d["question"]]
        for c in (d["choice1"], d["choice2"]):
            cont = " " + c[0].lower() + c[1:]
            n = len(ctx) - len(ctx.rstrip())
            cx, co = (ctx[:-n], ctx[-n:] + cont) if n else (ctx, cont)
            whole, cenc = [1] + enc(cx + co), [1] + enc(cx)
            cont_enc = whole[len(cenc):]
            reqs.append(((cenc + cont_enc)[-(max_len + 1):], len(cont_enc)))
else:
    text = open(data).read()
    toks = enc(text)
    # lm_eval.utils.get_rolling_token_windows(prefix_token=BOS, max_seq_len=max_len, context_len=1)
    pred = min(max_len, len(toks))
    reqs.append(([1] + toks[:pred], pred))
    done = pred
    while done < len(toks):
        w = min(len(toks) - done, max_len)
        end = done + w
        window = toks[max(0, end - max_len - 1):end]
        reqs.append((window, w))
        done += w
order = sorted(range(len(reqs)), key=lambda i: -len(reqs[i][0]))
out = [None] * len(reqs)
with torch.inference_mode():
    for s in range(0, len(order), batch):
        idx = order[s:s + batch]
        L = max(len(reqs[i][0]) - 1 for i in idx)
        ids = torch.zeros((len(idx), L), dtype=torch.long)
        for r, i in enumerate(idx):
            t = reqs[i][0][:-1]
            ids[r, :len(t)] = torch.tensor(t)
        lp = torch.log_softmax(model(ids).logits.float(), -1)
        for r, i in enumerate(idx):
            seq, n = reqs[i]
            inp = len(seq) - 1
            tgt = torch.tensor(seq[-n:])
            out[i] = lp[r, inp - n:inp].gather(-1, tgt[:, None]).sum().item()
secs = time.perf_counter() - t0
if task == "xcopa":
    acc = sum(1 for k in range(0, len(out), 2) if (out[k] > out[k + 1]) == (docs[k // 2]["label"] == 0)) / (len(out) // 2)
    print(json.dumps({"seconds": secs, "acc": acc, "requests": len(reqs)}))
else:
    ll = sum(out)
    print(json.dumps({"seconds": secs, "bits_per_byte": -ll / len(text.encode()) / math.log(2), "tokens": len(toks)}))
"#;

fn main() {
    let threads = common::bench_threads();
    let kb = common::env_number("LANGADAPT_BENCH_PPL_KB").unwrap_or(100);
    let rounds = common::env_number("LANGADAPT_BENCH_RUNS").unwrap_or(2);
    let python = common::bench_python();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let data = root.join("target/bench-data/eval-score");
    std::fs::create_dir_all(&data).unwrap();
    let ckpt = root.join("target/bench-data/model-score/llama-60m");
    common::write_random_llama(&ckpt, 32_000);
    for f in ["tokenizer.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json"] {
        std::fs::copy(root.join("tests/fixtures/tiny-llama").join(f), ckpt.join(f)).unwrap();
    }
    let text = data.join("ppl.txt");
    std::fs::write(&text, turkish_text(kb * 1000)).unwrap();
    std::fs::write(data.join("peer.py"), PEER).unwrap();
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_langadapt"));
    let xcopa = root.join("tests/fixtures/data");

    let mut ours = [Vec::new(), Vec::new()];
    let mut theirs = [Vec::new(), Vec::new()];
    let mut numbers = [(String::new(), String::new()), (String::new(), String::new())];
    for _ in 0..rounds {
        for (k, (task, args)) in [
            ("xcopa", vec!["--tasks", "xcopa_tr", "--no-fixed", "--data-dir", xcopa.to_str().unwrap()]),
            ("ppl", vec!["--tasks", "perplexity", "--data", text.to_str().unwrap()]),
        ]
        .into_iter()
        .enumerate()
        {
            let out = data.join(format!("{task}.json"));
            let t0 = Instant::now();
            let st = Command::new(&bin)
                .args(["-q", "--threads", &threads.to_string(), "eval", "run", "--model", ckpt.to_str().unwrap()])
                .args(["--batch-size", &BATCH.to_string(), "--out", out.to_str().unwrap()])
                .args(&args)
                .env("RAYON_NUM_THREADS", threads.to_string())
                .status()
                .expect("run the langadapt binary");
            assert!(st.success());
            ours[k].push(t0.elapsed().as_secs_f64());
            let results: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
            let peer_data = if task == "xcopa" { xcopa.join("xcopa/tr/test.tr.jsonl") } else { text.clone() };
            let p = Command::new(&python)
                .arg(data.join("peer.py"))
                .args([
                    ckpt.to_str().unwrap(),
                    task,
                    peer_data.to_str().unwrap(),
                    &threads.to_string(),
                    &BATCH.to_string(),
                ])
                .output()
                .expect("run the Python peer (set LANGADAPT_BENCH_PYTHON)");
            assert!(p.status.success(), "peer: {}", String::from_utf8_lossy(&p.stderr));
            let peer: serde_json::Value = serde_json::from_slice(&p.stdout).unwrap();
            theirs[k].push(peer["seconds"].as_f64().unwrap());
            numbers[k] = if task == "xcopa" {
                (format!("acc {}", results["results"]["xcopa_tr"]["acc,none"]), format!("acc {}", peer["acc"]))
            } else {
                (
                    format!(
                        "bits/byte {:.6}",
                        results["results"]["perplexity"]["bits_per_byte,none"].as_f64().unwrap_or(f64::NAN)
                    ),
                    format!("bits/byte {:.6} ({} tokens)", peer["bits_per_byte"].as_f64().unwrap(), peer["tokens"]),
                )
            };
            eprintln!(
                "{task}: langadapt {:.2}s, transformers {:.2}s",
                ours[k].last().unwrap(),
                theirs[k].last().unwrap()
            );
        }
    }
    let best = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
    let mut section = format!(
        "## eval scoring (`cargo bench --bench eval_score`): whole `eval run` commands, CPU\n\n\
         Random LLaMA, 58.1M parameters (vocab 32000, hidden 512, 8 layers), f32, the tiny fixture tokenizer; \
         batch {BATCH}, {threads} threads, best of {rounds} interleaved rounds, load + tokenize + score. The peer is \
         transformers (SDPA) with lm-evaluation-harness's request construction replayed in Python.\n\n\
         | job | langadapt s | transformers s | ratio (transformers / ours) | langadapt result | transformers result |\n\
         |---|---|---|---|---|---|\n"
    );
    for (k, job) in
        ["XCOPA-tr test, 500 docs (1000 requests)", &format!("perplexity, {kb} KB of text, max length 1024")]
            .iter()
            .enumerate()
    {
        let (o, t) = (best(&ours[k]), best(&theirs[k]));
        section.push_str(&format!(
            "| {job} | {o:.2} | {t:.2} | {:.2} | {} | {} |\n",
            t / o,
            numbers[k].0,
            numbers[k].1
        ));
    }
    println!("{section}");
    common::update_results(&root.join("benches/RESULTS.md"), "eval_score", &section);
}

/// Generated Turkish-like prose of about `bytes` bytes (fixed seed).
fn turkish_text(bytes: usize) -> String {
    let words = [
        "kedi",
        "köpek",
        "evde",
        "bahçede",
        "uyuyor",
        "koşuyor",
        "ve",
        "bir",
        "çok",
        "güzel",
        "yıl",
        "şehir",
        "ırmak",
        "öğretmen",
        "çocuklar",
        "okula",
        "gidiyor",
    ];
    let mut rng = common::XorShift(11);
    let mut s = String::with_capacity(bytes + 64);
    while s.len() < bytes {
        for i in 0..12 {
            if i > 0 {
                s.push(' ');
            }
            s.push_str(words[(rng.next() % words.len() as u64) as usize]);
        }
        s.push_str(". ");
    }
    s
}
