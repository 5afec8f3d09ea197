//! `langadapt report DIR`: `DIR/report/report.md` and SVG plots from what the stages under DIR left:
//! loss and learning rate of `train`, configured vs actual mixture shares of `shards build`, tokens per
//! word before/after `vocab merge`, and eval results before/after; plus a summary of every manifest.
//!
//! The report reads only files, writes only `DIR/report/` (replaced on every run) with its own
//! `manifest.json`, so `langadapt audit DIR` stays clean; the same DIR gives the same bytes (the only
//! times in it are the manifests' own).

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use plotters::coord::combinators::BindKeyPoints;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use serde::Deserialize;

use crate::eval::results::{compare, Results, FILTER};
use crate::manifest::{is_manifest_path, Manifest, ManifestBuilder, ManifestError};
use crate::shards::Stats;
use crate::train::Metrics;
use crate::vocab::stats::Fertility;
use crate::Env;

/// The folder under DIR the report writes (and ignores when it reads manifests).
pub const REPORT_DIR: &str = "report";

/// Errors while reading a run's outputs or writing its report.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// A file the report needs is not there.
    #[error("{path}: missing ({what})")]
    Missing { path: PathBuf, what: String },
    /// A file's contents are not what its stage writes (`line` 0: the whole file).
    #[error("{path}: line {line}: {msg}")]
    Data { path: PathBuf, line: usize, msg: String },
    /// No manifest under DIR.
    #[error("{0}: no manifest.json under this directory; pass the output root of `langadapt run`")]
    NoStages(PathBuf),
    /// Drawing a plot failed.
    #[error("{path}: plot: {msg}")]
    Plot { path: PathBuf, msg: String },
    /// A manifest could not be read, or the report's own written.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
}

/// Where a report was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportSummary {
    /// `DIR/report`.
    pub dir: PathBuf,
    /// `DIR/report/report.md`.
    pub report: PathBuf,
    /// The SVG plots, in the order the report shows them.
    pub plots: Vec<PathBuf>,
    /// Manifests summarized.
    pub stages: usize,
}

/// One stage found under DIR: a manifest and the directory it describes.
#[derive(Debug)]
struct Stage {
    /// Directory relative to DIR (`train`, `eval-before`), unique; names plots and table columns.
    name: String,
    dir: PathBuf,
    manifest_path: PathBuf,
    manifest: Manifest,
}

impl Stage {
    /// A file of this stage.
    fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Plot file name for this stage: `{slug}-{what}.svg`.
    fn plot(&self, what: &str) -> String {
        let slug: String =
            self.name.chars().map(|c| if c.is_ascii_alphanumeric() || "_.-".contains(c) { c } else { '-' }).collect();
        format!("{slug}-{what}.svg")
    }
}

/// The report while it is built, in memory: nothing is written until every input has been read.
struct Writer {
    md: String,
    /// `(file name, SVG)` in the order shown.
    plots: Vec<(String, String)>,
    /// Every file read, in order (the report manifest's inputs).
    read: Vec<PathBuf>,
}

impl Writer {
    /// Reads a file the report depends on and remembers it as an input.
    fn read(&mut self, path: &Path) -> Result<Vec<u8>, ReportError> {
        let bytes = std::fs::read(path).map_err(|source| ReportError::Io { path: path.into(), source })?;
        self.read.push(path.to_path_buf());
        Ok(bytes)
    }

    /// Reads and parses a JSON file a stage wrote.
    fn json<T: serde::de::DeserializeOwned>(&mut self, path: &Path, what: &str) -> Result<T, ReportError> {
        let bytes = self.read(path)?;
        serde_json::from_slice(&bytes).map_err(|e| ReportError::Data {
            path: path.into(),
            line: e.line(),
            msg: format!("not {what}: {e}"),
        })
    }

    /// Draws a chart as `name` and links it from the markdown.
    fn plot(&mut self, name: &str, alt: &str, chart: &Chart) -> Result<(), ReportError> {
        let svg = chart.svg().map_err(|msg| ReportError::Plot { path: name.into(), msg })?;
        let _ = writeln!(self.md, "\n![{alt}]({name})");
        self.plots.push((name.to_string(), svg));
        Ok(())
    }
}

