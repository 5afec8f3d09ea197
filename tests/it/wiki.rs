//! `wiki ingest` on the hand-written Turkish dump (tests/fixtures/wiki): clean text against
//! expected.jsonl, determinism across threads, modes, shards and resume, and every bad-input error.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use langadapt::corpus::{list_shards, DocId, TextRecord, TextShardReader};
use langadapt::wiki::{self, IngestConfig};
use langadapt::{Env, Progress};

use crate::common::{file_names, fixture, langadapt, parquet_files, stderr};

const PLAIN: &str = "wiki/trwiki-sample-pages-articles.xml.bz2";
const MULTI: &str = "wiki/trwiki-sample-pages-articles-multistream.xml.bz2";
const INDEX: &str = "wiki/trwiki-sample-pages-articles-multistream-index.txt.bz2";

fn env(threads: usize) -> Env {
    Env { threads, progress: Progress { quiet: true } }
}

fn records(dir: &Path) -> Vec<TextRecord> {
    list_shards(dir).unwrap().iter().flat_map(|p| TextShardReader::open(p).unwrap().map(Result::unwrap)).collect()
}

fn ingest(cfg: &IngestConfig, threads: usize) -> wiki::IngestReport {
    wiki::run(cfg, &env(threads)).unwrap_or_else(|e| panic!("ingest failed: {e}"))
}

/// The fixture's XML, decompressed.
fn dump_xml() -> Vec<u8> {
    let mut xml = Vec::new();
    bzip2::read::MultiBzDecoder::new(std::fs::File::open(fixture(PLAIN)).unwrap()).read_to_end(&mut xml).unwrap();
    xml
}

fn bz2(data: &[u8]) -> Vec<u8> {
    let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::best());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

#[test]
fn clean_text_matches_expected_jsonl() {
    let dir = tempfile::tempdir().unwrap();
    let report = ingest(&IngestConfig::new(fixture(PLAIN), dir.path()), 2);
    let got = records(dir.path());
    let expected: Vec<serde_json::Value> = std::fs::read_to_string(fixture("wiki/expected.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(got.len(), expected.len());
    for (g, e) in got.iter().zip(&expected) {
        assert_eq!(g.id, DocId::Int(e["id"].as_i64().unwrap()));
        assert_eq!(g.title, e["title"].as_str().unwrap());
        assert_eq!(g.text, e["text"].as_str().unwrap(), "page {}", g.title);
        assert_eq!((g.lang.as_str(), g.source.as_str()), ("tr", "wikipedia:trwiki"));
    }
    let s = &report.stats;
    assert_eq!((s.pages, s.articles, s.redirects, s.other_namespaces, s.too_short), (40, 26, 6, 8, 0));
    let m = langadapt::manifest::Manifest::read(&dir.path().join("manifest.json")).unwrap();
    assert_eq!(m.counts["articles"], 26);
    assert_eq!(m.inputs[0].sha256, sha256_hex(&std::fs::read(fixture(PLAIN)).unwrap()));
    assert_eq!(m.outputs.len(), 1);
    assert_eq!(m.outputs[0].rows, Some(26));
}

fn sha256_hex(b: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(b))
}

#[test]
fn min_chars_and_disambiguation_filters_count_drops() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = IngestConfig::new(fixture(PLAIN), dir.path());
    cfg.min_chars = 200;
    cfg.drop_disambiguation = true;
    let report = ingest(&cfg, 1);
    let got = records(dir.path());
    assert!(got.iter().all(|r| r.text.chars().count() >= 200));
    assert!(!got.iter().any(|r| r.title == "Işık (anlam ayrımı)"));
    assert_eq!(report.stats.disambiguation, 1);
    assert_eq!(report.stats.articles + report.stats.too_short + report.stats.disambiguation, 26);
    assert_eq!(report.stats.articles as usize, got.len());
}

