//! `instruct translate`: Alpaca records through a translation backend into `DIR/translated.jsonl`
//! (input order, one line per translated record), `DIR/failed.jsonl` (id and reason of every
//! record that could not be translated) and `DIR/manifest.json` (counts, QA lists, failures).
//! Workers translate groups of records in parallel behind one rate limiter; every text that comes
//! back is in the cache before it is used, so a rerun of a killed run sends nothing twice.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::cache::{text_key, CacheScope, Claim, TextKey, TranslationCache};
use super::deepl::DeepL;
use super::google::Google;
use super::http::{CallError, Http, RetryPolicy};
use super::libre::Libre;
use super::openai::OpenAi;
use super::protect::{keep_verbatim, mask, unmask, Masked};
use super::qa::{self, QaConfig, QaFlags};
use super::record::{InstructRecord, RecordReader, SourceRecord, FIELDS};
use super::replay::Replay;
use super::{InstructError, Translator};
use crate::corpus::DocId;
use crate::io::ShardSpec;
use crate::manifest::ManifestBuilder;
use crate::Env;

/// The translation services.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// OpenAI-compatible chat completions (OpenAI, vLLM, llama.cpp server, Ollama).
    Openai,
    /// DeepL API v2.
    Deepl,
    /// Google Cloud Translation v2.
    Google,
    /// LibreTranslate.
    Libre,
    /// Translations from the cache only (offline).
    Replay,
}

impl Backend {
    /// The environment variable holding this backend's API key.
    pub fn key_var(self) -> Option<&'static str> {
        match self {
            Backend::Openai => Some("OPENAI_API_KEY"),
            Backend::Deepl => Some("DEEPL_AUTH_KEY"),
            Backend::Google => Some("GOOGLE_API_KEY"),
            Backend::Libre => Some("LIBRETRANSLATE_API_KEY"),
            Backend::Replay => None,
        }
    }
}

/// An API key: read from the environment, never printed, serialized or written.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    /// The key of `backend` from its environment variable, if set and non-empty.
    pub fn from_env(backend: Backend) -> Option<ApiKey> {
        let v = std::env::var(backend.key_var()?).ok()?;
        (!v.trim().is_empty()).then(|| ApiKey(v.trim().to_string()))
    }

    /// A key given directly (tests, embedding programs).
    pub fn new(key: impl Into<String>) -> ApiKey {
        ApiKey(key.into())
    }
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(***)")
    }
}

/// `--rate`: requests per second as `R`, `R/s` or `R/min`.
pub fn parse_rate(s: &str) -> Result<f64, String> {
    let bad = || format!("invalid rate '{s}': expected requests per second like 5, 5/s or 120/min");
    let (n, per) = s.split_once('/').unwrap_or((s, "s"));
    let n: f64 = n.trim().parse().map_err(|_| bad())?;
    let secs = match per.trim() {
        "s" | "sec" => 1.0,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        _ => return Err(bad()),
    };
    if !(n.is_finite() && n > 0.0) {
        return Err(bad());
    }
    Ok(n / secs)
}

/// Settings of `instruct translate`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TranslateConfig {
    /// Alpaca file: JSON array, JSON lines or Parquet.
    pub input: PathBuf,
    /// Output directory (a recipe sets it per stage).
    #[serde(default)]
    pub out: PathBuf,
    /// Source language code.
    #[serde(default = "default_source")]
    pub source: String,
    /// Target language code.
    pub target: String,
    /// Translation service.
    pub backend: Backend,
    /// Service URL (default: the public API of the backend).
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Model (openai: required; deepl: `model_type`; google: `nmt`/`base`; replay: which translator's entries).
    #[serde(default)]
    pub model: Option<String>,
    /// Requests in flight at once.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Requests per second over all workers (none: no limit).
    #[serde(default)]
    pub rate: Option<f64>,
    /// Seconds before a request times out.
    #[serde(default = "default_timeout")]
    pub timeout_s: f64,
    /// Retries per request after the first attempt.
    #[serde(default = "default_retries")]
    pub max_retries: u32,
    /// First retry backoff in milliseconds (doubles per retry, jittered, at most 60 s).
    #[serde(default = "default_backoff_ms")]
    pub backoff_ms: u64,
    /// Cache file (default: `OUT/cache.jsonl`).
    #[serde(default)]
    pub cache: Option<PathBuf>,
    /// Translate only the first N records.
    #[serde(default)]
    pub limit: Option<u64>,
    /// `--shard i/N`: of those, only the records k with k % N == i (array jobs, each with its own `out`).
    #[serde(default = "whole", skip_serializing_if = "ShardSpec::is_whole")]
    pub shard: ShardSpec,
    /// QA thresholds.
    #[serde(default)]
    pub qa: QaConfig,
    /// The API key (never serialized).
    #[serde(skip)]
    pub api_key: Option<ApiKey>,
}

