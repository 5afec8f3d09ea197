//! The `wiki ingest` stage: configuration, the parallel page pipeline, part files, resume, manifest.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::time::Instant;

use indicatif::ProgressBar;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::bz2::{decode_one_stream, is_bz2_header, Bz2Reader};
use super::encoding::{self, TextEncoding, Utf16Reader};
use super::index::{read_up_to, IndexError, MultistreamIndex};
use super::wikitext::Syntax;
use super::xml::{next_page, one_line, parse_header, parse_page, SiteInfo, XmlError};
use crate::corpus::{DocId, IdKind, ShardError, TextRecord, TextShardWriter};
use crate::io::ShardSpec;
use crate::manifest::{ManifestBuilder, ManifestError, ShardMeta, PARQUET_META_KEY};
use crate::Env;

/// Footer key holding a part's [`PartStats`].
const PART_STATS_KEY: &str = "langadapt.wiki.part";
/// Largest header (everything before the first `<page>`) accepted.
const MAX_HEADER: usize = 64 << 20;
/// Pages of XML handed to a worker at once in front-to-back mode.
const CHUNK_BYTES: usize = 4 << 20;
/// Largest tail (the closing stream) accepted after the last stream an index lists.
const MAX_TAIL: usize = 1 << 20;
/// Bytes read at a time in front-to-back mode.
const READ_BYTES: usize = 4 << 20;

/// Settings of `wiki ingest` (all flags; also usable from recipes).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestConfig {
    /// The dump: `*-pages-articles[-multistream].xml.bz2` or plain `.xml` (UTF-8 or UTF-16 with BOM).
    pub dump: PathBuf,
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
    fn output_settings(&self) -> serde_json::Value {
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

/// What became of one page.
enum Outcome {
    Article(TextRecord),
    Redirect,
    OtherNamespace,
    TooShort,
    Disambiguation,
}

struct PageResult {
    ordinal: u64,
    xml_bytes: u64,
    outcome: Outcome,
}

/// Work for one worker: a stream of a multistream dump, or already-decoded pages.
enum Chunk {
    Stream { offset: u64, len: u64, last: bool, first_ordinal: u64, page_ids: Vec<u64> },
    Pages { data: Vec<u8>, pages: Vec<(u64, u64, usize, usize)> },
}

/// Shared, read-only context of the workers.
struct Ctx<'a> {
    cfg: &'a IngestConfig,
    dump: &'a Path,
    file: File,
    encoding: TextEncoding,
    syntax: Syntax,
    lang: String,
    source: String,
    site: SiteInfo,
    wanted_parts: &'a (dyn Fn(u64) -> bool + Sync),
    bar: ProgressBar,
}

