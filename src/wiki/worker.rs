//! The work of one thread: decode a stream or take decoded pages, parse, classify and clean them.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use indicatif::ProgressBar;

use super::bz2::{decode_one_stream, decode_one_stream_into, is_bz2_header};
use super::encoding::{self, TextEncoding};
use super::reader::sniff_page_id;
use super::wikitext::Syntax;
use super::xml::{next_page, one_line, parse_page, SiteInfo, XmlError};
use super::{IngestConfig, WikiError};
use crate::corpus::{DocId, TextRecord};

/// Largest tail (the closing stream) accepted after the last stream an index lists.
pub(super) const MAX_TAIL: usize = 1 << 20;

/// What became of one page.
pub(super) enum Outcome {
    Article(TextRecord),
    Redirect,
    OtherNamespace,
    TooShort,
    Disambiguation,
}

pub(super) struct PageResult {
    pub(super) ordinal: u64,
    pub(super) xml_bytes: u64,
    pub(super) outcome: Outcome,
}

/// Work for one worker: a stream of a multistream dump, or already-decoded pages.
pub(super) enum Chunk {
    Stream { offset: u64, len: u64, last: bool, first_ordinal: u64, page_ids: Vec<u64> },
    Pages { data: Vec<u8>, pages: Vec<(u64, u64, usize, usize)> },
}

thread_local! {
    /// Per-thread compressed and decoded stream buffers, reused across streams.
    static STREAM_BUFFERS: std::cell::RefCell<(Vec<u8>, Vec<u8>)> = const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
}

/// Shared, read-only context of the workers.
pub(super) struct Ctx<'a> {
    pub(super) cfg: &'a IngestConfig,
    pub(super) dump: &'a Path,
    pub(super) file: File,
    pub(super) encoding: TextEncoding,
    pub(super) syntax: Syntax,
    pub(super) lang: String,
    pub(super) source: String,
    pub(super) site: SiteInfo,
    pub(super) wanted_parts: &'a (dyn Fn(u64) -> bool + Sync),
    pub(super) bar: ProgressBar,
}

impl Ctx<'_> {
    pub(super) fn wanted(&self, ordinal: u64) -> bool {
        (self.wanted_parts)(ordinal / self.cfg.part_pages)
    }

    pub(super) fn xml_error(&self, at: String, e: XmlError, page: Option<u64>) -> WikiError {
        let at = match page {
            Some(id) => format!("{at}, page id {id}"),
            None => at,
        };
        WikiError::Xml { path: self.dump.into(), at, msg: one_line(e.msg) }
    }

    pub(super) fn classify(
        &self,
        ordinal: u64,
        xml: &[u8],
        at: impl Fn(u64) -> String,
    ) -> Result<PageResult, WikiError> {
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
            if self.cfg.min_chars > 0 && text.chars().count() < self.cfg.min_chars {
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

    pub(super) fn process(&self, chunk: &Chunk) -> Result<Vec<PageResult>, WikiError> {
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
    pub(super) fn check_after_stream(&self, rest: &[u8], at: u64, last: bool, next: u64) -> Result<(), String> {
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

    pub(super) fn process_stream(
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
        STREAM_BUFFERS.with_borrow_mut(|(compressed, decoded)| {
            compressed.resize(len as usize, 0);
            self.file.read_exact_at(compressed, offset).map_err(io_err)?;
            if !is_bz2_header(compressed) {
                return Err(mismatch(format!("no bzip2 stream starts at byte {offset}")));
            }
            let used = decode_one_stream_into(compressed, offset, decoded).map_err(io_err)?;
            if (used as u64) < len {
                self.check_after_stream(&compressed[used..], offset + used as u64, last, offset + len)
                    .map_err(mismatch)?;
            }
            if self.encoding != TextEncoding::Utf8 {
                let utf8 = encoding::utf16_to_utf8(decoded, self.encoding == TextEncoding::Utf16Le).map_err(io_err)?;
                return self.stream_pages(&utf8, offset, first, ids);
            }
            self.stream_pages(decoded, offset, first, ids)
        })
    }

    /// Splits a decoded stream into pages, checks them against the index, and classifies them.
    fn stream_pages(&self, xml: &[u8], offset: u64, first: u64, ids: &[u64]) -> Result<Vec<PageResult>, WikiError> {
        let mismatch = |msg: String| WikiError::IndexMismatch {
            path: self.dump.into(),
            index: self.cfg.index.clone().unwrap_or_default(),
            msg,
        };
        let at = |o: u64| format!("in the bzip2 stream at byte {offset}, at byte {o} of its XML");
        let mut out = Vec::with_capacity(ids.len());
        let mut pos = 0;
        let mut k = 0usize;
        loop {
            match next_page(xml, pos) {
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
