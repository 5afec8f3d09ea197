//! The `wiki ingest` stage: configuration, the parallel page pipeline, part files, resume, manifest.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::mpsc::sync_channel;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::bz2::{decode_one_stream, is_bz2_header};
use super::encoding::{self, TextEncoding};
use super::index::{IndexError, MultistreamIndex};
use super::parts::{existing_parts, PartSink};
use super::reader::{header_info, open_sequential, produce_sequential, read_header};
use super::wikitext::Syntax;
use super::worker::{Chunk, Ctx, PageResult, MAX_TAIL};
use crate::corpus::ShardError;
use crate::io::ShardSpec;
use crate::manifest::{ManifestBuilder, ManifestError};
use crate::Env;

/// Settings of `wiki ingest` (all flags; also usable from recipes).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestConfig {
    /// The dump: `*-pages-articles[-multistream].xml.bz2` or plain `.xml` (UTF-8 or UTF-16 with BOM).
    #[serde(default)]
    pub dump: PathBuf,
    /// In a recipe, instead of `dump`: the date (`YYYYMMDD` or `latest`) of `lang`'s dump to download first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub date: Option<String>,
    /// The dump site for `date` (default: dumps.wikimedia.org).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror: Option<String>,
    /// Output directory for `part-NNNNN.parquet` and `manifest.json` (a recipe sets it per stage).
    #[serde(default)]
    pub out: PathBuf,
    /// The multistream index (`*-multistream-index.txt[.bz2]`), for parallel decoding.
    #[serde(default)]
    pub index: Option<PathBuf>,
    /// Language code written into every record; default: the dump's `xml:lang` or dbname.
    #[serde(default)]
    pub lang: Option<String>,
    /// Articles whose clean text has fewer characters are dropped (counted as `too_short`).
    #[serde(default)]
    pub min_chars: usize,
    /// Drop disambiguation pages.
    #[serde(default)]
    pub drop_disambiguation: bool,
    /// Extra disambiguation template names.
    #[serde(default)]
    pub disambiguation_templates: Vec<String>,
    /// Pages (of any namespace, in dump order) per output part.
    #[serde(default = "default_part_pages")]
    pub part_pages: u64,
    /// This process's share of the parts.
    #[serde(default = "default_shard")]
    pub shard: ShardSpec,
    /// Continue a run whose parts are partly written.
    #[serde(default)]
    pub resume: bool,
}

fn default_part_pages() -> u64 {
    50_000
}

fn default_shard() -> ShardSpec {
    ShardSpec::WHOLE
}

impl IngestConfig {
    /// A config with defaults for everything but the dump and output directory.
    pub fn new(dump: impl Into<PathBuf>, out: impl Into<PathBuf>) -> Self {
        IngestConfig {
            dump: dump.into(),
            date: None,
            mirror: None,
            out: out.into(),
            index: None,
            lang: None,
            min_chars: 0,
            drop_disambiguation: false,
            disambiguation_templates: Vec::new(),
            part_pages: default_part_pages(),
            shard: ShardSpec::WHOLE,
            resume: false,
        }
    }

    /// The settings that decide the output bytes (not paths, threads, shard or resume): the run id.
    pub fn output_settings(&self) -> serde_json::Value {
        serde_json::json!({
            "lang": self.lang,
            "min_chars": self.min_chars,
            "drop_disambiguation": self.drop_disambiguation,
            "disambiguation_templates": self.disambiguation_templates,
            "part_pages": self.part_pages,
        })
    }
}

