//! The README's first command, `langadapt run examples/quickstart.toml`, on the bundled data: every
//! stage, skip on rerun, redo of what a changed setting touches, and resume after a kill.

use std::path::Path;
use std::process::Command;

use crate::common::{langadapt, stderr};

const RECIPE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/quickstart.toml");

const STAGES: [(&str, &str); 11] = [
    ("trwiki", "wiki"),
    ("alpaca-tr", "translate"),
    ("spm-tr", "vocab-train"),
    ("vocab-tr", "vocab-merge"),
    ("before", "eval"),
    ("cpt-data", "shards"),
    ("sft-data", "shards"),
    ("embed", "train"),
    ("cpt", "train"),
    ("sft", "train"),
    ("after", "eval"),
];

/// Runs a recipe without `--quiet`, so the per-stage outcome lines are printed.
fn run_verbose(recipe: &str, out: &str, extra: &[&str]) -> String {
    let o =
        Command::new(env!("CARGO_BIN_EXE_langadapt")).args(["run", recipe, "--out", out]).args(extra).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    stderr(&o)
}

/// `(outcome, stage)` of every stage line of a run's stderr.
fn outcomes(log: &str) -> Vec<(String, String)> {
    log.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let (outcome, stage) = (w.next()?, w.next()?);
            ["ran", "skipped", "resumed"].contains(&outcome).then(|| (outcome.to_string(), stage.to_string()))
        })
        .collect()
}