fn whole() -> ShardSpec {
    ShardSpec::WHOLE
}
fn default_source() -> String {
    "en".into()
}
fn default_concurrency() -> usize {
    4
}
fn default_timeout() -> f64 {
    60.0
}
fn default_retries() -> u32 {
    5
}
fn default_backoff_ms() -> u64 {
    500
}

impl TranslateConfig {
    /// A config with defaults for everything but input, target, backend and output directory.
    pub fn new(input: impl Into<PathBuf>, target: &str, backend: Backend, out: impl Into<PathBuf>) -> Self {
        TranslateConfig {
            input: input.into(),
            out: out.into(),
            source: default_source(),
            target: target.into(),
            backend,
            endpoint: None,
            model: None,
            concurrency: default_concurrency(),
            rate: None,
            timeout_s: default_timeout(),
            max_retries: default_retries(),
            backoff_ms: default_backoff_ms(),
            cache: None,
            limit: None,
            shard: ShardSpec::WHOLE,
            qa: QaConfig::default(),
            api_key: None,
        }
    }

    /// What decides the output, as the manifest records it (no concurrency, timeouts or keys).
    pub fn settings(&self) -> serde_json::Value {
        let mut v = serde_json::json!({
            "backend": self.backend, "model": self.model, "endpoint": self.endpoint, "source": self.source,
            "target": self.target, "limit": self.limit, "qa": self.qa,
        });
        // Only when sharded, so an unsharded run keeps the run id it always had.
        if !self.shard.is_whole() {
            v["shard"] = serde_json::json!(self.shard.to_string());
        }
        v
    }

    /// The records this run translates: the first `limit`, then this shard's share of them.
    fn records(&self) -> Result<impl Iterator<Item = Result<SourceRecord, InstructError>>, InstructError> {
        let shard = self.shard;
        Ok(RecordReader::open(&self.input)?
            .take(self.limit.unwrap_or(u64::MAX) as usize)
            .enumerate()
            .filter(move |(k, _)| shard.owns(*k as u64))
            .map(|(_, r)| r))
    }

    fn check(&self) -> Result<(), InstructError> {
        let bad = |m: &str| Err(InstructError::Config(m.to_string()));
        if self.target.trim().is_empty() {
            return bad("--target is empty: give the target language code, e.g. --target et");
        }
        if self.target.eq_ignore_ascii_case(&self.source) {
            return bad("--target equals --source: nothing to translate");
        }
        if self.concurrency == 0 {
            return bad("--concurrency must be at least 1");
        }
        if !(self.timeout_s.is_finite() && self.timeout_s > 0.0) {
            return bad("--timeout must be a positive number of seconds");
        }
        if !(self.qa.min_ratio >= 0.0 && self.qa.min_ratio <= self.qa.max_ratio) {
            return bad("QA ratio band is empty: need 0 <= min_ratio <= max_ratio");
        }
        Ok(())
    }

    fn key(&self, required: bool) -> Result<Option<String>, InstructError> {
        match (&self.api_key, self.backend.key_var()) {
            (Some(k), _) => Ok(Some(k.0.clone())),
            (None, Some(var)) if required => Err(InstructError::Config(format!(
                "{var} is not set: export the {} API key (keys are read only from the environment)",
                self.backend_name()
            ))),
            _ => Ok(None),
        }
    }

