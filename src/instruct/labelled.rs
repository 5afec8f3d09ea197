//! The `labelled` recipe stage: a labelled dataset (one text and one label per record) made into
//! instruction records for task-specific fine-tuning, as LlamaTurk's c-i-t model was tuned on sentiment
//! (its `src/finetune_task.py`: a fixed instruction, the review as input, `olumlu`/`olumsuz` as the
//! answer, the first 2,500 reviews of each label).
//!
//! Input: JSON lines (`text_field` and `label_field` of each object; a numeric or boolean label is read
//! as its JSON text) or a TSV whose first row names the columns. Records whose label is not a key of
//! `labels` are left out and counted; so are records past `per_label` and records with an empty text.
//! Output: `out/instructions.jsonl` (instruction, input = text, output = `labels[label]`, lang) and
//! `out/manifest.json`.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::record::InstructRecord;
use super::InstructError;
use crate::corpus::DocId;
use crate::manifest::ManifestBuilder;
use crate::Env;

/// Settings of a `labelled` stage.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelledConfig {
    /// The labelled data: `.jsonl`, or `.tsv` with a header row.
    pub input: PathBuf,
    /// The task's instruction, the same for every record.
    pub instruction: String,
    /// Field (JSON) or column (TSV) holding the text.
    #[serde(default = "default_text_field")]
    pub text_field: String,
    /// Field or column holding the label.
    #[serde(default = "default_label_field")]
    pub label_field: String,
    /// Label as written in the data → the answer the model is trained to give; other labels are left out.
    pub labels: BTreeMap<String, String>,
    /// Keep at most this many records of each label, the first in file order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_label: Option<u64>,
    /// Language code written into every record.
    pub lang: String,
    /// Output directory (a recipe sets it per stage).
    #[serde(default)]
    pub out: PathBuf,
}

fn default_text_field() -> String {
    "text".into()
}

fn default_label_field() -> String {
    "label".into()
}

/// What a `labelled` stage did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LabelledReport {
    /// Instruction records written.
    pub records: u64,
    /// Records written per label (as the data spells it).
    pub per_label: BTreeMap<String, u64>,
    /// Records whose label is not in `labels`.
    pub skipped_label: u64,
    /// Records past `per_label`.
    pub skipped_limit: u64,
    /// Records with an empty text.
    pub skipped_empty: u64,
}

impl LabelledConfig {
    /// `out/instructions.jsonl`.
    pub fn output_path(&self) -> PathBuf {
        self.out.join("instructions.jsonl")
    }
}

/// One record of the input: its line and its (text, label).
type Row = (u64, Result<(String, String), String>);

/// Streams `(line, (text, label))` from a JSON-lines or TSV file.
fn rows(cfg: &LabelledConfig) -> Result<Box<dyn Iterator<Item = Result<Row, InstructError>>>, InstructError> {
    let path = cfg.input.clone();
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |source| InstructError::Io { path: p, source }
    };
    let tsv = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("tsv"));
    let jsonl = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("jsonl"));
    if !tsv && !jsonl {
        let msg = "labelled data must be .jsonl (one object per line) or .tsv (a header row naming the columns)";
        return Err(InstructError::Format { path, msg: msg.into() });
    }
    let mut lines = BufReader::new(File::open(&path).map_err(io(&path))?).lines().enumerate();
    let (text_field, label_field) = (cfg.text_field.clone(), cfg.label_field.clone());
    let columns = if tsv {
        let header = match lines.next() {
            Some((_, l)) => l.map_err(io(&path))?,
            None => String::new(),
        };
        let names: Vec<&str> = header.split('\t').map(str::trim).collect();
        let find = |f: &str| {
            names.iter().position(|n| *n == f).ok_or_else(|| InstructError::Record {
                path: path.clone(),
                at: "line 1".into(),
                msg: format!(
                    "the header has no column `{f}` (it has: {}); set text_field/label_field",
                    names.join(", ")
                ),
            })
        };
        Some((find(&text_field)?, find(&label_field)?))
    } else {
        None
    };
    Ok(Box::new(lines.filter_map(move |(i, l)| {
        let line = i as u64 + 1;
        let l = match l {
            Ok(l) => l,
            Err(e) => return Some(Err(io(&path)(e))),
        };
        if l.trim().is_empty() {
            return None;
        }
        let row = match columns {
            Some((t, lab)) => {
                let cells: Vec<&str> = l.split('\t').collect();
                match (cells.get(t), cells.get(lab)) {
                    (Some(t), Some(lab)) => Ok((t.to_string(), lab.trim().to_string())),
                    _ => Err(format!("{} columns, fewer than the header's", cells.len())),
                }
            }
            None => json_row(&l, &text_field, &label_field),
        };
        Some(Ok((line, row)))
    })))
}

