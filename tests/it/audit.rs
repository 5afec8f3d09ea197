//! `langadapt audit`: a chain of stages checks out; a tampered shard, a missing file or a stray file is named.

use std::path::Path;

use crate::common::{fixture, langadapt, stderr};

fn run_ok(args: &[&str]) {
    let out = langadapt(args);
    assert!(out.status.success(), "{args:?}: {}", stderr(&out));
}

/// wiki ingest → shards build → train, all under `root`.
fn chain(root: &Path) {
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let (wiki, shards, train) = (root.join("wiki"), root.join("shards"), root.join("train"));
    let dump = fixture("wiki/trwiki-sample-pages-articles-multistream.xml.bz2");
    run_ok(&["wiki", "ingest", &s(&dump), "--out", &s(&wiki), "-q"]);
    let tok = fixture("tiny-llama");
    run_ok(&[
        "shards",
        "build",
        "--tokenizer",
        &s(&tok),
        "--source",
        &s(&wiki),
        "--seq-len",
        "32",
        "--out",
        &s(&shards),
        "-q",
    ]);
    let model = fixture("tiny-llama");
    run_ok(&[
        "train",
        "--model",
        &s(&model),
        "--train",
        &s(&shards.join("train")),
        "--out",
        &s(&train),
        "--max-steps",
        "2",
        "--micro-batch",
        "2",
        "-q",
    ]);
}

#[test]
fn audit_passes_on_a_chain_and_names_what_was_tampered_with() {
    let dir = tempfile::tempdir().unwrap();
    chain(dir.path());
    let root = dir.path().to_str().unwrap();
    let out = langadapt(&["audit", root, "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["manifests"], 3);
    assert!(report["inputs_chained"].as_u64().unwrap() >= 2, "shards read wiki's parts, train reads the shards");

    // Flip one byte of a token shard: audit names the file and exits 1.
    let part = std::fs::read_dir(dir.path().join("shards/train")).unwrap().next().unwrap().unwrap().path();
    let mut bytes = std::fs::read(&part).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xFF;
    std::fs::write(&part, bytes).unwrap();
    std::fs::write(dir.path().join("wiki/notes.txt"), "stray").unwrap();
    std::fs::remove_file(dir.path().join("train/metrics.jsonl")).unwrap();
    let out = langadapt(&["audit", root]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8(out.stdout.clone()).unwrap();
    assert!(text.contains(&format!("changed: {}", part.display())), "{text}");
    assert!(text.contains(&format!("unexplained: {}", dir.path().join("wiki/notes.txt").display())), "{text}");
    assert!(text.contains(&format!("missing: {}", dir.path().join("train/metrics.jsonl").display())), "{text}");
    // The tampered shard is also an input of train: named twice.
    assert!(text.contains(&format!("changed input: {}", part.display())), "{text}");
    assert!(stderr(&out).contains("audit: 4 findings"), "{}", stderr(&out));
}
