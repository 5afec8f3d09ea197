//! The four papers' recipes under datasets/: without `--smoke` they name the first real path a user must
//! fill in; with `--smoke` they plan, run end to end on the bundled samples and tiny model, write the
//! expected checkpoints and before/after results, and leave an output tree `audit` finds clean. Their
//! settings agree with the tables of datasets/README.md (issue 17).

use std::path::Path;

use serde_json::Value;

use crate::common::{langadapt, stderr};

/// One recipe: its file, the first `[inputs]` key its first stage reads (with the placeholder path), the
/// training stages whose `final/` must exist, and eval stages with the tasks their results must hold.
struct Case {
    name: &'static str,
    missing: (&'static str, &'static str, &'static str),
    finals: &'static [&'static str],
    evals: &'static [(&'static str, &'static [&'static str])],
}

const TR: &[&str] =
    &["perplexity_xquad", "perplexity_dbricks", "xcopa_tr", "belebele_tur_Latn", "sentiment_tr", "codeswitch_tr"];
const ET: &[&str] = &["perplexity_et", "perplexity_en", "codeswitch_et", "flores_eng_Latn-est_Latn", "squad_et"];
const FA: &[&str] = &["perplexity_fa", "perplexity_en", "codeswitch_fa"];
const ZH: &[&str] =
    &["ceval-valid", "mmlu", "xcopa_zh", "belebele_zho_Hans", "perplexity_zh", "perplexity_en", "codeswitch_zh"];

