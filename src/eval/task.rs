//! Tasks as data: `evals/*.toml` files describe each task family (data layout, prompt template,
//! choices, target, delimiters, few-shot split and sampler, metrics); this module loads them,
//! reads the documents (JSONL or CSV, errors naming file and line) and builds the
//! lm-evaluation-harness requests.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::lm::Loglikelihood;
use super::pyrandom::PyRandom;
use super::EvalError;

/// lm-eval's default `fewshot_random_seed`.
pub const FEWSHOT_SEED: u32 = 1234;

/// The task files shipped in `evals/`, compiled in so the binary works from any directory.
const BUILTIN: &[(&str, &str)] = &[
    ("evals/xcopa.toml", include_str!("../../evals/xcopa.toml")),
    ("evals/belebele.toml", include_str!("../../evals/belebele.toml")),
    ("evals/ceval.toml", include_str!("../../evals/ceval.toml")),
    ("evals/perplexity.toml", include_str!("../../evals/perplexity.toml")),
    ("evals/codeswitch.toml", include_str!("../../evals/codeswitch.toml")),
    ("evals/sentiment.toml", include_str!("../../evals/sentiment.toml")),
    ("evals/flores.toml", include_str!("../../evals/flores.toml")),
    ("evals/squad.toml", include_str!("../../evals/squad.toml")),
    ("evals/mmlu.toml", include_str!("../../evals/mmlu.toml")),
    ("evals/llm_eval.toml", include_str!("../../evals/llm_eval.toml")),
    ("evals/classification.toml", include_str!("../../evals/classification.toml")),
    ("evals/pairwise.toml", include_str!("../../evals/pairwise.toml")),
];

/// One `evals/*.toml` file: a task family.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum TaskSpec {
    /// Multiple-choice loglikelihood tasks (XCOPA, Belebele, C-Eval).
    MultipleChoice(Box<McSpec>),
    /// Rolling-loglikelihood perplexity over user text.
    Perplexity(PerplexitySpec),
    /// Generate responses to a prompt set, then measure how often they leave the language.
    Codeswitch(CodeswitchSpec),
    /// Generate an answer per document and score it against references (translation, extractive QA).
    Generate(Box<super::generation::GenSpec>),
    /// Answers to a prompt set scored by a judge model with a rubric.
    Judge(super::judge::JudgeSpec),
}

impl TaskSpec {
    /// The family's name pattern, its named instances, and whether other instance names are accepted.
    fn naming(&self) -> (&str, Vec<String>, bool) {
        match self {
            TaskSpec::MultipleChoice(mc) => (&mc.name, mc.instances.keys().cloned().collect(), mc.open_instances),
            TaskSpec::Perplexity(p) => (&p.name, Vec::new(), false),
            TaskSpec::Codeswitch(c) => (&c.name, c.instances.keys().cloned().collect(), false),
            TaskSpec::Generate(g) => (&g.name, g.instances.keys().cloned().collect(), g.open_instances),
            TaskSpec::Judge(j) => (&j.name, j.instances.keys().cloned().collect(), false),
        }
    }
}

/// A multiple-choice family. Templates: `{field}` is a document field, `{$var}` an instance
/// variable (`{$instance}` the instance name), `{field@table}` looks the field's value up in an
/// instance table; filters follow `|`: `strip` (Python `str.strip`), `chop` (drop the last
/// character), `lcfirst` (lower-case the first character). `{{` and `}}` are literal braces.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct McSpec {
    /// Task name pattern, e.g. `xcopa_{instance}`.
    pub name: String,
    /// Task version (lm-eval `metadata.version`).
    pub version: String,
    /// The lm-evaluation-harness template this follows.
    pub source: String,
    /// `jsonl` or `csv` (with a header row).
    pub format: DocFormat,
    /// Column names of a CSV without a header row (MMLU's release: `question,A,B,C,D,answer`).
    #[serde(default)]
    pub columns: Option<Vec<String>>,
    /// Scored documents, relative to `--data-dir`.
    pub data: String,
    /// Few-shot documents; the same file as `data` means the scored row is skipped.
    #[serde(default)]
    pub fewshot_data: Option<String>,
    /// `first_n` (lm-eval FirstNSampler) or `random` (lm-eval's default sampler: Python
    /// `random.Random(1234).sample`, one generator shared by a task's documents in order).
    #[serde(default)]
    pub fewshot_sampler: Sampler,
    /// Few-shot examples when the run does not say (`--num-fewshot`); default 0 (lm-eval's).
    #[serde(default)]
    pub num_fewshot: Option<usize>,
    /// Prepended to every prompt (lm-eval `description`).
    #[serde(default)]
    pub description: String,
    /// The question (lm-eval `doc_to_text`).
    pub text: String,
    /// The answer options (lm-eval `doc_to_choice`).
    pub choices: Vec<String>,
    /// Which option is right.
    pub target: TargetSpec,
    /// Between the prompt and an option (lm-eval `target_delimiter`).
    #[serde(default = "default_target_delimiter")]
    pub target_delimiter: String,
    /// Between few-shot examples (lm-eval `fewshot_delimiter`).
    #[serde(default = "default_fewshot_delimiter")]
    pub fewshot_delimiter: String,
    /// Metrics reported (acc, acc_norm, acc_bytenorm); another name is an error when the file loads.
    pub metrics: Vec<Metric>,
    /// Any instance name whose data file exists is a task (Belebele's 122 FLORES codes).
    #[serde(default)]
    pub open_instances: bool,
    /// Named instances and their variables.
    #[serde(default)]
    pub instances: BTreeMap<String, BTreeMap<String, toml::Value>>,
    /// A group task over all instances (C-Eval's `ceval-valid`).
    #[serde(default)]
    pub group: Option<GroupSpec>,
    /// Known defects of released data files, per instance.
    #[serde(default)]
    pub fixes: BTreeMap<String, FixSpec>,
    /// The Hub dataset lm-evaluation-harness reads, fetched when `data` is not under `--data-dir`.
    #[serde(default)]
    pub hub: Option<HubData>,
}

