//! LLM-as-judge: the model under test answers a prompt set, and a judge model behind an
//! OpenAI-compatible `/v1/chat/completions` API scores each answer by a rubric stored as data
//! (`evals/judges/*.toml`: prompt template, criteria, scale, parsing rule) — pointwise (a score per
//! criterion, LLM-Eval style) or pairwise against a reference model's answers, asked in both orders.
//! Every judge answer is appended (fsync'd) to a cache keyed by judge model, rubric hash, prompt and
//! attempt, so a judgement paid for is never asked again and a killed run resumes; an answer the rubric
//! cannot parse is asked again (up to `max_attempts`) and then counted as malformed. The API key comes
//! from the environment and never reaches errors, logs or files.

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::lm::LanguageModel;
use super::metrics::{mean, mean_stderr};
use super::tasks::{instruction_requests, read_prompts, OutputType, Score, Task, TaskResults};
use super::{EvalError, RunConfig};
use crate::instruct::http::{CallError, Http, RetryPolicy};

/// The rubrics shipped in `evals/judges/`, compiled in.
const BUILTIN_RUBRICS: &[(&str, &str)] = &[
    ("llm_eval", include_str!("../../evals/judges/llm_eval.toml")),
    ("pairwise", include_str!("../../evals/judges/pairwise.toml")),
];

/// A judge rubric (`evals/judges/{name}.toml`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rubric {
    /// What the rubric follows, for readers.
    pub source: String,
    /// `pointwise` or `pairwise`.
    pub mode: JudgeMode,
    /// The system message (none: the user message only).
    #[serde(default)]
    pub system: Option<String>,
    /// The judge's prompt: `{instruction}` and `{response}` (pointwise) or `{response_a}` and
    /// `{response_b}` (pairwise).
    pub prompt: String,
    /// Pointwise: the criteria the judge scores, keys of its JSON answer.
    #[serde(default)]
    pub criteria: Vec<String>,
    /// Pointwise: lowest and highest score.
    #[serde(default)]
    pub scale: Option<[i64; 2]>,
    /// Pairwise: the strings that mark "A is better", "B is better" and a tie in the answer.
    #[serde(default)]
    pub verdicts: Option<Verdicts>,
    /// Answers the rubric cannot parse are asked again, up to this many attempts in all.
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    /// Most tokens of a judge answer.
    #[serde(default = "default_judge_tokens")]
    pub max_tokens: usize,
}

fn default_attempts() -> u32 {
    3
}
fn default_judge_tokens() -> usize {
    512
}

/// How the judge compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JudgeMode {
    /// Scores one answer per criterion; the answer must be a JSON object `{criterion: score}`.
    Pointwise,
    /// Picks the better of two answers (asked in both orders).
    Pairwise,
}

/// Verdict markers of a pairwise rubric (MT-Bench's `[[A]]`, `[[B]]`, `[[C]]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Verdicts {
    /// A is better.
    pub a: String,
    /// B is better.
    pub b: String,
    /// Neither.
    pub tie: String,
}

/// A parsed judge answer.
#[derive(Debug, Clone, PartialEq)]
enum Judgement {
    /// Score per criterion.
    Scores(Vec<f64>),
    /// The first answer is better (1.0), the second (0.0), or a tie (0.5).
    Prefers(f64),
}

impl Rubric {
    /// Checks the rubric is usable for its mode.
    fn check(&self, name: &str) -> Result<(), EvalError> {
        let bad = |m: &str| Err(EvalError::TaskDef { file: format!("evals/judges/{name}.toml"), message: m.into() });
        match self.mode {
            JudgeMode::Pointwise if self.criteria.is_empty() || self.scale.is_none() => {
                bad("a pointwise rubric needs `criteria` and `scale = [low, high]`")
            }
            JudgeMode::Pairwise if self.verdicts.is_none() => bad("a pairwise rubric needs `verdicts = { a, b, tie }`"),
            _ if self.max_attempts == 0 => bad("max_attempts must be at least 1"),
            _ => Ok(()),
        }
    }

