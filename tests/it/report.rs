//! `langadapt report DIR` on a hand-built run: shards → vocab merge → eval → train → eval, each with a real
//! manifest. The report's numbers, its plots' points and legends, and a clean audit afterwards.

use std::path::Path;

use langadapt::eval::results::{compare, Results};
use langadapt::manifest::ManifestBuilder;
use langadapt::pipeline::{audit, write_report, ReportError};
use langadapt::shards::{SourceStats, SplitStats, Stats};
use langadapt::vocab::stats::Fertility;
use langadapt::{Env, Progress};
use serde_json::json;

use crate::common::{file_names, langadapt, stderr};

const QUIET: Env = Env { threads: 1, progress: Progress { quiet: true } };

/// Writes a stage's manifest `dir/manifest_name` listing `outputs` (files in `dir`); `second` orders the stages.
fn manifest(dir: &Path, manifest_name: &str, kind: &str, args: serde_json::Value, outputs: &[&str], second: u32) {
    let mut b = ManifestBuilder::new(kind, args, None);
    b.count("rows", 10 + u64::from(second));
    let outputs: Vec<_> = outputs.iter().map(|o| (dir.join(o), None)).collect();
    let mut m = b.finish(dir, &outputs).unwrap();
    m.started = format!("2025-01-01T00:00:0{second}Z");
    m.finished = format!("2025-01-01T00:00:0{second}.5Z");
    m.write(&dir.join(manifest_name)).unwrap();
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// Ten training steps (loss 3.0, 2.9, …, 2.1; lr 1e-4 … 1e-3) with validation after steps 5 and 10.
fn metrics_jsonl() -> String {
    let mut out = String::new();
    for step in 1..=10 {
        let loss = 3.0 - 0.1 * f64::from(step - 1);
        let lr = 1e-4 * f64::from(step);
        out.push_str(
            &json!({"step": step, "loss": loss, "lr": lr, "grad_norm": 1.5, "tokens_per_s": 100.0}).to_string(),
        );
        out.push('\n');
        if step % 5 == 0 {
            let val = if step == 5 { 2.5 } else { 2.2 };
            out.push_str(&json!({"step": step, "val_loss": val, "val_ppl": f64::exp(val)}).to_string());
            out.push('\n');
        }
    }
    out
}

fn eval_results(acc: f64, se: f64, bpb: f64, token_ppl: f64) -> Results {
    let mut r = Results::default();
    r.set("xcopa_tr", "acc", acc, Some(se), true);
    r.set("perplexity_tr", "bits_per_byte", bpb, None, false);
    r.set("perplexity_tr", "token_perplexity", token_ppl, None, false);
    r
}

fn fertility(tokenizer: &str, words: u64, tokens: u64, bytes: u64) -> Fertility {
    Fertility {
        tokenizer: tokenizer.into(),
        input: "data/tr.txt".into(),
        lines: 10,
        words,
        chars: bytes,
        bytes,
        tokens,
        tokens_per_word: tokens as f64 / words as f64,
        bytes_per_token: bytes as f64 / tokens as f64,
        ..Fertility::default()
    }
}

/// The run: shards (1 s), vocab (2 s), eval-before (3 s), train (4 s), eval-after (5 s).
fn build_run(root: &Path) {
    let shards = root.join("shards");
    let mut train = SplitStats::default();
    for (name, tokens, share) in [("wiki", 700, 0.7), ("en", 300, 0.3)] {
        train.sources.insert(name.into(), SourceStats { rows: 5, tokens, trained_tokens: tokens, share });
    }
    let stats = Stats { splits: [("train".to_string(), train)].into() };
    write(&shards.join("stats.json"), &serde_json::to_string_pretty(&stats).unwrap());
    let sources = json!([
        {"name": "wiki", "lang": "tr", "share": 0.75, "epochs": null},
        {"name": "en", "lang": "en", "share": 0.25, "epochs": 1.0},
    ]);
    manifest(&shards, "manifest.json", "shards build", json!({"seq_len": 32, "sources": sources}), &["stats.json"], 1);

    let vocab = root.join("vocab");
    let pair = json!({"input": "data/tr.txt", "base": fertility("base.model", 1000, 2500, 6000),
        "merged": fertility("merged.model", 1000, 1750, 6000)});
    write(&vocab.join("fertility.json"), &serde_json::to_string_pretty(&json!({"inputs": [pair]})).unwrap());
    manifest(&vocab, "manifest.json", "vocab merge", json!({"seed": 42}), &["fertility.json"], 2);
    let mut m = langadapt::manifest::Manifest::read(&vocab.join("manifest.json")).unwrap();
    m.counts = [("base_size".to_string(), 32000), ("added".to_string(), 100), ("final_size".to_string(), 32100)].into();
    m.write(&vocab.join("manifest.json")).unwrap();

    let before = root.join("eval-before");
    std::fs::create_dir_all(&before).unwrap();
    eval_results(0.54, 0.02, 1.25, 12.5).write(&before.join("results.json")).unwrap();
    manifest(&before, "results.manifest.json", "eval run", json!({"tasks": ["xcopa_tr"]}), &["results.json"], 3);

    let train = root.join("train");
    write(&train.join("metrics.jsonl"), &metrics_jsonl());
    manifest(&train, "manifest.json", "train", json!({"mode": "full"}), &["metrics.jsonl"], 4);

    let after = root.join("eval-after");
    std::fs::create_dir_all(&after).unwrap();
    eval_results(0.6, 0.021, 1.1, 20.0).write(&after.join("results.json")).unwrap();
    manifest(&after, "results.manifest.json", "eval run", json!({"tasks": ["xcopa_tr"]}), &["results.json"], 5);
}

/// Element `tag`'s attribute `attr` for every such element, and all text nodes, of an SVG (parsed as XML).
fn svg_parts(path: &Path, tag: &str, attr: &str) -> (Vec<String>, Vec<String>) {
    use quick_xml::events::Event;
    let text = std::fs::read_to_string(path).unwrap();
    let mut reader = quick_xml::Reader::from_str(&text);
    let (mut attrs, mut texts) = (Vec::new(), Vec::new());
    loop {
        match reader.read_event().unwrap_or_else(|e| panic!("{}: not XML: {e}", path.display())) {
            Event::Eof => break,
            Event::Start(e) | Event::Empty(e) if e.name().as_ref() == tag.as_bytes() => {
                let a = e.try_get_attribute(attr).unwrap().unwrap_or_else(|| panic!("<{tag}> without {attr}"));
                attrs.push(String::from_utf8(a.value.to_vec()).unwrap());
            }
            Event::Text(t) if !t.decode().unwrap().trim().is_empty() => {
                texts.push(t.decode().unwrap().trim().to_string())
            }
            _ => {}
        }
    }
    (attrs, texts)
}

/// Points per `<polyline>`.
fn polyline_lengths(path: &Path) -> Vec<usize> {
    svg_parts(path, "polyline", "points").0.iter().map(|p| p.split_whitespace().count()).collect()
}

#[test]
fn report_shows_each_stage_plots_its_points_and_keeps_the_audit_clean() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    build_run(root);
    let summary = write_report(root, &[], &QUIET).unwrap();
    assert_eq!(summary.report, root.join("report/report.md"));
    assert_eq!(summary.stages, 5);
    let out = root.join("report");
    assert_eq!(
        file_names(&out),
        [
            "eval.svg",
            "manifest.json",
            "report.md",
            "shards-mixture.svg",
            "train-loss.svg",
            "train-lr.svg",
            "vocab-fertility.svg"
        ]
    );
    let md = std::fs::read_to_string(&summary.report).unwrap();

    // Stages in run order (started), not path order.
    let order: Vec<usize> = ["| shards |", "| vocab |", "| eval-before |", "| train |", "| eval-after |"]
        .iter()
        .map(|row| md.find(row).unwrap_or_else(|| panic!("{row} missing:\n{md}")))
        .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{order:?}\n{md}");
    assert!(md.contains("| eval run | `"), "{md}");
    assert!(md.contains("| 2025-01-01T00:00:04Z |"), "{md}");

    // Training: first, final, final val and best val loss.
    assert!(md.contains("| train | full | 10 | 3.0000 | 2.1000 | 2.2000 | 2.2000 |"), "{md}");
    // Vocabulary: counts and tokens/word, bytes/token before → after.
    assert!(md.contains("base vocabulary 32000, added 100, final 32100."), "{md}");
    assert!(md.contains("| data/tr.txt | 1000 | 2.5000 → 1.7500 | 2.4000 → 3.4286 |"), "{md}");
    // Mixture: configured vs actual.
    assert!(md.contains("| wiki | tr | 0.7500 | 0.7000 | – | 700 |"), "{md}");
    assert!(md.contains("| en | en | 0.2500 | 0.3000 | 1 | 300 |"), "{md}");
    // Eval: compare()'s table with the stages as columns in run order, and the tokenizer caveat.
    let table = compare(&[
        ("eval-before".into(), eval_results(0.54, 0.02, 1.25, 12.5)),
        ("eval-after".into(), eval_results(0.6, 0.021, 1.1, 20.0)),
    ]);
    assert!(md.contains(&table), "{md}");
    assert!(md.contains("| xcopa_tr | acc | 0.5400 ± 0.0200 | 0.6000 ± 0.0210 | +0.0600 |"), "{md}");
    assert!(md.contains("| perplexity_tr | bits_per_byte | 1.2500 | 1.1000 | -0.1500 |"), "{md}");
    assert!(md.contains("Token perplexity is not comparable across tokenizers"), "{md}");
    for svg in ["train-loss.svg", "train-lr.svg", "shards-mixture.svg", "vocab-fertility.svg", "eval.svg"] {
        assert!(md.contains(&format!("]({svg})")), "{svg} not linked:\n{md}");
    }

    // Loss: a 10-point training line and a 2-point validation line (legend samples are 2-point lines too).
    let loss = polyline_lengths(&out.join("train-loss.svg"));
    assert_eq!(loss.iter().filter(|n| **n == 10).count(), 1, "{loss:?}");
    assert!(loss.contains(&2), "{loss:?}");
    let (_, texts) = svg_parts(&out.join("train-loss.svg"), "polyline", "points");
    for t in ["train: loss", "train: val loss", "step", "train: training and validation loss"] {
        assert!(texts.iter().any(|x| x == t), "{t} not in {texts:?}");
    }
    assert_eq!(polyline_lengths(&out.join("train-lr.svg")).iter().filter(|n| **n == 10).count(), 1);
    // Bars: value labels on every bar, stage names in the legend, task/metric under each group.
    let (_, texts) = svg_parts(&out.join("eval.svg"), "rect", "x");
    for t in [
        "eval-before",
        "eval-after",
        "xcopa_tr acc ↑",
        "perplexity_tr bits_per_byte ↓",
        "0.540",
        "0.600",
        "1.250",
        "1.100",
    ] {
        assert!(texts.iter().any(|x| x == t), "{t} not in {texts:?}");
    }
    let (_, texts) = svg_parts(&out.join("shards-mixture.svg"), "rect", "x");
    for t in ["configured", "actual (train split)", "wiki", "en", "0.750", "0.700", "0.250", "0.300"] {
        assert!(texts.iter().any(|x| x == t), "{t} not in {texts:?}");
    }
    let (_, texts) = svg_parts(&out.join("vocab-fertility.svg"), "rect", "x");
    for t in ["before (base)", "after (merged)", "tr.txt", "2.500", "1.750"] {
        assert!(texts.iter().any(|x| x == t), "{t} not in {texts:?}");
    }

    // The report's manifest lists what it read and wrote; the audit (which also reads results.manifest.json) is clean.
    let m = langadapt::manifest::Manifest::read(&out.join("manifest.json")).unwrap();
    assert_eq!(m.stage, "report");
    assert_eq!(m.outputs.len(), 6);
    assert_eq!(m.inputs.len(), 5 + 5, "five manifests and five data files: {:?}", m.inputs);
    let a = audit(root, &Progress { quiet: true }).unwrap();
    assert!(a.ok(), "{:?}", a.findings);
    assert_eq!(a.manifests, 6);

    // Again: the same bytes, and the old report folder is replaced (a stray file goes).
    let before: Vec<_> = summary.plots.iter().chain([&summary.report]).map(|p| std::fs::read(p).unwrap()).collect();
    std::fs::write(out.join("stray.svg"), "x").unwrap();
    let again = write_report(root, &[], &QUIET).unwrap();
    let after: Vec<_> = again.plots.iter().chain([&again.report]).map(|p| std::fs::read(p).unwrap()).collect();
    assert!(before == after, "report bytes differ between runs");
    assert!(!out.join("stray.svg").exists());
    assert!(audit(root, &Progress { quiet: true }).unwrap().ok());

    // The CLI parses, calls and prints where report.md is.
    let cli = langadapt(&["report", root.to_str().unwrap()]);
    assert!(cli.status.success(), "{}", stderr(&cli));
    assert_eq!(String::from_utf8_lossy(&cli.stdout).trim(), out.join("report.md").display().to_string());
}