impl Ctx<'_> {
    fn wanted(&self, ordinal: u64) -> bool {
        (self.wanted_parts)(ordinal / self.cfg.part_pages)
    }

    fn xml_error(&self, at: String, e: XmlError, page: Option<u64>) -> WikiError {
        let at = match page {
            Some(id) => format!("{at}, page id {id}"),
            None => at,
        };
        WikiError::Xml { path: self.dump.into(), at, msg: one_line(e.msg) }
    }

    fn classify(&self, ordinal: u64, xml: &[u8], at: impl Fn(u64) -> String) -> Result<PageResult, WikiError> {
        let raw = parse_page(xml).map_err(|e| {
            let off = e.offset;
            self.xml_error(at(off), e, sniff_page_id(xml))
        })?;
        let ns = raw.ns.unwrap_or_else(|| self.site.namespace_of(&raw.title));
        let outcome = if ns != 0 {
            Outcome::OtherNamespace
        } else if raw.redirect || self.syntax.is_redirect(&raw.text) {
            Outcome::Redirect
        } else if self.cfg.drop_disambiguation && self.syntax.is_disambiguation(&raw.text) {
            Outcome::Disambiguation
        } else {
            let text = self.syntax.clean(&raw.text);
            if text.chars().count() < self.cfg.min_chars {
                Outcome::TooShort
            } else {
                Outcome::Article(TextRecord {
                    id: DocId::Int(raw.id as i64),
                    title: raw.title,
                    text,
                    lang: self.lang.clone(),
                    source: self.source.clone(),
                })
            }
        };
        Ok(PageResult { ordinal, xml_bytes: xml.len() as u64, outcome })
    }

    fn process(&self, chunk: &Chunk) -> Result<Vec<PageResult>, WikiError> {
        match chunk {
            Chunk::Pages { data, pages } => pages
                .iter()
                .map(|&(ordinal, xml_off, s, e)| {
                    self.classify(ordinal, &data[s..e], |o| format!("at byte {} of the decompressed XML", xml_off + o))
                })
                .collect(),
            Chunk::Stream { offset, len, last, first_ordinal, page_ids } => {
                let r = self.process_stream(*offset, *len, *last, *first_ordinal, page_ids);
                self.bar.inc(*len);
                r
            }
        }
    }

    /// Bytes between a stream's end and the next index offset: none, except after the last listed
    /// stream, where only the closing `</mediawiki>` stream may follow.
    fn check_after_stream(&self, rest: &[u8], at: u64, last: bool, next: u64) -> Result<(), String> {
        if !last {
            return Err(format!("a stream ends at byte {at} but the next index offset is {next}"));
        }
        if rest.len() > MAX_TAIL {
            return Err(format!(
                "{} bytes follow the last listed stream (at byte {at}); the index does not cover the dump",
                rest.len()
            ));
        }
        let (tail, _) = decode_one_stream(rest, at).map_err(|e| format!("after the last listed stream: {e}"))?;
        if memchr::memmem::find(&tail, b"<page").is_some() {
            return Err(format!("the stream at byte {at} holds pages the index does not list"));
        }
        Ok(())
    }

    fn process_stream(
        &self,
        offset: u64,
        len: u64,
        last: bool,
        first: u64,
        ids: &[u64],
    ) -> Result<Vec<PageResult>, WikiError> {
        let io_err = |source| WikiError::Io { path: self.dump.into(), source };
        let mismatch = |msg: String| WikiError::IndexMismatch {
            path: self.dump.into(),
            index: self.cfg.index.clone().unwrap_or_default(),
            msg,
        };
        let mut compressed = vec![0u8; len as usize];
        self.file.read_exact_at(&mut compressed, offset).map_err(io_err)?;
        if !is_bz2_header(&compressed) {
            return Err(mismatch(format!("no bzip2 stream starts at byte {offset}")));
        }
        let (mut xml, used) = decode_one_stream(&compressed, offset).map_err(io_err)?;
        if self.encoding != TextEncoding::Utf8 {
            xml = encoding::utf16_to_utf8(&xml, self.encoding == TextEncoding::Utf16Le).map_err(io_err)?;
        }
        if (used as u64) < len {
            self.check_after_stream(&compressed[used..], offset + used as u64, last, offset + len).map_err(mismatch)?;
        }
        let at = |o: u64| format!("in the bzip2 stream at byte {offset}, at byte {o} of its XML");
        let mut out = Vec::with_capacity(ids.len());
        let mut pos = 0;
        let mut k = 0usize;
        loop {
            match next_page(&xml, pos) {
                Ok(Some((s, e))) => {
                    let ordinal = first + k as u64;
                    let Some(&want) = ids.get(k) else {
                        return Err(mismatch(format!(
                            "the stream at byte {offset} holds more pages than the {} the index lists",
                            ids.len()
                        )));
                    };
                    let got = sniff_page_id(&xml[s..e]);
                    if got != Some(want) {
                        let got = got.map_or("no id".to_string(), |g| format!("page id {g}"));
                        return Err(mismatch(format!(
                            "the stream at byte {offset} holds {got} where the index lists page id {want}"
                        )));
                    }
                    if self.wanted(ordinal) {
                        out.push(self.classify(ordinal, &xml[s..e], |o| at(s as u64 + o))?);
                    }
                    k += 1;
                    pos = e;
                }
                Ok(None) => break,
                Err(s) => {
                    return Err(self.xml_error(
                        at(s as u64),
                        XmlError { offset: 0, msg: "page does not end in its stream (truncated XML)".into() },
                        sniff_page_id(&xml[s..]),
                    ));
                }
            }
        }
        if k != ids.len() {
            return Err(mismatch(format!(
                "the stream at byte {offset} holds {k} pages, the index lists {}",
                ids.len()
            )));
        }
        Ok(out)
    }
}