    /// The judgement in `answer`, or None when it does not follow the rubric's format.
    fn parse(&self, answer: &str) -> Option<Judgement> {
        match self.mode {
            JudgeMode::Pointwise => {
                let [low, high] = self.scale?;
                let (start, end) = (answer.find('{')?, answer.rfind('}')?);
                let obj: serde_json::Map<String, Value> = serde_json::from_str(answer.get(start..=end)?).ok()?;
                let scores = self
                    .criteria
                    .iter()
                    .map(|c| {
                        let v = obj.get(c)?;
                        let x = v.as_f64().or_else(|| v.as_str()?.trim().parse().ok())?;
                        (x >= low as f64 && x <= high as f64).then_some(x)
                    })
                    .collect::<Option<Vec<f64>>>()?;
                Some(Judgement::Scores(scores))
            }
            JudgeMode::Pairwise => {
                let v = self.verdicts.as_ref()?;
                let found: Vec<f64> = [(&v.a, 1.0), (&v.b, 0.0), (&v.tie, 0.5)]
                    .into_iter()
                    .filter(|(m, _)| answer.contains(m.as_str()))
                    .map(|(_, x)| x)
                    .collect();
                // Two different verdicts in one answer are no verdict.
                match found[..] {
                    [x] => Some(Judgement::Prefers(x)),
                    _ => None,
                }
            }
        }
    }
}

/// Loads rubric `name`: `DIR/judges/{name}.toml` of the user's evals directory, else the built-in one.
/// Returns it with the sha256 of its text (what results.json and the cache name it by).
pub fn load_rubric(name: &str, evals_dir: Option<&Path>) -> Result<(Rubric, String), EvalError> {
    let user = evals_dir.map(|d| d.join("judges").join(format!("{name}.toml"))).filter(|p| p.is_file());
    let (file, text) = match user {
        Some(p) => {
            let t = std::fs::read_to_string(&p).map_err(|e| EvalError::io(&p, e))?;
            (p.display().to_string(), t)
        }
        None => {
            let t = BUILTIN_RUBRICS.iter().find(|(n, _)| *n == name).map(|(_, t)| t.to_string()).ok_or_else(|| {
                let known: Vec<&str> = BUILTIN_RUBRICS.iter().map(|(n, _)| *n).collect();
                EvalError::Config(format!(
                    "no judge rubric `{name}` (built in: {}; or add --evals-dir DIR with judges/{name}.toml)",
                    known.join(", ")
                ))
            })?;
            (format!("evals/judges/{name}.toml"), t)
        }
    };
    let rubric: Rubric = toml::from_str(&text).map_err(|e| EvalError::TaskDef { file, message: e.to_string() })?;
    rubric.check(name)?;
    Ok((rubric, hex::encode(Sha256::digest(text.as_bytes()))))
}

/// The judge of a run: where it is served and how it is asked.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct JudgeSettings {
    /// OpenAI-compatible server: a root, a `/v1` base or the full chat-completions URL.
    pub endpoint: String,
    /// The judge model's name (recorded in results.json).
    pub model: String,
    /// Environment variable holding the API key (none set: no Authorization header).
    pub api_key_env: String,
    /// The judgement cache (default: `judgements.jsonl` beside results.json).
    pub cache: Option<PathBuf>,
    /// Pairwise rubrics: the reference model's answers (JSONL with `prompt` and `response`, e.g. the
    /// `samples_{task}.jsonl` of its own run).
    pub reference: Option<PathBuf>,
    /// Judge requests in flight at once.
    pub workers: usize,
}

/// One line of the judgement cache.
#[derive(Debug, Serialize, Deserialize)]
struct CacheEntry {
    judge: String,
    rubric_sha256: String,
    prompt_sha256: String,
    attempt: u32,
    answer: String,
}

/// The append-only judgement log (see the module docs).
struct JudgeCache {
    path: PathBuf,
    judge: String,
    rubric_sha256: String,
    file: Mutex<File>,
    answers: Mutex<HashMap<(String, u32), String>>,
}

