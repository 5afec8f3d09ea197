//! `eval run` / `eval requests` / `eval score`: resolve the tasks (objects of `tasks.rs`), answer every
//! loglikelihood request once, let each task score its documents, average groups, write results.json (+
//! manifest, + per-task sample logs).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::backend::{BackendKind, BackendSpec};
use super::generation::GenTask;
use super::judge::{JudgeSettings, JudgeTask};
use super::lm::{LanguageModel, Loglikelihood};
use super::metrics::group_mean;
use super::results::{NSamples, Results};
use super::task::{GroupPlan, McRequest, McTask, Metric, TaskRegistry, TaskSpec};
use super::tasks::{Answered, CodeswitchTask, OutputType, PerplexityTask, Task};
use super::EvalError;
use crate::manifest::{InputFile, ManifestBuilder, TOOL_VERSION};
use crate::Env;

/// Settings of `eval run` (and, for the task part, `eval requests`).
#[derive(Debug, Clone, Serialize)]
pub struct RunConfig {
    /// Task and group names.
    pub tasks: Vec<String>,
    /// Root of the downloaded datasets.
    pub data_dir: PathBuf,
    /// Few-shot examples per prompt (None: each task's `num_fewshot`, else 0).
    pub num_fewshot: Option<usize>,
    /// Score only the first N documents of each task.
    pub limit: Option<usize>,
    /// Recorded for reproducibility (prompts and greedy decoding draw no random numbers).
    pub seed: u64,
    /// Text(s) for the `perplexity` task.
    pub perplexity_data: Option<PerplexityData>,
    /// Instruction template (an SFT template name) the code-switching prompts are written in; default:
    /// the task file's own (English Alpaca).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_template: Option<String>,
    /// Write `DIR/samples_{task}.jsonl` with every request and its score (lm-eval `--log_samples`).
    pub log_samples: Option<PathBuf>,
    /// Extra task definitions (`*.toml`, and prompt sets under `prompts/`).
    pub evals_dir: Option<PathBuf>,
    /// Also score data with their known defects corrected (`{task}_fixed`).
    pub fixed_variants: bool,
    /// Tokens to generate per response in generation tasks (default: the task's `max_tokens`).
    pub max_gen_tokens: Option<usize>,
    /// The judge of LLM-judged tasks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub judge: Option<JudgeSettings>,
    /// Progress bars of long task work (judging).
    #[serde(skip)]
    pub progress: crate::Progress,
    /// results.json path.
    pub out: PathBuf,
    /// The model: how it is served and what files make it.
    pub model: ModelInfo,
    /// Fetch task data missing under `data_dir` from the Hub (None: local files only).
    #[serde(skip)]
    pub hub: Option<crate::hub::HubConfig>,
    /// The scoring batches' token budget in use (given, or chosen from the memory free at start), for
    /// results.json; not a setting: it decides batches, not numbers, so it stays out of the run id.
    #[serde(skip)]
    pub batch_budget: Option<usize>,
}

