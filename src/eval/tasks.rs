//! The tasks of a run as objects, in lm-evaluation-harness's split: a task builds its requests, turns the
//! model's answers into per-document results (the sample log) and aggregates them into its metrics; the
//! runner (`run.rs`) asks the model, writes results.json and averages groups.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::codeswitch::{self, TargetLang};
use super::lm::{
    GenerateUntil, LanguageModel, Loglikelihood, LoglikelihoodResult, LoglikelihoodRolling, RollingResult,
};
use super::metrics::{mc_outcome, mean, mean_stderr, wilson_ci95};
use super::perplexity::perplexity;
use super::run::RunConfig;
use super::task::{CodeswitchSpec, HubDataSource, McRequest, McTask, Metric};
use super::EvalError;
use crate::shards::Template;

/// Prompt sets shipped in evals/prompts, compiled in.
const BUILTIN_PROMPTS: &[(&str, &str)] = &[
    ("prompts/codeswitch_tr.jsonl", include_str!("../../evals/prompts/codeswitch_tr.jsonl")),
    ("prompts/codeswitch_et.jsonl", include_str!("../../evals/prompts/codeswitch_et.jsonl")),
    ("prompts/codeswitch_fa.jsonl", include_str!("../../evals/prompts/codeswitch_fa.jsonl")),
    ("prompts/codeswitch_zh.jsonl", include_str!("../../evals/prompts/codeswitch_zh.jsonl")),
];

/// One metric of a task.
#[derive(Debug, Clone, PartialEq)]
pub struct Score {
    /// Its name in results.json (`acc`, `bits_per_byte`, …).
    pub metric: String,
    /// The aggregate.
    pub value: f64,
    /// Standard error of the mean, where the metric is a mean over documents.
    pub stderr: Option<f64>,
    /// Whether larger is better.
    pub higher_is_better: bool,
}

/// What a task produced.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskResults {
    /// The task definition's version.
    pub version: String,
    /// Few-shot examples per prompt.
    pub num_fewshot: usize,
    /// Documents in the data, and documents scored (after `limit`).
    pub n_docs: (usize, usize),
    /// The metrics.
    pub scores: Vec<Score>,
    /// Other keys of the task's results.json entry.
    pub extra: Vec<(&'static str, Value)>,
    /// Per-document results, for `--log-samples`.
    pub samples: Vec<Value>,
}

/// lm-eval's `output_type`: what a task asks the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputType {
    /// Loglikelihoods of each choice given the context.
    MultipleChoice,
    /// Rolling loglikelihood of whole documents.
    LoglikelihoodRolling,
    /// Generated text, cut at stop sequences.
    GenerateUntil,
}

/// A task of a run.
pub trait Task {
    /// Its name in results.json.
    fn name(&self) -> &str;
    /// What it asks the model.
    fn output_type(&self) -> OutputType;
    /// Its loglikelihood requests, answered ahead in one batch with every other task's (identical ones
    /// once), and written by `eval requests`.
    fn loglikelihood_requests(&self, _cfg: &RunConfig) -> Result<Vec<McRequest>, EvalError> {
        Ok(Vec::new())
    }
    /// Data files it reads (hashed into the manifest), and where they came from when fetched.
    fn data(&self) -> Option<(&Path, Option<&HubDataSource>)> {
        None
    }
    /// Asks `lm` (which answers `loglikelihood_requests` from the batch), scores each document and
    /// aggregates.
    fn evaluate(&self, lm: &mut dyn LanguageModel, cfg: &RunConfig) -> Result<TaskResults, EvalError>;
}

/// A model with answers known ahead for some loglikelihood requests: those are not asked again.
pub struct Answered<'a> {
    lm: &'a mut dyn LanguageModel,
    known: HashMap<Loglikelihood, LoglikelihoodResult>,
}

impl<'a> Answered<'a> {
    /// Asks `lm` each distinct request of `requests` once, in one call.
    pub fn ask(lm: &'a mut dyn LanguageModel, requests: Vec<Loglikelihood>) -> Result<Self, EvalError> {
        let mut answered = Answered { lm, known: HashMap::new() };
        answered.loglikelihood(&requests)?;
        Ok(answered)
    }
}

impl LanguageModel for Answered<'_> {
    fn loglikelihood(&mut self, requests: &[Loglikelihood]) -> Result<Vec<LoglikelihoodResult>, EvalError> {
        let mut seen = HashSet::new();
        let missing: Vec<Loglikelihood> =
            requests.iter().filter(|r| !self.known.contains_key(*r) && seen.insert(*r)).cloned().collect();
        if !missing.is_empty() {
            let answers = self.lm.loglikelihood(&missing)?;
            self.known.extend(missing.into_iter().zip(answers));
        }
        // Every request is known now: asked before, or just now.
        Ok(requests.iter().map(|r| self.known[r]).collect())
    }
    fn loglikelihood_rolling(&mut self, requests: &[LoglikelihoodRolling]) -> Result<Vec<RollingResult>, EvalError> {
        self.lm.loglikelihood_rolling(requests)
    }
    fn generate_until(&mut self, requests: &[GenerateUntil]) -> Result<Vec<String>, EvalError> {
        self.lm.generate_until(requests)
    }
}