impl JudgeCache {
    fn open(path: &Path, judge: &str, rubric_sha256: &str) -> Result<Self, EvalError> {
        let io = |e| EvalError::io(path, e);
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let bytes = if path.exists() { std::fs::read(path).map_err(io)? } else { Vec::new() };
        // Everything after the last newline is a torn append of a killed run: cut it off.
        let whole = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |p| p + 1);
        let mut answers = HashMap::new();
        for (n, line) in bytes[..whole].split(|b| *b == b'\n').enumerate().filter(|(_, l)| !l.is_empty()) {
            let e: CacheEntry = serde_json::from_slice(line)
                .map_err(|e| EvalError::data(path, n as u64 + 1, format!("not a judgement cache entry ({e})")))?;
            if e.judge == judge && e.rubric_sha256 == rubric_sha256 {
                answers.insert((e.prompt_sha256, e.attempt), e.answer);
            }
        }
        let file = OpenOptions::new().create(true).append(true).open(path).map_err(io)?;
        file.set_len(whole as u64).map_err(io)?;
        Ok(JudgeCache {
            path: path.to_path_buf(),
            judge: judge.into(),
            rubric_sha256: rubric_sha256.into(),
            file: Mutex::new(file),
            answers: Mutex::new(answers),
        })
    }

    fn get(&self, prompt_sha256: &str, attempt: u32) -> Option<String> {
        self.answers.lock().unwrap_or_else(|p| p.into_inner()).get(&(prompt_sha256.to_string(), attempt)).cloned()
    }

    /// Appends and syncs an answer before it is used.
    fn store(&self, prompt_sha256: &str, attempt: u32, answer: &str) -> Result<(), EvalError> {
        let entry = CacheEntry {
            judge: self.judge.clone(),
            rubric_sha256: self.rubric_sha256.clone(),
            prompt_sha256: prompt_sha256.into(),
            attempt,
            answer: answer.into(),
        };
        let mut line = serde_json::to_vec(&entry).map_err(|e| EvalError::Config(e.to_string()))?;
        line.push(b'\n');
        {
            let mut f = self.file.lock().unwrap_or_else(|p| p.into_inner());
            f.write_all(&line).and_then(|()| f.sync_data()).map_err(|e| EvalError::io(&self.path, e))?;
        }
        self.answers.lock().unwrap_or_else(|p| p.into_inner()).insert((prompt_sha256.into(), attempt), answer.into());
        Ok(())
    }
}

/// Asks the judge, through the cache.
struct Judge<'a> {
    rubric: &'a Rubric,
    settings: &'a JudgeSettings,
    http: Http,
    url: String,
    key: Option<String>,
    cache: JudgeCache,
    asked: AtomicUsize,
}

impl Judge<'_> {
    /// The judgement of `prompt`: cached attempts first, then new ones until one parses; None when every
    /// attempt was malformed.
    fn judge(&self, prompt: &str) -> Result<Option<Judgement>, EvalError> {
        let sha = hex::encode(Sha256::digest(prompt.as_bytes()));
        for attempt in 0..self.rubric.max_attempts {
            let answer = match self.cache.get(&sha, attempt) {
                Some(a) => a,
                None => {
                    let a = self.ask(prompt, attempt)?;
                    self.cache.store(&sha, attempt, &a)?;
                    a
                }
            };
            if let Some(j) = self.rubric.parse(&answer) {
                return Ok(Some(j));
            }
        }
        Ok(None)
    }

    fn ask(&self, prompt: &str, attempt: u32) -> Result<String, EvalError> {
        let mut messages = Vec::new();
        if let Some(s) = &self.rubric.system {
            messages.push(json!({"role": "system", "content": s}));
        }
        messages.push(json!({"role": "user", "content": prompt}));
        // A new seed per attempt, so a deterministic server can answer a re-asked prompt differently.
        let body = json!({
            "model": self.settings.model, "messages": messages, "temperature": 0,
            "max_tokens": self.rubric.max_tokens, "seed": 1234 + attempt,
        });
        let headers: Vec<(&str, String)> = self.key.iter().map(|k| ("Authorization", format!("Bearer {k}"))).collect();
        self.asked.fetch_add(1, Ordering::Relaxed);
        let remote = |message: String| EvalError::Remote { endpoint: self.url.clone(), message };
        let v: Value =
            self.http.with_retries(|| self.http.post_json(&self.url, &headers, &body)).map_err(|e| match e {
                CallError::Abort(r) => remote(format!("{r} (check the key in ${})", self.settings.api_key_env)),
                other => remote(other.reason().to_string()),
            })?;
        v.pointer("/choices/0/message/content")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| remote("answer has no choices[0].message.content".into()))
    }
}

