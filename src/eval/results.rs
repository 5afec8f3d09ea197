//! results.json, shaped like lm-evaluation-harness output so its tooling reads it: metric keys carry
//! lm-eval's filter suffix (`acc,none`, `acc_stderr,none`), `n-shot`, `n-samples`, `versions`,
//! `higher_is_better`, `groups` / `group_subtasks`, and `config` (model path + sha256, tasks,
//! few-shot, limit, seed, versions). `eval compare` turns several into one markdown table.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::EvalError;

/// lm-eval's suffix for metrics computed without a filter.
pub const FILTER: &str = ",none";

/// Documents of a task: all, and after `--limit`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NSamples {
    /// Documents in the data.
    pub original: usize,
    /// Documents scored.
    pub effective: usize,
}

/// The whole results.json.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Results {
    /// Per task (and group): `alias`, `{metric},none`, `{metric}_stderr,none`, `n`.
    pub results: BTreeMap<String, BTreeMap<String, Value>>,
    /// Groups only (also in `results`, as lm-eval does).
    #[serde(default)]
    pub groups: BTreeMap<String, BTreeMap<String, Value>>,
    /// Group → its subtasks.
    #[serde(default)]
    pub group_subtasks: BTreeMap<String, Vec<String>>,
    /// Task → version of its definition.
    #[serde(default)]
    pub versions: BTreeMap<String, Value>,
    /// Task → few-shot examples per prompt.
    #[serde(rename = "n-shot", default)]
    pub n_shot: BTreeMap<String, usize>,
    /// Task → documents.
    #[serde(rename = "n-samples", default)]
    pub n_samples: BTreeMap<String, NSamples>,
    /// Task → metric → whether higher is better.
    #[serde(default)]
    pub higher_is_better: BTreeMap<String, BTreeMap<String, bool>>,
    /// How the run was made.
    #[serde(default)]
    pub config: Value,
    /// Data problems found (e.g. known defects), one line each.
    #[serde(default)]
    pub warnings: Vec<String>,
}

impl Results {
    /// Records `metric` of `task` (value, optional stderr, higher-is-better).
    pub fn set(&mut self, task: &str, metric: &str, value: f64, stderr: Option<f64>, higher_is_better: bool) {
        let entry = self.results.entry(task.to_string()).or_default();
        entry.insert("alias".into(), Value::String(task.to_string()));
        entry.insert(format!("{metric}{FILTER}"), number(value));
        // lm-eval writes "N/A" where a metric has no standard error (perplexities).
        let se = stderr.map_or(Value::String("N/A".into()), number);
        entry.insert(format!("{metric}_stderr{FILTER}"), se);
        self.higher_is_better.entry(task.to_string()).or_default().insert(metric.to_string(), higher_is_better);
    }

    /// A metric's value, if present.
    pub fn get(&self, task: &str, metric: &str) -> Option<f64> {
        self.results.get(task)?.get(&format!("{metric}{FILTER}"))?.as_f64()
    }

    /// A metric's standard error, if present and numeric.
    pub fn stderr(&self, task: &str, metric: &str) -> Option<f64> {
        self.results.get(task)?.get(&format!("{metric}_stderr{FILTER}"))?.as_f64()
    }

    /// Reads a results.json.
    pub fn read(path: &Path) -> Result<Self, EvalError> {
        let bytes = std::fs::read(path).map_err(|e| EvalError::io(path, e))?;
        serde_json::from_slice(&bytes).map_err(|e| {
            EvalError::data(path, e.line() as u64, format!("not a results.json (lm-eval shape expected): {e}"))
        })
    }

    /// Writes pretty JSON atomically.
    pub fn write(&self, path: &Path) -> Result<(), EvalError> {
        let mut json = serde_json::to_vec_pretty(self).map_err(|e| EvalError::Config(e.to_string()))?;
        json.push(b'\n');
        crate::io::write_atomic(path, &json).map_err(|e| EvalError::io(path, e))
    }

    /// (task, metric) pairs in order, stderr keys left out.
    fn metrics(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (task, m) in &self.results {
            for key in m.keys() {
                if let Some(metric) = key.strip_suffix(FILTER) {
                    if !metric.ends_with("_stderr") && m[key].is_number() {
                        out.push((task.clone(), metric.to_string()));
                    }
                }
            }
        }
        out
    }
}

fn number(x: f64) -> Value {
    serde_json::Number::from_f64(x).map_or(Value::Null, Value::Number)
}

/// A markdown table of several results side by side (columns in the given order); with two, a
/// difference column (second minus first).
pub fn compare(runs: &[(String, Results)]) -> String {
    let mut rows: Vec<(String, String)> = Vec::new();
    for (_, r) in runs {
        for key in r.metrics() {
            if !rows.contains(&key) {
                rows.push(key);
            }
        }
    }
    rows.sort();
    let mut out = String::from("| task | metric |");
    for (label, _) in runs {
        out.push_str(&format!(" {label} |"));
    }
    if runs.len() == 2 {
        out.push_str(" Δ |");
    }
    out.push_str("\n|---|---|");
    out.push_str(&"---:|".repeat(runs.len() + usize::from(runs.len() == 2)));
    out.push('\n');
    for (task, metric) in rows {
        out.push_str(&format!("| {task} | {metric} |"));
        for (_, r) in runs {
            let cell = match (r.get(&task, &metric), r.stderr(&task, &metric)) {
                (Some(v), Some(se)) => format!("{v:.4} ± {se:.4}"),
                (Some(v), None) => format!("{v:.4}"),
                (None, _) => "–".to_string(),
            };
            out.push_str(&format!(" {cell} |"));
        }
        if let [(_, a), (_, b)] = runs {
            match (a.get(&task, &metric), b.get(&task, &metric)) {
                (Some(x), Some(y)) => out.push_str(&format!(" {:+.4} |", y - x)),
                _ => out.push_str(" – |"),
            }
        }
        out.push('\n');
    }
    out
}