/// The page id of a `<page>` slice without a full parse (for error messages and index checks).
fn sniff_page_id(xml: &[u8]) -> Option<u64> {
    // The first <id> of a page is the page id (revision ids come after <revision>).
    let start = memchr::memmem::find(xml, b"<id>")? + 4;
    let end = start + memchr::memchr(b'<', &xml[start..])?;
    std::str::from_utf8(&xml[start..end]).ok()?.trim().parse().ok()
}

/// Opens a dump for front-to-back reading: bzip2 or plain, BOM handled, UTF-16 transcoded.
fn open_sequential(path: &Path, bar: &ProgressBar) -> Result<(Box<dyn Read + Send>, TextEncoding), WikiError> {
    let io_err = |source| WikiError::Io { path: path.into(), source };
    let mut file = File::open(path).map_err(io_err)?;
    let mut magic = [0u8; 4];
    let n = read_up_to(&mut file, &mut magic).map_err(io_err)?;
    if n == 0 {
        return Err(WikiError::Empty { path: path.into() });
    }
    let head = io::Cursor::new(magic[..n].to_vec()).chain(file);
    let mut reader: Box<dyn Read + Send> = if is_bz2_header(&magic[..n]) {
        Box::new(Bz2Reader::new(head, Some(bar.clone())))
    } else {
        Box::new(bar.wrap_read(head))
    };
    let mut start = [0u8; 3];
    let n = read_up_to(&mut reader, &mut start).map_err(io_err)?;
    let (enc, bom) = encoding::detect(&start[..n]);
    let rest = io::Cursor::new(start[bom..n].to_vec()).chain(reader);
    let reader: Box<dyn Read + Send> = match enc {
        TextEncoding::Utf8 => Box::new(rest),
        TextEncoding::Utf16Le => Box::new(Utf16Reader::new(rest, true)),
        TextEncoding::Utf16Be => Box::new(Utf16Reader::new(rest, false)),
    };
    Ok((reader, enc))
}

/// Reads `reader` until the first `<page` (or the end); returns the buffer and where the pages start.
fn read_header(reader: &mut dyn Read, path: &Path) -> Result<(Vec<u8>, usize), WikiError> {
    let mut buf = Vec::new();
    loop {
        if let Some(at) = memchr::memmem::find(&buf, b"<page") {
            return Ok((buf, at));
        }
        if buf.len() > MAX_HEADER {
            return Err(WikiError::NotADump {
                path: path.into(),
                msg: format!("no <page> in the first {} MiB", MAX_HEADER >> 20),
            });
        }
        let old = buf.len();
        buf.resize(old + (1 << 16), 0);
        let n = reader.read(&mut buf[old..]).map_err(|source| WikiError::Io { path: path.into(), source })?;
        buf.truncate(old + n);
        if n == 0 {
            let at = buf.len();
            return Ok((buf, at));
        }
    }
}

/// Reads up to 64 MiB further and returns the first read error, if any.
fn read_error_ahead(reader: &mut dyn Read, path: &Path) -> Option<WikiError> {
    let mut sink = vec![0u8; 1 << 20];
    for _ in 0..64 {
        match reader.read(&mut sink) {
            Ok(0) => return None,
            Ok(_) => {}
            Err(source) => return Some(WikiError::Io { path: path.into(), source }),
        }
    }
    None
}