/// A judged task family (`kind = "judge"`): prompts answered by the model, judged by the rubric.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JudgeSpec {
    /// Task name pattern, e.g. `llm_eval_{instance}`.
    pub name: String,
    /// Task version.
    pub version: String,
    /// What the task follows.
    pub source: String,
    /// The rubric's name (`evals/judges/{rubric}.toml`).
    pub rubric: String,
    /// Prompt template for the model; `{prompt}` is the prompt set's text (a run's `prompt_template`
    /// replaces it).
    pub template: String,
    /// The model's answer is cut at these.
    pub until: Vec<String>,
    /// Most new tokens per answer.
    pub max_tokens: usize,
    /// Instance → its prompt set (`prompts`, JSONL with `prompt`).
    pub instances: BTreeMap<String, JudgeInstance>,
}

/// A judged task's prompt set.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JudgeInstance {
    /// JSONL prompt set, relative to the evals directory.
    pub prompts: String,
}

/// A judged task bound to its instance.
pub struct JudgeTask<'a> {
    /// Task name.
    pub name: String,
    /// The family.
    pub spec: &'a JudgeSpec,
    /// The instance.
    pub instance: JudgeInstance,
}

impl Task for JudgeTask<'_> {
    fn name(&self) -> &str {
        &self.name
    }
    fn output_type(&self) -> OutputType {
        OutputType::GenerateUntil
    }
    fn evaluate(&self, lm: &mut dyn LanguageModel, cfg: &RunConfig) -> Result<TaskResults, EvalError> {
        let settings = cfg.judge.as_ref().ok_or_else(|| {
            EvalError::Config(format!(
                "{}: an LLM-judged task needs a judge: --judge-model NAME --judge-endpoint URL (key in $OPENAI_API_KEY)",
                self.name
            ))
        })?;
        let (rubric, rubric_sha256) = load_rubric(&self.spec.rubric, cfg.evals_dir.as_deref())?;
        let prompts = read_prompts(&self.instance.prompts, cfg.evals_dir.as_deref())?;
        let prompts: Vec<String> = prompts.into_iter().take(cfg.limit.unwrap_or(usize::MAX)).collect();
        let reference = match rubric.mode {
            JudgeMode::Pairwise => Some(read_reference(settings, &prompts, &self.name)?),
            JudgeMode::Pointwise => None,
        };
        let reqs = instruction_requests(&prompts, &self.spec.template, &self.spec.until, self.spec.max_tokens, cfg)?;
        let responses = lm.generate_until(&reqs)?;

        // The judge prompts of each answer (pairwise: the answer first, then second).
        let fill = |p: &str, a: &str, b: &str| {
            rubric
                .prompt
                .replace("{instruction}", p)
                .replace("{response}", a)
                .replace("{response_a}", a)
                .replace("{response_b}", b)
        };
        let asks: Vec<Vec<String>> = prompts
            .iter()
            .zip(&responses)
            .enumerate()
            .map(|(i, (p, r))| match &reference {
                None => vec![fill(p, r, "")],
                Some(refs) => vec![fill(p, r, &refs[i]), fill(p, &refs[i], r)],
            })
            .collect();

        let cache_path = settings.cache.clone().unwrap_or_else(|| {
            cfg.out.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new(".")).join("judgements.jsonl")
        });
        let key = std::env::var(&settings.api_key_env).ok().filter(|k| !k.is_empty());
        let policy = RetryPolicy {
            max_retries: 6,
            backoff_base: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
        };
        let http = Http::new(Duration::from_secs(300), None, policy, key.iter().cloned().collect())
            .map_err(EvalError::Config)?;
        let judge = Judge {
            rubric: &rubric,
            settings,
            http,
            url: super::openai::api_url(&settings.endpoint, "chat/completions"),
            key,
            cache: JudgeCache::open(&cache_path, &settings.model, &rubric_sha256)?,
            asked: AtomicUsize::new(0),
        };
        let flat: Vec<&String> = asks.iter().flatten().collect();
        let bar = cfg.progress.items(flat.len() as u64, &format!("{} judge", self.name));
        let mut judged: Vec<Option<Judgement>> = Vec::with_capacity(flat.len());
        let workers = settings.workers.max(1);
        crate::parallel::ordered_map(
            flat.iter().map(|p| Ok(*p)),
            workers,
            4 * workers,
            |prompt| judge.judge(prompt),
            |j| {
                judged.push(j);
                bar.inc(1);
                Ok(())
            },
        )?;
        bar.finish_and_clear();

        let mut samples = Vec::new();
        let mut scores = Vec::new();
        let mut malformed = 0;
        let mut extra: Vec<(&'static str, Value)> = Vec::new();
        match rubric.mode {
            JudgeMode::Pointwise => {
                let mut per_criterion: Vec<Vec<f64>> = vec![Vec::new(); rubric.criteria.len()];
                let mut avg = Vec::new();
                for (i, j) in judged.iter().enumerate() {
                    let mut s = json!({"doc_id": i, "prompt": prompts[i], "response": responses[i]});
                    match j {
                        Some(Judgement::Scores(xs)) => {
                            for (k, x) in xs.iter().enumerate() {
                                per_criterion[k].push(*x);
                                s[&rubric.criteria[k]] = json!(x);
                            }
                            avg.push(mean(xs));
                        }
                        _ => {
                            malformed += 1;
                            s["malformed"] = json!(true);
                        }
                    }
                    samples.push(s);
                }
                for (c, xs) in rubric.criteria.iter().zip(&per_criterion) {
                    scores.push(Score {
                        metric: c.clone(),
                        value: mean(xs),
                        stderr: mean_stderr(xs),
                        higher_is_better: true,
                    });
                }
                scores.push(Score {
                    metric: "avg".into(),
                    value: mean(&avg),
                    stderr: mean_stderr(&avg),
                    higher_is_better: true,
                });
            }
            JudgeMode::Pairwise => {
                let (mut wins, mut ties, mut losses, mut inconsistent) = (0, 0, 0, 0);
                let mut outcome = Vec::new();
                for (i, pair) in judged.chunks(2).enumerate() {
                    let mut s = json!({"doc_id": i, "prompt": prompts[i], "response": responses[i]});
                    // The model is A in the first order and B in the second: a win needs both.
                    let x = match pair {
                        [Some(Judgement::Prefers(first)), Some(Judgement::Prefers(second))] => {
                            let (a, b) = (*first, 1.0 - *second);
                            if a != b {
                                inconsistent += 1;
                            }
                            Some(if a == 1.0 && b == 1.0 {
                                1.0
                            } else if a == 0.0 && b == 0.0 {
                                0.0
                            } else {
                                0.5
                            })
                        }
                        _ => None,
                    };
                    match x {
                        Some(x) => {
                            outcome.push(x);
                            match x {
                                1.0 => wins += 1,
                                0.0 => losses += 1,
                                _ => ties += 1,
                            }
                            s["outcome"] = json!(x);
                        }
                        None => {
                            malformed += 1;
                            s["malformed"] = json!(true);
                        }
                    }
                    samples.push(s);
                }
                scores.push(Score {
                    metric: "win_rate".into(),
                    value: mean(&outcome),
                    stderr: mean_stderr(&outcome),
                    higher_is_better: true,
                });
                extra.push(("wins_ties_losses", json!([wins, ties, losses])));
                extra.push(("order_inconsistent", json!(inconsistent)));
            }
        }
        extra.extend([
            ("judge_model", json!(settings.model)),
            ("judge_endpoint", json!(settings.endpoint)),
            ("rubric", json!(self.spec.rubric)),
            ("rubric_sha256", json!(rubric_sha256)),
            ("n_malformed", json!(malformed)),
            ("judge_requests", json!(judge.asked.load(Ordering::Relaxed))),
            ("judge_cache", json!(cache_path)),
        ]);
        Ok(TaskResults {
            version: self.spec.version.clone(),
            num_fewshot: 0,
            n_docs: (prompts.len(), prompts.len() - malformed),
            scores,
            extra,
            samples,
        })
    }
}