/// Writes `dir/report/` (report.md, SVG plots, manifest.json) from the stages under `dir`: the stages
/// named in `order` (a recipe's stages) in that order, then any others in the order they started.
///
/// The report's manifest lists every manifest and data file it read as inputs, so after a stage is
/// rerun `langadapt audit DIR` names the report as stale (changed input) until it is rewritten.
pub fn write_report(dir: &Path, order: &[String], env: &Env) -> Result<ReportSummary, ReportError> {
    let mut stages = discover(dir)?;
    // A stage rerun later (e.g. after a settings change) keeps its place in the recipe.
    stages.sort_by_key(|s| order.iter().position(|n| *n == s.name).unwrap_or(usize::MAX));
    if stages.is_empty() {
        return Err(ReportError::NoStages(dir.into()));
    }
    let names: Vec<&str> = stages.iter().map(|s| s.name.as_str()).collect();
    let mut manifest = ManifestBuilder::new("report", serde_json::json!({ "stages": names }), None);
    let mut w = Writer { md: String::new(), plots: Vec::new(), read: Vec::new() };
    w.read.extend(stages.iter().map(|s| s.manifest_path.clone()));

    let title = dir.file_name().map_or_else(|| dir.display().to_string(), |n| n.to_string_lossy().into_owned());
    let _ = writeln!(w.md, "# Report: {title}");
    summary_section(&mut w, &stages);
    train_section(&mut w, &stages)?;
    vocab_section(&mut w, &stages)?;
    mixture_section(&mut w, &stages)?;
    eval_section(&mut w, &stages)?;

    // Replaced as a whole, and only now that everything was read: a failed report keeps the old one, and
    // a plot of a stage that is gone does not linger unlisted.
    let out = dir.join(REPORT_DIR);
    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ReportError::Io { path, source }
    };
    if out.exists() {
        std::fs::remove_dir_all(&out).map_err(io_err(&out))?;
    }
    std::fs::create_dir_all(&out).map_err(io_err(&out))?;
    let report = out.join("report.md");
    crate::io::write_atomic(&report, w.md.as_bytes()).map_err(io_err(&report))?;
    let mut plots = Vec::new();
    for (name, svg) in &w.plots {
        let path = out.join(name);
        crate::io::write_atomic(&path, svg.as_bytes()).map_err(io_err(&path))?;
        plots.push(path);
    }
    let mut seen = BTreeSet::new();
    for path in w.read.iter().filter(|p| seen.insert(p.to_path_buf())) {
        manifest.add_input(path, &env.progress)?;
    }
    manifest.count("stages", stages.len() as u64);
    manifest.count("plots", plots.len() as u64);
    let outputs: Vec<(PathBuf, Option<u64>)> =
        std::iter::once(report.clone()).chain(plots.iter().cloned()).map(|p| (p, None)).collect();
    manifest.finish(&out, &outputs)?.write(&out.join("manifest.json"))?;
    Ok(ReportSummary { dir: out, report, plots, stages: stages.len() })
}

/// Every manifest under `dir` except the report's own, in run order (`started`, then path).
fn discover(dir: &Path) -> Result<Vec<Stage>, ReportError> {
    let files = crate::io::files_under(dir).map_err(|source| ReportError::Io { path: dir.into(), source })?;
    let own = dir.join(REPORT_DIR);
    let mut stages = Vec::new();
    for path in files.into_iter().filter(|f| is_manifest_path(f) && !f.starts_with(&own)) {
        let manifest = Manifest::read(&path)?;
        let stage_dir = path.parent().unwrap_or(dir).to_path_buf();
        let rel = stage_dir.strip_prefix(dir).unwrap_or(&stage_dir);
        let name = match rel.to_string_lossy().replace('\\', "/") {
            n if n.is_empty() => dir.file_name().map_or_else(|| ".".to_string(), |n| n.to_string_lossy().into_owned()),
            n => n,
        };
        stages.push(Stage { name, dir: stage_dir, manifest_path: path, manifest });
    }
    stages.sort_by(|a, b| (&a.manifest.started, &a.manifest_path).cmp(&(&b.manifest.started, &b.manifest_path)));
    // Two manifests in one folder (a `NAME.manifest.json` beside a `manifest.json`): the second gets its
    // file's stem, so plot names stay unique.
    let mut taken = BTreeSet::new();
    for s in &mut stages {
        if !taken.insert(s.name.clone()) {
            let file = s.manifest_path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            s.name = format!("{}/{}", s.name, file.trim_end_matches("manifest.json").trim_end_matches('.'));
            taken.insert(s.name.clone());
        }
    }
    Ok(stages)
}