/// Where a family's data lies on the Hugging Face Hub (`{instance}` is filled in everywhere).
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct HubData {
    /// Dataset repository, as lm-eval's `dataset_path`.
    pub dataset: String,
    /// Dataset config, as lm-eval's `dataset_name`.
    pub config: String,
    /// Branch, tag or commit; `refs/convert/parquet` is the Hub's Parquet export of every config.
    pub revision: String,
    /// The scored split's file in the repository (`.parquet`, `.jsonl` or `.csv`).
    pub data: String,
    /// The few-shot split's file.
    #[serde(default)]
    pub fewshot_data: Option<String>,
}

/// A task's data fetched from the Hub, for results.json.
#[derive(Debug, Clone, serde::Serialize)]
pub struct HubDataSource {
    /// Dataset config.
    pub config: String,
    /// Repository, revision asked for, and the commit it resolved to.
    #[serde(flatten)]
    pub source: crate::hub::HubSource,
}

/// Where the right answer is: `values.index(doc[field])`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetSpec {
    /// The document field.
    pub field: String,
    /// Its allowed values, in option order.
    pub values: Vec<String>,
    /// The field may also hold the option's 0-based index (MMLU: a letter in the release's CSV, an
    /// integer in the Hub's rows).
    #[serde(default)]
    pub indices: bool,
}

/// A group of all instances of a family, averaged as lm-eval's `aggregate_metric_list`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupSpec {
    /// The group's task name.
    pub name: String,
    /// lm-eval `weight_by_size`: mean over all documents (true) or over subtasks (false).
    pub weight_by_size: bool,
    /// Groups between the instances and this one (MMLU's categories), averaged first.
    #[serde(default)]
    pub subgroups: Option<SubgroupSpec>,
}

/// Subgroups of a group by an instance variable: `{ by = "category", name = "mmlu_{value}" }` makes
/// `mmlu_stem` of the instances whose `category` is `stem`; the group averages the subgroups.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubgroupSpec {
    /// The instance variable.
    pub by: String,
    /// The subgroup's name, `{value}` being the variable's value.
    pub name: String,
    /// lm-eval `weight_by_size` of each subgroup.
    pub weight_by_size: bool,
}

/// The groups a requested group name averages, innermost first: (name, members, weight_by_size).
pub type GroupPlan = Vec<(String, Vec<String>, bool)>;

/// A documented correction of a released data file: in `rows[file]` (by `key`), `field` should be `value`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FixSpec {
    /// The field that is wrong.
    pub field: String,
    /// The value it should have in the listed rows.
    pub value: String,
    /// The field identifying a row.
    pub key: String,
    /// Why (shown in the warning).
    pub why: String,
    /// File name → keys of the rows to correct.
    pub rows: BTreeMap<String, Vec<String>>,
}

/// Document file formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DocFormat {
    /// One JSON object per line.
    Jsonl,
    /// RFC 4180 CSV with a header row.
    Csv,
    /// Parquet (the Hub's dataset export): one document per row, values as their text.
    Parquet,
}

/// The `perplexity` task.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PerplexitySpec {
    /// Task name.
    pub name: String,
    /// Task version.
    pub version: String,
    /// The lm-evaluation-harness task whose metrics this follows.
    pub source: String,
}

/// The `codeswitch_{lang}` tasks.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CodeswitchSpec {
    /// Task name pattern, e.g. `codeswitch_{instance}`.
    pub name: String,
    /// Task version.
    pub version: String,
    /// How the rate is measured (also in the README).
    pub method: String,
    /// Prompt template; `{prompt}` is the prompt set's text.
    pub template: String,
    /// Generation stops at these strings.
    pub until: Vec<String>,
    /// Most new tokens per response.
    pub max_tokens: usize,
    /// Per language: its prompt file (relative to the evals directory) and scripts.
    pub instances: BTreeMap<String, super::codeswitch::TargetLang>,
}

/// How few-shot examples are drawn.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Sampler {
    /// The first rows of the few-shot split (lm-eval FirstNSampler).
    #[default]
    FirstN,
    /// lm-eval's default sampler: Python `random.Random(1234).sample`, one generator per task.
    Random,
}

/// A multiple-choice metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// The choice with the highest loglikelihood is right.
    Acc,
    /// Loglikelihood divided by the choice's length in characters (lm-eval).
    AccNorm,
    /// Loglikelihood divided by the choice's length in UTF-8 bytes.
    AccBytenorm,
}

impl Metric {
    /// Every metric, in report order.
    pub const ALL: [Metric; 3] = [Metric::Acc, Metric::AccNorm, Metric::AccBytenorm];

