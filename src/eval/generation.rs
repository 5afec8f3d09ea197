//! Generation tasks (lm-eval `generate_until`): a prompt per document (with few-shot examples), a
//! greedy answer cut at stop sequences, and text metrics against the document's references — corpus
//! BLEU/chrF/chrF++ (sacrebleu) for translation, exact match and F1 (SQuAD v1.1) for extractive QA. The
//! data layouts are the released ones: FLORES-200 (`{lang}.devtest`, one sentence per line, or the Hub's
//! Parquet/JSONL with a `text` or `sentence` column), SQuAD JSON (or the Hub's JSONL rows), and plain
//! JSONL with a references field.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::{json, Value};

use super::lm::{GenerateUntil, LanguageModel};
use super::metrics::mean_stderr;
use super::pyrandom::PyRandom;
use super::task::{self, Doc, DocFormat, Prompt, Sampler, FEWSHOT_SEED};
use super::tasks::{OutputType, Score, Task, TaskResults};
use super::textmetrics::{self, BleuTokenizer, MetricOptions, TextMetric};
use super::EvalError;
use super::RunConfig;
use crate::shards::Template;

/// A generation family (`kind = "generate"`). Templates as in multiple-choice files; FLORES documents
/// have the fields `source`, `target` and `id` and the variables `$src`, `$tgt`, `$src_name`,
/// `$tgt_name`; SQuAD documents `id`, `title`, `context`, `question`, `answer` (the first gold answer).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenSpec {
    /// Task name pattern, e.g. `flores_{instance}` (instance `eng_Latn-est_Latn`).
    pub name: String,
    /// Task version.
    pub version: String,
    /// The lm-evaluation-harness template (or paper) this follows.
    pub source: String,
    /// How documents and references are laid out.
    pub layout: GenLayout,
    /// Scored documents under `--data-dir` (`{instance}`; FLORES: `{lang}` for each side).
    pub data: String,
    /// Few-shot documents (same placeholders).
    #[serde(default)]
    pub fewshot_data: Option<String>,
    /// `first_n` or `random` (as multiple-choice files).
    #[serde(default)]
    pub fewshot_sampler: Sampler,
    /// Few-shot examples when the run does not say (`--num-fewshot`); default 0.
    #[serde(default)]
    pub num_fewshot: Option<usize>,
    /// Prepended to every prompt.
    #[serde(default)]
    pub description: String,
    /// The prompt (lm-eval `doc_to_text`).
    pub text: String,
    /// The answer shown after few-shot examples (lm-eval `doc_to_target`).
    pub target: String,
    /// The instruction given to an instruction-tuned model instead of `text` when the run names its
    /// prompt template (`prompt_template`, set by recipes from their SFT stage); zero-shot.
    #[serde(default)]
    pub instruction: Option<String>,
    /// Between a prompt and its answer.
    #[serde(default = "task::default_target_delimiter")]
    pub target_delimiter: String,
    /// Between few-shot examples.
    #[serde(default = "task::default_fewshot_delimiter")]
    pub fewshot_delimiter: String,
    /// The answer is cut at the first of these.
    pub until: Vec<String>,
    /// Most new tokens per answer (lm-eval `max_gen_toks`).
    pub max_gen_toks: usize,
    /// Metrics reported.
    pub metrics: Vec<TextMetric>,
    /// SQuAD's article list (default: the instance's language, see `SquadNorm::for_lang`).
    #[serde(default)]
    pub articles: Option<Vec<String>>,
    /// Any instance name whose data exists is a task.
    #[serde(default)]
    pub open_instances: bool,
    /// Named instances and their variables (`lang` names the answer language for the metrics).
    #[serde(default)]
    pub instances: BTreeMap<String, BTreeMap<String, toml::Value>>,
    /// Language code → English name, for `$src_name` / `$tgt_name` (FLORES).
    #[serde(default)]
    pub languages: BTreeMap<String, String>,
}

/// Data layouts of generation tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GenLayout {
    /// FLORES-200: one file per language, aligned by line; the instance is `{src}-{tgt}`.
    Flores,
    /// SQuAD v1.1 JSON (`data[].paragraphs[].qas[]`) or JSONL rows (`answers.text`).
    Squad,
    /// JSONL documents; `references` (a string or a list) are the gold answers.
    Jsonl,
}

/// Documents with their gold references (the first one is the few-shot answer).
type Docs = Vec<(Doc, Vec<String>)>;

