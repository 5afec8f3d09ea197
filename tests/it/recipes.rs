//! The four papers' recipes under datasets/: without `--smoke` they name the first real path a user must
//! fill in; with `--smoke` they plan, run end to end on the bundled samples and tiny model, write the
//! expected checkpoints and before/after results, and leave an output tree `audit` finds clean.

use std::path::Path;

use crate::common::{langadapt, stderr};

/// One recipe: its file, the first `[inputs]` key its first stage reads (with the placeholder path), the
/// training stages whose `final/` must exist, and eval stages with the tasks their results must hold.
struct Case {
    name: &'static str,
    missing: (&'static str, &'static str, &'static str),
    finals: &'static [&'static str],
    evals: &'static [(&'static str, &'static [&'static str])],
}

const TR: &[&str] = &["perplexity", "xcopa_tr", "belebele_tur_Latn", "codeswitch_tr"];
const ET: &[&str] = &["perplexity", "codeswitch_et"];
const FA: &[&str] = &["perplexity", "codeswitch_fa"];
const ZH: &[&str] = &["ceval-valid", "xcopa_zh", "belebele_zho_Hans", "perplexity", "codeswitch_zh"];
const EN: &[&str] = &["perplexity"];

const CASES: [Case; 4] = [
    Case {
        name: "llamaturk",
        missing: ("[wiki.trwiki] dump", "$dump", "/data/trwiki-20231101-pages-articles-multistream.xml.bz2"),
        finals: &["cpt", "sft", "sft-ext"],
        evals: &[("before", TR), ("after-cpt", TR), ("after-sft", TR), ("after-sft-ext", TR)],
    },
    Case {
        name: "llammas",
        missing: ("[eval.before] model", "$model", "/models/Llama-2-7b-hf"),
        finals: &["cpt", "sft"],
        evals: &[("before", ET), ("after-cpt", ET), ("after-sft", ET)],
    },
    Case {
        name: "persian",
        missing: ("[eval.before] model", "$model", "/models/Llama-2-7b-chat-hf"),
        finals: &["embed", "lora", "sft"],
        evals: &[("before", FA), ("after-cpt", FA), ("after-sft", FA)],
    },
    Case {
        name: "beyond-english",
        missing: ("[eval.base] model", "$model", "/models/llama-7b"),
        finals: &["cpt-zh", "cpt-mix", "cpt-ext", "sft-full", "sft-small"],
        evals: &[
            ("base", ZH),
            ("base-en", EN),
            ("cpt-zh-eval", ZH),
            ("cpt-zh-eval-en", EN),
            ("cpt-mix-eval", ZH),
            ("cpt-mix-eval-en", EN),
            ("cpt-ext-eval", ZH),
            ("cpt-ext-eval-en", EN),
            ("sft-full-eval", ZH),
            ("sft-small-eval", ZH),
        ],
    },
];

fn recipe(name: &str) -> String {
    format!("{}/datasets/{name}.toml", env!("CARGO_MANIFEST_DIR"))
}

fn task_names(dir: &Path, stage: &str) -> Vec<String> {
    let path = dir.join(stage).join("results.json");
    let text = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let v: serde_json::Value = serde_json::from_slice(&text).unwrap();
    v["results"].as_object().unwrap_or_else(|| panic!("{}: no results", path.display())).keys().cloned().collect()
}

fn check(case: &Case) {
    let r = recipe(case.name);
    let out = tempfile::tempdir().unwrap();
    let o = out.path().to_str().unwrap();

    // Real paths: the dry run names every placeholder, the first with its stage, key, `$input` and path.
    let real = langadapt(&["run", &r, "--out", o, "--dry-run"]);
    assert_eq!(real.status.code(), Some(2), "{}: {}", case.name, stderr(&real));
    let (at, key, path) = case.missing;
    let want = format!("{at} = \"{key}\": {path} does not exist");
    assert!(stderr(&real).contains(&want), "{}: want `{want}` in: {}", case.name, stderr(&real));

    // Samples: the plan, then the whole run.
    let plan = langadapt(&["run", &r, "--out", o, "--dry-run", "--smoke"]);
    assert!(plan.status.success(), "{}: {}", case.name, stderr(&plan));
    assert!(!out.path().read_dir().unwrap().any(|_| true), "{}: --dry-run wrote", case.name);
    let run = langadapt(&["run", &r, "--out", o, "--smoke"]);
    assert!(run.status.success(), "{}: {}", case.name, stderr(&run));
    let planned: Vec<String> =
        String::from_utf8_lossy(&plan.stdout).lines().map(|l| l.split('\t').next().unwrap().to_string()).collect();
    for stage in &planned {
        assert!(out.path().join(stage).is_dir(), "{}: no output for stage {stage}", case.name);
    }
    for stage in case.finals {
        let fin = out.path().join(stage).join("final");
        for f in ["config.json", "model.safetensors", "tokenizer.model"] {
            assert!(fin.join(f).is_file(), "{}: {}/{f} missing", case.name, fin.display());
        }
    }
    for (stage, tasks) in case.evals {
        let got = task_names(out.path(), stage);
        for t in *tasks {
            assert!(got.iter().any(|g| g == t), "{}: {stage}/results.json lacks {t}: {got:?}", case.name);
        }
    }
    let audit = langadapt(&["audit", o]);
    assert!(
        audit.status.success(),
        "{}: audit: {}{}",
        case.name,
        String::from_utf8_lossy(&audit.stdout),
        stderr(&audit)
    );
}

#[test]
fn llamaturk_smoke_runs_and_real_paths_are_named() {
    check(&CASES[0]);
}

#[test]
fn llammas_smoke_runs_and_real_paths_are_named() {
    check(&CASES[1]);
}

#[test]
fn persian_smoke_runs_and_real_paths_are_named() {
    check(&CASES[2]);
}

#[test]
fn beyond_english_smoke_runs_and_real_paths_are_named() {
    check(&CASES[3]);
}