    /// The name in results.json.
    pub fn name(self) -> &'static str {
        match self {
            Metric::Acc => "acc",
            Metric::AccNorm => "acc_norm",
            Metric::AccBytenorm => "acc_bytenorm",
        }
    }
}
pub(crate) fn default_target_delimiter() -> String {
    " ".into()
}
pub(crate) fn default_fewshot_delimiter() -> String {
    "\n\n".into()
}

/// All task families: the built-in ones plus any `*.toml` in a user's evals directory.
#[derive(Debug, Clone)]
pub struct TaskRegistry {
    families: Vec<(String, TaskSpec)>,
    /// Directory of user task files (prompt sets are looked up there first).
    pub evals_dir: Option<PathBuf>,
}

/// A concrete task: a family plus an instance name.
#[derive(Debug, Clone)]
pub struct TaskRef<'a> {
    /// The task's full name, e.g. `xcopa_tr`.
    pub name: String,
    /// The instance, e.g. `tr` (empty for single tasks).
    pub instance: String,
    /// Its family.
    pub spec: &'a TaskSpec,
}

impl TaskRegistry {
    /// The built-in families, plus `*.toml` files of `evals_dir` (which replace built-ins of the same file name).
    pub fn load(evals_dir: Option<&Path>) -> Result<Self, EvalError> {
        let mut files: BTreeMap<String, (String, String)> =
            BUILTIN.iter().map(|(name, text)| (file_name(name), (name.to_string(), text.to_string()))).collect();
        if let Some(dir) = evals_dir {
            let entries = std::fs::read_dir(dir).map_err(|e| EvalError::io(dir, e))?;
            for entry in entries {
                let path = entry.map_err(|e| EvalError::io(dir, e))?.path();
                if path.extension().is_some_and(|e| e == "toml") {
                    let text = std::fs::read_to_string(&path).map_err(|e| EvalError::io(&path, e))?;
                    files.insert(file_name(&path.to_string_lossy()), (path.display().to_string(), text));
                }
            }
        }
        let mut families = Vec::new();
        for (file, text) in files.into_values() {
            let spec: TaskSpec =
                toml::from_str(&text).map_err(|e| EvalError::TaskDef { file: file.clone(), message: e.to_string() })?;
            families.push((file, spec));
        }
        Ok(TaskRegistry { families, evals_dir: evals_dir.map(Path::to_path_buf) })
    }

    /// The code-switching target `lang` (an instance of a `codeswitch` family: evals/codeswitch.toml, or
    /// the user's file that replaces or extends it).
    pub fn codeswitch_target(&self, lang: &str) -> Option<&super::codeswitch::TargetLang> {
        self.families.iter().find_map(|(_, spec)| match spec {
            TaskSpec::Codeswitch(c) => c.instances.get(lang),
            _ => None,
        })
    }

    /// The instances of the `codeswitch` families, for messages.
    pub fn codeswitch_langs(&self) -> Vec<&str> {
        let mut langs: Vec<&str> = self
            .families
            .iter()
            .filter_map(|(_, spec)| match spec {
                TaskSpec::Codeswitch(c) => Some(c.instances.keys().map(String::as_str)),
                _ => None,
            })
            .flatten()
            .collect();
        langs.sort_unstable();
        langs
    }