#[test]
fn sections_without_data_are_left_out_and_corrupt_metrics_name_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let train = dir.path().join("train");
    write(&train.join("metrics.jsonl"), &metrics_jsonl());
    manifest(&train, "manifest.json", "train", json!({"mode": "lora"}), &["metrics.jsonl"], 1);
    let summary = write_report(dir.path(), &[], &QUIET).unwrap();
    let md = std::fs::read_to_string(&summary.report).unwrap();
    assert!(md.contains("## Training") && md.contains("| train | lora | 10 |"), "{md}");
    for absent in ["## Evaluation", "## Mixture", "## Vocabulary"] {
        assert!(!md.contains(absent), "{absent} in\n{md}");
    }
    assert_eq!(
        file_names(&dir.path().join("report")),
        ["manifest.json", "report.md", "train-loss.svg", "train-lr.svg"]
    );

    let metrics = train.join("metrics.jsonl");
    let mut lines: Vec<String> = metrics_jsonl().lines().map(str::to_string).collect();
    lines[3] = r#"{"step": 4, "loss": "#.into();
    write(&metrics, &lines.join("\n"));
    let err = write_report(dir.path(), &[], &QUIET).unwrap_err();
    assert!(matches!(err, ReportError::Data { line: 4, .. }), "{err:?}");
    assert!(err.to_string().starts_with(&format!("{}: line 4: not a metrics line", metrics.display())), "{err}");
    // A failed report leaves the last good one in place.
    assert_eq!(std::fs::read_to_string(&summary.report).unwrap(), md);

    std::fs::remove_file(&metrics).unwrap();
    let err = write_report(dir.path(), &[], &QUIET).unwrap_err().to_string();
    assert!(err.starts_with(&format!("{}: missing", metrics.display())), "{err}");

    let empty = tempfile::tempdir().unwrap();
    let err = write_report(empty.path(), &[], &QUIET).unwrap_err().to_string();
    assert!(err.contains("no manifest.json under this directory"), "{err}");
}