/// `(text, label)` of one JSON object; a non-string label is taken as its JSON text (`1`, `true`).
fn json_row(line: &str, text_field: &str, label_field: &str) -> Result<(String, String), String> {
    let v: serde_json::Value = serde_json::from_str(line).map_err(|e| format!("not valid JSON: {e}"))?;
    let text = v.get(text_field).and_then(|t| t.as_str()).ok_or_else(|| format!("no string field `{text_field}`"))?;
    let label = match v.get(label_field) {
        Some(serde_json::Value::String(s)) => s.trim().to_string(),
        Some(x @ (serde_json::Value::Number(_) | serde_json::Value::Bool(_))) => x.to_string(),
        _ => return Err(format!("no string, number or boolean field `{label_field}`")),
    };
    Ok((text.to_string(), label))
}

/// Runs a `labelled` stage: writes `out/instructions.jsonl` and `out/manifest.json`.
pub fn run(cfg: &LabelledConfig, env: &Env) -> Result<LabelledReport, InstructError> {
    if cfg.labels.is_empty() {
        return Err(InstructError::Config("labels is empty: map each label of the data to its answer".into()));
    }
    let input = rows(cfg)?;
    let args = serde_json::to_value(cfg).map_err(|e| InstructError::Config(e.to_string()))?;
    let mut manifest = ManifestBuilder::new("labelled", args, None);
    manifest.add_input(&cfg.input, &env.progress)?;
    let out = cfg.output_path();
    let tmp = crate::io::tmp_path(&out);
    let io = |source| InstructError::Io { path: tmp.clone(), source };
    let mut w = std::io::BufWriter::new(File::create(&tmp).map_err(io)?);
    let mut r = LabelledReport::default();
    let file_name = cfg.input.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    for row in input {
        let (line, row) = row?;
        let (text, label) =
            row.map_err(|msg| InstructError::Record { path: cfg.input.clone(), at: format!("line {line}"), msg })?;
        let Some(answer) = cfg.labels.get(&label) else {
            r.skipped_label += 1;
            continue;
        };
        if text.trim().is_empty() {
            r.skipped_empty += 1;
            continue;
        }
        let kept = r.per_label.entry(label).or_default();
        if cfg.per_label.is_some_and(|n| *kept >= n) {
            r.skipped_limit += 1;
            continue;
        }
        *kept += 1;
        let rec = InstructRecord {
            id: DocId::Int(r.records as i64),
            instruction: cfg.instruction.clone(),
            input: text.trim().to_string(),
            output: answer.clone(),
            lang: cfg.lang.clone(),
            source_id: Some(format!("{file_name}:{line}")),
            translator: None,
        };
        serde_json::to_writer(&mut w, &rec).map_err(|e| io(e.into()))?;
        w.write_all(b"\n").map_err(io)?;
        r.records += 1;
    }
    let file = w.into_inner().map_err(|e| io(e.into_error()))?;
    crate::io::commit(file, &tmp, &out).map_err(|source| InstructError::Io { path: out.clone(), source })?;
    let counts = [
        ("records", r.records),
        ("skipped_label", r.skipped_label),
        ("skipped_limit", r.skipped_limit),
        ("skipped_empty", r.skipped_empty),
    ];
    for (k, n) in counts {
        manifest.count(k, n);
    }
    for (label, n) in &r.per_label {
        manifest.count(&format!("label:{label}"), *n);
    }
    let m = manifest.finish(&cfg.out, &[(out.clone(), Some(r.records))])?;
    m.write(&cfg.out.join("manifest.json"))?;
    Ok(r)
}