/// A generation task bound to its instance and data.
pub struct GenTask<'a> {
    /// Task name.
    pub name: String,
    /// The family.
    pub spec: &'a GenSpec,
    vars: BTreeMap<String, toml::Value>,
    /// The language answers are in (metrics' tokenizer and articles).
    lang: String,
    /// The scored file (FLORES: the source side).
    pub data_path: PathBuf,
    docs: Docs,
    fewshot: Option<(PathBuf, Vec<Doc>)>,
}

impl<'a> GenTask<'a> {
    /// Binds `spec`'s instance to its files under `data_dir`.
    pub fn open(name: &str, instance: &str, spec: &'a GenSpec, data_dir: &Path) -> Result<Self, EvalError> {
        let mut vars = spec.instances.get(instance).cloned().unwrap_or_default();
        vars.insert("instance".into(), toml::Value::String(instance.into()));
        let missing = |path: &Path, what: &str| {
            EvalError::Config(format!(
                "{name}: no {what} {}; put the dataset under --data-dir in its released layout ({})",
                path.display(),
                spec.data
            ))
        };
        let (data_path, docs, fewshot, lang) = match spec.layout {
            GenLayout::Flores => {
                let (src, tgt) = instance.split_once('-').ok_or_else(|| {
                    EvalError::Config(format!(
                        "{name}: a FLORES task names a language pair, e.g. flores_eng_Latn-est_Latn (source-target codes)"
                    ))
                })?;
                for (key, code) in [("src", src), ("tgt", tgt)] {
                    vars.insert(key.into(), toml::Value::String(code.into()));
                    let lang_name = spec.languages.get(code).cloned().unwrap_or_else(|| code.to_string());
                    vars.insert(format!("{key}_name"), toml::Value::String(lang_name));
                }
                let side = |template: &str, code: &str| flores_file(&data_dir.join(template.replace("{lang}", code)));
                let (src_path, tgt_path) = (side(&spec.data, src), side(&spec.data, tgt));
                for p in [&src_path, &tgt_path] {
                    if !p.is_file() {
                        return Err(missing(p, "FLORES file"));
                    }
                }
                let docs = flores_pairs(&src_path, &tgt_path)?;
                let fewshot = match &spec.fewshot_data {
                    Some(f) => {
                        let (fs, ft) = (side(f, src), side(f, tgt));
                        (fs.is_file() && ft.is_file()).then(|| flores_pairs(&fs, &ft).map(|d| (fs, d))).transpose()?
                    }
                    None => None,
                };
                (src_path, docs, fewshot, tgt.to_string())
            }
            GenLayout::Squad | GenLayout::Jsonl => {
                // `dev.json` or the Hub's `dev.jsonl`.
                let fill = |t: &str| {
                    let p = data_dir.join(t.replace("{instance}", instance));
                    if p.is_file() || !p.with_extension("jsonl").is_file() {
                        p
                    } else {
                        p.with_extension("jsonl")
                    }
                };
                let path = fill(&spec.data);
                if !path.is_file() {
                    return Err(missing(&path, "data file"));
                }
                let read = |p: &Path| match spec.layout {
                    GenLayout::Squad => read_squad(p),
                    _ => read_references(p),
                };
                let docs = read(&path)?;
                let fewshot = match spec.fewshot_data.as_ref().map(|f| fill(f)) {
                    Some(p) if p.is_file() => Some((p.clone(), read(&p)?)),
                    _ => None,
                };
                let lang = vars.get("lang").and_then(|v| v.as_str()).unwrap_or(instance).to_string();
                (path, docs, fewshot, lang)
            }
        };
        let fewshot = fewshot.map(|(p, d)| (p, d.into_iter().map(|(doc, _)| doc).collect()));
        Ok(GenTask { name: name.to_string(), spec, vars, lang, data_path, docs, fewshot })
    }