fn header_info(header: &[u8], path: &Path) -> Result<SiteInfo, WikiError> {
    if header.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(WikiError::Empty { path: path.into() });
    }
    // The header alone is an unclosed document; parse it with its closing tag added.
    let mut doc = header.to_vec();
    doc.extend_from_slice(b"</mediawiki>");
    parse_header(&doc).map_err(|e| {
        if e.msg.starts_with("not a MediaWiki export") {
            WikiError::NotADump { path: path.into(), msg: one_line(e.msg) }
        } else {
            WikiError::Xml {
                path: path.into(),
                at: format!("at byte {} of the header", e.offset),
                msg: one_line(format!("malformed XML: {}", e.msg)),
            }
        }
    })
}

/// Front-to-back mode: decodes on this thread, sends chunks of wanted pages to `tx`.
fn produce_sequential(
    mut reader: Box<dyn Read + Send>,
    mut buf: Vec<u8>,
    pages_at: usize,
    path: &Path,
    wanted: &dyn Fn(u64) -> bool,
    tx: SyncSender<Result<Chunk, WikiError>>,
) {
    let result = (|| -> Result<(), WikiError> {
        let io_err = |source| WikiError::Io { path: path.into(), source };
        let mut base = 0u64; // XML offset of buf[0]
        let mut pos = pages_at;
        let mut ordinal = 0u64;
        let mut chunk_data = Vec::new();
        let mut chunk_pages = Vec::new();
        let mut eof = false;
        loop {
            match next_page(&buf, pos) {
                Ok(Some((s, e))) => {
                    if wanted(ordinal) {
                        let local = chunk_data.len();
                        chunk_data.extend_from_slice(&buf[s..e]);
                        chunk_pages.push((ordinal, base + s as u64, local, local + (e - s)));
                        if chunk_data.len() >= CHUNK_BYTES {
                            let chunk = Chunk::Pages {
                                data: std::mem::take(&mut chunk_data),
                                pages: std::mem::take(&mut chunk_pages),
                            };
                            if tx.send(Ok(chunk)).is_err() {
                                return Ok(());
                            }
                        }
                    }
                    ordinal += 1;
                    pos = e;
                }
                other => {
                    if eof {
                        return match other {
                            Err(s) => Err(WikiError::Xml {
                                path: path.into(),
                                at: format!(
                                    "at byte {} of the decompressed XML{}",
                                    base + s as u64,
                                    sniff_page_id(&buf[s..]).map_or(String::new(), |id| format!(", page id {id}"))
                                ),
                                msg: "the dump ends inside a <page> (truncated XML)".into(),
                            }),
                            _ => {
                                let tail = &buf[pos..];
                                if memchr::memmem::find(tail, b"</mediawiki>").is_none() {
                                    return Err(WikiError::Xml {
                                        path: path.into(),
                                        at: format!("at byte {} of the decompressed XML", base + buf.len() as u64),
                                        msg: "the dump ends without </mediawiki> (truncated XML)".into(),
                                    });
                                }
                                if !chunk_pages.is_empty() {
                                    let _ = tx.send(Ok(Chunk::Pages { data: chunk_data, pages: chunk_pages }));
                                }
                                Ok(())
                            }
                        };
                    }
                    // Keep the unfinished tail (a page, or a `<page` split across reads) and read on.
                    let keep_from = match other {
                        Err(s) => s,
                        _ => pos.max(buf.len().saturating_sub(8)),
                    };
                    buf.drain(..keep_from);
                    base += keep_from as u64;
                    pos -= pos.min(keep_from);
                    let old = buf.len();
                    let want = READ_BYTES.max(old);
                    buf.resize(old + want, 0);
                    let n = read_up_to(&mut reader, &mut buf[old..]).map_err(io_err)?;
                    buf.truncate(old + n);
                    eof = n < want;
                }
            }
        }
    })();
    if let Err(e) = result {
        let _ = tx.send(Err(e));
    }
}

