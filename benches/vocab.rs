//! `cargo bench --bench vocab`: train an 8k BPE vocabulary on a few MB of multilingual text and
//! encode the text with it; langadapt against spm_train/spm_encode (Debian package sentencepiece)
//! and the Python tokenizers trainer, same input, same cores. Rewrites its section of RESULTS.md.
//!
//! Settings: LANGADAPT_BENCH_MB (default 4), LANGADAPT_BENCH_PYTHON (a python with `tokenizers`,
//! default /tmp/spvenv/bin/python; its row is left out when it cannot run), LANGADAPT_BENCH_BIN
//! (the langadapt binary to time; default: the one cargo built).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

const VOCAB: &str = "8000";

/// A deterministic corpus: lines of tests/fixtures/tokenizer-train.txt with their words shuffled and
/// partly spliced (xorshift, fixed seed), so the text is varied but keeps each line's language.
fn corpus(path: &Path, mb: usize) {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tokenizer-train.txt")).unwrap();
    let lines: Vec<Vec<&str>> = text.lines().filter(|l| !l.is_empty()).map(|l| l.split(' ').collect()).collect();
    let mut state = 0x5eed_1234_abcd_0002u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut out = String::with_capacity(mb << 20);
    while out.len() < mb * 1_000_000 {
        let line = &lines[(next() % lines.len() as u64) as usize];
        let mut words: Vec<String> = line.iter().map(|w| w.to_string()).collect();
        for i in (1..words.len()).rev() {
            words.swap(i, (next() % (i as u64 + 1)) as usize);
        }
        // Splice a third of the words (head of one + tail of another from the same line), so the
        // corpus has many word types, as real text does, not just the fixture's few thousand.
        for w in words.iter_mut() {
            if next() % 3 == 0 {
                let other: Vec<char> = line[(next() % line.len() as u64) as usize].chars().collect();
                let head: String = w.chars().take(1 + (next() % 4) as usize).collect();
                let tail: String = other[(next() % other.len().max(1) as u64) as usize..].iter().collect();
                *w = head + &tail;
            }
        }
        out.push_str(&words.join(" "));
        out.push('\n');
    }
    std::fs::write(path, out).unwrap();
}

/// Runs a shell command, returns wall seconds; panics with its stderr on failure.
fn timed(cmd: &str) -> f64 {
    let start = Instant::now();
    let out = Command::new("bash").arg("-c").arg(cmd).output().unwrap();
    assert!(out.status.success(), "{cmd}: {}", String::from_utf8_lossy(&out.stderr));
    start.elapsed().as_secs_f64()
}

fn count_ids(path: &Path) -> u64 {
    std::fs::read_to_string(path).unwrap().split_ascii_whitespace().count() as u64
}

struct Row {
    tool: String,
    train_s: f64,
    encode_s: f64,
    tokens: u64,
    commands: Vec<String>,
}