/// Errors of `wiki ingest`; each names the file and where in it.
#[derive(Debug, thiserror::Error)]
pub enum WikiError {
    /// Reading failed; bzip2 and UTF-16 errors carry their byte offset in the message.
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    /// The file is empty.
    #[error("{path}: empty file (expected a MediaWiki XML dump, .xml or .xml.bz2)")]
    Empty { path: PathBuf },
    /// The file is not a MediaWiki dump.
    #[error("{path}: not a MediaWiki dump: {msg}")]
    NotADump { path: PathBuf, msg: String },
    /// Malformed or truncated XML.
    #[error("{path}: {msg} ({at})")]
    Xml { path: PathBuf, at: String, msg: String },
    /// The multistream index is malformed.
    #[error(transparent)]
    Index(#[from] IndexError),
    /// The index does not describe this dump.
    #[error("{path}: index {index} does not match the dump: {msg}")]
    IndexMismatch { path: PathBuf, index: PathBuf, msg: String },
    /// The output directory is not usable as asked.
    #[error("{dir}: {msg}")]
    Output { dir: PathBuf, msg: String },
    /// Writing a part failed.
    #[error(transparent)]
    Shard(#[from] ShardError),
    /// Hashing inputs or writing the manifest failed.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
}

/// Counters of one part, kept in its footer so a resumed run can report the whole run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartStats {
    /// Pages seen (any namespace).
    pub pages: u64,
    /// Articles written.
    pub articles: u64,
    /// Namespace-0 redirects.
    pub redirects: u64,
    /// Pages outside namespace 0.
    pub other_namespaces: u64,
    /// Articles shorter than `min_chars`.
    pub too_short: u64,
    /// Disambiguation pages dropped.
    pub disambiguation: u64,
    /// XML bytes of the part's pages.
    pub xml_bytes: u64,
    /// UTF-8 bytes of clean text written.
    pub text_bytes: u64,
}

impl PartStats {
    fn add(&mut self, o: &PartStats) {
        self.pages += o.pages;
        self.articles += o.articles;
        self.redirects += o.redirects;
        self.other_namespaces += o.other_namespaces;
        self.too_short += o.too_short;
        self.disambiguation += o.disambiguation;
        self.xml_bytes += o.xml_bytes;
        self.text_bytes += o.text_bytes;
    }
}

/// What `wiki ingest` did (also the `--json` report).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IngestReport {
    /// Output directory.
    pub out: PathBuf,
    /// Path of the manifest written.
    pub manifest: PathBuf,
    /// Parts of this run (this shard's), in order.
    pub parts: Vec<PathBuf>,
    /// Parts already present and kept by `--resume`.
    pub resumed_parts: u64,
    /// Counters summed over the parts.
    pub stats: PartStats,
    /// Compressed (or plain) dump bytes.
    pub bytes_in: u64,
    /// Seconds, total.
    pub seconds: f64,
}