impl Task for McTask<'_> {
    fn name(&self) -> &str {
        &self.name
    }
    fn output_type(&self) -> OutputType {
        OutputType::MultipleChoice
    }
    fn loglikelihood_requests(&self, cfg: &RunConfig) -> Result<Vec<McRequest>, EvalError> {
        self.requests(cfg.shots(self.spec.num_fewshot), cfg.limit)
    }
    fn data(&self) -> Option<(&Path, Option<&HubDataSource>)> {
        Some((&self.data_path, self.hub_source.as_ref()))
    }
    fn evaluate(&self, lm: &mut dyn LanguageModel, cfg: &RunConfig) -> Result<TaskResults, EvalError> {
        let reqs = self.requests(cfg.shots(self.spec.num_fewshot), cfg.limit)?;
        let answers = lm.loglikelihood(&reqs.iter().map(McRequest::loglikelihood).collect::<Vec<_>>())?;
        let (mut acc, mut acc_norm, mut acc_byte) = (Vec::new(), Vec::new(), Vec::new());
        let mut samples = Vec::new();
        // A document's requests are consecutive, one per choice.
        let mut first = 0;
        for doc in reqs.chunk_by(|a, b| a.doc_id == b.doc_id) {
            let doc_answers = &answers[first..first + doc.len()];
            first += doc.len();
            let lls: Vec<f64> = doc_answers.iter().map(|a| a.ll).collect();
            let choices: Vec<String> = doc
                .iter()
                .map(|r| {
                    let delimiter = self.spec.target_delimiter.as_str();
                    r.continuation.strip_prefix(delimiter).unwrap_or(&r.continuation).to_string()
                })
                .collect();
            let o = mc_outcome(&lls, &choices);
            let gold = doc[0].target;
            acc.push(f64::from(u8::from(o.pred == gold)));
            acc_norm.push(f64::from(u8::from(o.pred_norm == gold)));
            acc_byte.push(f64::from(u8::from(o.pred_bytenorm == gold)));
            for (r, a) in doc.iter().zip(doc_answers) {
                samples.push(json!({
                    "doc_id": r.doc_id, "choice_idx": r.choice_idx, "context": r.context, "continuation": r.continuation,
                    "ll": a.ll, "is_greedy": a.is_greedy, "pred": o.pred, "pred_norm": o.pred_norm, "target": gold,
                }));
            }
        }
        let scores = Metric::ALL
            .into_iter()
            .zip([&acc, &acc_norm, &acc_byte])
            .filter(|(metric, _)| self.spec.metrics.contains(metric))
            .map(|(metric, xs)| Score {
                metric: metric.name().into(),
                value: mean(xs),
                stderr: mean_stderr(xs),
                higher_is_better: true,
            })
            .collect();
        Ok(TaskResults {
            version: self.spec.version.clone(),
            num_fewshot: cfg.shots(self.spec.num_fewshot),
            n_docs: (self.docs.len(), acc.len()),
            scores,
            extra: Vec::new(),
            samples,
        })
    }
}

/// Rolling perplexity of the user's documents (streamed in chunks; see `perplexity.rs`).
pub struct PerplexityTask {
    /// `perplexity`, or `perplexity_{name}` for one of several texts.
    pub name: String,
    /// The text: a file or a directory.
    pub data: PathBuf,
}

impl Task for PerplexityTask {
    fn name(&self) -> &str {
        &self.name
    }
    fn output_type(&self) -> OutputType {
        OutputType::LoglikelihoodRolling
    }
    fn evaluate(&self, lm: &mut dyn LanguageModel, cfg: &RunConfig) -> Result<TaskResults, EvalError> {
        let (rep, docs) = perplexity(lm, &self.data, cfg.limit)?;
        let score = |metric: &str, value| Score { metric: metric.into(), value, stderr: None, higher_is_better: false };
        Ok(TaskResults {
            version: "1.0".into(),
            num_fewshot: 0,
            n_docs: (rep.n_docs, rep.n_docs),
            scores: vec![
                score("token_perplexity", rep.token_perplexity()),
                score("word_perplexity", rep.word_perplexity()),
                score("byte_perplexity", rep.byte_perplexity()),
                score("bits_per_byte", rep.bits_per_byte()),
            ],
            extra: vec![
                ("n_tokens", json!(rep.n_tokens)),
                ("n_bytes", json!(rep.n_bytes)),
                ("n_words", json!(rep.n_words)),
                (
                    "note",
                    json!("token_perplexity depends on the tokenizer and is not comparable across tokenizers; bits_per_byte is"),
                ),
            ],
            samples: docs.iter().map(|d| json!(d)).collect(),
        })
    }
}

