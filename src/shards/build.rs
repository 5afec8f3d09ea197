//! The `shards build` run: tokenize and split every source (pass 1, parallel, training units spilled to
//! disk), plan the mixture from the counted tokens, then pack and interleave the sources' rows (pass 2).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::config::{BuildConfig, Kind, LastRow};
use super::mix::{self, Use};
use super::pack::{Encoded, Encoder, Packer, Packing, Row, Unit};
use super::source;
use super::spill::{SpillReader, SpillWriter};
use super::stats::{stats_of_files, Stats};
use super::writer::SplitWriter;
use super::ShardsError;
use crate::corpus::list_shards;
use crate::manifest::ManifestBuilder;
use crate::vocab::Tokenizer;
use crate::Env;

/// What happened to one source.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SourceReport {
    /// Source name.
    pub name: String,
    /// Language code.
    pub lang: String,
    /// Requested share of the training tokens, if given.
    pub requested_share: Option<f64>,
    /// Requested epochs, if given.
    pub epochs: Option<f64>,
    /// Documents read (this shard's).
    pub documents: u64,
    /// Documents in the training split.
    pub train_documents: u64,
    /// Documents held out for validation.
    pub val_documents: u64,
    /// Empty documents skipped.
    pub empty: u64,
    /// SFT examples cut to `seq_len`.
    pub truncated: u64,
    /// SFT examples dropped as too long.
    pub too_long: u64,
    /// Trained tokens of one pass over the training documents.
    pub available_tokens: u64,
    /// Trained tokens written to train.
    pub train_tokens: u64,
    /// Trained tokens written to val.
    pub val_tokens: u64,
    /// Training documents used this many times on average (tokens used / available).
    pub factor: f64,
    /// Share of the written training tokens.
    pub achieved_share: f64,
    /// Tokens of last partial rows dropped (`last_row = "drop"`), train and val.
    pub dropped_tail_tokens: u64,
}

/// What `shards build` did (also the `--json` report).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BuildReport {
    /// Output directory.
    pub out: PathBuf,
    /// The manifest written.
    pub manifest: PathBuf,
    /// The stats file written.
    pub stats_file: PathBuf,
    /// Part files written, train then val.
    pub parts: Vec<PathBuf>,
    /// Per source, in config order.
    pub sources: Vec<SourceReport>,
    /// Statistics of the written parts (the contents of the stats file).
    pub stats: Stats,
    /// Tokens produced by the tokenizer (all documents, before mixing).
    pub tokens_tokenized: u64,
    /// Seconds spent tokenizing (pass 1).
    pub tokenize_seconds: f64,
    /// Seconds, total.
    pub seconds: f64,
}