    fn backend_name(&self) -> &'static str {
        match self.backend {
            Backend::Openai => "OpenAI",
            Backend::Deepl => "DeepL",
            Backend::Google => "Google Cloud Translation",
            Backend::Libre => "LibreTranslate",
            Backend::Replay => "replay",
        }
    }

    /// The translator for this config (`recorded`: the translator a replay cache holds).
    fn translator(&self, recorded: &str) -> Result<Box<dyn Translator>, InstructError> {
        let endpoint = |default: &str| self.endpoint.clone().unwrap_or_else(|| default.to_string());
        let (source, target) = (self.source.clone(), self.target.clone());
        Ok(match self.backend {
            Backend::Openai => {
                let model = self.model.clone().ok_or_else(|| {
                    InstructError::Config(
                        "the openai backend needs --model (e.g. gpt-4o-mini, or the served model)".into(),
                    )
                })?;
                Box::new(OpenAi {
                    key: self.key(self.endpoint.is_none())?,
                    endpoint: endpoint("https://api.openai.com/v1"),
                    model,
                    source: qa::language_name(&source),
                    target: qa::language_name(&target),
                })
            }
            Backend::Deepl => {
                let key = self.key(true)?.unwrap_or_default();
                let endpoint = endpoint(DeepL::default_endpoint(&key));
                Box::new(DeepL { endpoint, key, model: self.model.clone(), source, target })
            }
            Backend::Google => Box::new(Google {
                endpoint: endpoint("https://translation.googleapis.com"),
                key: self.key(true)?.unwrap_or_default(),
                model: self.model.clone(),
                source,
                target,
            }),
            Backend::Libre => Box::new(Libre {
                endpoint: endpoint("https://libretranslate.com"),
                key: self.key(false)?,
                source,
                target,
            }),
            Backend::Replay => Box::new(Replay { recorded: recorded.to_string() }),
        })
    }
}

/// What `instruct translate` did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TranslateReport {
    /// `OUT/translated.jsonl`.
    pub translated: PathBuf,
    /// `OUT/failed.jsonl`.
    pub failed: PathBuf,
    /// `OUT/manifest.json`.
    pub manifest: PathBuf,
    /// The counters written to the manifest.
    pub counts: BTreeMap<String, u64>,
    /// Seconds, total.
    pub seconds: f64,
}

/// A record that could not be translated: one line of failed.jsonl, one entry of the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailedRecord {
    /// The record's id.
    pub id: DocId,
    /// Why (the field and the last error).
    pub reason: String,
}

/// How one field is handled.
enum Plan {
    /// Empty: stays empty, not sent.
    Empty,
    /// A placeholder or code/URL only: kept byte for byte, not sent.
    Verbatim,
    /// Sent (masked) under this cache key.
    Send(TextKey, Masked),
}

/// Per-field counters of one group.
#[derive(Default)]
struct FieldCounts {
    sent: u64,
    from_cache: u64,
    empty: u64,
    verbatim: u64,
    billed: u64,
    tokens: u64,
}

enum Outcome {
    Done(InstructRecord, QaFlags),
    Failed(FailedRecord),
}

/// Everything the workers share.
struct Ctx<'a> {
    cfg: &'a TranslateConfig,
    translator: &'a dyn Translator,
    http: &'a Http,
    cache: &'a TranslationCache,
    name: String,
    source_file: String,
    source_lang: Option<whatlang::Lang>,
}