#[test]
fn same_bytes_with_one_and_two_threads_and_with_or_without_index() {
    let (a, b, c) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut cfg = IngestConfig::new(fixture(PLAIN), a.path());
    cfg.part_pages = 7;
    ingest(&cfg, 1);
    cfg.out = b.path().into();
    ingest(&cfg, 2);
    assert_eq!(parquet_files(a.path()), parquet_files(b.path()));
    assert_eq!(parquet_files(a.path()).len(), 6);

    let mut multi = IngestConfig::new(fixture(MULTI), c.path());
    multi.index = Some(fixture(INDEX));
    multi.part_pages = 7;
    ingest(&multi, 2);
    assert_eq!(records(a.path()), records(c.path()));
    // The same multistream file read front to back (no index): the index only speeds reading up, the
    // parts are the same bytes.
    let d = tempfile::tempdir().unwrap();
    multi.index = None;
    multi.out = d.path().into();
    ingest(&multi, 1);
    assert_eq!(parquet_files(c.path()), parquet_files(d.path()));
}

#[test]
fn plain_xml_utf16_and_missing_siteinfo_read_the_same() {
    let xml = dump_xml();
    let whole = tempfile::tempdir().unwrap();
    ingest(&IngestConfig::new(fixture(PLAIN), whole.path()), 2);
    let expected = records(whole.path());

    let tmp = tempfile::tempdir().unwrap();
    let plain = tmp.path().join("dump.xml");
    std::fs::write(&plain, &xml).unwrap();
    let text = String::from_utf8(xml.clone()).unwrap();
    let mut le = vec![0xFF, 0xFE];
    le.extend(text.encode_utf16().flat_map(u16::to_le_bytes));
    let utf16le = tmp.path().join("dump16le.xml");
    std::fs::write(&utf16le, &le).unwrap();
    let mut be = vec![0xFE, 0xFF];
    be.extend(text.encode_utf16().flat_map(u16::to_be_bytes));
    let utf16be = tmp.path().join("dump16be.xml.bz2");
    std::fs::write(&utf16be, bz2(&be)).unwrap();
    for (i, input) in [plain, utf16le, utf16be].iter().enumerate() {
        let out = tmp.path().join(format!("out{i}"));
        ingest(&IngestConfig::new(input, &out), 2);
        assert_eq!(records(&out), expected, "{}", input.display());
    }

    // No <siteinfo>: namespaces come from <ns>, file/category names from the language's aliases.
    let start = text.find("<siteinfo>").unwrap();
    let end = text.find("</siteinfo>").unwrap() + "</siteinfo>".len();
    let bare = format!("{}{}", &text[..start], &text[end..]);
    let bare_path = tmp.path().join("bare.xml");
    std::fs::write(&bare_path, bare).unwrap();
    let out = tmp.path().join("bare");
    ingest(&IngestConfig::new(&bare_path, &out), 1);
    assert_eq!(records(&out), expected);
}

#[test]
fn shards_together_equal_the_whole() {
    let (whole, s0, s1) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    for (dir, shard, idx) in [(&whole, "0/1", false), (&s0, "0/2", true), (&s1, "1/2", false)] {
        let mut cfg = IngestConfig::new(fixture(MULTI), dir.path());
        cfg.part_pages = 7;
        cfg.shard = shard.parse().unwrap();
        // Shards may read the dump either way; the bytes of their parts do not depend on it.
        cfg.index = idx.then(|| fixture(INDEX));
        ingest(&cfg, 2);
    }
    let mut union = parquet_files(s0.path());
    union.extend(parquet_files(s1.path()));
    union.sort();
    let whole_files = parquet_files(whole.path());
    assert_eq!(union, whole_files);
    assert_eq!(records_of(&union).len(), 26);
    assert!(s0.path().join("manifest-0-of-2.json").exists() && s1.path().join("manifest-1-of-2.json").exists());
}