    /// Resolves a task or group name. Groups expand to their instances (see [`TaskRegistry::group_of`]).
    /// With `hub`, a group with no subject under `data_dir` takes all of them (their data comes from the Hub).
    pub fn resolve(&self, name: &str, data_dir: &Path, hub: bool) -> Result<Vec<TaskRef<'_>>, EvalError> {
        if let Some((spec, mc, _)) = self.group_family(name) {
            let instances = self.group_instances(name);
            let local = |i: &&String| data_dir.join(mc.data.replace("{instance}", i)).is_file();
            let all = hub && mc.hub.is_some() && !instances.iter().any(local);
            let present: Vec<TaskRef> = instances
                .iter()
                .filter(|i| all || local(i))
                .map(|i| TaskRef { name: mc.name.replace("{instance}", i), instance: i.to_string(), spec })
                .collect();
            if present.is_empty() {
                let example = instances.first().map(|i| mc.data.replace("{instance}", i)).unwrap_or_default();
                return Err(EvalError::Config(format!(
                    "{name}: no subject has data under {} (expected e.g. {})",
                    data_dir.display(),
                    data_dir.join(example).display()
                )));
            }
            return Ok(present);
        }
        for (_, spec) in &self.families {
            let (pattern, instances, open) = spec.naming();
            if let Some(instance) = match_pattern(pattern, name) {
                let known = instances.contains(&instance);
                // FLORES pairs are `eng_Latn-est_Latn`.
                let valid_open = open
                    && !instance.is_empty()
                    && instance.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
                if instance.is_empty() && !pattern.contains("{instance}") || known || valid_open {
                    return Ok(vec![TaskRef { name: name.to_string(), instance, spec }]);
                }
            }
        }
        let known = self.patterns();
        let hint = known
            .iter()
            .map(|k| (strsim(name, k), k))
            .filter(|(d, _)| *d <= 3)
            .min_by_key(|(d, _)| *d)
            .map(|(_, k)| format!(" (did you mean `{k}`?)"))
            .unwrap_or_default();
        Err(EvalError::UnknownTask { name: name.to_string(), hint, known: self.summary() })
    }

    /// One line naming every family: `xcopa_{et,ht,...}`, `ceval-valid_{52 subjects}`, groups, single tasks.
    pub fn summary(&self) -> String {
        let mut out = Vec::new();
        for (_, spec) in &self.families {
            let (pattern, instances, open) = spec.naming();
            let filled = if open {
                pattern.replace("{instance}", "{code}")
            } else if instances.len() > 12 {
                pattern.replace("{instance}", &format!("{{{} subjects}}", instances.len()))
            } else {
                pattern.replace("{instance}", &format!("{{{}}}", instances.join(",")))
            };
            out.push(filled);
            if let TaskSpec::MultipleChoice(mc) = spec {
                if let Some(g) = &mc.group {
                    out.push(g.name.clone());
                }
            }
        }
        format!("{} (`langadapt eval tasks` lists them all)", out.join(", "))
    }

    /// The family and group `name` is, if it is a group: (its spec, the multiple-choice family, the
    /// subgroup value when it is a subgroup).
    fn group_family(&self, name: &str) -> Option<(&TaskSpec, &McSpec, Option<String>)> {
        self.families.iter().find_map(|(_, s)| {
            let TaskSpec::MultipleChoice(mc) = s else { return None };
            let g = mc.group.as_ref()?;
            if g.name == name {
                return Some((s, &**mc, None));
            }
            let sub = g.subgroups.as_ref()?;
            let (pre, post) = sub.name.split_once("{value}")?;
            let value = name.strip_prefix(pre)?.strip_suffix(post)?;
            subgroup_values(mc, sub).contains(&value).then(|| (s, &**mc, Some(value.to_string())))
        })
    }

    /// Whether `name` is a group (or a subgroup).
    pub fn is_group(&self, name: &str) -> bool {
        self.group_family(name).is_some()
    }

    /// The instances of the group `name` in its definition (empty if it is not a group).
    fn group_instances(&self, name: &str) -> Vec<&String> {
        let Some((_, mc, value)) = self.group_family(name) else { return Vec::new() };
        let by = mc.group.as_ref().and_then(|g| g.subgroups.as_ref()).map(|s| s.by.as_str());
        mc.instances
            .iter()
            .filter(|(_, vars)| match (&value, by) {
                (Some(v), Some(by)) => var_str(vars, by) == Some(v.as_str()),
                _ => true,
            })
            .map(|(i, _)| i)
            .collect()
    }

    /// How many subtasks the group `name` has in its definition (0 if it is not a group).
    pub fn group_size(&self, name: &str) -> usize {
        self.group_instances(name).len()
    }

    /// What the group `name` averages over the tasks `present` (its members that have data): each
    /// subgroup over its tasks, then the group over its subgroups (lm-eval's nested `aggregate_metric_list`).
    pub fn group_plan(&self, name: &str, present: &[String]) -> GroupPlan {
        let Some((_, mc, value)) = self.group_family(name) else { return Vec::new() };
        let Some(g) = &mc.group else { return Vec::new() };
        let tasks = |group: &str| -> Vec<String> {
            self.group_instances(group)
                .iter()
                .map(|i| mc.name.replace("{instance}", i))
                .filter(|t| present.contains(t))
                .collect()
        };
        match (&g.subgroups, value) {
            (None, _) => vec![(name.to_string(), tasks(name), g.weight_by_size)],
            (Some(sub), Some(_)) => vec![(name.to_string(), tasks(name), sub.weight_by_size)],
            (Some(sub), None) => {
                let mut plan: GroupPlan = subgroup_values(mc, sub)
                    .into_iter()
                    .map(|v| {
                        let subgroup = sub.name.replace("{value}", v);
                        let members = tasks(&subgroup);
                        (subgroup, members, sub.weight_by_size)
                    })
                    .filter(|(_, members, _)| !members.is_empty())
                    .collect();
                let top = plan.iter().map(|(n, _, _)| n.clone()).collect();
                plan.push((name.to_string(), top, g.weight_by_size));
                plan
            }
        }
    }

    /// Every concrete task name and group the registry knows (open families as a pattern).
    pub fn patterns(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (_, spec) in &self.families {
            let (pattern, instances, open) = spec.naming();
            if open || !pattern.contains("{instance}") {
                out.push(pattern.to_string());
            } else {
                out.extend(instances.iter().map(|i| pattern.replace("{instance}", i)));
            }
            if let TaskSpec::MultipleChoice(mc) = spec {
                if let Some(g) = &mc.group {
                    if let Some(sub) = &g.subgroups {
                        out.extend(subgroup_values(mc, sub).iter().map(|v| sub.name.replace("{value}", v)));
                    }
                    out.push(g.name.clone());
                }
            }
        }
        out
    }
}

/// An instance variable's text.
fn var_str<'a>(vars: &'a BTreeMap<String, toml::Value>, key: &str) -> Option<&'a str> {
    vars.get(key).and_then(|v| v.as_str())
}

/// The values of `sub.by` among a family's instances, sorted, each once: its subgroups.
fn subgroup_values<'a>(mc: &'a McSpec, sub: &SubgroupSpec) -> Vec<&'a str> {
    let mut values: Vec<&str> = mc.instances.values().filter_map(|v| var_str(v, &sub.by)).collect();
    values.sort_unstable();
    values.dedup();
    values
}

fn file_name(path: &str) -> String {
    Path::new(path).file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default()
}