/// The code-switching rate of greedy responses to a prompt set.
pub struct CodeswitchTask<'a> {
    /// `codeswitch_{lang}`.
    pub name: String,
    /// The family (prompt template, stop sequences, response length).
    pub spec: &'a CodeswitchSpec,
    /// The language the responses should stay in, and its prompt set.
    pub target: TargetLang,
}

impl Task for CodeswitchTask<'_> {
    fn name(&self) -> &str {
        &self.name
    }
    fn output_type(&self) -> OutputType {
        OutputType::GenerateUntil
    }
    fn evaluate(&self, lm: &mut dyn LanguageModel, cfg: &RunConfig) -> Result<TaskResults, EvalError> {
        let prompts = read_prompts(&self.target.prompts, cfg.evals_dir.as_deref())?;
        let prompts: Vec<String> = prompts.into_iter().take(cfg.limit.unwrap_or(usize::MAX)).collect();
        let reqs = instruction_requests(&prompts, &self.spec.template, &self.spec.until, self.spec.max_tokens, cfg)?;
        let responses = lm.generate_until(&reqs)?;
        let rep = codeswitch::measure(&responses, &self.target)?;
        let switched: Vec<f64> = rep.per_response.iter().map(|&n| f64::from(u8::from(n > 0))).collect();
        let samples = prompts
            .iter()
            .zip(&responses)
            .zip(&rep.per_response)
            .enumerate()
            .map(|(i, ((pr, r), f))| json!({"doc_id": i, "prompt": pr, "response": r, "foreign_words": f}))
            .collect();
        Ok(TaskResults {
            version: self.spec.version.clone(),
            num_fewshot: 0,
            n_docs: (prompts.len(), prompts.len()),
            scores: vec![
                Score {
                    metric: "codeswitch_rate".into(),
                    value: rep.codeswitch_rate,
                    stderr: mean_stderr(&switched),
                    higher_is_better: false,
                },
                Score {
                    metric: "foreign_word_share".into(),
                    value: rep.foreign_word_share,
                    stderr: None,
                    higher_is_better: false,
                },
            ],
            extra: vec![
                ("intruders", json!(rep.intruders.iter().take(5).collect::<Vec<_>>())),
                // Whether 2% and 5% differ: with 212 prompts the interval of 4/212 is 0.7%–4.8%.
                (
                    "codeswitch_rate_ci95",
                    json!(wilson_ci95(switched.iter().filter(|&&s| s > 0.0).count(), switched.len())),
                ),
            ],
            samples,
        })
    }
}

/// Generation requests for instruction prompts: the run's SFT template when it names one, else the
/// task's own `template` (`{prompt}`) and stop strings.
pub fn instruction_requests(
    prompts: &[String],
    template: &str,
    until: &[String],
    max_tokens: usize,
    cfg: &RunConfig,
) -> Result<Vec<GenerateUntil>, EvalError> {
    let sft = cfg.prompt_template.as_deref().map(Template::by_name).transpose().map_err(EvalError::Config)?;
    let max_tokens = cfg.max_gen_tokens.unwrap_or(max_tokens);
    Ok(prompts
        .iter()
        .map(|p| {
            let (context, until) = match &sft {
                Some(t) => (t.prompt(p), vec![t.stop()]),
                None => (template.replace("{prompt}", p), until.to_vec()),
            };
            GenerateUntil { context, until, max_tokens }
        })
        .collect())
}

/// Reads a prompt set (JSONL `{"prompt"}`): from the user's evals directory, else the built-in copy.
pub(crate) fn read_prompts(rel: &str, evals_dir: Option<&Path>) -> Result<Vec<String>, EvalError> {
    let user = evals_dir.map(|d| d.join(rel)).filter(|p| p.is_file());
    let (path, text) = match user {
        Some(p) => {
            let t = std::fs::read_to_string(&p).map_err(|e| EvalError::io(&p, e))?;
            (p, t)
        }
        None => {
            let t = BUILTIN_PROMPTS.iter().find(|(n, _)| *n == rel).map(|(_, t)| t.to_string()).ok_or_else(|| {
                EvalError::Config(format!(
                    "prompt set {rel} not found (built-in sets: prompts/codeswitch_{{tr,et,fa,zh}}.jsonl)"
                ))
            })?;
            (PathBuf::from("evals").join(rel), t)
        }
    };
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line)
            .map_err(|e| EvalError::data(&path, i as u64 + 1, format!("not valid JSON: {e}")))?;
        let p = v
            .get("prompt")
            .and_then(|p| p.as_str())
            .ok_or_else(|| EvalError::data(&path, i as u64 + 1, "missing string field `prompt`"))?;
        out.push(p.to_string());
    }
    Ok(out)
}