/// Settings of `eval run` and of an `eval` stage of a recipe: a model (a local checkpoint, a Hub id, or a
/// served model) scored on tasks; results go to `results` (default `out/results.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalConfig {
    /// Checkpoint directory (HF layout) or Hub id; the served model's name with `backend = "openai"`.
    #[serde(default)]
    pub model: PathBuf,
    /// How the model is served.
    #[serde(default = "default_backend")]
    pub backend: BackendKind,
    /// Server URL (`openai`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Tokenizer for `openai` (default: the one in `model` when it is a directory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokenizer: Option<PathBuf>,
    /// Task and group names.
    #[serde(default)]
    pub tasks: Vec<String>,
    /// Root of the datasets in their released layouts (xcopa/, belebele/, ceval/).
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// Few-shot examples per prompt (default: each task's `num_fewshot`, else 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_fewshot: Option<usize>,
    /// Score only the first N documents of each task.
    #[serde(default)]
    pub limit: Option<usize>,
    /// Text(s) for the `perplexity` task: one path, a list, or a table name → path.
    #[serde(default)]
    pub perplexity_data: Option<PerplexityData>,
    /// Instruction template of the model (`alpaca`, `alpaca_tr`, `chat`, …) for generation prompts; in a
    /// recipe, taken from the SFT stage that trained the model when not given.
    #[serde(default)]
    pub prompt_template: Option<String>,
    /// Extra task definitions (`*.toml`, and prompt sets under `prompts/`).
    #[serde(default)]
    pub evals_dir: Option<PathBuf>,
    /// Also score data with their known defects corrected (`{task}_fixed`).
    #[serde(default = "yes")]
    pub fixed_variants: bool,
    /// Context length (default: the model's max_position_embeddings).
    #[serde(default)]
    pub max_length: Option<usize>,
    /// Tokens to generate per response in generation tasks (default: the task's `max_tokens`).
    #[serde(default)]
    pub max_gen_tokens: Option<usize>,
    /// Judge model of LLM-judged tasks (llm_eval_*, pairwise_*), served at `judge_endpoint`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub judge_model: Option<String>,
    /// OpenAI-compatible server of the judge (`/v1/chat/completions`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub judge_endpoint: Option<String>,
    /// Environment variable with the judge's API key.
    #[serde(default = "default_judge_key_env")]
    pub judge_api_key_env: String,
    /// Judgement cache (default: judgements.jsonl beside results.json).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub judge_cache: Option<PathBuf>,
    /// Reference model's answers for pairwise judging (JSONL with `prompt`, `response`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub judge_reference: Option<PathBuf>,
    /// Judge requests in flight at once.
    #[serde(default = "default_judge_workers")]
    pub judge_workers: usize,
    /// Requests per batch.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// Padded tokens per scoring batch at most (local backend; default: a quarter of the available memory
    /// over the model's activation bytes per token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_batch_tokens: Option<usize>,
    /// `cpu` or `cuda[:N]`.
    #[serde(default = "default_device")]
    pub device: String,
    /// Recorded in results.json.
    #[serde(default = "default_eval_seed")]
    pub seed: u64,
    /// Write `DIR/samples_{task}.jsonl` with every request and its score (lm-eval `--log_samples`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_samples: Option<PathBuf>,
    /// The results.json path (default: `out/results.json`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub results: Option<PathBuf>,
    /// Output directory (a recipe sets it per stage).
    #[serde(default)]
    pub out: PathBuf,
}

fn default_backend() -> BackendKind {
    BackendKind::Local
}
fn default_data_dir() -> PathBuf {
    PathBuf::from(".")
}
fn yes() -> bool {
    true
}
fn default_batch_size() -> usize {
    super::backend::DEFAULT_BATCH_SIZE
}
fn default_device() -> String {
    "cpu".into()
}
fn default_eval_seed() -> u64 {
    1234
}
fn default_judge_key_env() -> String {
    "OPENAI_API_KEY".into()
}
fn default_judge_workers() -> usize {
    4
}

impl RunConfig {
    /// Few-shot examples for a task whose definition asks for `default` (the run's setting wins).
    pub fn shots(&self, default: Option<usize>) -> usize {
        self.num_fewshot.or(default).unwrap_or(0)
    }
}

impl EvalConfig {
    /// How the model is served and opened.
    pub fn backend_spec(&self) -> BackendSpec {
        BackendSpec {
            kind: self.backend,
            model: self.model.to_string_lossy().into_owned(),
            endpoint: self.endpoint.clone(),
            tokenizer: self.tokenizer.clone(),
            max_length: self.max_length,
            batch_size: self.batch_size,
            max_batch_tokens: self.max_batch_tokens,
            device: self.device.clone(),
        }
    }

    /// The run's settings for `model` (what results.json records about it).
    pub fn run_config(&self, model: ModelInfo) -> RunConfig {
        RunConfig {
            tasks: self.tasks.clone(),
            data_dir: self.data_dir.clone(),
            num_fewshot: self.num_fewshot,
            limit: self.limit,
            seed: self.seed,
            perplexity_data: self.perplexity_data.clone(),
            prompt_template: self.prompt_template.clone(),
            log_samples: self.log_samples.clone(),
            evals_dir: self.evals_dir.clone(),
            fixed_variants: self.fixed_variants,
            max_gen_tokens: self.max_gen_tokens,
            judge: self.judge_settings(),
            progress: crate::Progress::default(),
            out: self.results_path(),
            model,
            hub: Some(crate::hub::HubConfig::from_env(crate::Progress::default())),
            batch_budget: None,
        }
    }