const CASES: [Case; 4] = [
    Case {
        name: "llamaturk",
        missing: ("[wiki.trwiki] dump", "$dump", "/data/trwiki-20231101-pages-articles-multistream.xml.bz2"),
        finals: &["cpt", "sft", "sft-ci", "task-cit", "sft-ext"],
        evals: &[
            ("before", TR),
            ("after-cpt", TR),
            ("after-sft", TR),
            ("after-sft-ci", TR),
            ("after-cit", TR),
            ("after-sft-ext", TR),
        ],
    },
    Case {
        name: "llammas",
        missing: ("[eval.before] model", "$model", "/models/Llama-2-7b-hf"),
        finals: &["cpt-1b", "cpt-5b", "sft-5b-100", "sft-5b-50", "sft-5b-0", "sft-1b", "sft-base"],
        evals: &[
            ("before", ET),
            ("after-cpt-1b", ET),
            ("after-cpt-5b", ET),
            ("after-sft-5b-100", ET),
            ("after-sft-5b-50", ET),
            ("after-sft-5b-0", ET),
            ("after-sft-1b", ET),
            ("after-sft-base", ET),
        ],
    },
    Case {
        name: "persian",
        missing: ("[eval.before] model", "$model", "/models/Llama-2-7b-hf"),
        finals: &["embed", "lora", "sft"],
        evals: &[("before", FA), ("after-embed", FA), ("after-lora", FA), ("after-sft", FA)],
    },
    Case {
        name: "beyond-english",
        missing: ("[eval.base] model", "$model", "/models/llama-7b"),
        finals: &["cpt-zh", "cpt-mix", "cpt-ext", "sft-1k", "sft-5k", "sft-65k", "sft-950k", "sft-ext"],
        evals: &[
            ("base", ZH),
            ("cpt-zh-eval", ZH),
            ("cpt-mix-eval", ZH),
            ("cpt-ext-eval", ZH),
            ("sft-1k-eval", ZH),
            ("sft-5k-eval", ZH),
            ("sft-65k-eval", ZH),
            ("sft-950k-eval", ZH),
            ("sft-ext-eval", ZH),
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

/// Runs the checks every recipe shares; returns the smoke run's output directory for the recipe's own.
fn check(case: &Case) -> tempfile::TempDir {
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
    out
}

fn json(path: &Path) -> Value {
    let text = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&text).unwrap()
}

/// The instruction template an eval stage's manifest records for its generation prompts.
fn prompt_template(dir: &Path, stage: &str) -> Value {
    json(&dir.join(stage).join("results.manifest.json"))["args"]["prompt_template"].clone()
}

#[test]
fn llamaturk_smoke_runs_and_real_paths_are_named() {
    let out = check(&CASES[0]);
    // c-i-t: the 12 sample reviews minus the 2 Neutral ones become instruction records.
    let m = json(&out.path().join("sentiment-tr/manifest.json"));
    assert_eq!((m["counts"]["records"].as_u64(), m["counts"]["skipped_label"].as_u64()), (Some(10), Some(2)));
    let first = std::fs::read_to_string(out.path().join("sentiment-tr/instructions.jsonl")).unwrap();
    let first: Value = serde_json::from_str(first.lines().next().unwrap()).unwrap();
    assert_eq!(
        (first["input"].as_str(), first["output"].as_str()),
        (Some("Ürün çok kaliteli, herkese tavsiye ederim."), Some("olumlu"))
    );
    // Generation after instruction tuning is prompted in the tuned format; the base keeps the task's.
    assert_eq!(prompt_template(out.path(), "after-cit"), "alpaca_tr");
    assert_eq!(prompt_template(out.path(), "after-sft-ci"), "alpaca_tr");
    assert_eq!(prompt_template(out.path(), "after-cpt"), Value::Null);
}

#[test]
fn llammas_smoke_runs_and_real_paths_are_named() {
    let out = check(&CASES[1]);
    // The three EN→ET : ET→EN ratios, over the 20 sample pairs.
    let dirs = |tag: &str| {
        let c = json(&out.path().join(format!("mt-{tag}/pairs.jsonl.manifest.json")))["counts"].clone();
        (c["src_to_tgt"].as_u64().unwrap(), c["tgt_to_src"].as_u64().unwrap())
    };
    let (all, none) = (dirs("100"), dirs("0"));
    assert_eq!((all.1, none.0), (0, 0));
    assert_eq!(all.0, none.1);
    let half = dirs("50");
    assert!(half.0 > 0 && half.1 > 0 && half.0 + half.1 == all.0, "{half:?}");
    assert_eq!(prompt_template(out.path(), "after-sft-base"), "chat");
}

/// Llama-2's tokenizer size: the base of 002's "total vocabulary of 49,816 tokens".
const LLAMA2_VOCAB: u64 = 32_000;

#[test]
fn persian_smoke_runs_and_real_paths_are_named() {
    let out = check(&CASES[2]);
    // Real sizes: 32,000 + max_added = 49,816 (002), fewer than the 20,000 trained pieces. The smoke run
    // scales both down (datasets/persian.toml) and its merge report must show the same relation: the cap
    // binds (more new pieces than it) and final_size = base_size + the cap.
    let dir = tempfile::tempdir().unwrap();
    let real = resolved_real("persian", dir.path());
    let max_added = setting(&real, "vocab-fa", &["max_added"]).as_u64().unwrap();
    assert_eq!(LLAMA2_VOCAB + max_added, 49_816);
    assert!(max_added < setting(&real, "spm-fa", &["vocab_size"]).as_u64().unwrap());
    let cap = setting(&resolved(&recipe("persian"), &["--smoke"]), "vocab-fa", &["max_added"]).as_u64().unwrap();
    let report = json(&out.path().join("vocab-fa/merge_report.json"));
    let n = |k: &str| report[k].as_u64().unwrap();
    assert_eq!(
        (n("base_size"), n("added"), n("skipped_limit"), n("final_size")),
        (1000, cap, 6, 1000 + cap),
        "{report}"
    );
    assert_eq!(prompt_template(out.path(), "after-sft"), "alpaca");
}

#[test]
fn beyond_english_smoke_runs_and_real_paths_are_named() {
    let out = check(&CASES[3]);
    // The SFT sizes, scaled to the 8 sample records: 1, 2, 4, 8 examples.
    for (stage, n) in [("sft-1k-data", 1), ("sft-5k-data", 2), ("sft-65k-data", 4), ("sft-950k-data", 8)] {
        let stats = json(&out.path().join(stage).join("stats.json"));
        // One example per row (sft without packing).
        assert_eq!(stats["splits"]["train"]["sources"]["instructions"]["rows"].as_u64(), Some(n), "{stage}: {stats}");
    }
    assert_eq!(prompt_template(out.path(), "sft-950k-eval"), "alpaca_zh");
}

/// `langadapt run RECIPE --dry-run --json` (with `extra` flags): the resolved recipe.
fn resolved(recipe: &str, extra: &[&str]) -> Value {
    let mut args = vec!["run", recipe, "--dry-run", "--json"];
    args.extend_from_slice(extra);
    let out = langadapt(&args);
    assert!(out.status.success(), "{recipe}: {}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A setting of a resolved recipe: `keys` under stage `stage`'s settings; `sources[NAME]` picks a source.
fn setting(recipe: &Value, stage: &str, keys: &[&str]) -> Value {
    let stages = recipe["stages"].as_array().unwrap();
    let s = stages.iter().find(|s| s["name"] == stage).unwrap_or_else(|| panic!("no stage `{stage}`"));
    let mut v = &s["config"]["settings"];
    for k in keys {
        v = match k.strip_prefix("sources[").and_then(|r| r.strip_suffix(']')) {
            Some(name) => v["sources"]
                .as_array()
                .and_then(|a| a.iter().find(|x| x["name"] == name))
                .unwrap_or_else(|| panic!("stage `{stage}` has no source `{name}`")),
            None => v.get(k).unwrap_or_else(|| panic!("stage `{stage}` has no setting `{}`", keys.join("."))),
        };
    }
    v.clone()
}

/// The value of a README table expression: `STAGE.key[.key…]` paths and integers joined by ` × ` and ` + `.
fn evaluate(recipe: &Value, expr: &str) -> Value {
    let path = |p: &str| {
        let mut parts = p.split('.');
        let stage = parts.next().unwrap();
        let keys: Vec<&str> = parts.collect();
        setting(recipe, stage, &keys)
    };
    if !expr.contains(" × ") && !expr.contains(" + ") {
        return path(expr);
    }
    let factor = |f: &str| {
        f.parse::<f64>().unwrap_or_else(|_| path(f).as_f64().unwrap_or_else(|| panic!("`{f}` is not a number")))
    };
    let sum: f64 = expr.split(" + ").map(|t| t.split(" × ").map(factor).product::<f64>()).sum();
    serde_json::json!(sum)
}

/// Whether a resolved value is what a README table cell says (see datasets/README.md "Recipes").
fn agrees(got: &Value, want: &str) -> bool {
    let list = |v: &[String]| v.join(", ");
    match got {
        Value::Number(n) => want.parse::<f64>().is_ok_and(|w| (n.as_f64().unwrap() - w).abs() <= 1e-9 * w.abs()),
        Value::Bool(b) => want == b.to_string(),
        Value::String(s) => {
            s == want
                || want.strip_prefix('@').is_some_and(|rest| s.ends_with(&format!("/{rest}")))
                || Path::new(s).file_name().is_some_and(|f| f == want)
        }
        Value::Array(a) => {
            list(&a.iter().map(|x| x.as_str().unwrap_or_default().to_string()).collect::<Vec<_>>()) == want
        }
        Value::Object(o) => list(&o.keys().cloned().collect::<Vec<_>>()) == want,
        Value::Null => false,
    }
}

/// The recipe's real settings (`--dry-run --json` without `--smoke`): the recipe is copied into `dir` with
/// every `[inputs]` path replaced by an empty file of the same name, so the dry run resolves without the
/// real data; nothing else changes.
fn resolved_real(name: &str, dir: &Path) -> Value {
    // Line by line: stages run in file order, which re-serializing the TOML would not keep.
    let mut text = String::new();
    let mut in_inputs = false;
    for line in std::fs::read_to_string(recipe(name)).unwrap().lines() {
        if line.starts_with('[') {
            in_inputs = line == "[inputs]";
        }
        let entry = line.split_once(" = \"").filter(|_| in_inputs && !line.starts_with('#'));
        let Some((key, path)) = entry else {
            text += &format!("{line}\n");
            continue;
        };
        let file = dir.join(name).join(key).join(Path::new(path.trim_end_matches('"')).file_name().unwrap());
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, "").unwrap();
        text += &format!("{key} = {:?}\n", file.to_str().unwrap());
    }
    let copy = dir.join(format!("{name}.toml"));
    std::fs::write(&copy, text).unwrap();
    resolved(copy.to_str().unwrap(), &[])
}

/// The recipe's real settings (see [`resolved_real`]) equal the numbers of its README table.
#[test]
fn readme_tables_match_the_resolved_recipes() {
    let readme = std::fs::read_to_string(format!("{}/datasets/README.md", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for case in &CASES {
        let heading = format!("### {}.toml", case.name);
        let section = readme.split("\n### ").find(|s| format!("### {s}").starts_with(&heading));
        let section = section.unwrap_or_else(|| panic!("datasets/README.md has no `{heading}` section"));
        let got = resolved_real(case.name, dir.path());
        let mut rows = 0;
        for line in section.lines().filter(|l| l.starts_with("| `")) {
            let cells: Vec<&str> = line.split(" | ").map(|c| c.trim_matches(|c| c == '|' || c == ' ')).collect();
            let (expr, want) = (cells[0].trim_matches('`'), cells[2].trim_matches('`'));
            let value = evaluate(&got, expr);
            assert!(
                agrees(&value, want),
                "{}: README says `{expr}` = `{want}`, the recipe resolves it to {value}",
                case.name
            );
            rows += 1;
        }
        assert!(rows >= 15, "{}: only {rows} checked rows in its README table", case.name);
    }
}