/// Receives page results in dump order and writes them into parts.
struct PartSink {
    dir: PathBuf,
    meta: ShardMeta,
    part_pages: u64,
    open: Option<(u64, TextShardWriter, PartStats)>,
    written: Vec<(u64, PathBuf, PartStats)>,
}

impl PartSink {
    fn push(&mut self, r: PageResult) -> Result<(), WikiError> {
        let k = r.ordinal / self.part_pages;
        if self.open.as_ref().map(|o| o.0) != Some(k) {
            self.close()?;
            let w = TextShardWriter::create(&part_path(&self.dir, k), &self.meta, IdKind::Int)?;
            self.open = Some((k, w, PartStats::default()));
        }
        let (_, w, stats) = self.open.as_mut().expect("opened above");
        stats.pages += 1;
        stats.xml_bytes += r.xml_bytes;
        match r.outcome {
            Outcome::Article(rec) => {
                stats.articles += 1;
                stats.text_bytes += rec.text.len() as u64;
                w.write(rec)?;
            }
            Outcome::Redirect => stats.redirects += 1,
            Outcome::OtherNamespace => stats.other_namespaces += 1,
            Outcome::TooShort => stats.too_short += 1,
            Outcome::Disambiguation => stats.disambiguation += 1,
        }
        Ok(())
    }

    fn close(&mut self) -> Result<(), WikiError> {
        if let Some((k, w, stats)) = self.open.take() {
            let json = serde_json::to_string(&stats).expect("stats serialize");
            let (path, _) = w.finish(&[(PART_STATS_KEY.to_string(), json)])?;
            self.written.push((k, path, stats));
        }
        Ok(())
    }

    /// Removes the unfinished part, so a failed run leaves no half-written file behind.
    fn abort(&mut self) {
        if let Some((k, w, _)) = self.open.take() {
            drop(w);
            let _ = std::fs::remove_file(crate::io::tmp_path(&part_path(&self.dir, k)));
        }
    }
}

fn part_path(dir: &Path, k: u64) -> PathBuf {
    dir.join(format!("part-{k:05}.parquet"))
}

fn part_number(path: &Path) -> Option<u64> {
    let name = path.file_name()?.to_str()?;
    name.strip_prefix("part-")?.strip_suffix(".parquet")?.parse().ok()
}