    /// The judge, when a judge model is named.
    pub fn judge_settings(&self) -> Option<JudgeSettings> {
        Some(JudgeSettings {
            model: self.judge_model.clone()?,
            endpoint: self.judge_endpoint.clone().unwrap_or_else(|| "https://api.openai.com/v1".into()),
            api_key_env: self.judge_api_key_env.clone(),
            cache: self.judge_cache.clone(),
            reference: self.judge_reference.clone(),
            workers: self.judge_workers,
        })
    }

    /// `results`, or `out/results.json`.
    pub fn results_path(&self) -> PathBuf {
        self.results.clone().unwrap_or_else(|| self.out.join("results.json"))
    }

    /// Scores the model and writes results.json with its manifest.
    pub fn run(&self, env: &Env) -> Result<Results, EvalError> {
        if self.model.as_os_str().is_empty() {
            return Err(EvalError::Config(
                "no model to score: set `model` (--model DIR, org/name or a served name)".into(),
            ));
        }
        // A Hub id is fetched here (as train and vocab merge do), so results.json keeps the name asked for
        // and `model_hub` {repo, revision, commit}.
        let mut spec = self.backend_spec();
        let fetched = spec.fetch_model(&crate::hub::HubConfig::from_env(env.progress))?;
        let mut model = spec.model_info()?;
        if let Some((asked, source)) = fetched {
            (model.model, model.hub) = (asked, Some(source));
        }
        // Chosen once (free memory changes): the budget results.json states is the one the model batches by.
        // After `model_info`, so a budget chosen here stays out of the settings.
        spec.max_batch_tokens = spec.batch_budget();
        let cfg = RunConfig { batch_budget: spec.max_batch_tokens, progress: env.progress, ..self.run_config(model) };
        let mut lm = spec.open(env)?;
        run(&cfg, lm.as_mut(), env)
    }
}

/// The text(s) the `perplexity` task scores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PerplexityData {
    /// One text: results under the task's name (`perplexity`).
    One(PathBuf),
    /// Several: results under `perplexity_{file stem}`.
    List(Vec<PathBuf>),
    /// Several, named: results under `perplexity_{name}` (`{ zh = "…", en = "…" }`).
    Named(BTreeMap<String, PathBuf>),
}

impl PerplexityData {
    /// `(result name, text)` of each text, for the perplexity task called `task`; file stems of a list must
    /// differ.
    pub fn texts(&self, task: &str) -> Result<Vec<(String, &Path)>, EvalError> {
        let named = |name: &str| format!("{task}_{name}");
        let texts: Vec<(String, &Path)> = match self {
            PerplexityData::One(p) => vec![(task.to_string(), p.as_path())],
            PerplexityData::List(ps) => {
                ps.iter().map(|p| (named(&p.file_stem().unwrap_or_default().to_string_lossy()), p.as_path())).collect()
            }
            PerplexityData::Named(m) => m.iter().map(|(k, p)| (named(k), p.as_path())).collect(),
        };
        if texts.is_empty() {
            return Err(EvalError::Config("perplexity_data names no text: give a path, a list or a table".into()));
        }
        for (i, (name, path)) in texts.iter().enumerate() {
            if let Some((_, other)) = texts[..i].iter().find(|(n, _)| n == name) {
                return Err(EvalError::Config(format!(
                    "perplexity_data: {} and {} would both report as `{name}`; name them in a table instead \
                     (perplexity_data = {{ a = \"…\", b = \"…\" }})",
                    other.display(),
                    path.display()
                )));
            }
        }
        Ok(texts)
    }

    /// Every path with the key it is written under (`perplexity_data`, `perplexity_data[1]`,
    /// `perplexity_data.zh`).
    pub fn paths_mut(&mut self) -> Vec<(String, &mut PathBuf)> {
        match self {
            PerplexityData::One(p) => vec![("perplexity_data".into(), p)],
            PerplexityData::List(ps) => {
                ps.iter_mut().enumerate().map(|(i, p)| (format!("perplexity_data[{i}]"), p)).collect()
            }
            PerplexityData::Named(m) => m.iter_mut().map(|(k, p)| (format!("perplexity_data.{k}"), p)).collect(),
        }
    }
}