/// Runs `shards build` with settings `cfg` (from `origin`, the config file or `flags`, for messages).
pub fn run(cfg: &BuildConfig, origin: &Path, env: &Env) -> Result<BuildReport, ShardsError> {
    let clock = Instant::now();
    cfg.validate(origin)?;
    let config_err = |msg: String| ShardsError::Config { origin: origin.into(), msg };
    let tokenizer = Tokenizer::from_path(&cfg.tokenizer)?;
    let eos = tokenizer.eos_id();
    if cfg.add_eos && eos.is_none() {
        return Err(config_err(format!(
            "add_eos = true but {} has no EOS token (neither eos_token in tokenizer_config.json, eos_token_id in \
             config.json, nor </s>); set add_eos = false or add the files of its checkpoint",
            tokenizer.path().display()
        )));
    }
    if cfg.add_bos && tokenizer.bos_id().is_none() {
        return Err(config_err(format!(
            "add_bos = true but {} has no BOS token (neither bos_token in tokenizer_config.json, bos_token_id in \
             config.json, nor <s>); set add_bos = false or add the files of its checkpoint",
            tokenizer.path().display()
        )));
    }
    let template = cfg.template().map_err(config_err)?;
    let encoder = Encoder {
        tokenizer: tokenizer.clone(),
        template,
        add_bos: cfg.add_bos,
        eos: eos.filter(|_| cfg.add_eos),
        seq_len: cfg.seq_len,
        max_len_policy: cfg.max_len_policy,
    };
    // Padding has loss_mask 0, so its id only has to be a real token: EOS, else UNK, else 0.
    let pad_id = eos.or(tokenizer.unk_id()).unwrap_or(0);
    let packing = match (cfg.kind, cfg.pack) {
        (Kind::Pretrain, _) => Packing::Stream,
        (Kind::Sft, false) => Packing::OnePerRow,
        (Kind::Sft, true) => Packing::Segments,
    };

    let out = &cfg.out;
    let (prefix, suffix) = if cfg.shard.is_whole() {
        ("part-".to_string(), String::new())
    } else {
        (format!("part-{:05}-", cfg.shard.index), format!("-{}-of-{}", cfg.shard.index, cfg.shard.count))
    };
    let manifest_path = out.join(format!("manifest{suffix}.json"));
    let stats_path = out.join(format!("stats{suffix}.json"));
    std::fs::create_dir_all(out).map_err(|source| ShardsError::Io { path: out.clone(), source })?;
    let taken = manifest_path.exists()
        || ["train", "val"].iter().any(|s| out.join(s).join(format!("{prefix}00000.parquet")).exists());
    if taken {
        return Err(ShardsError::Output {
            dir: out.clone(),
            msg: "already holds shards of a build; choose another --out or remove it".into(),
        });
    }

    let mut manifest = ManifestBuilder::new("shards build", cfg.output_settings(), Some(cfg.seed));
    let t = Instant::now();
    manifest.add_input(tokenizer.path(), &env.progress)?;
    for s in &cfg.sources {
        for file in input_files(&s.path)? {
            manifest.add_input(&file, &env.progress)?;
        }
    }
    manifest.timings.insert("hash_s".into(), t.elapsed().as_secs_f64());
    let meta = manifest.shard_meta();
    let mut train = SplitWriter::new(out.join("train"), prefix.clone(), cfg.rows_per_part, meta.clone(), cfg.pack)?;
    let mut val = SplitWriter::new(out.join("val"), prefix, cfg.rows_per_part, meta, cfg.pack)?;
    let spills: Vec<PathBuf> =
        (0..cfg.sources.len()).map(|i| out.join(format!(".source-{i}{suffix}.spill.tmp"))).collect();

    let mut run = Run {
        cfg,
        origin,
        env,
        encoder: &encoder,
        packing,
        pad_id,
        reports: Vec::new(),
        tokens_tokenized: 0,
        tokenize_seconds: 0.0,
    };
    let result = run.pass1(&spills, &mut val).and_then(|train_units| {
        let t = Instant::now();
        let r = run.pass2(&spills, &train_units, &mut train);
        manifest.timings.insert("pack_s".into(), t.elapsed().as_secs_f64());
        r
    });
    for p in &spills {
        let _ = std::fs::remove_file(p);
    }
    if let Err(e) = result.and_then(|()| train.close()).and_then(|()| val.close()) {
        train.abort();
        val.abort();
        return Err(e);
    }
    let tokenize_seconds = run.tokenize_seconds;
    manifest.timings.insert("tokenize_s".into(), tokenize_seconds);

    let mut parts: Vec<(String, PathBuf, u64)> = Vec::new();
    for (split, w) in [("train", &train), ("val", &val)] {
        parts.extend(w.written.iter().map(|(p, rows)| (split.to_string(), p.clone(), *rows)));
    }
    let files: Vec<(String, PathBuf)> = parts.iter().map(|(s, p, _)| (s.clone(), p.clone())).collect();
    let stats = stats_of_files(&files)?;
    let mut json = serde_json::to_vec_pretty(&stats).expect("stats serialize");
    json.push(b'\n');
    crate::io::write_atomic(&stats_path, &json)
        .map_err(|source| ShardsError::Io { path: stats_path.clone(), source })?;

    let mut reports = run.reports;
    let train_total: u64 = reports.iter().map(|r| r.train_tokens).sum();
    for r in &mut reports {
        r.achieved_share = if train_total == 0 { 0.0 } else { r.train_tokens as f64 / train_total as f64 };
        record_counts(&mut manifest, r);
    }
    for (split, s) in &stats.splits {
        manifest.count(&format!("{split}.rows"), s.rows);
        manifest.count(&format!("{split}.trained_tokens"), s.trained_tokens);
    }
    let mut outputs: Vec<(PathBuf, Option<u64>)> = parts.iter().map(|(_, p, rows)| (p.clone(), Some(*rows))).collect();
    outputs.push((stats_path.clone(), None));
    manifest.finish(out, &outputs)?.write(&manifest_path)?;
    Ok(BuildReport {
        out: out.clone(),
        manifest: manifest_path,
        stats_file: stats_path,
        parts: parts.into_iter().map(|(_, p, _)| p).collect(),
        sources: reports,
        stats,
        tokens_tokenized: run.tokens_tokenized,
        tokenize_seconds,
        seconds: clock.elapsed().as_secs_f64(),
    })
}

