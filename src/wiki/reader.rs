//! Front-to-back reading: open any dump (bz2 or plain, UTF-8 or UTF-16), read its header, and
//! cut the page stream into chunks for the workers.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;
use std::sync::mpsc::SyncSender;

use indicatif::ProgressBar;

use super::bz2::is_bz2_header;
use super::bz2block::ParallelBz2Reader;
use super::encoding::{self, TextEncoding, Utf16Reader};
use super::worker::Chunk;
use super::xml::{next_page, one_line, parse_header, SiteInfo};
use super::WikiError;
use crate::io::read_up_to;

/// Largest header (everything before the first `<page>`) accepted.
const MAX_HEADER: usize = 64 << 20;
/// Pages of XML handed to a worker at once in front-to-back mode.
const CHUNK_BYTES: usize = 1 << 20;
/// Bytes read at a time in front-to-back mode.
const READ_BYTES: usize = 4 << 20;

/// The page id of a `<page>` slice without a full parse (for error messages and index checks).
pub(super) fn sniff_page_id(xml: &[u8]) -> Option<u64> {
    // The first <id> of a page is the page id (revision ids come after <revision>).
    let start = memchr::memmem::find(xml, b"<id>")? + 4;
    let end = start + memchr::memchr(b'<', &xml[start..])?;
    std::str::from_utf8(&xml[start..end]).ok()?.trim().parse().ok()
}

/// Opens a dump for front-to-back reading: bzip2 or plain, BOM handled, UTF-16 transcoded.
pub(super) fn open_sequential(
    path: &Path,
    bar: &ProgressBar,
    threads: usize,
) -> Result<(Box<dyn Read + Send>, TextEncoding), WikiError> {
    let io_err = |source| WikiError::Io { path: path.into(), source };
    let mut file = File::open(path).map_err(io_err)?;
    let mut magic = [0u8; 4];
    let n = read_up_to(&mut file, &mut magic).map_err(io_err)?;
    if n == 0 {
        return Err(WikiError::Empty { path: path.into() });
    }
    let mut reader: Box<dyn Read + Send> = if is_bz2_header(&magic[..n]) {
        // Blocks are decoded in parallel; the scanner re-reads the file from its start.
        Box::new(ParallelBz2Reader::new(File::open(path).map_err(io_err)?, threads, bar.clone()))
    } else {
        Box::new(bar.wrap_read(io::Cursor::new(magic[..n].to_vec()).chain(file)))
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
pub(super) fn read_header(reader: &mut dyn Read, path: &Path) -> Result<(Vec<u8>, usize), WikiError> {
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

pub(super) fn header_info(header: &[u8], path: &Path) -> Result<SiteInfo, WikiError> {
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
pub(super) fn produce_sequential(
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