/// `xcopa_{instance}` against `xcopa_tr` → `Some("tr")`; a pattern without `{instance}` must equal the name.
fn match_pattern(pattern: &str, name: &str) -> Option<String> {
    match pattern.split_once("{instance}") {
        None => (pattern == name).then(String::new),
        Some((pre, post)) => {
            name.strip_prefix(pre).and_then(|r| r.strip_suffix(post)).filter(|i| !i.is_empty()).map(str::to_string)
        }
    }
}

/// Levenshtein distance, for "did you mean".
fn strsim(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            cur.push((prev[j] + usize::from(ca != *cb)).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// A document: its fields as text (JSON numbers and booleans as written), and where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Doc {
    /// Field name → value.
    pub fields: BTreeMap<String, String>,
    /// One-based line where the row starts.
    pub line: u64,
}

/// Reads every document of a JSONL or CSV file; a malformed row is an error naming file and line.
pub fn read_docs(path: &Path, format: DocFormat, columns: Option<&[String]>) -> Result<Vec<Doc>, EvalError> {
    let read = || std::fs::read_to_string(path).map_err(|e| EvalError::io(path, e));
    match format {
        DocFormat::Parquet => read_parquet_docs(path),
        DocFormat::Jsonl => {
            let text = read()?;
            let mut docs = Vec::new();
            for (i, line) in text.lines().enumerate() {
                let lineno = i as u64 + 1;
                if line.trim().is_empty() {
                    continue;
                }
                let value: serde_json::Value = serde_json::from_str(line)
                    .map_err(|e| EvalError::data(path, lineno, format!("not valid JSON: {e}")))?;
                let serde_json::Value::Object(map) = value else {
                    return Err(EvalError::data(path, lineno, "expected a JSON object per line"));
                };
                let fields = map
                    .into_iter()
                    .map(|(k, v)| {
                        let s = match v {
                            serde_json::Value::String(s) => s,
                            other => other.to_string(),
                        };
                        (k, s)
                    })
                    .collect();
                docs.push(Doc { fields, line: lineno });
            }
            Ok(docs)
        }
        DocFormat::Csv => {
            let text = read()?;
            let mut reader = csv::ReaderBuilder::new().has_headers(columns.is_none()).from_reader(text.as_bytes());
            let headers = match columns {
                Some(c) => csv::StringRecord::from(c.to_vec()),
                None => reader.headers().map_err(|e| EvalError::data(path, 1, format!("bad CSV header: {e}")))?.clone(),
            };
            let mut docs = Vec::new();
            for record in reader.records() {
                let record = record.map_err(|e| {
                    let line = e.position().map_or(0, |p| p.line());
                    EvalError::data(path, line, format!("bad CSV row: {e}"))
                })?;
                let line = record.position().map_or(0, |p| p.line());
                if columns.is_some() && record.len() != headers.len() {
                    return Err(EvalError::data(
                        path,
                        line,
                        format!(
                            "{} fields, expected {} ({})",
                            record.len(),
                            headers.len(),
                            headers.iter().collect::<Vec<_>>().join(",")
                        ),
                    ));
                }
                let fields = headers.iter().zip(record.iter()).map(|(h, v)| (h.to_string(), v.to_string())).collect();
                docs.push(Doc { fields, line });
            }
            Ok(docs)
        }
    }
}

/// Every row of a Parquet file as a document (`line` = 1-based row); nulls are absent fields, other
/// values their text (integers as digits, as a JSONL file's numbers are read); a list column `choices` also
/// gives one field per item, `choices.0`, `choices.1`, … (the Hub's MMLU rows).
fn read_parquet_docs(path: &Path) -> Result<Vec<Doc>, EvalError> {
    use arrow::array::{Array, AsArray};
    use arrow::util::display::{ArrayFormatter, FormatOptions};
    let file = std::fs::File::open(path).map_err(|e| EvalError::io(path, e))?;
    let bad = |e: &dyn std::fmt::Display| EvalError::data(path, 0, format!("not a readable Parquet file: {e}"));
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .and_then(|b| b.build())
        .map_err(|e| bad(&e))?;
    let mut docs = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| bad(&e))?;
        let schema = batch.schema();
        let opts = FormatOptions::default();
        let columns = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &opts).map(|f| (c, f)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad(&e))?;
        for row in 0..batch.num_rows() {
            let mut fields: BTreeMap<String, String> = columns
                .iter()
                .zip(schema.fields())
                .filter(|((c, _), _)| c.is_valid(row))
                .map(|((_, f), field)| (field.name().clone(), f.value(row).to_string()))
                .collect();
            for (c, field) in batch.columns().iter().zip(schema.fields()) {
                let items = match (c.as_list_opt::<i32>(), c.as_list_opt::<i64>()) {
                    (Some(l), _) if l.is_valid(row) => l.value(row),
                    (_, Some(l)) if l.is_valid(row) => l.value(row),
                    _ => continue,
                };
                let f = ArrayFormatter::try_new(items.as_ref(), &opts).map_err(|e| bad(&e))?;
                for i in (0..items.len()).filter(|&i| items.is_valid(i)) {
                    fields.insert(format!("{}.{i}", field.name()), f.value(i).to_string());
                }
            }
            docs.push(Doc { fields, line: docs.len() as u64 + 1 });
        }
    }
    Ok(docs)
}