/// The files of a source that decide its documents (a directory's `*.parquet`, or the file).
fn input_files(path: &Path) -> Result<Vec<PathBuf>, ShardsError> {
    Ok(if path.is_dir() { list_shards(path)? } else { vec![path.to_path_buf()] })
}

/// Per-source counters into the manifest, keyed `SOURCE.counter`; shares in parts per million.
fn record_counts(m: &mut ManifestBuilder, r: &SourceReport) {
    let ppm = |x: f64| (x * 1e6).round() as u64;
    let mut put = |k: &str, v: u64| m.count(&format!("{}.{k}", r.name), v);
    put("documents", r.documents);
    put("train_documents", r.train_documents);
    put("val_documents", r.val_documents);
    put("empty", r.empty);
    put("truncated", r.truncated);
    put("too_long", r.too_long);
    put("available_tokens", r.available_tokens);
    put("train_tokens", r.train_tokens);
    put("val_tokens", r.val_tokens);
    put("dropped_tail_tokens", r.dropped_tail_tokens);
    put("achieved_share_ppm", ppm(r.achieved_share));
    if let Some(p) = r.requested_share {
        put("requested_share_ppm", ppm(p));
    }
}

/// The training units of one source after pass 1: trained tokens and document index of each.
struct TrainUnits {
    weights: Vec<u32>,
    indices: Vec<u64>,
}

struct Run<'a> {
    cfg: &'a BuildConfig,
    /// The config file (or `flags`), named in mixture errors.
    origin: &'a Path,
    env: &'a Env,
    encoder: &'a Encoder,
    packing: Packing,
    pad_id: u32,
    reports: Vec<SourceReport>,
    tokens_tokenized: u64,
    tokenize_seconds: f64,
}