fn main() {
    let mb: usize = std::env::var("LANGADAPT_BENCH_MB").ok().and_then(|v| v.parse().ok()).unwrap_or(4);
    let python = std::env::var("LANGADAPT_BENCH_PYTHON").unwrap_or_else(|_| "/tmp/spvenv/bin/python".into());
    let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/target/bench-data/vocab"));
    std::fs::create_dir_all(&dir).unwrap();
    let text = dir.join(format!("corpus-{mb}mb.txt"));
    corpus(&text, mb);
    let bytes = std::fs::metadata(&text).unwrap().len();
    let t = text.display();
    let d = dir.display();
    // LANGADAPT_BENCH_BIN: a copy of the binary, where other builds share the target directory.
    let bin_path = std::env::var("LANGADAPT_BENCH_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_langadapt").into());
    let bin = bin_path.as_str();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut rows = Vec::new();

    let train = format!("{bin} --quiet vocab train --input {t} --vocab-size {VOCAB} --out {d}/la/la.model");
    let encode = format!("{bin} --quiet vocab encode --tokenizer {d}/la/la.model --ids < {t} > {d}/la.ids");
    rows.push(Row {
        tool: "langadapt (tokenizers trainer, SentencePiece port encoder)".into(),
        train_s: timed(&train),
        encode_s: timed(&encode),
        tokens: count_ids(&dir.join("la.ids")),
        commands: vec![train, encode],
    });

    let train = format!(
        "spm_train --input={t} --model_prefix={d}/spm --vocab_size={VOCAB} --model_type=bpe --byte_fallback=true \
         --split_digits=true --character_coverage=0.9995 --normalization_rule_name=identity --remove_extra_whitespaces=false \
         --allow_whitespace_only_pieces=true --num_threads={threads} --minloglevel=2"
    );
    let encode = format!("spm_encode --model={d}/spm.model --output_format=id < {t} > {d}/spm.ids");
    rows.push(Row {
        tool: "spm_train / spm_encode (sentencepiece 0.1.97, Debian)".into(),
        train_s: timed(&train),
        encode_s: timed(&encode),
        tokens: count_ids(&dir.join("spm.ids")),
        commands: vec![train, encode],
    });

    // Python tokenizers: SentencePiece-style BPE (Metaspace), trained and batch-encoded in-process.
    let script = format!(
        "import time,sys\nfrom tokenizers import SentencePieceBPETokenizer\nlines=open('{t}',encoding='utf-8').read().splitlines()\n\
         tok=SentencePieceBPETokenizer()\nt0=time.time();tok.train(['{t}'],vocab_size={VOCAB},show_progress=False)\nt1=time.time()\n\
         enc=tok.encode_batch(lines)\nt2=time.time()\nprint(t1-t0,t2-t1,sum(len(e.ids) for e in enc))\n"
    );
    let py = Command::new(&python).arg("-c").arg(&script).output();
    if let Some(out) = py.ok().filter(|o| o.status.success()) {
        let v: Vec<f64> =
            String::from_utf8_lossy(&out.stdout).split_whitespace().filter_map(|x| x.parse().ok()).collect();
        rows.push(Row {
            tool: "Python tokenizers SentencePieceBPETokenizer (train + encode_batch)".into(),
            train_s: v[0],
            encode_s: v[1],
            tokens: v[2] as u64,
            commands: vec![format!("{python} -c <script in benches/vocab.rs>")],
        });
    }

    let ours = (rows[0].train_s, rows[0].encode_s);
    let mut md = String::new();
    md.push_str("<!-- vocab: begin (written by `cargo bench --bench vocab`) -->\n## vocab train / encode (`cargo bench --bench vocab`)\n\n");
    md.push_str(&format!(
        "Corpus: {:.1} MB ({} bytes), lines of tests/fixtures/tokenizer-train.txt with shuffled, partly spliced words (tr, et, en, zh, fa, code, digits). \
         Vocabulary {VOCAB}, BPE. Machine: {threads} cores. One run each (wall time); encode = whole corpus, line by line, ids out.\n\n",
        bytes as f64 / 1e6,
        bytes
    ));
    md.push_str("| tool | train s | encode s | tokens | encode tokens/s | train time ÷ langadapt | encode time ÷ langadapt |\n|---|--:|--:|--:|--:|--:|--:|\n");
    for r in &rows {
        md.push_str(&format!(
            "| {} | {:.2} | {:.2} | {} | {:.0} | {:.2} | {:.2} |\n",
            r.tool,
            r.train_s,
            r.encode_s,
            r.tokens,
            r.tokens as f64 / r.encode_s,
            r.train_s / ours.0,
            r.encode_s / ours.1
        ));
    }
    md.push_str("\nCommands:\n\n");
    for r in &rows {
        for c in &r.commands {
            let shown = c.replace(bin, "langadapt").replace(&format!("{}/", env!("CARGO_MANIFEST_DIR")), "");
            md.push_str(&format!("- {}: `{}`\n", r.tool, shown));
        }
    }
    md.push_str("<!-- vocab: end -->\n");
    println!("{md}");
    let results = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/RESULTS.md");
    let old = std::fs::read_to_string(results).unwrap_or_default();
    let new = match (old.find("<!-- vocab: begin"), old.find("<!-- vocab: end -->")) {
        (Some(a), Some(b)) => format!("{}{}{}", &old[..a], md, &old[b + "<!-- vocab: end -->\n".len()..]),
        _ => format!("{}\n{}", old.trim_end(), md),
    };
    std::fs::write(results, new).unwrap();
}