    fn prompt(&self) -> Prompt<'_> {
        Prompt {
            task: &self.name,
            description: &self.spec.description,
            text: &self.spec.text,
            target_delimiter: &self.spec.target_delimiter,
            fewshot_delimiter: &self.spec.fewshot_delimiter,
            sampler: self.spec.fewshot_sampler,
            fewshot_file: self.spec.fewshot_data.as_deref(),
            vars: &self.vars,
        }
    }

    /// The generation requests of the first `limit` documents.
    pub fn requests(&self, cfg: &RunConfig) -> Result<Vec<GenerateUntil>, EvalError> {
        let template = cfg.prompt_template.as_deref().map(Template::by_name).transpose().map_err(EvalError::Config)?;
        let max_tokens = cfg.max_gen_tokens.unwrap_or(self.spec.max_gen_toks);
        let mut rng = PyRandom::new(FEWSHOT_SEED);
        let answer = |ex: &Doc, path: &Path| {
            task::render(&self.spec.target, ex, &self.vars).map_err(|m| EvalError::data(path, ex.line, m))
        };
        let mut out = Vec::new();
        for (doc, _) in self.docs.iter().take(cfg.limit.unwrap_or(usize::MAX)) {
            let req = match (&template, &self.spec.instruction) {
                (Some(t), Some(instruction)) => {
                    let text = task::render(instruction, doc, &self.vars)
                        .map_err(|m| EvalError::data(&self.data_path, doc.line, m))?;
                    let mut until = vec![t.stop()];
                    until.extend(self.spec.until.iter().cloned());
                    GenerateUntil { context: t.prompt(&text), until, max_tokens }
                }
                _ => {
                    let context = self.prompt().context(
                        doc,
                        &self.data_path,
                        self.fewshot.as_ref(),
                        cfg.shots(self.spec.num_fewshot),
                        &mut rng,
                        answer,
                    )?;
                    GenerateUntil { context, until: self.spec.until.clone(), max_tokens }
                }
            };
            out.push(req);
        }
        Ok(out)
    }

    fn options(&self) -> MetricOptions {
        MetricOptions {
            lang: Some(self.lang.clone()),
            articles: self.spec.articles.clone(),
            ..MetricOptions::default()
        }
    }
}

impl Task for GenTask<'_> {
    fn name(&self) -> &str {
        &self.name
    }
    fn output_type(&self) -> OutputType {
        OutputType::GenerateUntil
    }
    fn data(&self) -> Option<(&Path, Option<&super::task::HubDataSource>)> {
        Some((&self.data_path, None))
    }
    fn evaluate(&self, lm: &mut dyn LanguageModel, cfg: &RunConfig) -> Result<TaskResults, EvalError> {
        let reqs = self.requests(cfg)?;
        let responses = lm.generate_until(&reqs)?;
        if responses.len() != reqs.len() {
            return Err(EvalError::Model(format!(
                "{} answers for {} generation requests",
                responses.len(),
                reqs.len()
            )));
        }
        let docs = &self.docs[..reqs.len()];
        let opts = self.options();
        let golds: Vec<Vec<String>> = docs.iter().map(|(_, r)| r.clone()).collect();
        let mut scores = Vec::new();
        let mut per_doc: Vec<Vec<(&'static str, f64)>> = vec![Vec::new(); docs.len()];
        let mut extra = Vec::new();
        for &metric in &self.spec.metrics {
            let m = textmetrics::score(metric, &responses, &golds, &opts, true)
                .map_err(|e| EvalError::Config(format!("{}: {e}", self.name)))?;
            for c in &m.corpus {
                // SQuAD's scores are means over questions and have a standard error; corpus BLEU and chrF have
                // none per document (lm-eval bootstraps one).
                let stderr = (metric == TextMetric::Squad).then(|| {
                    let xs: Vec<f64> =
                        m.segments.iter().flatten().filter(|(k, _)| *k == c.metric).map(|(_, x)| 100.0 * x).collect();
                    mean_stderr(&xs)
                });
                scores.push(Score {
                    metric: c.metric.clone(),
                    value: c.score,
                    stderr: stderr.flatten(),
                    higher_is_better: true,
                });
            }
            if let Some(c) = m.corpus.first() {
                extra.push((signature_key(metric), json!(c.signature)));
            }
            for (d, seg) in per_doc.iter_mut().zip(m.segments) {
                d.extend(seg);
            }
        }
        let samples = docs
            .iter()
            .zip(&reqs)
            .zip(&responses)
            .enumerate()
            .map(|(i, (((doc, refs), req), resp))| {
                let mut s = json!({
                    "doc_id": i,
                    "doc": doc.fields,
                    "target": refs,
                    "arguments": {"context": req.context, "until": req.until, "max_gen_toks": req.max_tokens},
                    "resps": [[resp]],
                });
                for (k, v) in &per_doc[i] {
                    s[*k] = json!(v);
                }
                s
            })
            .collect();
        let tokenizer = opts.bleu().tokenizer;
        if self.spec.metrics.contains(&TextMetric::Bleu) && tokenizer == BleuTokenizer::Mteval13a {
            let code = super::textmetrics::base_code(&self.lang);
            if ["ja", "jpn", "ko", "kor", "th", "tha", "my", "mya", "km", "khm", "lo", "lao"].contains(&code.as_str()) {
                extra.push((
                    "note",
                    json!(
                        "BLEU with the 13a tokenizer on a language written without spaces measures little; read chrF"
                    ),
                ));
            }
        }
        Ok(TaskResults {
            version: self.spec.version.clone(),
            num_fewshot: if cfg.prompt_template.is_some() && self.spec.instruction.is_some() {
                0
            } else {
                cfg.shots(self.spec.num_fewshot)
            },
            n_docs: (self.docs.len(), docs.len()),
            scores,
            extra,
            samples,
        })
    }
}