/// A multiple-choice task bound to its instance and data.
#[derive(Debug)]
pub struct McTask<'a> {
    /// Task name, e.g. `xcopa_tr`.
    pub name: String,
    /// The family.
    pub spec: &'a McSpec,
    /// The instance's variables (`instance` included).
    vars: BTreeMap<String, toml::Value>,
    /// The scored documents file.
    pub data_path: PathBuf,
    /// The scored documents.
    pub docs: Vec<Doc>,
    /// The few-shot documents file and documents.
    fewshot: Option<(PathBuf, Vec<Doc>)>,
    /// Where the data came from, when it was fetched from the Hub.
    pub hub_source: Option<HubDataSource>,
}

/// One loglikelihood request of a multiple-choice document.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct McRequest {
    /// Task name.
    pub task: String,
    /// Index of the document in its file (0-based, as lm-eval's doc_id).
    pub doc_id: usize,
    /// Which option.
    pub choice_idx: usize,
    /// The prompt.
    pub context: String,
    /// Target delimiter + option.
    pub continuation: String,
    /// Index of the right option.
    pub target: usize,
}

impl McRequest {
    /// The request as the language model sees it.
    pub fn loglikelihood(&self) -> Loglikelihood {
        Loglikelihood { context: self.context.clone(), continuation: self.continuation.clone() }
    }
}

impl<'a> McTask<'a> {
    /// Binds `spec`'s instance `instance` to its files: under `data_dir` when the scored file is there,
    /// else fetched from the family's Hub dataset with `hub` (None: local files only).
    pub fn open(
        name: &str,
        instance: &str,
        spec: &'a McSpec,
        data_dir: &Path,
        hub: Option<&crate::hub::Hub>,
    ) -> Result<Self, EvalError> {
        let mut vars = spec.instances.get(instance).cloned().unwrap_or_default();
        vars.insert("instance".into(), toml::Value::String(instance.into()));
        let fill = |t: &str| t.replace("{instance}", instance);
        let local = data_dir.join(fill(&spec.data));
        let (data_path, fewshot_path, hub_source) = match (hub, &spec.hub) {
            (Some(hub), Some(h)) if !local.is_file() => {
                let repo = crate::hub::RepoRef {
                    kind: crate::hub::RepoKind::Dataset,
                    id: h.dataset.clone(),
                    revision: fill(&h.revision),
                };
                let files: Vec<String> = std::iter::once(&h.data).chain(&h.fewshot_data).map(|f| fill(f)).collect();
                let snap = hub.files(&repo, &files).map_err(|e| EvalError::Config(format!("{name}: {e}")))?;
                let fewshot = h.fewshot_data.as_ref().map(|f| snap.dir.join(fill(f)));
                let source = HubDataSource { config: fill(&h.config), source: snap.source };
                (snap.dir.join(&files[0]), fewshot, Some(source))
            }
            _ => (local, spec.fewshot_data.as_ref().map(|f| data_dir.join(fill(f))), None),
        };
        if !data_path.is_file() {
            let hub_hint = match &spec.hub {
                Some(h) => format!(", or let it be fetched from the Hub dataset {} (unset HF_HUB_OFFLINE)", h.dataset),
                None => String::new(),
            };
            return Err(EvalError::Config(format!(
                "{name}: no data file {}; download the dataset into --data-dir in its released layout ({}){hub_hint}",
                data_path.display(),
                spec.data
            )));
        }
        let format_of =
            |p: &Path| if p.extension().is_some_and(|e| e == "parquet") { DocFormat::Parquet } else { spec.format };
        let columns = spec.columns.as_deref();
        let docs = read_docs(&data_path, format_of(&data_path), columns)?;
        let fewshot = match fewshot_path {
            Some(p) if p == data_path => Some((p, docs.clone())),
            Some(p) if p.is_file() => {
                let d = read_docs(&p, format_of(&p), columns)?;
                Some((p, d))
            }
            _ => None,
        };
        Ok(McTask { name: name.to_string(), spec, vars, data_path, docs, fewshot, hub_source })
    }

    /// The name `path` has in the released layout (`test.tr.jsonl`), which the fixes are keyed by, wherever
    /// the file came from.
    fn layout_name(&self, path: &Path) -> String {
        let instance = self.vars.get("instance").and_then(|v| v.as_str()).unwrap_or("");
        let rel = if path == self.data_path { Some(&self.spec.data) } else { self.spec.fewshot_data.as_ref() };
        rel.map(|r| file_name(&r.replace("{instance}", instance))).unwrap_or_default()
    }

    /// The known defect of this instance's scored file, if its rows show it: (fix, rows affected).
    pub fn detect_defect(&self) -> Option<(&'a FixSpec, usize)> {
        let instance = self.vars.get("instance").and_then(|v| v.as_str())?;
        let fix = self.spec.fixes.get(instance)?;
        let keys = fix.rows.get(&self.layout_name(&self.data_path))?;
        let wrong = self
            .docs
            .iter()
            .filter(|d| d.fields.get(&fix.key).is_some_and(|k| keys.contains(k)))
            .filter(|d| d.fields.get(&fix.field) != Some(&fix.value))
            .count();
        (wrong > 0).then_some((fix, wrong))
    }