#[test]
fn report_on_the_real_quickstart_run_reads_its_metrics_and_mixture_and_audits_clean() {
    let out = tempfile::tempdir().unwrap();
    let o = out.path().to_str().unwrap();
    let recipe = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/quickstart.toml");
    // `run` writes the report at the end.
    let r = langadapt(&["run", recipe, "--out", o, "--smoke"]);
    assert!(r.status.success(), "{}", stderr(&r));
    let md = std::fs::read_to_string(out.path().join("report/report.md")).unwrap();
    for want in [
        "| trwiki | wiki ingest |",
        "| embed | embed-align | 4 |",
        "| cpt | full | 4 |",
        "| sft | sft | 4 |",
        "| trwiki | tr | 1.0000 | 1.0000 | – |",
        "## Vocabulary",
        "| task | metric | before | after | Δ |",
        "| xcopa_tr | acc |",
    ] {
        assert!(md.contains(want), "{want} missing:\n{md}");
    }
    // The vocabulary section reads the merge's fertility.json: tokens per word before → after.
    let fert: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path().join("vocab-tr/fertility.json")).unwrap()).unwrap();
    let tpw = |k: &str| fert["inputs"][0][k]["tokens_per_word"].as_f64().unwrap();
    let want = format!("{:.4} → {:.4}", tpw("base"), tpw("merged"));
    assert!(md.contains(&want), "{want} missing:\n{md}");
    // 4 smoke steps of continual pre-training.
    let loss = polyline_lengths(&out.path().join("report/cpt-loss.svg"));
    assert!(loss.contains(&4), "{loss:?}");
    assert!(out.path().join("report/eval.svg").is_file());
    let audit = langadapt(&["audit", o]);
    assert_eq!(audit.status.code(), Some(0), "{}", String::from_utf8_lossy(&audit.stdout));
}