fn summary_section(w: &mut Writer, stages: &[Stage]) {
    let _ = writeln!(w.md, "\n## Stages\n");
    w.md.push_str("| stage | kind | run id | version | started | duration | counts | inputs | outputs |\n");
    w.md.push_str("|---|---|---|---|---|---:|---|---:|---:|\n");
    for s in stages {
        let m = &s.manifest;
        let duration = m.timings.get("total_s").map_or("–".to_string(), |t| format!("{t:.1} s"));
        // The first counters, by name; the manifest has them all.
        const SHOWN: usize = 6;
        let mut counts: Vec<String> = m.counts.iter().take(SHOWN).map(|(k, v)| format!("{k} {v}")).collect();
        if m.counts.len() > SHOWN {
            counts.push(format!("+{} more", m.counts.len() - SHOWN));
        }
        let _ = writeln!(
            w.md,
            "| {} | {} | `{}` | {} | {} | {duration} | {} | {} | {} |",
            s.name,
            m.stage,
            m.run_id.get(..12).unwrap_or(&m.run_id),
            m.version,
            m.started,
            counts.join(", "),
            m.inputs.len(),
            m.outputs.len()
        );
    }
}

/// `metrics.jsonl` of a train stage. Every line must parse: train writes whole JSON lines (a resume
/// rewrites the file), so a bad one means the file was damaged and its curve cannot be trusted.
fn read_metrics(w: &mut Writer, path: &Path) -> Result<Vec<Metrics>, ReportError> {
    if !path.is_file() {
        return Err(ReportError::Missing { path: path.into(), what: "a train stage's per-step metrics".into() });
    }
    let bytes = w.read(path)?;
    let text = String::from_utf8(bytes).map_err(|e| ReportError::Data {
        path: path.into(),
        line: 0,
        msg: format!("not UTF-8: {e}"),
    })?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let m = serde_json::from_str::<Metrics>(line).map_err(|e| ReportError::Data {
            path: path.into(),
            line: i + 1,
            msg: format!("not a metrics line ({{\"step\", \"loss\", \"lr\", …}}): {e}"),
        })?;
        out.push(m);
    }
    Ok(out)
}

fn train_section(w: &mut Writer, stages: &[Stage]) -> Result<(), ReportError> {
    let train: Vec<&Stage> = stages.iter().filter(|s| s.manifest.stage == "train").collect();
    if train.is_empty() {
        return Ok(());
    }
    let mut runs = Vec::new();
    for s in &train {
        runs.push((*s, read_metrics(w, &s.file("metrics.jsonl"))?));
    }
    let _ = writeln!(w.md, "\n## Training\n");
    w.md.push_str("| stage | mode | steps | first loss | final loss | final val loss | best val loss |\n");
    w.md.push_str("|---|---|---:|---:|---:|---:|---:|\n");
    let fmt = |x: Option<f64>| x.map_or("–".to_string(), |v| format!("{v:.4}"));
    for (s, metrics) in &runs {
        let loss: Vec<f64> = metrics.iter().filter_map(|m| m.loss).collect();
        let val: Vec<f64> = metrics.iter().filter_map(|m| m.val_loss).collect();
        let steps = metrics.iter().map(|m| m.step).max().unwrap_or(0);
        let mode = s.manifest.args.get("mode").and_then(|m| m.as_str()).unwrap_or("–");
        let best = val.iter().copied().fold(None, |b: Option<f64>, v| Some(b.map_or(v, |b| b.min(v))));
        let _ = writeln!(
            w.md,
            "| {} | {mode} | {steps} | {} | {} | {} | {} |",
            s.name,
            fmt(loss.first().copied()),
            fmt(loss.last().copied()),
            fmt(val.last().copied()),
            fmt(best)
        );
    }
    for (s, metrics) in &runs {
        let series = |label: String, f: fn(&Metrics) -> Option<f64>| Line {
            label,
            points: metrics.iter().filter_map(|m| Some((m.step as f64, f(m)?))).collect(),
        };
        let loss = Chart::Lines {
            title: format!("{}: training and validation loss", s.name),
            axes: ("step", "loss (nats per token)"),
            lines: vec![
                series(format!("{}: loss", s.name), |m| m.loss),
                series(format!("{}: val loss", s.name), |m| m.val_loss),
            ],
        };
        w.plot(&s.plot("loss"), &format!("{} loss", s.name), &loss)?;
        let lr = Chart::Lines {
            title: format!("{}: learning rate", s.name),
            axes: ("step", "learning rate"),
            lines: vec![series(format!("{}: lr", s.name), |m| m.lr)],
        };
        w.plot(&s.plot("lr"), &format!("{} learning rate", s.name), &lr)?;
    }
    Ok(())
}