impl Ctx<'_> {
    /// Sends `keys` (claimed by this worker) in requests within the backend's limits.
    fn send(
        &self,
        keys: &[TextKey],
        texts: &HashMap<TextKey, &str>,
        results: &mut HashMap<TextKey, Result<String, String>>,
        sent: &mut HashSet<TextKey>,
        counts: &mut FieldCounts,
    ) -> Result<(), InstructError> {
        let limits = self.translator.limits();
        let mut start = 0;
        while start < keys.len() {
            let (mut end, mut bytes) = (start, 0);
            while end < keys.len() && end - start < limits.max_texts {
                let len = texts[&keys[end]].len();
                if end > start && bytes + len > limits.max_bytes {
                    break;
                }
                bytes += len;
                end += 1;
            }
            let batch = &keys[start..end];
            let batch_texts: Vec<&str> = batch.iter().map(|k| texts[k]).collect();
            let reply = self.http.with_retries(|| {
                let t = self.translator.translate(self.http, &batch_texts)?;
                if t.texts.len() != batch_texts.len() {
                    let reason =
                        format!("malformed response: {} translations for {} texts", t.texts.len(), batch_texts.len());
                    return Err(CallError::Retry { reason, after: None });
                }
                Ok(t)
            });
            match reply {
                Ok(t) => {
                    let items: Vec<(TextKey, String)> = batch.iter().copied().zip(t.texts).collect();
                    if let Err(e) = self.cache.store(&items) {
                        // Every claim not yet settled ends here, or other workers would wait forever.
                        self.cache.release(&keys[start..]);
                        return Err(e);
                    }
                    sent.extend(batch.iter().copied());
                    counts.billed += t.billed_chars;
                    counts.tokens += t.tokens;
                    counts.sent += batch.len() as u64;
                    for (k, text) in items {
                        results.insert(k, Ok(text));
                    }
                }
                Err(CallError::Abort(msg)) => {
                    self.cache.release(&keys[start..]);
                    return Err(InstructError::Aborted { backend: self.name.clone(), msg });
                }
                Err(e) => {
                    self.cache.release(batch);
                    for k in batch {
                        results.insert(*k, Err(e.reason().to_string()));
                    }
                }
            }
            start = end;
        }
        Ok(())
    }

    /// Translates a group of records: cache first, then requests for what is missing.
    fn translate_group(&self, group: Vec<SourceRecord>) -> Result<(Vec<Outcome>, FieldCounts), InstructError> {
        let style = self.translator.mask_style();
        let mut counts = FieldCounts::default();
        let plans: Vec<[Plan; 3]> = group
            .iter()
            .map(|r| {
                r.fields.each_ref().map(|f| {
                    if f.is_empty() {
                        Plan::Empty
                    } else if keep_verbatim(f) {
                        Plan::Verbatim
                    } else {
                        let m = mask(f, style);
                        Plan::Send(text_key(&m.text), m)
                    }
                })
            })
            .collect();
        let mut texts: HashMap<TextKey, &str> = HashMap::new();
        let mut order = Vec::new();
        for plan in plans.iter().flatten() {
            if let Plan::Send(k, m) = plan {
                if texts.insert(*k, m.text.as_str()).is_none() {
                    order.push(*k);
                }
            }
        }
        let mut results: HashMap<TextKey, Result<String, String>> = HashMap::new();
        let (mut mine, mut pending) = (Vec::new(), Vec::new());
        for k in order {
            match self.cache.claim(&k) {
                Claim::Hit(t) => {
                    results.insert(k, Ok(t));
                }
                Claim::Mine => mine.push(k),
                Claim::Pending => pending.push(k),
            }
        }
        let mut sent = HashSet::new();
        self.send(&mine, &texts, &mut results, &mut sent, &mut counts)?;
        // Waiting only after our own claims are settled: no two workers wait on each other.
        for k in pending {
            match self.cache.wait(&k) {
                Claim::Hit(t) => {
                    results.insert(k, Ok(t));
                }
                _ => self.send(&[k], &texts, &mut results, &mut sent, &mut counts)?,
            }
        }
        let mut counted = HashSet::new();
        let mut outcomes = Vec::with_capacity(group.len());
        for (rec, plan) in group.into_iter().zip(&plans) {
            outcomes.push(self.assemble(rec, plan, &results, &sent, &mut counted, &mut counts));
        }
        Ok((outcomes, counts))
    }

    fn assemble(
        &self,
        rec: SourceRecord,
        plan: &[Plan; 3],
        results: &HashMap<TextKey, Result<String, String>>,
        sent: &HashSet<TextKey>,
        counted: &mut HashSet<TextKey>,
        counts: &mut FieldCounts,
    ) -> Outcome {
        let style = self.translator.mask_style();
        let mut out: [String; 3] = Default::default();
        let mut failure = None;
        for (i, p) in plan.iter().enumerate() {
            match p {
                Plan::Empty => counts.empty += 1,
                Plan::Verbatim => {
                    counts.verbatim += 1;
                    out[i] = rec.fields[i].clone();
                }
                Plan::Send(k, m) => {
                    // The first field of a text this worker sent counts as sent; every other as cached.
                    if !(sent.contains(k) && counted.insert(*k)) {
                        counts.from_cache += u64::from(matches!(results.get(k), Some(Ok(_))));
                    }
                    let restored = match results.get(k) {
                        Some(Ok(t)) => unmask(t, &m.spans, style),
                        Some(Err(e)) => Err(e.clone()),
                        None => Err("no translation came back".into()),
                    };
                    match restored {
                        Ok(t) => out[i] = t,
                        Err(e) => {
                            failure.get_or_insert(format!("{}: {e}", FIELDS[i]));
                        }
                    }
                }
            }
        }
        if let Some(reason) = failure {
            return Outcome::Failed(FailedRecord { id: rec.id, reason });
        }
        let pairs: Vec<(&str, &str)> = plan
            .iter()
            .enumerate()
            .filter(|(_, p)| matches!(p, Plan::Send(..)))
            .map(|(i, _)| (rec.fields[i].as_str(), out[i].as_str()))
            .collect();
        let flags = qa::check(&self.cfg.qa, self.source_lang, &pairs);
        let [instruction, input, output] = out;
        Outcome::Done(
            InstructRecord {
                id: rec.id,
                instruction,
                input,
                output,
                lang: self.cfg.target.clone(),
                source_id: Some(format!("{}:{}", self.source_file, rec.index)),
                translator: Some(self.name.clone()),
            },
            flags,
        )
    }
}