impl Run<'_> {
    /// Tokenizes every source in parallel (document order kept), writes validation rows, spills the
    /// training units.
    fn pass1(&mut self, spills: &[PathBuf], val: &mut SplitWriter) -> Result<Vec<TrainUnits>, ShardsError> {
        let cfg = self.cfg;
        let clock = Instant::now();
        let mut all = Vec::with_capacity(cfg.sources.len());
        for (s, spill_path) in cfg.sources.iter().zip(spills) {
            let mut report = SourceReport {
                name: s.name.clone(),
                lang: s.lang.clone(),
                requested_share: s.share,
                epochs: s.epochs,
                ..SourceReport::default()
            };
            let name: Arc<str> = s.name.as_str().into();
            let mut spill = SpillWriter::create(spill_path)?;
            let mut units = TrainUnits { weights: Vec::new(), indices: Vec::new() };
            let mut val_packer = Packer::new(self.packing, cfg.seq_len, self.pad_id);
            let bar = self.env.progress.bytes(0, &format!("tokenizing {}", s.name));
            let shard = cfg.shard;
            let docs = source::open(&s.path, cfg.kind)?
                .take(s.limit.map_or(usize::MAX, |n| usize::try_from(n).unwrap_or(usize::MAX)))
                .enumerate()
                .filter(|(i, _)| shard.owns(*i as u64))
                .map(|(i, d)| d.map(|d| (i as u64, d)));
            let threads = self.env.threads();
            let encoder = self.encoder;
            let mut tokens = 0u64;
            crate::parallel::ordered_map(
                docs,
                threads,
                threads * 16,
                |(i, doc)| {
                    let bytes = match &doc {
                        source::Doc::Text(t) => t.len(),
                        source::Doc::Example(r) => r.instruction.len() + r.input.len() + r.output.len(),
                    };
                    encoder.encode(&doc).map(|e| (i, e, bytes))
                },
                |(i, encoded, bytes)| {
                    bar.inc(bytes as u64);
                    report.documents += 1;
                    let (unit, truncated) = match encoded {
                        Encoded::Empty => {
                            report.empty += 1;
                            return Ok(());
                        }
                        Encoded::TooLong => {
                            report.too_long += 1;
                            return Ok(());
                        }
                        Encoded::Unit { unit, truncated } => (unit, truncated),
                    };
                    report.truncated += u64::from(truncated);
                    tokens += unit.ids.len() as u64;
                    if mix::is_val(cfg.seed, &s.name, i, cfg.val_share) {
                        report.val_documents += 1;
                        val_packer.push(&unit);
                        report.val_tokens += drain(&mut val_packer, val, &name)?;
                    } else {
                        report.train_documents += 1;
                        report.available_tokens += unit.trained();
                        units.weights.push(unit.trained() as u32);
                        units.indices.push(i);
                        spill.write(&unit)?;
                    }
                    Ok(())
                },
            )?;
            bar.finish_and_clear();
            spill.finish()?;
            report.dropped_tail_tokens += val_packer.finish(cfg.last_row);
            report.val_tokens += drain(&mut val_packer, val, &name)?;
            self.tokens_tokenized += tokens;
            self.reports.push(report);
            all.push(units);
        }
        self.tokenize_seconds = clock.elapsed().as_secs_f64();
        Ok(all)
    }

    /// Plans the mixture and writes the training rows, sources interleaved so that each stays at its
    /// share all along the file (the source furthest behind its target gives the next row).
    fn pass2(&mut self, spills: &[PathBuf], units: &[TrainUnits], train: &mut SplitWriter) -> Result<(), ShardsError> {
        let cfg = self.cfg;
        let available: Vec<u64> = self.reports.iter().map(|r| r.available_tokens).collect();
        let targets = mix::targets(&cfg.sources, &available, cfg.train_tokens)
            .map_err(|msg| ShardsError::Config { origin: self.origin.into(), msg })?;
        let mut streams = Vec::with_capacity(units.len());
        for (k, ((s, u), target)) in cfg.sources.iter().zip(units).zip(targets).enumerate() {
            let plan = mix::choose(cfg.seed, &s.name, &u.weights, &u.indices, target);
            self.reports[k].factor = plan.factor;
            streams.push(Stream {
                k,
                name: s.name.as_str().into(),
                spill: spills[k].clone(),
                packer: Packer::new(self.packing, cfg.seq_len, self.pad_id),
                plan,
                epoch: 0,
                reader: None,
                ordinal: 0,
                unit: Unit::default(),
                done: false,
                dropped: 0,
                written: 0,
            });
        }
        let total_rows_hint: u64 = streams.iter().map(|s| s.plan.tokens).sum::<u64>() / cfg.seq_len as u64;
        let bar = self.env.progress.items(total_rows_hint, "packing");
        streams.retain(|s| s.plan.tokens > 0);
        while !streams.is_empty() {
            // Furthest behind: smallest written/planned, compared exactly; ties go to config order.
            let pick = (0..streams.len())
                .min_by(|&a, &b| {
                    let (x, y) = (&streams[a], &streams[b]);
                    (u128::from(x.written) * u128::from(y.plan.tokens))
                        .cmp(&(u128::from(y.written) * u128::from(x.plan.tokens)))
                        .then(x.k.cmp(&y.k))
                })
                .expect("not empty");
            let st = &mut streams[pick];
            match st.next_row(cfg.last_row)? {
                Some(row) => {
                    let trained = row.mask.iter().map(|&m| u64::from(m)).sum::<u64>();
                    st.written += trained;
                    self.reports[st.k].train_tokens += trained;
                    train.write(row, &st.name)?;
                    bar.inc(1);
                }
                None => {
                    let st = streams.remove(pick);
                    self.reports[st.k].dropped_tail_tokens += st.dropped;
                }
            }
        }
        bar.finish_and_clear();
        Ok(())
    }
}

/// Writes the packer's finished rows; returns their trained tokens.
fn drain(packer: &mut Packer, w: &mut SplitWriter, name: &Arc<str>) -> Result<u64, ShardsError> {
    let mut trained = 0;
    while let Some(row) = packer.ready.pop_front() {
        trained += row.mask.iter().map(|&m| u64::from(m)).sum::<u64>();
        w.write(row, name)?;
    }
    Ok(trained)
}