/// `fertility.json` of `vocab merge`: per input, the base and the merged tokenizer's fertility.
#[derive(Debug, Deserialize)]
struct FertilityFile {
    inputs: Vec<FertilityPair>,
}

#[derive(Debug, Deserialize)]
struct FertilityPair {
    input: String,
    base: Fertility,
    merged: Fertility,
}

fn vocab_section(w: &mut Writer, stages: &[Stage]) -> Result<(), ReportError> {
    let merges: Vec<&Stage> =
        stages.iter().filter(|s| s.manifest.stage == "vocab merge" && s.file("fertility.json").is_file()).collect();
    if merges.is_empty() {
        return Ok(());
    }
    let _ = writeln!(w.md, "\n## Vocabulary\n");
    for s in merges {
        let f: FertilityFile = w.json(&s.file("fertility.json"), "a vocab merge fertility.json")?;
        let count = |k: &str| s.manifest.counts.get(k).map_or("–".to_string(), u64::to_string);
        let _ = writeln!(
            w.md,
            "### {}\n\nbase vocabulary {}, added {}, final {}.\n",
            s.name,
            count("base_size"),
            count("added"),
            count("final_size")
        );
        w.md.push_str("| input | words | tokens/word before → after | bytes/token before → after |\n");
        w.md.push_str("|---|---:|---:|---:|\n");
        for p in &f.inputs {
            let _ = writeln!(
                w.md,
                "| {} | {} | {:.4} → {:.4} | {:.4} → {:.4} |",
                p.input,
                p.base.words,
                p.base.tokens_per_word,
                p.merged.tokens_per_word,
                p.base.bytes_per_token,
                p.merged.bytes_per_token
            );
        }
        let chart = Chart::Bars {
            title: format!("{}: tokens per word", s.name),
            y_label: "tokens per word",
            groups: f.inputs.iter().map(|p| short_name(&p.input)).collect(),
            bars: vec![
                ("before (base)".into(), f.inputs.iter().map(|p| Some(p.base.tokens_per_word)).collect()),
                ("after (merged)".into(), f.inputs.iter().map(|p| Some(p.merged.tokens_per_word)).collect()),
            ],
        };
        w.plot(&s.plot("fertility"), &format!("{} tokens per word", s.name), &chart)?;
    }
    Ok(())
}

/// The last path component: plot labels have little room.
fn short_name(path: &str) -> String {
    Path::new(path).file_name().map_or_else(|| path.to_string(), |n| n.to_string_lossy().into_owned())
}

/// A source as `shards build` records it in its manifest's `args.sources`.
#[derive(Debug, Deserialize)]
struct ConfiguredSource {
    name: String,
    #[serde(default)]
    lang: Option<String>,
    #[serde(default)]
    share: Option<f64>,
    #[serde(default)]
    epochs: Option<f64>,
}