/// A JSONL file written under a temporary name; removed again if the run stops before `finish`.
struct JsonlOut {
    path: PathBuf,
    tmp: PathBuf,
    /// `None` once finished.
    w: Option<BufWriter<File>>,
    rows: u64,
}

impl JsonlOut {
    fn create(path: PathBuf) -> Result<Self, InstructError> {
        let tmp = crate::io::tmp_path(&path);
        let f = File::create(&tmp).map_err(|source| InstructError::Io { path: tmp.clone(), source })?;
        Ok(JsonlOut { path, tmp, w: Some(BufWriter::new(f)), rows: 0 })
    }

    fn write(&mut self, v: &impl Serialize) -> Result<(), InstructError> {
        let io = |source| InstructError::Io { path: self.tmp.clone(), source };
        let w = self.w.as_mut().expect("finish consumes the writer");
        serde_json::to_writer(&mut *w, v).map_err(|e| io(e.into()))?;
        w.write_all(b"\n").map_err(io)?;
        self.rows += 1;
        Ok(())
    }

    fn finish(mut self) -> Result<(PathBuf, Option<u64>), InstructError> {
        let io = |source| InstructError::Io { path: self.path.clone(), source };
        let w = self.w.take().expect("finish runs once");
        let file = w.into_inner().map_err(|e| io(e.into_error()))?;
        crate::io::commit(file, &self.tmp, &self.path).map_err(io)?;
        Ok((self.path.clone(), Some(self.rows)))
    }
}