/// What is being evaluated, for results.json `config`.
#[derive(Debug, Clone, Serialize)]
pub struct ModelInfo {
    /// `local` or `openai`.
    pub backend: String,
    /// Checkpoint directory, or the served model name.
    pub model: String,
    /// Weight files to hash (safetensors of a checkpoint; none for a remote model).
    pub weight_files: Vec<PathBuf>,
    /// Remote endpoint (openai backend).
    pub endpoint: Option<String>,
    /// Requests per batch.
    pub batch_size: usize,
    /// Device (local backend).
    pub device: String,
    /// Padded tokens per scoring batch at most (local backend), when given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_batch_tokens: Option<usize>,
    /// The Hub repository, revision and commit, when the model was fetched by name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hub: Option<crate::hub::HubSource>,
}

impl ModelInfo {
    /// No model: only requests are built (`eval requests`).
    pub fn none() -> ModelInfo {
        ModelInfo {
            backend: "none".into(),
            model: String::new(),
            weight_files: Vec::new(),
            endpoint: None,
            batch_size: 1,
            device: String::new(),
            max_batch_tokens: None,
            hub: None,
        }
    }

    /// A local checkpoint scored with candle.
    pub fn local(ckpt: &Path, batch_size: usize, device: &str) -> Result<ModelInfo, EvalError> {
        Ok(ModelInfo {
            backend: "local".into(),
            model: ckpt.display().to_string(),
            weight_files: weight_files(ckpt)?,
            endpoint: None,
            batch_size,
            device: device.into(),
            max_batch_tokens: None,
            hub: None,
        })
    }
}

/// The weight files of a checkpoint directory (as the model loader finds them), or the file itself.
pub fn weight_files(ckpt: &Path) -> Result<Vec<PathBuf>, EvalError> {
    if ckpt.is_file() {
        return Ok(vec![ckpt.to_path_buf()]);
    }
    let checkpoint = crate::model::Checkpoint::open(ckpt)?;
    Ok(checkpoint.files().to_vec())
}

/// The tasks of a run, its groups (name, members, weighted by size) and warnings about the data.
struct Plan<'a> {
    tasks: Vec<Box<dyn Task + 'a>>,
    groups: GroupPlan,
    warnings: Vec<String>,
}

fn plan<'a>(registry: &'a TaskRegistry, cfg: &RunConfig) -> Result<Plan<'a>, EvalError> {
    let mut p = Plan { tasks: Vec::new(), groups: Vec::new(), warnings: Vec::new() };
    let hub = cfg.hub.clone().map(crate::hub::Hub::new).transpose()?;
    for name in &cfg.tasks {
        let refs = registry.resolve(name, &cfg.data_dir, hub.is_some())?;
        if registry.is_group(name) {
            let all = registry.group_size(name);
            if refs.len() < all {
                p.warnings.push(format!(
                    "{name}: only {} of its {all} subtasks have data under {}; the group average covers those",
                    refs.len(),
                    cfg.data_dir.display()
                ));
            }
            let present: Vec<String> = refs.iter().map(|r| r.name.clone()).collect();
            for g in registry.group_plan(name, &present) {
                if !p.groups.iter().any(|x| x.0 == g.0) {
                    p.groups.push(g);
                }
            }
        }
        for r in refs {
            if p.tasks.iter().any(|t| t.name() == r.name) {
                continue;
            }
            match r.spec {
                TaskSpec::MultipleChoice(mc) => {
                    let task = McTask::open(&r.name, &r.instance, mc, &cfg.data_dir, hub.as_ref())?;
                    if let Some((fix, n)) = task.detect_defect() {
                        let msg = format!(
                            "{}: {} has the known defect in `{}` ({n} rows): {}; reporting `{}` as released{}",
                            task.name,
                            task.data_path.display(),
                            fix.field,
                            fix.why,
                            task.name,
                            if cfg.fixed_variants {
                                format!(" and `{}_fixed` with those rows corrected", task.name)
                            } else {
                                String::new()
                            }
                        );
                        p.warnings.push(msg);
                        if cfg.fixed_variants {
                            let fixed = task.fixed(fix);
                            p.tasks.push(Box::new(task));
                            p.tasks.push(Box::new(fixed));
                            continue;
                        }
                    }
                    p.tasks.push(Box::new(task));
                }
                TaskSpec::Perplexity(_) => {
                    let Some(data) = &cfg.perplexity_data else {
                        return Err(EvalError::Config(
                            "task `perplexity` needs the text to score: --data PATH (.txt, .jsonl, text-shard .parquet or a directory)".into(),
                        ));
                    };
                    for (name, path) in data.texts(&r.name)? {
                        p.tasks.push(Box::new(PerplexityTask { name, data: path.to_path_buf() }));
                    }
                }
                TaskSpec::Codeswitch(cs) => {
                    let target = cs.instances[&r.instance].clone();
                    p.tasks.push(Box::new(CodeswitchTask { name: r.name, spec: cs, target }));
                }
                TaskSpec::Judge(j) => {
                    let instance = j.instances[&r.instance].clone();
                    p.tasks.push(Box::new(JudgeTask { name: r.name, spec: j, instance }));
                }
                TaskSpec::Generate(g) => {
                    p.tasks.push(Box::new(GenTask::open(&r.name, &r.instance, g, &cfg.data_dir)?));
                }
            }
        }
    }
    Ok(p)
}