fn mixture_section(w: &mut Writer, stages: &[Stage]) -> Result<(), ReportError> {
    let builds: Vec<&Stage> =
        stages.iter().filter(|s| s.manifest.stage == "shards build" && s.file("stats.json").is_file()).collect();
    if builds.is_empty() {
        return Ok(());
    }
    let _ = writeln!(w.md, "\n## Mixture\n");
    for s in builds {
        let stats: Stats = w.json(&s.file("stats.json"), "a shards stats.json")?;
        let configured: Vec<ConfiguredSource> = match s.manifest.args.get("sources") {
            Some(v) => serde_json::from_value(v.clone()).map_err(|e| ReportError::Data {
                path: s.manifest_path.clone(),
                line: 0,
                msg: format!("args.sources is not a list of {{name, share, epochs}}: {e}"),
            })?,
            None => Vec::new(),
        };
        let train = stats.splits.get("train").cloned().unwrap_or_default();
        // Configured sources in recipe order, then any the shards have but the settings do not name.
        let mut names: Vec<&str> = configured.iter().map(|c| c.name.as_str()).collect();
        names.extend(train.sources.keys().map(String::as_str).filter(|n| !configured.iter().any(|c| c.name == *n)));
        let _ = writeln!(w.md, "### {}\n", s.name);
        w.md.push_str("| source | lang | configured share | actual share (train) | epochs | trained tokens |\n");
        w.md.push_str("|---|---|---:|---:|---:|---:|\n");
        let mut shares = (Vec::new(), Vec::new());
        for name in &names {
            let c = configured.iter().find(|c| c.name == *name);
            let actual = train.sources.get(*name);
            let opt = |x: Option<f64>| x.map_or("–".to_string(), |v| format!("{v:.4}"));
            let _ = writeln!(
                w.md,
                "| {name} | {} | {} | {} | {} | {} |",
                c.and_then(|c| c.lang.as_deref()).unwrap_or("–"),
                opt(c.and_then(|c| c.share)),
                opt(actual.map(|a| a.share)),
                c.and_then(|c| c.epochs).map_or("–".to_string(), |e| e.to_string()),
                actual.map_or("–".to_string(), |a| a.trained_tokens.to_string())
            );
            shares.0.push(c.and_then(|c| c.share));
            shares.1.push(actual.map(|a| a.share));
        }
        let chart = Chart::Bars {
            title: format!("{}: mixture shares of trained tokens", s.name),
            y_label: "share of trained tokens",
            groups: names.iter().map(|n| n.to_string()).collect(),
            bars: vec![("configured".into(), shares.0), ("actual (train split)".into(), shares.1)],
        };
        w.plot(&s.plot("mixture"), &format!("{} mixture", s.name), &chart)?;
    }
    Ok(())
}

/// Metrics shown in the eval chart, first found wins: the one a task is usually quoted by.
const HEADLINE: [&str; 6] = ["acc", "bits_per_byte", "codeswitch_rate", "acc_norm", "exact_match", "word_perplexity"];

/// The metric a task is plotted by: the first of [`HEADLINE`] it has, else its first numeric one.
fn headline(r: &Results, task: &str) -> Option<String> {
    if let Some(m) = HEADLINE.iter().find(|m| r.get(task, m).is_some()) {
        return Some(m.to_string());
    }
    let metrics = r.results.get(task)?;
    metrics.iter().find_map(|(k, v)| {
        let m = k.strip_suffix(FILTER)?;
        (v.is_number() && !m.ends_with("_stderr")).then(|| m.to_string())
    })
}

fn eval_section(w: &mut Writer, stages: &[Stage]) -> Result<(), ReportError> {
    let mut runs: Vec<(String, Results)> = Vec::new();
    for s in stages.iter().filter(|s| s.manifest.stage == "eval run") {
        // `eval run` names its manifest after its results file: results.manifest.json → results.json.
        let file = s.manifest_path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let results = match file.strip_suffix(".manifest.json") {
            Some(stem) => s.file(&format!("{stem}.json")),
            None => s.file("results.json"),
        };
        if results.is_file() {
            runs.push((s.name.clone(), w.json(&results, "an lm-eval shaped results.json")?));
        }
    }
    if runs.is_empty() {
        return Ok(());
    }
    let _ = writeln!(w.md, "\n## Evaluation\n");
    w.md.push_str(
        "Token perplexity is not comparable across tokenizers (a larger vocabulary makes fewer, harder-to-predict tokens); \
         bits per byte is.\n\n",
    );
    w.md.push_str(&compare(&runs));
    // Subtasks of a group are in the table; the chart shows the group.
    let subtasks: BTreeSet<&String> = runs.iter().flat_map(|(_, r)| r.group_subtasks.values().flatten()).collect();
    let tasks: BTreeSet<&String> =
        runs.iter().flat_map(|(_, r)| r.results.keys()).filter(|t| !subtasks.contains(t)).collect();
    let mut groups = Vec::new();
    let mut picked = Vec::new();
    for task in tasks {
        let Some((r, metric)) = runs.iter().find_map(|(_, r)| Some((r, headline(r, task)?))) else { continue };
        let arrow = match r.higher_is_better.get(task).and_then(|h| h.get(&metric)) {
            Some(true) => " ↑",
            Some(false) => " ↓",
            None => "",
        };
        groups.push(format!("{task} {metric}{arrow}"));
        picked.push((task.clone(), metric));
    }
    if groups.is_empty() {
        return Ok(());
    }
    let bars =
        runs.iter().map(|(label, r)| (label.clone(), picked.iter().map(|(t, m)| r.get(t, m)).collect())).collect();
    let chart = Chart::Bars { title: "evaluation: headline metric per task".into(), y_label: "value", groups, bars };
    w.plot("eval.svg", "evaluation", &chart)
}

