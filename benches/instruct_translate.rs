//! `instruct translate` throughput against a local server (tests/it/mock_http.rs) with a fixed
//! latency per request: records/s at concurrency 1, 8 and 32 for a batching backend (DeepL shape,
//! up to 16 records per request) and a one-text-per-request backend (OpenAI chat shape), and the
//! overhead per record when the server answers at once. Prints a markdown section for RESULTS.md.
//!
//! `cargo bench --bench instruct_translate` (LANGADAPT_BENCH_LATENCY_MS=200 by default).

#[allow(dead_code)]
#[path = "../tests/it/mock_http.rs"]
mod mock_http;

use std::path::Path;
use std::time::{Duration, Instant};

use langadapt::instruct::translate::{self, ApiKey, Backend, TranslateConfig};
use langadapt::{Env, Progress};
use mock_http::{deepl_echo, openai_echo, Mock, Reply};

/// `n` distinct Alpaca-like records (instruction, input on every other one, a longer output).
fn write_input(path: &Path, n: usize) {
    let mut s = String::new();
    for i in 0..n {
        let rec = serde_json::json!({
            "instruction": format!("Describe item number {i} in two sentences."),
            "input": if i % 2 == 0 { format!("Item {i} is a red bicycle with a basket.") } else { String::new() },
            "output": format!("Item {i} is a sturdy red bicycle. It has a wicker basket at the front, handy for shopping."),
        });
        s.push_str(&rec.to_string());
        s.push('\n');
    }
    std::fs::write(path, s).unwrap();
}

/// Seconds for one run of `records` records through `backend` at `concurrency` (fresh cache).
fn run(dir: &Path, backend: Backend, latency: Duration, records: usize, concurrency: usize) -> f64 {
    let echo = match backend {
        Backend::Deepl => deepl_echo,
        _ => openai_echo,
    };
    let mock = Mock::start(None, move |r, _| Reply { delay: latency, ..echo(r) });
    let input = dir.join(format!("in-{records}.jsonl"));
    write_input(&input, records);
    let out = tempfile::tempdir_in(dir).unwrap();
    let mut cfg = TranslateConfig::new(&input, "et", backend, out.path());
    cfg.endpoint = Some(mock.url.clone());
    cfg.model = Some("bench".into());
    cfg.api_key = Some(ApiKey::new("bench"));
    cfg.concurrency = concurrency;
    let t = Instant::now();
    let report = translate::run(&cfg, &Env { threads: 2, progress: Progress { quiet: true } }).unwrap();
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(report.counts["records_translated"], records as u64);
    secs
}

fn main() {
    let latency_ms: u64 = std::env::var("LANGADAPT_BENCH_LATENCY_MS").map_or(200, |v| v.parse().unwrap());
    let latency = Duration::from_millis(latency_ms);
    let dir = tempfile::tempdir().unwrap();
    let mut lines = vec![
        format!("Local server answering after {latency_ms} ms per request; records of 2–3 fields (~150 characters)."),
        String::new(),
        "| backend shape | concurrency | records | seconds | records/s |".into(),
        "|---|---:|---:|---:|---:|".into(),
    ];
    for (backend, name, per_worker) in
        [(Backend::Deepl, "DeepL (16 records/request)", 64), (Backend::Openai, "OpenAI chat (1 text/request)", 6)]
    {
        for c in [1, 8, 32] {
            let n = per_worker * c;
            let s = run(dir.path(), backend, latency, n, c);
            lines.push(format!("| {name} | {c} | {n} | {s:.2} | {:.1} |", n as f64 / s));
            eprintln!("{}", lines.last().unwrap());
        }
    }
    lines.push(String::new());
    lines.push(
        "Overhead per record with an instant server (masking, cache fsync, HTTP on 127.0.0.1, QA, output):".into(),
    );
    lines.push(String::new());
    for (backend, name) in [(Backend::Deepl, "DeepL shape"), (Backend::Openai, "OpenAI shape")] {
        let n = 2000;
        let s = run(dir.path(), backend, Duration::ZERO, n, 8);
        lines.push(format!(
            "- {name}, concurrency 8, {n} records: {:.0} µs per record ({:.0} records/s)",
            s * 1e6 / n as f64,
            n as f64 / s
        ));
        eprintln!("{}", lines.last().unwrap());
    }
    println!("{}", lines.join("\n"));
}