/// Runs `wiki ingest`: reads the dump, writes `part-NNNNN.parquet` files and `manifest.json` into `cfg.out`.
pub fn run(cfg: &IngestConfig, env: &Env) -> Result<IngestReport, WikiError> {
    let clock = Instant::now();
    let dump = cfg.dump.as_path();
    if cfg.part_pages == 0 {
        return Err(WikiError::Output { dir: cfg.out.clone(), msg: "part_pages must be at least 1".into() });
    }
    let meta = std::fs::metadata(dump).map_err(|source| WikiError::Io { path: dump.into(), source })?;
    if meta.len() == 0 {
        return Err(WikiError::Empty { path: dump.into() });
    }
    let manifest_path = cfg.out.join(if cfg.shard.is_whole() {
        "manifest.json".to_string()
    } else {
        format!("manifest-{}-of-{}.json", cfg.shard.index, cfg.shard.count)
    });
    std::fs::create_dir_all(&cfg.out).map_err(|source| WikiError::Io { path: cfg.out.clone(), source })?;

    let mut manifest = ManifestBuilder::new("wiki ingest", cfg.output_settings(), None);
    let t = Instant::now();
    manifest.add_input(dump, &env.progress)?;
    if let Some(index) = &cfg.index {
        manifest.add_helper_input(index, &env.progress)?;
    }
    manifest.timings.insert("hash_s".into(), t.elapsed().as_secs_f64());
    let shard_meta = manifest.shard_meta();

    let done = existing_parts(&cfg.out, &shard_meta.run_id)?;
    if !cfg.resume && (!done.is_empty() || manifest_path.exists()) {
        return Err(WikiError::Output {
            dir: cfg.out.clone(),
            msg: "already holds output of this run; pass --resume to continue it, or choose another --out".into(),
        });
    }
    let done_keys: BTreeSet<u64> = done.keys().copied().collect();
    let shard = cfg.shard;
    let wanted_parts = move |k: u64| shard.owns(k) && !done_keys.contains(&k);

    let bar = env.progress.bytes(meta.len(), "wiki ingest");
    let t = Instant::now();
    let index = cfg.index.as_deref().map(MultistreamIndex::read).transpose()?;
    let file = File::open(dump).map_err(|source| WikiError::Io { path: dump.into(), source })?;

    // Header and, in front-to-back mode, the reader positioned after it.
    let (site, encoding, sequential) = match &index {
        Some(idx) => {
            let first = idx.streams[0].offset;
            if first == 0 || first >= meta.len() {
                return Err(WikiError::IndexMismatch {
                    path: dump.into(),
                    index: cfg.index.clone().unwrap_or_default(),
                    msg: format!("first stream offset {first} leaves no header stream (dump is {} bytes)", meta.len()),
                });
            }
            let mut compressed = vec![0u8; first as usize];
            file.read_exact_at(&mut compressed, 0).map_err(|source| WikiError::Io { path: dump.into(), source })?;
            if !is_bz2_header(&compressed) {
                return Err(WikiError::NotADump {
                    path: dump.into(),
                    msg: "a multistream index needs a .bz2 multistream dump (no bzip2 header at byte 0)".into(),
                });
            }
            let (header, _) =
                decode_one_stream(&compressed, 0).map_err(|source| WikiError::Io { path: dump.into(), source })?;
            let (enc, bom) = encoding::detect(&header);
            let header = match enc {
                TextEncoding::Utf8 => header[bom..].to_vec(),
                _ => encoding::utf16_to_utf8(&header[bom..], enc == TextEncoding::Utf16Le)
                    .map_err(|source| WikiError::Io { path: dump.into(), source })?,
            };
            bar.inc(first);
            (header_info(&header, dump)?, enc, None)
        }
        None => {
            let (mut reader, enc) = open_sequential(dump, &bar, env.threads())?;
            let (buf, at) = read_header(&mut reader, dump)?;
            let site = header_info(&buf[..at], dump)?;
            (site, enc, Some((reader, buf, at)))
        }
    };
    let lang = cfg.lang.clone().or_else(|| site.lang()).unwrap_or_else(|| "und".into());
    let source = format!("wikipedia:{}", site.dbname.clone().unwrap_or_else(|| lang.clone() + "wiki"));
    let syntax =
        Syntax::new(&site.namespaces, Some(&lang)).with_disambiguation_templates(&cfg.disambiguation_templates);
    let ctx =
        Ctx { cfg, dump, file, encoding, syntax, lang, source, site, wanted_parts: &wanted_parts, bar: bar.clone() };

    let mut sink = PartSink {
        dir: cfg.out.clone(),
        meta: shard_meta,
        part_pages: cfg.part_pages,
        open: None,
        written: Vec::new(),
    };
    let threads = env.threads();
    let lookahead = 4 * threads;
    let outcome = std::thread::scope(|scope| -> Result<(), WikiError> {
        let (mut chunks, producer): (Box<dyn Iterator<Item = Result<Chunk, WikiError>> + Send + '_>, _) = match (
            &index, sequential,
        ) {
            (Some(idx), _) => {
                let file_len = meta.len();
                let n = idx.streams.len();
                let part_pages = cfg.part_pages;
                let wanted = &wanted_parts;
                let iter = idx.streams.iter().enumerate().filter_map(move |(i, s)| {
                    let end_ordinal = s.first_ordinal + s.page_ids.len() as u64;
                    let any_wanted = (s.first_ordinal / part_pages..=(end_ordinal - 1) / part_pages).any(wanted);
                    let last = i + 1 == n;
                    let end = if last { file_len } else { idx.streams[i + 1].offset };
                    let problem = if end <= s.offset {
                        Some(format!("offset {} is past the end of the dump ({file_len} bytes)", s.offset))
                    } else if last && end - s.offset > (MAX_TAIL as u64) << 8 {
                        Some(format!(
                            "the last listed stream at byte {} is followed by {} bytes; the index does not cover the dump",
                            s.offset,
                            end - s.offset
                        ))
                    } else {
                        None
                    };
                    if let Some(msg) = problem {
                        let index = cfg.index.clone().unwrap_or_default();
                        return Some(Err(WikiError::IndexMismatch { path: dump.into(), index, msg }));
                    }
                    any_wanted.then(|| {
                        Ok(Chunk::Stream { offset: s.offset, len: end - s.offset, last, first_ordinal: s.first_ordinal, page_ids: s.page_ids.clone() })
                    })
                });
                (Box::new(iter), None)
            }
            (None, Some((reader, buf, at))) => {
                let (tx, rx) = sync_channel(lookahead);
                let wanted = &wanted_parts;
                let part_pages = cfg.part_pages;
                let handle = scope
                    .spawn(move || produce_sequential(reader, buf, at, dump, &move |ord| wanted(ord / part_pages), tx));
                (Box::new(rx.into_iter()), Some(handle))
            }
            (None, None) => unreachable!("front-to-back mode always has a reader"),
        };
        let result = crate::parallel::ordered_map(
            chunks.by_ref(),
            threads,
            lookahead,
            |chunk| ctx.process(&chunk),
            |pages: Vec<PageResult>| pages.into_iter().try_for_each(|p| sink.push(p)),
        );
        drop(chunks);
        if let Some(p) = producer {
            let _ = p.join();
        }
        result
    });
    match outcome {
        Ok(()) => sink.close()?,
        Err(e) => {
            sink.abort();
            return Err(e);
        }
    }
    bar.finish_and_clear();
    manifest.timings.insert("ingest_s".into(), t.elapsed().as_secs_f64());

    // The whole run's parts: those written now and those kept from before (this shard's only).
    let mut parts: BTreeMap<u64, (PathBuf, PartStats)> = done.into_iter().filter(|(k, _)| cfg.shard.owns(*k)).collect();
    let resumed_parts = parts.len() as u64;
    for (k, path, stats) in std::mem::take(&mut sink.written) {
        parts.insert(k, (path, stats));
    }
    let mut stats = PartStats::default();
    let mut outputs = Vec::new();
    for (path, s) in parts.values() {
        stats.add(s);
        outputs.push((path.clone(), Some(s.articles)));
    }
    let counts = [
        ("pages", stats.pages),
        ("articles", stats.articles),
        ("redirects", stats.redirects),
        ("other_namespaces", stats.other_namespaces),
        ("too_short", stats.too_short),
        ("disambiguation", stats.disambiguation),
        ("xml_bytes", stats.xml_bytes),
        ("bytes_out", stats.text_bytes),
        ("bytes_in", meta.len()),
        ("parts", parts.len() as u64),
        ("resumed_parts", resumed_parts),
    ];
    for (k, v) in counts {
        manifest.count(k, v);
    }
    let mut m = manifest.finish(&cfg.out, &outputs)?;
    // The manifest's args record the full invocation (paths included); the run id covers only what
    // decides the bytes.
    m.args = serde_json::to_value(cfg).expect("config serializes");
    m.write(&manifest_path)?;
    Ok(IngestReport {
        out: cfg.out.clone(),
        manifest: manifest_path,
        parts: parts.into_values().map(|(p, _)| p).collect(),
        resumed_parts,
        stats,
        bytes_in: meta.len(),
        seconds: clock.elapsed().as_secs_f64(),
    })
}