/// One named series of a line chart.
#[derive(Debug)]
struct Line {
    label: String,
    points: Vec<(f64, f64)>,
}

/// What a plot shows; [`Chart::svg`] draws it.
#[derive(Debug)]
enum Chart {
    /// Lines over a numeric x axis (empty lines are left out).
    Lines { title: String, axes: (&'static str, &'static str), lines: Vec<Line> },
    /// Groups along x, one bar per series in each (a missing value leaves a gap).
    Bars { title: String, y_label: &'static str, groups: Vec<String>, bars: Vec<(String, Vec<Option<f64>>)> },
}

const SIZE: (u32, u32) = (900, 500);
/// Tableau's first colours: distinct in print and for most colour-blind readers.
const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

fn color(i: usize) -> RGBColor {
    COLORS[i % COLORS.len()]
}

/// `lo..hi` of the data with 5% room below and `headroom` (a share of the span) above, where the legend
/// goes; never empty (one point or a flat line still gets an axis). `from_zero` keeps 0 in view (bars).
fn padded(values: impl Iterator<Item = f64>, from_zero: bool, headroom: f64) -> (f64, f64) {
    let (mut lo, mut hi) =
        values.filter(|v| v.is_finite()).fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), v| (l.min(v), h.max(v)));
    if lo > hi {
        (lo, hi) = (0.0, 1.0);
    }
    if from_zero {
        (lo, hi) = (lo.min(0.0), hi.max(0.0));
    }
    let span = if hi > lo { hi - lo } else { hi.abs().max(1.0) };
    let lo = if from_zero && lo >= 0.0 { 0.0 } else { lo - span * 0.05 };
    (lo, hi + span * headroom)
}

/// Room above the data for the legend box (top right), as a share of the data's span.
const LEGEND_ROOM: f64 = 0.3;

impl Chart {
    /// The chart as SVG text (labels are SVG `<text>`: no font data needed, see Cargo.toml).
    fn svg(&self) -> Result<String, String> {
        let mut svg = String::new();
        {
            let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
            self.draw(&root).map_err(|e| e.to_string())?;
            root.present().map_err(|e| e.to_string())?;
        }
        Ok(svg)
    }

    fn draw<'a>(
        &self,
        root: &DrawingArea<SVGBackend<'a>, plotters::coord::Shift>,
    ) -> Result<(), DrawingAreaErrorKind<std::io::Error>> {
        root.fill(&WHITE)?;
        let title = match self {
            Chart::Lines { title, .. } | Chart::Bars { title, .. } => title,
        };
        let mut builder = ChartBuilder::on(root);
        builder.caption(title, ("sans-serif", 22)).margin(15).x_label_area_size(45).y_label_area_size(70);
        match self {
            Chart::Lines { axes, lines, .. } => {
                let lines: Vec<&Line> = lines.iter().filter(|l| !l.points.is_empty()).collect();
                let x = padded(lines.iter().flat_map(|l| l.points.iter().map(|p| p.0)), false, 0.05);
                let y = padded(lines.iter().flat_map(|l| l.points.iter().map(|p| p.1)), false, LEGEND_ROOM);
                let mut chart = builder.build_cartesian_2d(x.0..x.1, y.0..y.1)?;
                chart
                    .configure_mesh()
                    .x_desc(axes.0)
                    .y_desc(axes.1)
                    .light_line_style(TRANSPARENT)
                    // Steps are whole numbers: `500`, not `500.0`; rounding hides float noise in tick values.
                    .x_label_formatter(&|x| format!("{}", (x * 1e6).round() / 1e6))
                    .draw()?;
                for (i, l) in lines.iter().enumerate() {
                    let c = color(i);
                    let points = l.points.iter().copied().filter(|p| p.1.is_finite());
                    chart
                        .draw_series(LineSeries::new(points, c.stroke_width(2)))?
                        .label(&l.label)
                        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
                    // A sparse series (validation every N steps) also gets its points marked.
                    if l.points.len() <= 20 {
                        chart.draw_series(l.points.iter().map(|&p| Circle::new(p, 3, c.filled())))?;
                    }
                }
                legend(&mut chart)
            }
            Chart::Bars { y_label, groups, bars, .. } => {
                // Integer x (a group is SLOT wide): plotters formats integer axes itself, and the key
                // points put one label under each group's centre.
                const SLOT: i32 = 1000;
                let n = groups.len() as i32;
                let y = padded(bars.iter().flat_map(|(_, v)| v.iter().flatten().copied()), true, LEGEND_ROOM);
                let centers: Vec<i32> = (0..n).map(|i| i * SLOT + SLOT / 2).collect();
                let x = (0..n.max(1) * SLOT).with_key_points(centers);
                let mut chart = builder.build_cartesian_2d(x, y.0..y.1)?;
                chart
                    .configure_mesh()
                    .disable_x_mesh()
                    .light_line_style(TRANSPARENT)
                    .x_labels(groups.len().max(1))
                    .x_label_formatter(&|x| groups.get((x / SLOT).max(0) as usize).cloned().unwrap_or_default())
                    .y_desc(*y_label)
                    .draw()?;
                let width = SLOT * 8 / 10 / bars.len().max(1) as i32;
                for (j, (label, values)) in bars.iter().enumerate() {
                    let c = color(j);
                    let x0 = |i: usize| i as i32 * SLOT + SLOT / 10 + j as i32 * width;
                    let present =
                        values.iter().enumerate().filter_map(|(i, v)| Some((i, (*v)?))).filter(|(_, v)| v.is_finite());
                    chart
                        .draw_series(
                            present
                                .clone()
                                .map(|(i, v)| Rectangle::new([(x0(i), 0.0), (x0(i) + width, v)], c.filled())),
                        )?
                        .label(label)
                        .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 12, y + 6)], c.filled()));
                    let text = ("sans-serif", 12).into_font().color(&BLACK).pos(Pos::new(HPos::Center, VPos::Bottom));
                    chart.draw_series(
                        present.map(|(i, v)| Text::new(format!("{v:.3}"), (x0(i) + width / 2, v), text.clone())),
                    )?;
                }
                legend(&mut chart)
            }
        }
    }
}