/// Writes the requests of the multiple-choice tasks as JSONL (`task, doc_id, choice_idx, context,
/// continuation, target`), so prompts can be diffed against lm-evaluation-harness. Returns the count.
pub fn write_requests(cfg: &RunConfig, out: &Path) -> Result<usize, EvalError> {
    let registry = TaskRegistry::load(cfg.evals_dir.as_deref())?;
    let p = plan(&registry, cfg)?;
    if let Some(t) = p.tasks.iter().find(|t| t.output_type() != OutputType::MultipleChoice) {
        return Err(EvalError::Config(format!(
            "`eval requests` writes loglikelihood requests of multiple-choice tasks only; drop `{}`",
            t.name()
        )));
    }
    for w in &p.warnings {
        eprintln!("warning: {w}");
    }
    let mut buf = Vec::new();
    let mut n = 0;
    for task in &p.tasks {
        for r in task.loglikelihood_requests(cfg)? {
            serde_json::to_writer(&mut buf, &r).map_err(|e| EvalError::Config(e.to_string()))?;
            buf.push(b'\n');
            n += 1;
        }
    }
    crate::io::write_atomic(out, &buf).map_err(|e| EvalError::io(out, e))?;
    Ok(n)
}

/// Writes `dir/samples_{task}.jsonl` atomically.
fn write_samples(dir: &Option<PathBuf>, task: &str, lines: &[serde_json::Value]) -> Result<(), EvalError> {
    let Some(dir) = dir else { return Ok(()) };
    std::fs::create_dir_all(dir).map_err(|e| EvalError::io(dir, e))?;
    // lm-eval's `--log_samples` name, without its timestamp (one run per results.json).
    let path = dir.join(format!("samples_{task}.jsonl"));
    let mut buf = Vec::new();
    for l in lines {
        serde_json::to_writer(&mut buf, l).map_err(|e| EvalError::Config(e.to_string()))?;
        buf.push(b'\n');
    }
    crate::io::write_atomic(&path, &buf).map_err(|e| EvalError::io(&path, e))
}