impl Drop for JsonlOut {
    fn drop(&mut self) {
        if self.w.take().is_some() {
            // The run stopped (abort, I/O error): no half-written file is left behind.
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// The QA lists: record ids per failed check.
#[derive(Debug, Default, Serialize)]
struct QaLists {
    empty: Vec<DocId>,
    identical: Vec<DocId>,
    length_ratio: Vec<DocId>,
    source_language: Vec<DocId>,
}

/// Runs `instruct translate` (see the module docs).
pub fn run(cfg: &TranslateConfig, env: &Env) -> Result<TranslateReport, InstructError> {
    cfg.check()?;
    let clock = std::time::Instant::now();
    std::fs::create_dir_all(&cfg.out).map_err(|source| InstructError::Io { path: cfg.out.clone(), source })?;
    let cache_path = cfg.cache.clone().unwrap_or_else(|| cfg.out.join("cache.jsonl"));
    let (cache, translator) = if cfg.backend == Backend::Replay {
        let cache =
            TranslationCache::open(&cache_path, CacheScope::Replay(cfg.model.clone()), &cfg.source, &cfg.target)?;
        let t = cfg.translator(cache.translator())?;
        (cache, t)
    } else {
        let t = cfg.translator("")?;
        (TranslationCache::open(&cache_path, CacheScope::Translator(t.name()), &cfg.source, &cfg.target)?, t)
    };
    let name = translator.name();
    let policy = RetryPolicy {
        max_retries: cfg.max_retries,
        backoff_base: Duration::from_millis(cfg.backoff_ms),
        backoff_max: Duration::from_secs(60),
    };
    let secrets = cfg.api_key.iter().map(|k| k.0.clone()).collect();
    let http = Http::new(Duration::from_secs_f64(cfg.timeout_s), cfg.rate, policy, secrets)
        .map_err(|e| InstructError::Config(format!("cannot start the HTTP client: {e}")))?;

    let mut settings = cfg.settings();
    // Which service made the text (for replay: the one the cache recorded).
    settings["translator"] = serde_json::json!(name);
    let mut manifest = ManifestBuilder::new("instruct translate", settings, None);
    manifest.add_input(&cfg.input, &env.progress)?;
    let total = cfg.records()?.count() as u64;
    let bar = env.progress.items(total, "translating");

    let ctx = Ctx {
        cfg,
        translator: translator.as_ref(),
        http: &http,
        cache: &cache,
        name: name.clone(),
        source_file: cfg.input.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
        source_lang: qa::whatlang_lang(&cfg.source),
    };
    let group_size = (translator.limits().max_texts / 3).clamp(1, 16);
    let mut records = cfg.records()?.peekable();
    let groups = std::iter::from_fn(move || {
        let mut g = Vec::new();
        while g.len() < group_size {
            match records.next() {
                None => break,
                Some(Ok(r)) => g.push(r),
                Some(Err(e)) => return Some(Err(e)),
            }
            // A bad record ends the group, so the good ones before it are written first.
            if records.peek().is_some_and(|r| r.is_err()) {
                break;
            }
        }
        (!g.is_empty()).then_some(Ok(g))
    });
    let mut translated = JsonlOut::create(cfg.out.join("translated.jsonl"))?;
    let mut failed_out = JsonlOut::create(cfg.out.join("failed.jsonl"))?;
    let mut failed = Vec::new();
    let mut lists = QaLists::default();
    let mut totals = FieldCounts::default();
    crate::parallel::ordered_map(
        groups,
        cfg.concurrency,
        2 * cfg.concurrency,
        |g| ctx.translate_group(g),
        |(outcomes, c)| {
            totals.sent += c.sent;
            totals.from_cache += c.from_cache;
            totals.empty += c.empty;
            totals.verbatim += c.verbatim;
            totals.billed += c.billed;
            totals.tokens += c.tokens;
            for o in outcomes {
                bar.inc(1);
                match o {
                    Outcome::Done(rec, flags) => {
                        for (hit, list) in [
                            (flags.empty, &mut lists.empty),
                            (flags.identical, &mut lists.identical),
                            (flags.ratio, &mut lists.length_ratio),
                            (flags.source_lang, &mut lists.source_language),
                        ] {
                            if hit {
                                list.push(rec.id.clone());
                            }
                        }
                        translated.write(&rec)?;
                    }
                    Outcome::Failed(f) => {
                        failed_out.write(&f)?;
                        failed.push(f);
                    }
                }
            }
            Ok(())
        },
    )?;
    bar.finish_and_clear();
    let mut outputs = vec![translated.finish()?, failed_out.finish()?];
    // A cache inside the output folder is part of what the stage leaves (every answer was paid for): listed,
    // so that `audit` explains it and a complete stage is skipped on the next run.
    if cache_path.starts_with(&cfg.out) && cache_path.is_file() {
        outputs.push((cache_path.clone(), None));
    }

    let records = outputs[0].1.unwrap_or(0) + failed.len() as u64;
    for (key, n) in [
        ("records", records),
        ("records_translated", outputs[0].1.unwrap_or(0)),
        ("records_failed", failed.len() as u64),
        ("fields_sent", totals.sent),
        ("fields_from_cache", totals.from_cache),
        ("fields_empty", totals.empty),
        ("fields_verbatim", totals.verbatim),
        ("requests", http.stats.requests.load(Ordering::Relaxed)),
        ("retried", http.stats.retried.load(Ordering::Relaxed)),
        ("characters_billed", totals.billed),
        ("llm_tokens", totals.tokens),
        ("qa_empty", lists.empty.len() as u64),
        ("qa_identical", lists.identical.len() as u64),
        ("qa_length_ratio", lists.length_ratio.len() as u64),
        ("qa_source_language", lists.source_language.len() as u64),
    ] {
        manifest.count(key, n);
    }
    let counts = manifest.counts.clone();
    let mut finished = manifest.finish(&cfg.out, &outputs)?;
    if !failed.is_empty() {
        finished.incomplete = Some(format!(
            "{} of {records} records could not be translated (failed.jsonl); rerun the stage to retry them",
            failed.len()
        ));
    }
    let manifest_path = cfg.out.join("manifest.json");
    write_manifest(&manifest_path, finished, cfg, &cache_path, &lists, &failed)?;
    let report = TranslateReport {
        translated: outputs[0].0.clone(),
        failed: outputs[1].0.clone(),
        manifest: manifest_path,
        counts,
        seconds: clock.elapsed().as_secs_f64(),
    };
    match failed.len() as u64 {
        0 => Ok(report),
        n => Err(InstructError::Incomplete { failed: n, records, report: Box::new(report) }),
    }
}

/// The manifest plus this stage's `details`: run settings that do not decide the output, QA lists
/// and failures (never the API key).
fn write_manifest(
    path: &Path,
    m: crate::manifest::Manifest,
    cfg: &TranslateConfig,
    cache: &Path,
    lists: &QaLists,
    failed: &[FailedRecord],
) -> Result<(), InstructError> {
    let err = |e: serde_json::Error| InstructError::Io { path: path.into(), source: e.into() };
    let mut v = serde_json::to_value(&m).map_err(err)?;
    let run_settings = serde_json::json!({
        "backend": cfg.backend,
        "endpoint": cfg.endpoint,
        "model": cfg.model,
        "cache": cache.display().to_string(),
        "concurrency": cfg.concurrency,
        "rate_per_s": cfg.rate,
        "timeout_s": cfg.timeout_s,
        "max_retries": cfg.max_retries,
        "backoff_ms": cfg.backoff_ms,
    });
    v["details"] = serde_json::json!({
        "run_settings": run_settings,
        "qa": serde_json::to_value(lists).map_err(err)?,
        "failed": serde_json::to_value(failed).map_err(err)?,
    });
    let mut bytes = serde_json::to_vec_pretty(&v).map_err(err)?;
    bytes.push(b'\n');
    crate::io::write_atomic(path, &bytes).map_err(|source| InstructError::Io { path: path.into(), source })
}

impl crate::stage::Stage for TranslateConfig {
    fn kind(&self) -> &'static str {
        "translate"
    }
    fn paths_mut(&mut self) -> Vec<crate::stage::PathKey<'_>> {
        use crate::stage::Need;
        let mut v = vec![("input".to_string(), &mut self.input, Need::Input)];
        v.extend(self.cache.as_mut().map(|p| ("cache".to_string(), p, Need::Optional)));
        v
    }
    fn set_out(&mut self, dir: &Path) {
        self.out = dir.into();
    }
    fn settings(&self) -> Option<serde_json::Value> {
        Some(TranslateConfig::settings(self))
    }
    fn smoke(&mut self) {
        let cap = crate::stage::SMOKE_RECORDS;
        self.limit = Some(self.limit.unwrap_or(cap).min(cap));
    }
    /// Always: every answer in the cache was paid for, whatever happened to the rest of the folder.
    fn resumable(&self, _dir: &Path, _interrupted: bool) -> bool {
        true
    }
    fn run(&self, ctx: &crate::stage::StageCtx) -> Result<(), crate::stage::StageError> {
        let cfg = TranslateConfig { api_key: ApiKey::from_env(self.backend), ..self.clone() };
        run(&cfg, ctx.env)?;
        Ok(())
    }
}

impl std::fmt::Display for TranslateReport {
    /// The one-line summary `instruct translate` prints.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let c = |k: &str| self.counts.get(k).copied().unwrap_or(0);
        write!(
            f,
            "instruct translate: {} of {} records translated ({} fields sent, {} from cache, {} requests, {} retried, \
             {} characters billed, {} LLM tokens) in {:.1}s; QA: {} empty, {} identical, {} length ratio, {} source \
             language; manifest: {}",
            c("records_translated"),
            c("records"),
            c("fields_sent"),
            c("fields_from_cache"),
            c("requests"),
            c("retried"),
            c("characters_billed"),
            c("llm_tokens"),
            self.seconds,
            c("qa_empty"),
            c("qa_identical"),
            c("qa_length_ratio"),
            c("qa_source_language"),
            self.manifest.display()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_and_backends_parse() {
        assert_eq!(parse_rate("5"), Ok(5.0));
        assert_eq!(parse_rate("5/s"), Ok(5.0));
        assert_eq!(parse_rate("120/min"), Ok(2.0));
        for bad in ["0", "-1/s", "x/s", "5/day"] {
            assert!(parse_rate(bad).unwrap_err().starts_with("invalid rate"), "{bad}");
        }
        assert_eq!(format!("{:?}", ApiKey::new("sk-secret")), "ApiKey(***)");
    }
}