    /// A copy with the defect corrected, named `{name}_fixed`.
    pub fn fixed(&self, fix: &FixSpec) -> McTask<'a> {
        let apply = |path: &Path, docs: &[Doc]| -> Vec<Doc> {
            let keys = fix.rows.get(&self.layout_name(path));
            docs.iter()
                .cloned()
                .map(|mut d| {
                    if keys.is_some_and(|k| d.fields.get(&fix.key).is_some_and(|v| k.contains(v))) {
                        d.fields.insert(fix.field.clone(), fix.value.clone());
                    }
                    d
                })
                .collect()
        };
        McTask {
            name: format!("{}_fixed", self.name),
            spec: self.spec,
            vars: self.vars.clone(),
            data_path: self.data_path.clone(),
            docs: apply(&self.data_path, &self.docs),
            fewshot: self.fewshot.as_ref().map(|(p, d)| (p.clone(), apply(p, d))),
            hub_source: self.hub_source.clone(),
        }
    }

    /// Renders a template for `doc` (from `path`).
    fn render(&self, template: &str, doc: &Doc, path: &Path) -> Result<String, EvalError> {
        render(template, doc, &self.vars).map_err(|m| EvalError::data(path, doc.line, m))
    }

    /// The options of `doc`.
    pub fn choices(&self, doc: &Doc, path: &Path) -> Result<Vec<String>, EvalError> {
        self.spec.choices.iter().map(|c| self.render(c, doc, path)).collect()
    }

    /// Index of the right option of `doc`.
    pub fn target(&self, doc: &Doc, path: &Path) -> Result<usize, EvalError> {
        let t = &self.spec.target;
        let value = doc
            .fields
            .get(&t.field)
            .ok_or_else(|| EvalError::data(path, doc.line, format!("missing field `{}`", t.field)))?;
        let index = value.parse::<usize>().ok().filter(|&i| t.indices && i < t.values.len());
        t.values.iter().position(|v| v == value).or(index).ok_or_else(|| {
            EvalError::data(path, doc.line, format!("field `{}` is {value:?}, expected one of {:?}", t.field, t.values))
        })
    }

    /// The prompt of `doc` with `num_fewshot` examples (lm-eval `fewshot_context` + `ContextSampler.get_context`).
    /// The `random` sampler draws from `rng`, which lm-eval shares across a task's documents in order.
    pub fn context(&self, doc: &Doc, num_fewshot: usize, rng: &mut PyRandom) -> Result<String, EvalError> {
        let prompt = Prompt {
            task: &self.name,
            description: &self.spec.description,
            text: &self.spec.text,
            target_delimiter: &self.spec.target_delimiter,
            fewshot_delimiter: &self.spec.fewshot_delimiter,
            sampler: self.spec.fewshot_sampler,
            fewshot_file: self.spec.fewshot_data.as_deref(),
            vars: &self.vars,
        };
        let answer = |ex: &Doc, path: &Path| Ok(self.choices(ex, path)?.swap_remove(self.target(ex, path)?));
        prompt.context(doc, &self.data_path, self.fewshot.as_ref(), num_fewshot, rng, answer)
    }

    /// Every request of the first `limit` documents (all with `None`).
    pub fn requests(&self, num_fewshot: usize, limit: Option<usize>) -> Result<Vec<McRequest>, EvalError> {
        let mut out = Vec::new();
        let mut rng = PyRandom::new(FEWSHOT_SEED);
        for (doc_id, doc) in self.docs.iter().take(limit.unwrap_or(usize::MAX)).enumerate() {
            let context = self.context(doc, num_fewshot, &mut rng)?;
            let target = self.target(doc, &self.data_path)?;
            for (choice_idx, choice) in self.choices(doc, &self.data_path)?.into_iter().enumerate() {
                out.push(McRequest {
                    task: self.name.clone(),
                    doc_id,
                    choice_idx,
                    context: context.clone(),
                    continuation: format!("{}{choice}", self.spec.target_delimiter),
                    target,
                });
            }
        }
        Ok(out)
    }
}

/// How a family writes its prompts: lm-eval's description, `doc_to_text`, delimiters and few-shot sampler.
pub struct Prompt<'a> {
    /// Task name, for messages.
    pub task: &'a str,
    /// Prepended to every prompt.
    pub description: &'a str,
    /// The question template.
    pub text: &'a str,
    /// Between a question and its answer.
    pub target_delimiter: &'a str,
    /// Between few-shot examples.
    pub fewshot_delimiter: &'a str,
    /// How examples are drawn.
    pub sampler: Sampler,
    /// The few-shot file as the family names it, for messages.
    pub fewshot_file: Option<&'a str>,
    /// Instance variables.
    pub vars: &'a BTreeMap<String, toml::Value>,
}