/// Records of in-memory part files, in part order.
fn records_of(files: &[(String, Vec<u8>)]) -> Vec<TextRecord> {
    let dir = tempfile::tempdir().unwrap();
    files
        .iter()
        .flat_map(|(name, bytes)| {
            let p = dir.path().join(name);
            std::fs::write(&p, bytes).unwrap();
            TextShardReader::open(&p).unwrap().map(Result::unwrap).collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn resume_after_a_crash_equals_a_clean_run() {
    let (clean, crashed) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut cfg = IngestConfig::new(fixture(PLAIN), clean.path());
    cfg.part_pages = 7;
    ingest(&cfg, 2);
    let clean_files = parquet_files(clean.path());

    // The state a crash while writing part 3 leaves: parts 0-2 finished, part 3 half written, no manifest.
    for (name, bytes) in &clean_files[..3] {
        std::fs::write(crashed.path().join(name), bytes).unwrap();
    }
    std::fs::write(crashed.path().join("part-00003.parquet.tmp"), &clean_files[3].1[..100]).unwrap();
    cfg.out = crashed.path().into();
    let err = wiki::run(&cfg, &env(2)).unwrap_err().to_string();
    assert!(err.contains("pass --resume"), "{err}");
    cfg.resume = true;
    let report = ingest(&cfg, 1);
    assert_eq!(report.resumed_parts, 3);
    assert_eq!(parquet_files(crashed.path()), clean_files);
    assert_eq!(report.stats.articles, 26);
    assert!(!file_names(crashed.path()).iter().any(|n| n.ends_with(".tmp")));
    let m1 = langadapt::manifest::Manifest::read(&clean.path().join("manifest.json")).unwrap();
    let m2 = langadapt::manifest::Manifest::read(&crashed.path().join("manifest.json")).unwrap();
    assert_eq!((m1.run_id, m1.outputs), (m2.run_id, m2.outputs));

    // Parts of another run (different settings) are refused, not mixed in.
    cfg.min_chars = 10;
    let err = wiki::run(&cfg, &env(1)).unwrap_err().to_string();
    assert!(err.contains("was written by a different run"), "{err}");
}

#[test]
fn killed_process_resumes_without_losing_or_duplicating_pages() {
    // A dump large enough that the process is still running when we kill it (asserted below).
    const COPIES: usize = 120;
    let xml = String::from_utf8(dump_xml()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let pages_start = xml.find("  <page>").unwrap();
    let pages_end = xml.rfind("</mediawiki>").unwrap();
    let mut big = xml[..pages_start].to_string();
    for _ in 0..COPIES {
        big.push_str(&xml[pages_start..pages_end]);
    }
    big.push_str("</mediawiki>\n");
    let dump = tmp.path().join("big.xml");
    std::fs::write(&dump, &big).unwrap();
    let clean = tmp.path().join("clean");
    let out = tmp.path().join("killed");
    let args = |o: &Path| -> Vec<String> {
        ["wiki", "ingest", dump.to_str().unwrap(), "--out", o.to_str().unwrap(), "--part-pages", "40", "--threads", "1"]
            .map(String::from)
            .to_vec()
    };
    let status =
        std::process::Command::new(env!("CARGO_BIN_EXE_langadapt")).arg("--quiet").args(args(&clean)).status().unwrap();
    assert!(status.success());
    let mut child =
        std::process::Command::new(env!("CARGO_BIN_EXE_langadapt")).arg("--quiet").args(args(&out)).spawn().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !out.join("part-00002.parquet").exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    child.kill().unwrap();
    let status = child.wait().unwrap();
    // Issue 19 (6): the child was still running when killed, or this would not test a crash.
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(9), "the run ended before the kill ({status}): make the dump bigger");
    assert!(!out.join("manifest.json").exists(), "a killed run must not look finished");
    let mut resume = args(&out);
    resume.push("--resume".into());
    let r = langadapt(&resume.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(r.status.success(), "{}", stderr(&r));
    assert_eq!(parquet_files(&out), parquet_files(&clean));
    assert_eq!(records(&out).len(), 26 * COPIES);
}

/// Runs the CLI on `dump` (and `index`), expects failure; returns stderr and checks no parquet is left.
fn fails(dump: &Path, index: Option<&Path>) -> String {
    let out = tempfile::tempdir().unwrap();
    let mut args = vec!["wiki", "ingest", dump.to_str().unwrap(), "--out", out.path().to_str().unwrap()];
    if let Some(i) = index {
        args.extend(["--index", i.to_str().unwrap()]);
    }
    let r = langadapt(&args);
    assert_eq!(r.status.code(), Some(2), "expected exit 2 for {}: {}", dump.display(), stderr(&r));
    let names = file_names(out.path());
    assert!(!names.iter().any(|n| n.contains(".parquet") || n == "manifest.json"), "left behind: {names:?}");
    let err = stderr(&r);
    assert_eq!(err.trim_end().lines().count(), 1, "one-line error expected: {err}");
    assert!(err.starts_with(&format!("error: {}", dump.display())), "error must name the file: {err}");
    err
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

#[test]
fn bad_inputs_fail_with_one_line_naming_file_and_offset() {
    let tmp = tempfile::tempdir().unwrap();
    let plain = std::fs::read(fixture(PLAIN)).unwrap();

    let empty = write(tmp.path(), "empty.xml.bz2", b"");
    assert!(fails(&empty, None).contains("empty file"));

    let html = write(tmp.path(), "page.html", b"<html><body>hello</body></html>");
    assert!(fails(&html, None).contains("not a MediaWiki dump: not a MediaWiki export: root element is <html>"));

    let binary = write(tmp.path(), "random.bin", &[0x89, b'P', b'N', b'G', 0, 1, 2, 3]);
    let err = fails(&binary, None);
    assert!(err.contains("not a MediaWiki dump") || err.contains("malformed XML"), "{err}");

    let cut = plain.len() * 2 / 3;
    let truncated = write(tmp.path(), "truncated.xml.bz2", &plain[..cut]);
    assert!(
        fails(&truncated, None).contains(&format!("truncated bzip2 stream: input ends at byte {cut} inside a stream"))
    );

    let mut corrupt = plain.clone();
    let mid = corrupt.len() / 2;
    corrupt[mid] ^= 0xFF;
    let corrupt = write(tmp.path(), "corrupt.xml.bz2", &corrupt);
    let err = fails(&corrupt, None);
    assert!(err.contains("corrupt bzip2 data") && err.contains(" at byte "), "{err}");

    let xml = String::from_utf8(dump_xml()).unwrap();
    let broken = xml.replacen("<title>Simit</title>", "<title>Simit</titel>", 1);
    let at = broken.find("<page>\n    <title>Simit").unwrap();
    let malformed = write(tmp.path(), "malformed.xml.bz2", &bz2(broken.as_bytes()));
    let err = fails(&malformed, None);
    assert!(err.contains("malformed XML") && err.contains("page id 17"), "{err}");
    let offset: u64 = err.split("at byte ").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap();
    assert!(
        offset >= at as u64 && offset < at as u64 + 200,
        "offset {offset} should point into the page at {at}: {err}"
    );

    let unterminated = write(tmp.path(), "cut.xml", &xml.as_bytes()[..xml.len() / 2]);
    assert!(fails(&unterminated, None).contains("the dump ends inside a <page> (truncated XML)"));
    let no_end = write(tmp.path(), "noend.xml", xml.trim_end().strip_suffix("</mediawiki>").unwrap().as_bytes());
    assert!(fails(&no_end, None).contains("the dump ends without </mediawiki>"));
}

#[test]
fn index_that_does_not_match_the_dump_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let mut idx = String::new();
    bzip2::read::BzDecoder::new(std::fs::File::open(fixture(INDEX)).unwrap()).read_to_string(&mut idx).unwrap();
    let multi = fixture(MULTI);

    // Offsets shifted by one byte: no bzip2 stream starts there.
    let shifted: String = idx
        .lines()
        .map(|l| {
            let (off, rest) = l.split_once(':').unwrap();
            format!("{}:{rest}\n", off.parse::<u64>().unwrap() + 1)
        })
        .collect();
    let p = write(tmp.path(), "shifted.txt", shifted.as_bytes());
    let err = fails(&multi, Some(&p));
    assert!(err.contains("does not match the dump") && err.contains("at byte"), "{err}");

    // A page id the stream does not hold.
    let wrong_id = idx.replacen(":12:", ":999:", 1);
    let p = write(tmp.path(), "wrongid.txt.bz2", &bz2(wrong_id.as_bytes()));
    let err = fails(&multi, Some(&p));
    assert!(err.contains("where the index lists page id 999"), "{err}");

    // The index of another dump (the single-stream file has no stream at these offsets).
    let err = fails(&fixture(PLAIN), Some(&fixture(INDEX)));
    assert!(err.contains("does not match the dump") || err.contains("bzip2"), "{err}");

    // Garbage index lines name the line.
    let p = write(tmp.path(), "garbage.txt", b"597:5:Kedi\nhello\n");
    let r = langadapt(&[
        "wiki",
        "ingest",
        multi.to_str().unwrap(),
        "--out",
        tmp.path().join("o").to_str().unwrap(),
        "--index",
        p.to_str().unwrap(),
    ]);
    assert_eq!(r.status.code(), Some(2));
    assert!(stderr(&r).contains("garbage.txt:2: expected OFFSET:PAGEID:TITLE"), "{}", stderr(&r));
}

#[test]
fn cli_json_report_and_corpus_cat_show_what_was_written() {
    let out = tempfile::tempdir().unwrap();
    let o = out.path().to_str().unwrap();
    let dump = fixture(PLAIN);
    let r = langadapt(&["wiki", "ingest", dump.to_str().unwrap(), "--out", o, "--json", "--threads", "2"]);
    assert!(r.status.success(), "{}", stderr(&r));
    let report: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
    assert_eq!(report["stats"]["articles"], 26);
    assert_eq!(report["stats"]["redirects"], 6);
    assert_eq!(report["parts"].as_array().unwrap().len(), 1);

    let cat = langadapt(&["corpus", "cat", o, "--limit", "2"]);
    assert!(cat.status.success(), "{}", stderr(&cat));
    let lines: Vec<serde_json::Value> =
        String::from_utf8(cat.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2);
    assert_eq!((lines[0]["id"].as_i64(), lines[0]["title"].as_str()), (Some(5), Some("Kedi")));
    assert_eq!(lines[1]["title"], "Çay");
    assert_eq!(lines[1]["lang"], "tr");

    let bad = langadapt(&["wiki", "ingest", dump.to_str().unwrap(), "--out", o, "--shard", "2/2"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(stderr(&bad).contains("invalid shard '2/2': expected i/N with 0 <= i < N"), "{}", stderr(&bad));
}

#[test]
fn extra_disambiguation_template_is_honoured() {
    let xml = String::from_utf8(dump_xml()).unwrap().replace("{{Anlam ayrımı}}", "{{Belirsiz}}");
    let tmp = tempfile::tempdir().unwrap();
    let dump = write(tmp.path(), "d.xml", xml.as_bytes());
    let mut cfg = IngestConfig::new(&dump, tmp.path().join("a"));
    cfg.drop_disambiguation = true;
    assert_eq!(ingest(&cfg, 1).stats.disambiguation, 0);
    cfg.out = tmp.path().join("b");
    cfg.disambiguation_templates = vec!["Belirsiz".into()];
    assert_eq!(ingest(&cfg, 1).stats.disambiguation, 1);
}