/// `name` with the language code `from` replaced by `to` where it stands as a whole part (between
/// start, end, `_` or `-`), if it does.
fn swap_code(name: &str, from: &str, to: &str) -> Option<String> {
    let boundary = |c: Option<char>| c.is_none_or(|c| c == '_' || c == '-');
    name.match_indices(from).find_map(|(i, _)| {
        let before = name[..i].chars().next_back();
        let after = name[i + from.len()..].chars().next();
        (boundary(before) && boundary(after)).then(|| format!("{}{to}{}", &name[..i], &name[i + from.len()..]))
    })
}

/// English retention beside the target language, before and after adaptation: each task whose name has a
/// target code of `pairs` (`(target, english)`, e.g. `("tur_Latn", "eng_Latn")`, `("tr", "en")`) is put
/// beside the same task with the English code, with both changes (`after - before`).
pub fn retention(before: &(String, Results), after: &(String, Results), pairs: &[(String, String)]) -> String {
    let (lb, b) = before;
    let (la, a) = after;
    let mut rows: Vec<(String, String, String, String)> = Vec::new();
    for (task, metric) in b.metrics().into_iter().chain(a.metrics()) {
        for (target, english) in pairs {
            if let Some(eng) = swap_code(&task, target, english) {
                let family = swap_code(&task, target, "{lang}").unwrap_or_default();
                let row = (family, metric.clone(), task.clone(), eng);
                if !rows.contains(&row) {
                    rows.push(row);
                }
            }
        }
    }
    rows.sort();
    let cell = |r: &Results, t: &str, m: &str| r.get(t, m).map_or("–".to_string(), |v| format!("{v:.4}"));
    let delta = |t: &str, m: &str| match (b.get(t, m), a.get(t, m)) {
        (Some(x), Some(y)) => format!("{:+.4}", y - x),
        _ => "–".to_string(),
    };
    let mut out = format!(
        "| task | metric | target {lb} | target {la} | target Δ | English {lb} | English {la} | English Δ |\n|---|---|---:|---:|---:|---:|---:|---:|\n"
    );
    for (family, metric, t, e) in rows {
        out.push_str(&format!(
            "| {family} | {metric} | {} | {} | {} | {} | {} | {} |\n",
            cell(b, &t, &metric),
            cell(a, &t, &metric),
            delta(&t, &metric),
            cell(b, &e, &metric),
            cell(a, &e, &metric),
            delta(&e, &metric)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_puts_english_beside_the_target_language() {
        let mut before = Results::default();
        before.set("belebele_tur_Latn", "acc", 0.30, None, true);
        before.set("belebele_eng_Latn", "acc", 0.50, None, true);
        before.set("perplexity_tr", "bits_per_byte", 2.0, None, false);
        before.set("perplexity_en", "bits_per_byte", 1.0, None, false);
        let mut after = before.clone();
        after.set("belebele_tur_Latn", "acc", 0.40, None, true);
        after.set("belebele_eng_Latn", "acc", 0.45, None, true);
        after.set("perplexity_tr", "bits_per_byte", 1.5, None, false);
        after.set("xtra_task", "acc", 1.0, None, true);
        let pairs = [("tur_Latn".to_string(), "eng_Latn".to_string()), ("tr".to_string(), "en".to_string())];
        let t = retention(&("base".into(), before), &("adapted".into(), after), &pairs);
        assert_eq!(
            t,
            "| task | metric | target base | target adapted | target Δ | English base | English adapted | English Δ |\n\
             |---|---|---:|---:|---:|---:|---:|---:|\n\
             | belebele_{lang} | acc | 0.3000 | 0.4000 | +0.1000 | 0.5000 | 0.4500 | -0.0500 |\n\
             | perplexity_{lang} | bits_per_byte | 2.0000 | 1.5000 | -0.5000 | 1.0000 | 1.0000 | +0.0000 |\n"
        );
        assert_eq!(swap_code("belebele_tur_Latn", "tur_Latn", "eng_Latn").as_deref(), Some("belebele_eng_Latn"));
        assert_eq!(swap_code("mmlu_tr-x", "tr", "en").as_deref(), Some("mmlu_en-x"));
        assert_eq!(swap_code("xtra_trx", "tr", "en"), None);
    }

    #[test]
    fn results_round_trip_and_compare() {
        let mut a = Results::default();
        a.set("xcopa_tr", "acc", 0.5, Some(0.02), true);
        a.set("perplexity", "bits_per_byte", 1.25, None, false);
        let json = serde_json::to_string(&a).unwrap();
        assert!(json.contains("\"acc,none\":0.5") && json.contains("\"bits_per_byte_stderr,none\":\"N/A\""), "{json}");
        let back: Results = serde_json::from_str(&json).unwrap();
        assert_eq!(back, a);
        let mut b = a.clone();
        b.set("xcopa_tr", "acc", 0.625, Some(0.0216), true);
        let table = compare(&[("before".into(), a), ("after".into(), b)]);
        assert_eq!(
            table,
            "| task | metric | before | after | Δ |\n|---|---|---:|---:|---:|\n\
             | perplexity | bits_per_byte | 1.2500 | 1.2500 | +0.0000 |\n\
             | xcopa_tr | acc | 0.5000 ± 0.0200 | 0.6250 ± 0.0216 | +0.1250 |\n"
        );
    }
}