/// Where results.json names how a metric was computed.
fn signature_key(metric: TextMetric) -> &'static str {
    match metric {
        TextMetric::Bleu => "bleu_signature",
        TextMetric::Chrf => "chrf_signature",
        TextMetric::ChrfPlusPlus => "chrf++_signature",
        TextMetric::Squad => "squad_normalization",
    }
}

/// A FLORES side's file: the path itself, else `{lang}.parquet` or `{lang}.jsonl` beside it (the Hub's
/// layouts), else the path (so the error names the released layout).
fn flores_file(path: &Path) -> PathBuf {
    if path.is_file() {
        return path.to_path_buf();
    }
    ["parquet", "jsonl"]
        .iter()
        .map(|ext| path.with_extension(ext))
        .find(|p| p.is_file())
        .unwrap_or_else(|| path.to_path_buf())
}

/// The sentences of a FLORES file: lines of a text file, or the `text` (FLORES+) / `sentence` column.
fn flores_sentences(path: &Path) -> Result<Vec<String>, EvalError> {
    match path.extension().and_then(|e| e.to_str()) {
        Some(ext @ ("parquet" | "jsonl")) => {
            let format = if ext == "parquet" { DocFormat::Parquet } else { DocFormat::Jsonl };
            task::read_docs(path, format, None)?
                .into_iter()
                .map(|d| {
                    d.fields.get("text").or_else(|| d.fields.get("sentence")).cloned().ok_or_else(|| {
                        EvalError::data(
                            path,
                            d.line,
                            "no `text` or `sentence` column (FLORES+ / facebook/flores layouts)",
                        )
                    })
                })
                .collect()
        }
        _ => {
            let text = std::fs::read_to_string(path).map_err(|e| EvalError::io(path, e))?;
            Ok(text.lines().map(str::to_string).collect())
        }
    }
}

/// Aligned source/target documents; files of different lengths are not the same split.
fn flores_pairs(src: &Path, tgt: &Path) -> Result<Docs, EvalError> {
    let (s, t) = (flores_sentences(src)?, flores_sentences(tgt)?);
    if s.len() != t.len() {
        return Err(EvalError::Config(format!(
            "{} has {} sentences but {} has {}: FLORES files of one split are aligned line by line",
            src.display(),
            s.len(),
            tgt.display(),
            t.len()
        )));
    }
    Ok(s.into_iter()
        .zip(t)
        .enumerate()
        .map(|(i, (source, target))| {
            let fields = BTreeMap::from([
                ("id".to_string(), (i + 1).to_string()),
                ("source".to_string(), source),
                ("target".to_string(), target.clone()),
            ]);
            (Doc { fields, line: i as u64 + 1 }, vec![target])
        })
        .collect())
}