/// Runs the tasks of `cfg` against `lm` and writes results.json (and its manifest next to it).
pub fn run(cfg: &RunConfig, lm: &mut dyn LanguageModel, env: &Env) -> Result<Results, EvalError> {
    // A wrong template name is a wrong setting, whether or not a task of this run uses it.
    if let Some(name) = &cfg.prompt_template {
        crate::shards::Template::by_name(name).map_err(EvalError::Config)?;
    }
    let registry = TaskRegistry::load(cfg.evals_dir.as_deref())?;
    let p = plan(&registry, cfg)?;
    for w in &p.warnings {
        eprintln!("warning: {w}");
    }
    // Which Hub dataset, config and commit each fetched task read.
    let datasets: BTreeMap<&str, _> = p.tasks.iter().filter_map(|t| Some((t.name(), t.data()?.1?))).collect();
    let args = serde_json::to_value(cfg).map_err(|e| EvalError::Config(e.to_string()))?;
    let mut manifest = ManifestBuilder::new("eval run", args, Some(cfg.seed));
    let mut model_files: Vec<InputFile> = Vec::new();
    for f in &cfg.model.weight_files {
        model_files.push(manifest.add_input(f, &env.progress)?.clone());
    }
    let mut hashed = std::collections::HashSet::new();
    for (path, _) in p.tasks.iter().filter_map(|t| t.data()) {
        if hashed.insert(path.to_path_buf()) {
            manifest.add_input(path, &env.progress)?;
        }
    }
    let mut results = Results { warnings: p.warnings.clone(), ..Results::default() };

    // Every loglikelihood request of every task in one call, identical requests asked once.
    let mut ahead = Vec::new();
    for t in &p.tasks {
        ahead.extend(t.loglikelihood_requests(cfg)?.iter().map(McRequest::loglikelihood));
    }
    let mut lm = Answered::ask(lm, ahead)?;
    for t in &p.tasks {
        let r = t.evaluate(&mut lm, cfg)?;
        for s in &r.scores {
            results.set(t.name(), &s.metric, s.value, s.stderr, s.higher_is_better);
        }
        let entry = results.results.entry(t.name().to_string()).or_default();
        for (k, v) in r.extra {
            entry.insert(k.into(), v);
        }
        record_task(&mut results, t.name(), &r.version, r.num_fewshot, r.n_docs.0, r.n_docs.1);
        write_samples(&cfg.log_samples, t.name(), &r.samples)?;
    }
    // Documents per task and group, for groups weighted by size (groups come innermost first).
    let mut sizes: BTreeMap<String, usize> = results.n_samples.iter().map(|(k, n)| (k.clone(), n.effective)).collect();
    for (group, members, weight_by_size) in &p.groups {
        for metric in Metric::ALL.map(Metric::name) {
            let parts: Vec<(f64, Option<f64>, usize)> = members
                .iter()
                .filter_map(|m| Some((results.get(m, metric)?, results.stderr(m, metric), *sizes.get(m)?)))
                .collect();
            if parts.len() == members.len() && !parts.is_empty() {
                let (v, se) = group_mean(&parts, *weight_by_size);
                results.set(group, metric, v, se, true);
            }
        }
        sizes.insert(group.clone(), members.iter().filter_map(|m| sizes.get(m)).sum());
        if let Some(entry) = results.results.get(group).cloned() {
            results.groups.insert(group.clone(), entry);
        }
        results.group_subtasks.insert(group.clone(), members.clone());
    }

    let model_sha256 = match model_files.as_slice() {
        [one] => Some(one.sha256.clone()),
        [] => None,
        many => {
            use sha2::Digest;
            let mut h = sha2::Sha256::new();
            for f in many {
                h.update(f.sha256.as_bytes());
            }
            Some(hex::encode(h.finalize()))
        }
    };
    results.config = json!({
        "model": cfg.model.model,
        "model_sha256": model_sha256,
        "model_files": model_files,
        "backend": cfg.model.backend,
        "endpoint": cfg.model.endpoint,
        "batch_size": cfg.model.batch_size,
        "max_batch_tokens": cfg.batch_budget,
        "device": cfg.model.device,
        "tasks": cfg.tasks,
        "num_fewshot": cfg.num_fewshot,
        "limit": cfg.limit,
        "seed": cfg.seed,
        "data_dir": cfg.data_dir,
        "model_hub": cfg.model.hub,
        "datasets": datasets,
        "versions": { "langadapt": TOOL_VERSION, "lm_eval_templates": "0.4.13" },
    });
    results.write(&cfg.out)?;
    let dir = cfg.out.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let m = manifest.finish(dir, &[(cfg.out.clone(), None)])?;
    m.write(&manifest_path(&cfg.out))?;
    Ok(results)
}