/// The reference model's answer to each prompt, from JSONL rows with `prompt` and `response`.
fn read_reference(settings: &JudgeSettings, prompts: &[String], task: &str) -> Result<Vec<String>, EvalError> {
    let path = settings.reference.as_ref().ok_or_else(|| {
        EvalError::Config(format!(
            "{task}: a pairwise rubric compares with a reference model's answers: --judge-reference FILE (JSONL with \
             `prompt` and `response`, e.g. samples_{task}.jsonl of the reference model's run)"
        ))
    })?;
    let text = std::fs::read_to_string(path).map_err(|e| EvalError::io(path, e))?;
    let mut by_prompt = HashMap::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(line)
            .map_err(|e| EvalError::data(path, i as u64 + 1, format!("not valid JSON: {e}")))?;
        let field = |k: &str| {
            v.get(k)
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| EvalError::data(path, i as u64 + 1, format!("missing string field `{k}`")))
        };
        by_prompt.insert(field("prompt")?, field("response")?);
    }
    prompts
        .iter()
        .enumerate()
        .map(|(i, p)| {
            by_prompt.get(p).cloned().ok_or_else(|| {
                EvalError::Config(format!(
                    "{}: no reference answer for prompt {} of {task} ({:?})",
                    path.display(),
                    i + 1,
                    p
                ))
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rubrics_parse_their_answers() {
        let (llm_eval, _) = load_rubric("llm_eval", None).unwrap();
        let n = llm_eval.criteria.len();
        let answer = format!(
            "Here you go: {{{}}}",
            llm_eval.criteria.iter().map(|c| format!("\"{c}\": \"2\"")).collect::<Vec<_>>().join(", ")
        );
        assert_eq!(llm_eval.parse(&answer), Some(Judgement::Scores(vec![2.0; n])));
        // Out of scale, missing criterion, no JSON.
        assert_eq!(llm_eval.parse(&answer.replace("\"2\"}", "\"7\"}")), None);
        assert_eq!(llm_eval.parse("{\"correctness\": 3}"), None);
        assert_eq!(llm_eval.parse("good answer"), None);

        let (pairwise, _) = load_rubric("pairwise", None).unwrap();
        assert_eq!(pairwise.parse("... so [[B]]"), Some(Judgement::Prefers(0.0)));
        assert_eq!(pairwise.parse("[[C]]"), Some(Judgement::Prefers(0.5)));
        assert_eq!(pairwise.parse("[[A]] or [[B]]"), None);
        assert!(load_rubric("nope", None).unwrap_err().to_string().contains("built in: llm_eval, pairwise"));
    }

    #[test]
    fn cache_survives_a_torn_line_and_keeps_judges_apart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.jsonl");
        let c = JudgeCache::open(&path, "gpt-x", "r1").unwrap();
        c.store("p", 0, "{\"a\": 1}").unwrap();
        drop(c);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"judge\": \"gpt-x\", \"rub").unwrap();
        let c = JudgeCache::open(&path, "gpt-x", "r1").unwrap();
        assert_eq!(c.get("p", 0).as_deref(), Some("{\"a\": 1}"));
        c.store("p", 1, "x").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 2);
        assert_eq!(JudgeCache::open(&path, "other-judge", "r1").unwrap().get("p", 0), None);
    }
}