/// SQuAD documents: the official JSON (`{"data": [{"title", "paragraphs": [{"context", "qas": [{"id",
/// "question", "answers": [{"text"}]}]}]}]}`) or one Hub row per line (`answers: {"text": [...]}`).
fn read_squad(path: &Path) -> Result<Docs, EvalError> {
    let text = std::fs::read_to_string(path).map_err(|e| EvalError::io(path, e))?;
    // `place` names the question where a line number cannot (the JSON layout).
    let qa = |fields: BTreeMap<String, String>,
              answers: Vec<String>,
              line: u64,
              place: &str|
     -> Result<(Doc, Vec<String>), EvalError> {
        if answers.is_empty() {
            return Err(EvalError::data(
                path,
                line,
                format!("{place}a question without gold answers (SQuAD v2 unanswerables are not scored by v1.1 EM/F1)"),
            ));
        }
        let mut fields = fields;
        fields.insert("answer".into(), answers[0].clone());
        Ok((Doc { fields, line }, answers))
    };
    let str_field = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
    if path.extension().is_some_and(|e| e == "jsonl") {
        let mut out = Vec::new();
        for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            let n = i as u64 + 1;
            let v: Value =
                serde_json::from_str(line).map_err(|e| EvalError::data(path, n, format!("not valid JSON: {e}")))?;
            let answers = v
                .pointer("/answers/text")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect())
                .ok_or_else(|| EvalError::data(path, n, "missing `answers.text` (a list of answer strings)"))?;
            let mut fields = BTreeMap::new();
            for k in ["id", "title", "context", "question"] {
                let value =
                    str_field(&v, k).ok_or_else(|| EvalError::data(path, n, format!("missing string field `{k}`")))?;
                fields.insert(k.to_string(), value);
            }
            out.push(qa(fields, answers, n, "")?);
        }
        return Ok(out);
    }
    let root: Value =
        serde_json::from_str(&text).map_err(|e| EvalError::data(path, 1, format!("not valid JSON: {e}")))?;
    let articles = root.get("data").and_then(Value::as_array).ok_or_else(|| {
        EvalError::data(
            path,
            1,
            "expected SQuAD v1.1 JSON: {\"data\": [{\"title\", \"paragraphs\": [...]}]} (or a .jsonl of rows)",
        )
    })?;
    let mut out = Vec::new();
    for article in articles {
        let title = str_field(article, "title").unwrap_or_default();
        for para in article.get("paragraphs").and_then(Value::as_array).into_iter().flatten() {
            let context = str_field(para, "context").unwrap_or_default();
            for q in para.get("qas").and_then(Value::as_array).into_iter().flatten() {
                let id = str_field(q, "id").unwrap_or_default();
                let where_ = || format!("question `{id}`");
                let question = str_field(q, "question")
                    .ok_or_else(|| EvalError::data(path, 0, format!("{}: missing `question`", where_())))?;
                let answers: Vec<String> = q
                    .get("answers")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(|a| str_field(a, "text"))
                    .collect();
                let fields = BTreeMap::from([
                    ("id".to_string(), id.clone()),
                    ("title".to_string(), title.clone()),
                    ("context".to_string(), context.clone()),
                    ("question".to_string(), question),
                ]);
                out.push(qa(fields, answers, 0, &format!("{}: ", where_()))?);
            }
        }
    }
    Ok(out)
}

/// JSONL documents whose `references` field is a string or a list of strings.
fn read_references(path: &Path) -> Result<Docs, EvalError> {
    task::read_docs(path, DocFormat::Jsonl, None)?
        .into_iter()
        .map(|d| {
            let raw = d.fields.get("references").ok_or_else(|| {
                EvalError::data(path, d.line, "missing field `references` (a string or a list of strings)")
            })?;
            let refs = match serde_json::from_str::<Vec<String>>(raw) {
                Ok(list) if !list.is_empty() => list,
                _ => vec![raw.clone()],
            };
            let mut doc = d;
            doc.fields.insert("answer".into(), refs[0].clone());
            Ok((doc, refs))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn squad_json_and_rows_read_the_same_questions() {
        let dir = tempfile::tempdir().unwrap();
        let json_path = dir.path().join("q.json");
        std::fs::write(
            &json_path,
            r#"{"data": [{"title": "Tartu", "paragraphs": [{"context": "Tartu on linn.", "qas": [
                {"id": "q1", "question": "Mis on Tartu?", "answers": [{"text": "linn", "answer_start": 9}, {"text": "linn."}]}]}]}]}"#,
        )
        .unwrap();
        let rows = dir.path().join("q.jsonl");
        std::fs::write(
            &rows,
            r#"{"id": "q1", "title": "Tartu", "context": "Tartu on linn.", "question": "Mis on Tartu?", "answers": {"text": ["linn", "linn."], "answer_start": [9, 9]}}"#,
        )
        .unwrap();
        let (a, b) = (read_squad(&json_path).unwrap(), read_squad(&rows).unwrap());
        assert_eq!(a[0].0.fields, b[0].0.fields);
        assert_eq!(a[0].1, ["linn", "linn."]);
        assert_eq!(a[0].0.fields["answer"], "linn");

        std::fs::write(&rows, r#"{"id": "q2", "title": "", "context": "c", "question": "q", "answers": {"text": [], "answer_start": []}}"#).unwrap();
        let e = read_squad(&rows).unwrap_err().to_string();
        assert!(e.contains("q.jsonl:1") && e.contains("without gold answers"), "{e}");
    }
}