/// Where `eval run` writes its manifest: `results.json` → `results.manifest.json`.
pub fn manifest_path(out: &Path) -> PathBuf {
    let stem = out.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "results".into());
    out.with_file_name(format!("{stem}.manifest.json"))
}

fn record_task(results: &mut Results, name: &str, version: &str, shots: usize, original: usize, effective: usize) {
    results.versions.insert(name.to_string(), json!(version));
    results.n_shot.insert(name.to_string(), shots);
    results.n_samples.insert(name.to_string(), NSamples { original, effective });
    results.results.entry(name.to_string()).or_default().insert("n".into(), json!(effective));
}

/// `eval score`: answers loglikelihood requests of a JSONL file (`id`, `context`, `continuation`) with
/// `id`, `ll`, `is_greedy`, `n_cont_tokens` per line. Returns the count.
pub fn score_requests(lm: &mut dyn LanguageModel, requests: &Path, out: &Path) -> Result<usize, EvalError> {
    let text = std::fs::read_to_string(requests).map_err(|e| EvalError::io(requests, e))?;
    let mut ids = Vec::new();
    let mut reqs = Vec::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line)
            .map_err(|e| EvalError::data(requests, i as u64 + 1, format!("not valid JSON: {e}")))?;
        let field = |k: &str| {
            v.get(k)
                .and_then(|x| x.as_str())
                .map(str::to_string)
                .ok_or_else(|| EvalError::data(requests, i as u64 + 1, format!("missing string field `{k}`")))
        };
        ids.push(v.get("id").cloned().unwrap_or(json!(ids.len())));
        reqs.push(Loglikelihood { context: field("context")?, continuation: field("continuation")? });
    }
    let answers = lm.loglikelihood(&reqs)?;
    let mut buf = Vec::new();
    for (id, a) in ids.iter().zip(&answers) {
        let line = json!({"id": id, "ll": a.ll, "is_greedy": a.is_greedy, "n_cont_tokens": a.n_cont_tokens});
        writeln!(buf, "{line}").map_err(|e| EvalError::io(out, e))?;
    }
    crate::io::write_atomic(out, &buf).map_err(|e| EvalError::io(out, e))?;
    Ok(answers.len())
}

impl crate::stage::Stage for EvalConfig {
    fn kind(&self) -> &'static str {
        "eval"
    }
    fn paths_mut(&mut self) -> Vec<crate::stage::PathKey<'_>> {
        use crate::stage::Need;
        let mut v = vec![
            ("model".to_string(), &mut self.model, Need::Checkpoint),
            ("data_dir".to_string(), &mut self.data_dir, Need::Input),
        ];
        if let Some(data) = self.perplexity_data.as_mut() {
            v.extend(data.paths_mut().into_iter().map(|(k, p)| (k, p, Need::Input)));
        }
        v.extend(self.evals_dir.as_mut().map(|p| ("evals_dir".to_string(), p, Need::Input)));
        v.extend(self.judge_cache.as_mut().map(|p| ("judge_cache".to_string(), p, Need::Optional)));
        v.extend(self.judge_reference.as_mut().map(|p| ("judge_reference".to_string(), p, Need::Input)));
        v
    }
    fn model_without_template(&self) -> Option<PathBuf> {
        self.prompt_template.is_none().then(|| self.model.clone())
    }
    fn set_prompt_template(&mut self, template: String) {
        self.prompt_template = Some(template);
    }
    fn set_out(&mut self, dir: &Path) {
        self.out = dir.into();
    }
    fn manifest_path(&self, _dir: &Path) -> PathBuf {
        manifest_path(&self.results_path())
    }
    /// Only known once the model exists (the weight files are part of the settings).
    fn settings(&self) -> Option<serde_json::Value> {
        serde_json::to_value(self.run_config(self.backend_spec().model_info().ok()?)).ok()
    }
    fn smoke(&mut self) {
        let cap = crate::stage::SMOKE_DOCS;
        self.limit = Some(self.limit.unwrap_or(cap).min(cap));
    }
    fn run(&self, ctx: &crate::stage::StageCtx) -> Result<(), crate::stage::StageError> {
        EvalConfig::run(self, ctx.env)?;
        Ok(())
    }
}
