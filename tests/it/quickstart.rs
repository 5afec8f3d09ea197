//! The README's first command, `langadapt run examples/quickstart.toml`, on the bundled data.

use crate::common::{langadapt, stderr};

#[test]
fn quickstart_runs_and_a_second_run_keeps_the_outputs() {
    let out = tempfile::tempdir().unwrap();
    let recipe = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/quickstart.toml");
    let o = out.path().to_str().unwrap();
    let plan = langadapt(&["run", recipe, "--out", o, "--dry-run"]);
    assert!(plan.status.success(), "{}", stderr(&plan));
    assert_eq!(
        String::from_utf8_lossy(&plan.stdout),
        format!("wiki\t{o}/wiki\nshards\t{o}/shards\ntrain\t{o}/train\n")
    );
    assert!(!out.path().join("wiki").exists(), "--dry-run must not write");
    let only = langadapt(&["run", recipe, "--out", o, "--dry-run", "--only", "train"]);
    assert_eq!(String::from_utf8_lossy(&only.stdout), format!("train\t{o}/train\n"));
    let from = langadapt(&["run", recipe, "--out", o, "--dry-run", "--from", "shards"]);
    assert_eq!(String::from_utf8_lossy(&from.stdout), format!("shards\t{o}/shards\ntrain\t{o}/train\n"));
    let bad = langadapt(&["run", recipe, "--out", o, "--only", "eval"]);
    assert_eq!(stderr(&bad).trim(), "error: no stage `eval` in this recipe; its stages: wiki, shards, train");

    let r = langadapt(&["run", recipe, "--out", o]);
    assert!(r.status.success(), "{}", stderr(&r));
    let part = out.path().join("wiki/part-00000.parquet");
    let first = std::fs::read(&part).unwrap();
    let manifests = ["shards/manifest.json", "train/manifest.json"].map(|m| std::fs::read(out.path().join(m)).unwrap());
    let r = langadapt(&["run", recipe, "--out", o]);
    assert!(r.status.success(), "{}", stderr(&r));
    assert_eq!(std::fs::read(&part).unwrap(), first);
    // Up-to-date stages are skipped: their manifests (with start times) are untouched.
    for (m, before) in ["shards/manifest.json", "train/manifest.json"].iter().zip(&manifests) {
        assert_eq!(&std::fs::read(out.path().join(m)).unwrap(), before, "{m} was redone");
    }
    let metrics = std::fs::read_to_string(out.path().join("train/metrics.jsonl")).unwrap();
    let loss = |l: &str| serde_json::from_str::<serde_json::Value>(l).unwrap()["loss"].as_f64();
    let losses: Vec<f64> = metrics.lines().filter_map(loss).collect();
    assert_eq!(losses.len(), 20);
    assert!(losses[19] < losses[0], "the loss falls: {losses:?}");
    let audit = langadapt(&["audit", o]);
    assert_eq!(audit.status.code(), Some(0), "{}", String::from_utf8_lossy(&audit.stdout));

    // A changed training setting redoes train only.
    let edited = out.path().join("edited.toml");
    let text = std::fs::read_to_string(recipe).unwrap().replace("max_steps = 20", "max_steps = 3");
    let text = text.replace("\"../", &format!("\"{}/", concat!(env!("CARGO_MANIFEST_DIR"))));
    std::fs::write(&edited, text).unwrap();
    let r = langadapt(&["run", edited.to_str().unwrap(), "--out", o]);
    assert!(r.status.success(), "{}", stderr(&r));
    assert_eq!(std::fs::read(out.path().join("shards/manifest.json")).unwrap(), manifests[0]);
    assert_eq!(std::fs::read_to_string(out.path().join("train/metrics.jsonl")).unwrap().lines().count(), 3 + 1);
    let m = langadapt::manifest::Manifest::read(&out.path().join("wiki/manifest.json")).unwrap();
    assert_eq!((m.counts["articles"], m.counts["resumed_parts"]), (26, 1));
}