impl crate::stage::Stage for LabelledConfig {
    fn kind(&self) -> &'static str {
        "labelled"
    }
    fn paths_mut(&mut self) -> Vec<crate::stage::PathKey<'_>> {
        vec![("input".to_string(), &mut self.input, crate::stage::Need::Input)]
    }
    fn set_out(&mut self, dir: &Path) {
        self.out = dir.into();
    }
    fn run(&self, ctx: &crate::stage::StageCtx) -> Result<(), crate::stage::StageError> {
        run(self, ctx.env)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &Path, input: &str, text: &str) -> LabelledConfig {
        let input = dir.join(input);
        std::fs::write(&input, text).unwrap();
        LabelledConfig {
            input,
            instruction: "Olumlu mu, olumsuz mu?".into(),
            text_field: "review".into(),
            label_field: "score".into(),
            labels: [("Positive", "olumlu"), ("Negative", "olumsuz")]
                .into_iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
            per_label: Some(1),
            lang: "tr".into(),
            out: dir.join("out"),
        }
    }

    fn lines(path: &Path) -> Vec<serde_json::Value> {
        std::fs::read_to_string(path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    #[test]
    fn jsonl_records_become_instructions_with_limits_and_drops_counted() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(
            dir.path(),
            "s.jsonl",
            "{\"review\": \"Çok güzel.\", \"score\": \"Positive\"}\n\n\
             {\"review\": \"Fena değil.\", \"score\": \"Notr\"}\n\
             {\"review\": \"Harika!\", \"score\": \"Positive\"}\n\
             {\"review\": \" \", \"score\": \"Negative\"}\n\
             {\"review\": \"Berbat.\", \"score\": \"Negative\"}\n",
        );
        std::fs::create_dir_all(&cfg.out).unwrap();
        let env = Env::default();
        let r = run(&cfg, &env).unwrap();
        let per_label = [("Negative".to_string(), 1), ("Positive".to_string(), 1)].into_iter().collect();
        assert_eq!(r, LabelledReport { records: 2, per_label, skipped_label: 1, skipped_limit: 1, skipped_empty: 1 });
        let got = lines(&cfg.output_path());
        assert_eq!(
            got[0],
            serde_json::json!({"id": 0, "instruction": "Olumlu mu, olumsuz mu?", "input": "Çok güzel.",
                "output": "olumlu", "lang": "tr", "source_id": "s.jsonl:1"})
        );
        assert_eq!((got[1]["input"].as_str(), got[1]["output"].as_str()), (Some("Berbat."), Some("olumsuz")));
        assert_eq!(got[1]["source_id"], "s.jsonl:6");
        let m = crate::manifest::Manifest::read(&cfg.out.join("manifest.json")).unwrap();
        assert_eq!(m.counts["skipped_label"], 1);
        assert_eq!(m.counts["label:Positive"], 1);
    }

    #[test]
    fn tsv_columns_come_from_the_header_and_errors_name_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config(dir.path(), "s.tsv", "id\tscore\treview\n7\tNegative\tKötü.\n8\tPositive\n");
        cfg.per_label = None;
        std::fs::create_dir_all(&cfg.out).unwrap();
        let err = run(&cfg, &Env::default()).unwrap_err().to_string();
        assert_eq!(err, format!("{}: line 3: 2 columns, fewer than the header's", cfg.input.display()));
        std::fs::write(&cfg.input, "id\tscore\treview\n7\tNegative\tKötü.\n").unwrap();
        assert_eq!(run(&cfg, &Env::default()).unwrap().records, 1);
        assert_eq!(lines(&cfg.output_path())[0]["input"], "Kötü.");
        cfg.text_field = "text".into();
        let err = run(&cfg, &Env::default()).unwrap_err().to_string();
        assert!(
            err.ends_with(
                "line 1: the header has no column `text` (it has: id, score, review); set text_field/label_field"
            ),
            "{err}"
        );
        let err = run(&LabelledConfig { input: dir.path().join("s.csv"), ..cfg }, &Env::default()).unwrap_err();
        assert!(err.to_string().contains("labelled data must be .jsonl"), "{err}");
    }
}