impl Prompt<'_> {
    fn render(&self, template: &str, doc: &Doc, path: &Path) -> Result<String, EvalError> {
        render(template, doc, self.vars).map_err(|m| EvalError::data(path, doc.line, m))
    }

    /// The prompt of `doc` (from `path`) with `num_fewshot` examples drawn from `fewshot` and answered by
    /// `answer` (lm-eval `fewshot_context` + `ContextSampler.get_context`). The `random` sampler draws
    /// from `rng`, which lm-eval shares across a task's documents in order; a pool that is the scored
    /// file itself never shows a document its own answer.
    pub fn context(
        &self,
        doc: &Doc,
        path: &Path,
        fewshot: Option<&(PathBuf, Vec<Doc>)>,
        num_fewshot: usize,
        rng: &mut PyRandom,
        answer: impl Fn(&Doc, &Path) -> Result<String, EvalError>,
    ) -> Result<String, EvalError> {
        let mut out = self.render(self.description, doc, path)?;
        if num_fewshot > 0 {
            let (pool_path, pool) = fewshot.ok_or_else(|| {
                EvalError::Config(format!(
                    "{}: --num-fewshot {num_fewshot} needs the few-shot file {}",
                    self.task,
                    self.fewshot_file.unwrap_or("(none defined)")
                ))
            })?;
            let same_split = pool_path == path;
            let n = if same_split { num_fewshot + 1 } else { num_fewshot };
            if n > pool.len() {
                return Err(EvalError::Config(format!(
                    "{}: {n} few-shot examples asked for, {} has only {}",
                    self.task,
                    pool_path.display(),
                    pool.len()
                )));
            }
            let drawn: Vec<&Doc> = match self.sampler {
                Sampler::FirstN => pool[..n].iter().collect(),
                Sampler::Random => rng.sample(pool.len(), n).into_iter().map(|i| &pool[i]).collect(),
            };
            for ex in drawn.into_iter().filter(|x| x.fields != doc.fields).take(num_fewshot) {
                out.push_str(&self.render(self.text, ex, pool_path)?);
                out.push_str(self.target_delimiter);
                out.push_str(&answer(ex, pool_path)?);
                out.push_str(self.fewshot_delimiter);
            }
        }
        out.push_str(&self.render(self.text, doc, path)?);
        Ok(out)
    }
}

/// Renders a task template (syntax in [`McSpec`]); the error says which field or variable is missing.
pub fn render(template: &str, doc: &Doc, vars: &BTreeMap<String, toml::Value>) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = template;
    while let Some(i) = rest.find(['{', '}']) {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if tail.starts_with("{{") || tail.starts_with("}}") {
            out.push_str(&tail[..1]);
            rest = &tail[2..];
            continue;
        }
        if tail.starts_with('}') {
            return Err(format!("template {template:?}: unmatched `}}`"));
        }
        let end = tail.find('}').ok_or_else(|| format!("template {template:?}: unclosed `{{`"))?;
        let mut parts = tail[1..end].split('|');
        let expr = parts.next().unwrap_or_default();
        let mut value = if let Some(var) = expr.strip_prefix('$') {
            vars.get(var)
                .and_then(|v| v.as_str())
                .ok_or_else(|| format!("task variable `{var}` is not defined for this instance"))?
                .to_string()
        } else if let Some((field, table)) = expr.split_once('@') {
            let key = doc.fields.get(field).ok_or_else(|| format!("missing field `{field}`"))?;
            vars.get(table)
                .and_then(|t| t.get(key.as_str()))
                .and_then(|v| v.as_str())
                .ok_or_else(|| format!("field `{field}` is {key:?}, which `{table}` has no entry for"))?
                .to_string()
        } else {
            doc.fields.get(expr).ok_or_else(|| format!("missing field `{expr}`"))?.clone()
        };
        for filter in parts {
            value = match filter {
                "strip" => value.trim_matches(super::lm::is_py_space).to_string(),
                "chop" => {
                    let mut v = value;
                    v.pop();
                    v
                }
                "words" => value.replace('_', " "),
                "lcfirst" => {
                    let mut chars = value.chars();
                    match chars.next() {
                        // Python str.lower() of one character (may grow, e.g. İ → i̇).
                        Some(c) => c.to_lowercase().chain(chars).collect(),
                        None => value,
                    }
                }
                other => return Err(format!("template {template:?}: unknown filter `{other}`")),
            };
        }
        out.push_str(&value);
        rest = &tail[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(pairs: &[(&str, &str)]) -> Doc {
        Doc { fields: pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(), line: 7 }
    }

    #[test]
    fn templates_render_fields_vars_lookups_and_filters() {
        let mut vars = BTreeMap::new();
        vars.insert("zh".to_string(), toml::Value::String("物理".into()));
        let table: toml::Table = toml::from_str("cause = \"çünkü\"").unwrap();
        vars.insert("conn".to_string(), toml::Value::Table(table));
        let d = doc(&[("p", "  Adam düştü.\n"), ("q", "cause"), ("c", "İyi")]);
        assert_eq!(
            render("{p|strip|chop} {q@conn}|{c|lcfirst}|{$zh}{{x}}", &d, &vars).unwrap(),
            "Adam düştü çünkü|i\u{307}yi|物理{x}"
        );
        assert_eq!(render("{nope}", &d, &vars).unwrap_err(), "missing field `nope`");
        let e = render("{q@conn}", &doc(&[("q", "effect")]), &vars).unwrap_err();
        assert_eq!(e, "field `q` is \"effect\", which `conn` has no entry for");
        assert!(render("{p|upper}", &d, &vars).unwrap_err().contains("unknown filter `upper`"));
    }

    #[test]
    fn names_match_patterns() {
        assert_eq!(match_pattern("xcopa_{instance}", "xcopa_tr").as_deref(), Some("tr"));
        assert_eq!(match_pattern("xcopa_{instance}", "xcopa_"), None);
        assert_eq!(match_pattern("perplexity", "perplexity").as_deref(), Some(""));
        assert_eq!(strsim("xcopa_tk", "xcopa_tr"), 1);
    }
}