/// One source's training rows in pass 2: its spill read once per epoch, the last pass taking only the
/// chosen subset.
struct Stream {
    k: usize,
    name: Arc<str>,
    spill: PathBuf,
    packer: Packer,
    plan: Use,
    epoch: u64,
    reader: Option<SpillReader>,
    ordinal: usize,
    unit: Unit,
    done: bool,
    /// Tokens of the dropped last row.
    dropped: u64,
    /// Trained tokens written so far.
    written: u64,
}

impl Stream {
    fn passes(&self) -> u64 {
        self.plan.full_epochs + u64::from(self.plan.extra.iter().any(|&e| e))
    }

    fn next_row(&mut self, last_row: LastRow) -> Result<Option<Row>, ShardsError> {
        loop {
            if let Some(row) = self.packer.ready.pop_front() {
                return Ok(Some(row));
            }
            if self.done {
                return Ok(None);
            }
            let Some(reader) = self.reader.as_mut() else {
                if self.epoch < self.passes() {
                    self.reader = Some(SpillReader::open(&self.spill)?);
                    self.ordinal = 0;
                } else {
                    self.dropped = self.packer.finish(last_row);
                    self.done = true;
                }
                continue;
            };
            if !reader.read(&mut self.unit)? {
                self.reader = None;
                self.epoch += 1;
                continue;
            }
            let take = self.epoch < self.plan.full_epochs || self.plan.extra[self.ordinal];
            self.ordinal += 1;
            if take {
                self.packer.push(&self.unit);
            }
        }
    }
}

impl crate::stage::Stage for BuildConfig {
    fn kind(&self) -> &'static str {
        "shards"
    }
    fn paths_mut(&mut self) -> Vec<crate::stage::PathKey<'_>> {
        use crate::stage::Need;
        let mut v = vec![("tokenizer".to_string(), &mut self.tokenizer, Need::Input)];
        v.extend(self.sources.iter_mut().map(|s| (format!("sources.{}.path", s.name), &mut s.path, Need::Input)));
        v
    }
    fn set_out(&mut self, dir: &Path) {
        self.out = dir.into();
    }
    fn settings(&self) -> Option<serde_json::Value> {
        Some(self.output_settings())
    }
    fn sft_template(&self, data: &Path) -> Option<String> {
        (self.kind == Kind::Sft && crate::stage::same_path(&self.out.join("train"), data))
            .then(|| self.template_name().to_string())
    }
    fn run(&self, ctx: &crate::stage::StageCtx) -> Result<(), crate::stage::StageError> {
        run(self, ctx.base, ctx.env)?;
        Ok(())
    }
}

impl std::fmt::Display for BuildReport {
    /// The summary `shards build` prints: totals, then one line per source (and a warning where its share is
    /// more than 0.5% off).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let rows = |split: &str| self.stats.splits.get(split).map_or((0, 0), |s| (s.rows, s.trained_tokens));
        let (train, val) = (rows("train"), rows("val"));
        write!(
            f,
            "shards build: {} tokens tokenized in {:.1}s ({:.0} tokens/s); train {} rows ({} trained tokens), \
             val {} rows ({} trained tokens); manifest: {}",
            self.tokens_tokenized,
            self.tokenize_seconds,
            self.tokens_tokenized as f64 / self.tokenize_seconds.max(1e-9),
            train.0,
            train.1,
            val.0,
            val.1,
            self.manifest.display()
        )?;
        for s in &self.sources {
            let requested =
                s.requested_share.map_or_else(|| format!("{} epochs", s.epochs.unwrap_or(1.0)), |p| format!("{p:.4}"));
            write!(
                f,
                "\n  {}: {} documents ({} val, {} empty, {} truncated, {} too long), used x{:.3}, share {:.4} (requested {requested})",
                s.name, s.documents, s.val_documents, s.empty, s.truncated, s.too_long, s.factor, s.achieved_share
            )?;
            if s.requested_share.is_some_and(|p| (p - s.achieved_share).abs() > 0.005) {
                write!(
                    f,
                    "\n  warning: {} is more than 0.5% off its share (its documents are large next to its tokens)",
                    s.name
                )?;
            }
        }
        Ok(())
    }
}