fn read(dir: &Path, rel: &str) -> Vec<u8> {
    std::fs::read(dir.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn results(dir: &Path, stage: &str) -> serde_json::Value {
    serde_json::from_slice::<serde_json::Value>(&read(dir, &format!("{stage}/results.json"))).unwrap()["results"]
        .clone()
}

#[test]
fn quickstart_plans_runs_every_stage_skips_and_redoes_what_changed() {
    let out = tempfile::tempdir().unwrap();
    let o = out.path().to_str().unwrap();
    let plan = langadapt(&["run", RECIPE, "--out", o, "--dry-run"]);
    assert!(plan.status.success(), "{}", stderr(&plan));
    let want: String = STAGES.iter().map(|(n, k)| format!("{n}\t{k}\t{o}/{n}\n")).collect();
    assert_eq!(String::from_utf8_lossy(&plan.stdout), want);
    assert!(!out.path().join("trwiki").exists(), "--dry-run must not write");
    let only = langadapt(&["run", RECIPE, "--out", o, "--dry-run", "--only", "cpt"]);
    assert_eq!(String::from_utf8_lossy(&only.stdout), format!("cpt\ttrain\t{o}/cpt\n"));
    let from = langadapt(&["run", RECIPE, "--out", o, "--dry-run", "--from", "sft"]);
    assert_eq!(String::from_utf8_lossy(&from.stdout), format!("sft\ttrain\t{o}/sft\nafter\teval\t{o}/after\n"));
    // The resolved recipe for auditors: every stage's full settings with absolute paths.
    let json = langadapt(&["run", RECIPE, "--out", o, "--dry-run", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let embed = &v["stages"][7];
    assert_eq!((embed["name"].as_str(), embed["config"]["kind"].as_str()), (Some("embed"), Some("train")));
    assert_eq!(embed["config"]["settings"]["mode"], "embed-align");
    assert_eq!(embed["config"]["settings"]["model"].as_str().unwrap(), format!("{o}/vocab-tr/model"));
    assert_eq!(embed["config"]["settings"]["grad_accum"], 1);
    let early = langadapt(&["run", RECIPE, "--out", o, "--only", "cpt"]);
    assert_eq!(
        stderr(&early).trim(),
        format!("error: [train.cpt] model reads {o}/embed/final, which does not exist: run stage `embed` first (without --from/--only)")
    );
    assert!(!out.path().join("cpt").exists());
    let bad = langadapt(&["run", RECIPE, "--out", o, "--only", "evl"]);
    let names: Vec<&str> = STAGES.iter().map(|(n, _)| *n).collect();
    assert_eq!(stderr(&bad).trim(), format!("error: no stage `evl` in this recipe; its stages: {}", names.join(", ")));

    let log = run_verbose(RECIPE, o, &["--smoke"]);
    let ran: Vec<(String, String)> = STAGES.iter().map(|(n, _)| ("ran".to_string(), n.to_string())).collect();
    assert_eq!(outcomes(&log), ran);
    // Every stage left its outputs: parts, translations, tokenizer, grown model, shards, checkpoints, results.
    for rel in [
        "trwiki/part-00000.parquet",
        "alpaca-tr/translated.jsonl",
        "spm-tr/spm.model",
        "vocab-tr/tokenizer.model",
        "vocab-tr/model/model.safetensors",
        "vocab-tr/fertility.json",
        "cpt-data/train",
        "sft-data/train",
        "embed/final/model.safetensors",
        "cpt/final/model.safetensors",
        "sft/final/model.safetensors",
        "before/results.json",
        "after/results.json",
    ] {
        assert!(out.path().join(rel).exists(), "{rel} missing");
    }
    let translated = String::from_utf8(read(out.path(), "alpaca-tr/translated.jsonl")).unwrap();
    assert_eq!(translated.lines().count(), 10);
    assert!(translated.contains("Bir kurye şirketi için bir uygulama tasarlayın."));
    // The merged vocabulary makes Turkish text shorter, and the model grew to match it.
    let fert: serde_json::Value = serde_json::from_slice(&read(out.path(), "vocab-tr/fertility.json")).unwrap();
    let (before, after) = (
        fert["inputs"][0]["base"]["tokens_per_word"].as_f64().unwrap(),
        fert["inputs"][0]["merged"]["tokens_per_word"].as_f64().unwrap(),
    );
    assert!(after < before * 0.8, "tokens per word {before} -> {after}");
    let cfg: serde_json::Value = serde_json::from_slice(&read(out.path(), "vocab-tr/model/config.json")).unwrap();
    assert!(cfg["vocab_size"].as_u64().unwrap() > 1000);
    // --smoke caps training at 4 steps and evals at 10 documents.
    let metrics = String::from_utf8(read(out.path(), "cpt/metrics.jsonl")).unwrap();
    let steps: Vec<u64> = metrics
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()?["loss"].as_f64().map(|_| 1))
        .collect();
    assert_eq!(steps.len(), 4);
    let (b, a) = (results(out.path(), "before"), results(out.path(), "after"));
    for task in ["perplexity", "xcopa_tr", "belebele_tur_Latn", "ceval-valid", "codeswitch_tr"] {
        assert!(b.get(task).is_some() && a.get(task).is_some(), "{task} missing: {b}");
    }
    assert_eq!(b["xcopa_tr"]["n"], 10);
    // The scoring batches' token budget, chosen from free memory, is stated in results.json (and stays out of
    // the run id, so the rerun below still skips the eval stages).
    let full: serde_json::Value = serde_json::from_slice(&read(out.path(), "after/results.json")).unwrap();
    assert!(full["config"]["max_batch_tokens"].as_u64().is_some_and(|t| t >= 128), "{}", full["config"]);
    assert!(
        a["perplexity"]["bits_per_byte,none"].as_f64().unwrap()
            < b["perplexity"]["bits_per_byte,none"].as_f64().unwrap(),
        "training on Turkish lowers bits per byte on Turkish text"
    );
    let audit = langadapt(&["audit", o]);
    assert_eq!(audit.status.code(), Some(0), "{}", String::from_utf8_lossy(&audit.stdout));

    // A rerun skips everything and leaves every manifest as it was.
    let manifests: Vec<Vec<u8>> = ["trwiki/manifest.json", "cpt/manifest.json", "after/results.manifest.json"]
        .iter()
        .map(|m| read(out.path(), m))
        .collect();
    let log = run_verbose(RECIPE, o, &["--smoke"]);
    assert!(outcomes(&log).iter().all(|(w, _)| w == "skipped"), "{log}");
    for (m, before) in
        ["trwiki/manifest.json", "cpt/manifest.json", "after/results.manifest.json"].iter().zip(&manifests)
    {
        assert_eq!(&read(out.path(), m), before, "{m} was redone");
    }

    // Changed settings redo those stages and the ones that read their output, nothing else.
    let edited = out.path().join("edited.toml");
    let text = std::fs::read_to_string(RECIPE)
        .unwrap()
        .replace("lr = 1e-3\nwarmup_steps = 2\neval_every = 10", "lr = 2e-3\nwarmup_steps = 2\neval_every = 10");
    let text = text.replace("\"../", &format!("\"{}/", env!("CARGO_MANIFEST_DIR")));
    // And the first eval's generation length (the first `max_gen_tokens` is in [eval.before]).
    let text = text.replacen("max_gen_tokens = 48", "max_gen_tokens = 40", 1);
    std::fs::write(&edited, text).unwrap();
    let log = run_verbose(edited.to_str().unwrap(), o, &["--smoke"]);
    let redone: Vec<String> = outcomes(&log).into_iter().filter(|(w, _)| w == "ran").map(|(_, s)| s).collect();
    assert_eq!(redone, ["before", "cpt", "sft", "after"], "{log}");
    // The report keeps the recipe's order although `before` ran after the shards and embed stages.
    let md = String::from_utf8(read(out.path(), "report/report.md")).unwrap();
    let rows: Vec<&str> = md
        .lines()
        .filter_map(|l| l.strip_prefix("| ")?.split(" |").next())
        .filter(|n| STAGES.iter().any(|(s, _)| s == n))
        .take(STAGES.len())
        .collect();
    assert_eq!(rows, STAGES.map(|(n, _)| n), "{md}");
}

#[test]
fn a_run_killed_during_training_resumes_to_the_same_outputs() {
    let (clean, killed) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (c, k) = (clean.path().to_str().unwrap(), killed.path().to_str().unwrap());
    // Kill the run as soon as continual pre-training has written its step-10 checkpoint (of 20 steps).
    let mut child =
        Command::new(env!("CARGO_BIN_EXE_langadapt")).args(["--quiet", "run", RECIPE, "--out", k]).spawn().unwrap();
    let marker = killed.path().join("cpt/checkpoints/step-10/trainer_state.json");
    let start = std::time::Instant::now();
    while !marker.exists() {
        assert!(child.try_wait().unwrap().is_none(), "the run ended before the checkpoint appeared");
        assert!(start.elapsed().as_secs() < 600, "no checkpoint after 10 minutes");
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!killed.path().join("cpt/manifest.json").exists(), "the kill came after cpt finished");

    let log = run_verbose(RECIPE, k, &[]);
    let o = outcomes(&log);
    assert_eq!(o[8], ("resumed".to_string(), "cpt".to_string()), "{log}");
    assert!(o[..8].iter().all(|(w, _)| w == "skipped"), "{log}");
    run_verbose(RECIPE, c, &[]);
    for rel in ["cpt/final/model.safetensors", "sft/final/model.safetensors", "sft-data/train/part-00000.parquet"] {
        assert!(read(clean.path(), rel) == read(killed.path(), rel), "{rel} differs from an uninterrupted run");
    }
    assert_eq!(results(clean.path(), "after"), results(killed.path(), "after"));
    // The resumed run's loss curve has every step once.
    let metrics = String::from_utf8(read(killed.path(), "cpt/metrics.jsonl")).unwrap();
    let steps: Vec<u64> = metrics
        .lines()
        .filter_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).ok()?;
            v["loss"].as_f64().and(v["step"].as_u64())
        })
        .collect();
    assert_eq!(steps, (1..=20).collect::<Vec<u64>>());
    let audit = langadapt(&["audit", k]);
    assert_eq!(audit.status.code(), Some(0), "{}", String::from_utf8_lossy(&audit.stdout));
}

#[test]
fn a_typo_in_a_recipe_key_is_refused_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(RECIPE).unwrap();
    let line = text.lines().position(|l| l == "mode = \"embed-align\"").unwrap() + 1;
    let typo = text.replace("mode = \"embed-align\"", "mdoe = \"embed-align\"");
    let path = dir.path().join("typo.toml");
    std::fs::write(&path, typo).unwrap();
    let o = langadapt(&["run", path.to_str().unwrap(), "--dry-run"]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(err.contains(&format!("typo.toml: line {line}, column 1: unknown field `mdoe`, expected one of")), "{err}");
}