/// Finds finished parts of this run in `dir`; refuses parts of another run. Removes stale temporaries.
fn existing_parts(dir: &Path, run_id: &str) -> Result<BTreeMap<u64, (PathBuf, PartStats)>, WikiError> {
    let mut found = BTreeMap::new();
    let rd = std::fs::read_dir(dir).map_err(|source| WikiError::Io { path: dir.into(), source })?;
    for entry in rd {
        let path = entry.map_err(|source| WikiError::Io { path: dir.into(), source })?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if name.starts_with("part-") && name.ends_with(crate::io::TMP_SUFFIX) {
            std::fs::remove_file(&path).map_err(|source| WikiError::Io { path: path.clone(), source })?;
            continue;
        }
        let Some(k) = part_number(&path) else { continue };
        let (kv, _) = crate::corpus::read_footer(&path)?;
        let meta: Option<ShardMeta> = kv.get(PARQUET_META_KEY).and_then(|v| serde_json::from_str(v).ok());
        if meta.as_ref().map(|m| m.run_id.as_str()) != Some(run_id) {
            return Err(WikiError::Output {
                dir: dir.into(),
                msg: format!(
                    "{} was written by a different run (other dump or settings); use a new --out directory or delete the old parts",
                    path.display()
                ),
            });
        }
        let stats =
            kv.get(PART_STATS_KEY).and_then(|v| serde_json::from_str(v).ok()).ok_or_else(|| WikiError::Output {
                dir: dir.into(),
                msg: format!("{} has no part statistics in its footer; delete it and resume", path.display()),
            })?;
        found.insert(k, (path, stats));
    }
    Ok(found)
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
        manifest.add_input(index, &env.progress)?;
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
            let (mut reader, enc) = open_sequential(dump, &bar)?;
            let (buf, at) = read_header(&mut reader, dump)?;
            let site = match header_info(&buf[..at], dump) {
                Ok(site) => site,
                // Garbage from a corrupt bzip2 block shows before its CRC fails: prefer the decoder's error.
                Err(e) => return Err(read_error_ahead(&mut reader, dump).unwrap_or(e)),
            };
            (site, enc, Some((reader, buf, at)))
        }
    };
    let lang = cfg.lang.clone().or_else(|| site.lang()).unwrap_or_else(|| "und".into());
    let source = format!("wikipedia:{}", site.dbname.clone().unwrap_or_else(|| lang.clone() + "wiki"));
    let syntax =
        Syntax::new(&site.namespaces, Some(&lang)).with_disambiguation_templates(&cfg.disambiguation_templates);
    let ctx =
        Ctx { cfg, dump, file, encoding, syntax, lang, source, site, wanted_parts: &wanted_parts, bar: bar.clone() };

    let sink = PartSink {
        dir: cfg.out.clone(),
        meta: shard_meta,
        part_pages: cfg.part_pages,
        open: None,
        written: Vec::new(),
    };
    let pool = env.pool();
    let window = 4 * pool.current_num_threads();
    let sink = std::thread::scope(|scope| -> Result<PartSink, WikiError> {
        let (chunks, producer): (Box<dyn Iterator<Item = Result<Chunk, WikiError>>>, _) = match (&index, sequential) {
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
                let (tx, rx) = sync_channel(2 * window);
                let wanted = &wanted_parts;
                let part_pages = cfg.part_pages;
                let handle = scope
                    .spawn(move || produce_sequential(reader, buf, at, dump, &move |ord| wanted(ord / part_pages), tx));
                (Box::new(rx.into_iter()), Some(handle))
            }
            (None, None) => unreachable!("front-to-back mode always has a reader"),
        };
        let (tx, rx): (SyncSender<Vec<PageResult>>, Receiver<Vec<PageResult>>) = sync_channel(2 * window);
        let mut sink = sink;
        let writer = scope.spawn(move || -> Result<PartSink, (WikiError, PartSink)> {
            for batch in rx {
                for r in batch {
                    if let Err(e) = sink.push(r) {
                        return Err((e, sink));
                    }
                }
            }
            Ok(sink)
        });
        let mut chunks = chunks;
        let mut failure = None;
        'outer: loop {
            let mut window_chunks = Vec::with_capacity(window);
            for c in chunks.by_ref().take(window) {
                match c {
                    Ok(c) => window_chunks.push(c),
                    Err(e) => {
                        failure = Some(e);
                        break;
                    }
                }
            }
            if window_chunks.is_empty() && failure.is_none() {
                break;
            }
            let results: Vec<_> = pool.install(|| window_chunks.par_iter().map(|c| ctx.process(c)).collect());
            for r in results {
                match r {
                    Ok(v) => {
                        if tx.send(v).is_err() {
                            break 'outer;
                        }
                    }
                    Err(e) => {
                        failure = failure.or(Some(e));
                        break 'outer;
                    }
                }
            }
            if failure.is_some() {
                break;
            }
        }
        // Corrupt bzip2 data is only caught by the block CRC after the block's bytes were handed out, so
        // malformed XML may be its symptom: look a little further ahead for the root cause.
        if matches!(failure, Some(WikiError::Xml { .. })) {
            if let Some(Err(e)) = chunks.by_ref().take(64).find(Result::is_err) {
                failure = Some(e);
            }
        }
        drop(tx);
        drop(chunks);
        if let Some(p) = producer {
            let _ = p.join();
        }
        let sink_result = writer.join().expect("writer thread does not panic");
        match (failure, sink_result) {
            (None, Ok(mut s)) => {
                s.close()?;
                Ok(s)
            }
            (Some(e), Ok(mut s)) | (_, Err((e, mut s))) => {
                s.abort();
                Err(e)
            }
        }
    });
    let mut sink = sink?;
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
