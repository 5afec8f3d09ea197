//! The `wiki ingest` stage: configuration, the parallel page pipeline, part files, resume, manifest.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;

use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::mpsc::sync_channel;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::bz2::{decode_one_stream, is_bz2_header};
use super::encoding::{self, TextEncoding};
use super::index::MultistreamIndex;
use super::parts::{existing_parts, PartSink};
use super::reader::{header_info, open_sequential, produce_sequential, read_header};
use super::wikitext::Syntax;
use super::worker::{Chunk, Ctx, PageResult, MAX_TAIL};
use super::{IngestConfig, PartStats, WikiError};
use crate::manifest::ManifestBuilder;
use crate::Env;

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

impl std::fmt::Display for IngestReport {
    /// The one-line summary `wiki ingest` prints.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = &self.stats;
        write!(
            f,
            "wiki ingest: {} pages, {} articles written ({} redirects, {} other namespaces, {} too short, {} disambiguation) \
             into {} parts ({} resumed) in {:.1}s ({:.1} MB/s of dump); manifest: {}",
            s.pages,
            s.articles,
            s.redirects,
            s.other_namespaces,
            s.too_short,
            s.disambiguation,
            self.parts.len(),
            self.resumed_parts,
            self.seconds,
            self.bytes_in as f64 / 1e6 / self.seconds.max(1e-9),
            self.manifest.display()
        )
    }
}