/// The legend box, top right, the same on every chart.
fn legend<'a, X: plotters::coord::ranged1d::Ranged, Y: plotters::coord::ranged1d::Ranged>(
    chart: &mut ChartContext<'a, SVGBackend<'a>, Cartesian2d<X, Y>>,
) -> Result<(), DrawingAreaErrorKind<std::io::Error>> {
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padded_ranges_are_never_empty() {
        let close = |(a, b): (f64, f64), (x, y): (f64, f64)| (a - x).abs() < 1e-12 && (b - y).abs() < 1e-12;
        assert!(close(padded([2.0].into_iter(), false, 0.05), (1.9, 2.1)));
        assert!(close(padded(std::iter::empty(), false, 0.05), (-0.05, 1.05)));
        assert!(close(padded([0.25, 0.5, f64::NAN].into_iter(), true, 0.3), (0.0, 0.65)));
        assert!(close(padded([-1.0, 1.0].into_iter(), true, 0.0), (-1.1, 1.0)));
    }

    #[test]
    fn headline_prefers_acc_then_the_first_numeric_metric() {
        let mut r = Results::default();
        r.set("xcopa_tr", "acc_norm", 0.6, None, true);
        r.set("xcopa_tr", "acc", 0.5, None, true);
        r.set("custom", "zeta", 1.0, None, true);
        assert_eq!(headline(&r, "xcopa_tr").as_deref(), Some("acc"));
        assert_eq!(headline(&r, "custom").as_deref(), Some("zeta"));
        assert_eq!(headline(&r, "missing"), None);
    }

    #[test]
    fn a_bar_chart_draws_one_rect_per_value_and_names_its_series() {
        let chart = Chart::Bars {
            title: "t".into(),
            y_label: "y",
            groups: vec!["a".into(), "b".into()],
            bars: vec![("s1".into(), vec![Some(0.5), None]), ("s2".into(), vec![Some(0.25), Some(1.0)])],
        };
        let svg = chart.svg().unwrap();
        for text in ["s1", "s2", "a", "b", "0.500", "0.250", "1.000"] {
            assert!(svg.contains(&format!(">\n{text}\n</text>")), "{text} missing in {svg}");
        }
        // A bar per present value plus the legend's swatch; the missing value leaves a gap.
        let filled = |color: &str| svg.matches(&format!("fill=\"{color}\"")).count();
        assert_eq!((filled("#1F77B4"), filled("#FF7F0E")), (2, 3), "{svg}");
    }
}