/// A `wiki` stage's `lang` + `date` dump, downloaded (or completed) into `{stage}.dump/` beside the stage's
/// folder, which a rerun with other settings keeps.
fn download_dump(
    c: &IngestConfig,
    date: &str,
    dir: &std::path::Path,
    env: &Env,
) -> Result<crate::hub::dump::DumpReport, crate::stage::StageError> {
    let lang = c.lang.clone().ok_or("`date` needs `lang` (the Wikipedia language code) to name the dump")?;
    let mut out = dir.as_os_str().to_owned();
    out.push(".dump");
    let cfg = crate::hub::dump::DumpConfig {
        lang,
        date: date.to_string(),
        mirror: c.mirror.clone().unwrap_or_else(|| crate::hub::dump::DEFAULT_MIRROR.into()),
        out: out.into(),
        retry: crate::hub::download_retry(),
        progress: env.progress,
    };
    Ok(crate::hub::dump::download(&cfg)?)
}

impl crate::stage::Stage for IngestConfig {
    fn kind(&self) -> &'static str {
        "wiki"
    }
    fn paths_mut(&mut self) -> Vec<crate::stage::PathKey<'_>> {
        use crate::stage::Need;
        let mut v = Vec::new();
        // With `date` the dump is downloaded when the stage runs.
        if self.date.is_none() {
            v.push(("dump".to_string(), &mut self.dump, Need::Input));
        }
        v.extend(self.index.as_mut().map(|p| ("index".to_string(), p, Need::Input)));
        v
    }
    fn set_out(&mut self, dir: &std::path::Path) {
        self.out = dir.into();
    }
    fn settings(&self) -> Option<serde_json::Value> {
        Some(self.output_settings())
    }
    /// Finished parts of an interrupted run are kept (their footers name the run).
    fn resumable(&self, _dir: &std::path::Path, interrupted: bool) -> bool {
        interrupted
    }
    fn run(&self, ctx: &crate::stage::StageCtx) -> Result<(), crate::stage::StageError> {
        let mut cfg = IngestConfig { resume: ctx.resume, ..self.clone() };
        if let Some(date) = &self.date {
            let dump = download_dump(self, date, ctx.dir, ctx.env)?;
            (cfg.dump, cfg.index) = (dump.dump, Some(dump.index));
        }
        run(&cfg, ctx.env)?;
        Ok(())
    }
}
