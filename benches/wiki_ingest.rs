//! `wiki ingest` against its peers on one generated dump: `cargo bench --bench wiki_ingest`.
//!
//! Builds a deterministic MediaWiki export (`LANGADAPT_BENCH_MB` MB of XML, default 64) in Wikimedia's
//! multistream layout with its index under target/bench-data/, then times on the same file and cores:
//! `bzip2 -dc`, `lbzip2 -dc -n2` (the decompression bound), langadapt (2 threads with the index, 1
//! thread, and front to back without the index) and wikiextractor (`WIKIEXTRACTOR`, default
//! /tmp/bench-venv/bin/wikiextractor) when installed. Prints a table and rewrites benches/RESULTS.md.

use std::fmt::Write as _;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use rayon::prelude::*;

/// Pages per bzip2 stream, as Wikimedia writes them.
const PAGES_PER_STREAM: usize = 100;
/// Timed runs per tool; the median is reported.
const RUNS: usize = 3;

/// xorshift64*: a fixed-seed generator, so the dump is the same on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[self.below(xs.len())]
    }
}

const WORDS: &[&str] = &[
    "köy",
    "nüfus",
    "tarih",
    "ırmak",
    "dağ",
    "şehir",
    "yıl",
    "bölge",
    "halk",
    "ekonomi",
    "tarım",
    "okul",
    "cami",
    "çeşme",
    "yol",
    "göl",
    "orman",
    "kuş",
    "balık",
    "ağaç",
    "ev",
    "aile",
    "dil",
    "kültür",
    "müzik",
    "savaş",
    "barış",
    "antlaşma",
    "kral",
    "imparatorluk",
    "bilim",
    "ışık",
    "enerji",
    "güneş",
    "ay",
    "yıldız",
    "İstanbul",
    "Ankara",
    "İzmir",
    "Işıklı",
    "Kuzgunlu",
    "önemli",
    "büyük",
    "küçük",
    "eski",
    "yeni",
    "güzel",
    "olarak",
    "ile",
    "ve",
    "bir",
    "bu",
    "da",
    "de",
    "için",
    "gibi",
    "kadar",
    "sonra",
    "önce",
    "arasında",
];

/// A sentence of `n` words with random inline markup.
fn sentence(r: &mut Rng, out: &mut String) {
    let n = 6 + r.below(14);
    for i in 0..n {
        if i > 0 {
            out.push(' ');
        }
        let w = r.pick(WORDS);
        match r.below(20) {
            0 => write!(out, "[[{w}]]").unwrap(),
            1 => write!(out, "[[{w} {}|{w}]]", r.pick(WORDS)).unwrap(),
            2 => write!(out, "[[{w}]]lar").unwrap(),
            3 => write!(out, "'''{w}'''").unwrap(),
            4 => write!(out, "''{w}''").unwrap(),
            5 => write!(out, "{w}&amp;nbsp;{}", r.below(1000)).unwrap(),
            6 => write!(out, "{w}{{{{sfn|Yazar|{}|s=4}}}}", 1900 + r.below(120)).unwrap(),
            _ => out.push_str(w),
        }
    }
    out.push('.');
    match r.below(6) {
        0 => out.push_str("&lt;ref&gt;Örnek kaynak, s. 12.&lt;/ref&gt;"),
        1 => out.push_str("&lt;ref name=&quot;a&quot; /&gt;"),
        _ => {}
    }
}

/// Wikitext of one article, XML-escaped as in the dump, roughly `target` bytes long.
fn article(r: &mut Rng, target: usize) -> String {
    let mut t = String::with_capacity(target + 512);
    t.push_str(
        "{{Bilgi kutusu yerleşim\n| ad = X\n| nüfus = {{formatnum:1250}}\n| harita = {{Koordinat|40|30|K}}\n}}\n",
    );
    let mut section = 0;
    while t.len() < target {
        match r.below(12) {
            0 => {
                section += 1;
                write!(t, "\n== Bölüm {section} ==\n").unwrap();
            }
            1 => t.push_str(
                "{| class=&quot;wikitable&quot;\n! Yıl !! Nüfus\n|-\n| 2000 || 1480\n|-\n| 2010 || 1320\n|}\n",
            ),
            2 => {
                for _ in 0..3 {
                    t.push_str("* ");
                    sentence(r, &mut t);
                    t.push('\n');
                }
            }
            3 => t.push_str("[[Dosya:Örnek.jpg|küçükresim|Bir [[köy]] görünümü]]\n"),
            4 => t.push_str("&lt;!-- düzenleyici notu --&gt;\n"),
            _ => {
                for _ in 0..4 {
                    sentence(r, &mut t);
                    t.push(' ');
                }
                t.push('\n');
            }
        }
    }
    t.push_str("\n== Kaynakça ==\n{{Kaynakça}}\n&lt;references /&gt;\n\n[[Kategori:Örnek]]\n[[en:Example]]\n");
    t
}

fn page_xml(id: u64, r: &mut Rng) -> (String, String) {
    let kind = r.below(10);
    let (title, ns, redirect, text) = match kind {
        0 | 1 => (format!("Yönlendirme {id}"), 0, true, format!("#YÖNLENDİRME [[Sayfa {}]]", id / 2)),
        2 => (format!("Kategori:Konu {id}"), 14, false, "Bu kategori örnek sayfaları içerir.".to_string()),
        _ => {
            // Sizes from 200 B to ~200 KB, most of them small, as in real wikis.
            let size = 200 + (r.below(1000) * r.below(1000) * r.below(1000)) / 5_000;
            (format!("Sayfa {id}"), 0, false, article(r, size))
        }
    };
    let mut x = String::with_capacity(text.len() + 512);
    write!(x, "  <page>\n    <title>{title}</title>\n    <ns>{ns}</ns>\n    <id>{id}</id>\n").unwrap();
    if redirect {
        writeln!(x, "    <redirect title=\"Sayfa {}\" />", id / 2).unwrap();
    }
    write!(
        x,
        "    <revision>\n      <id>{}</id>\n      <timestamp>2024-05-06T07:08:09Z</timestamp>\n      \
         <contributor>\n        <username>Örnek</username>\n        <id>42</id>\n      </contributor>\n      \
         <model>wikitext</model>\n      <format>text/x-wiki</format>\n      \
         <text bytes=\"{}\" xml:space=\"preserve\">{text}</text>\n      <sha1>0</sha1>\n    </revision>\n  </page>\n",
        id + 1_000_000,
        text.len()
    )
    .unwrap();
    (title, x)
}

const HEADER: &str = r#"<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.11/" version="0.11" xml:lang="tr">
  <siteinfo>
    <sitename>Vikipedi</sitename>
    <dbname>trwiki</dbname>
    <namespaces>
      <namespace key="0" case="first-letter" />
      <namespace key="6" case="first-letter">Dosya</namespace>
      <namespace key="10" case="first-letter">Şablon</namespace>
      <namespace key="14" case="first-letter">Kategori</namespace>
    </namespaces>
  </siteinfo>
"#;

fn bz2(data: &[u8]) -> Vec<u8> {
    let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::best());
    e.write_all(data).expect("compress in memory");
    e.finish().expect("compress in memory")
}

/// Dump and index paths, generated unless already there for this size.
struct Dump {
    bz2: PathBuf,
    index: PathBuf,
    xml_bytes: u64,
    pages: u64,
}

fn generate(dir: &Path, mb: usize) -> Dump {
    let bz2_path = dir.join(format!("bench{mb}-pages-articles-multistream.xml.bz2"));
    let index = dir.join(format!("bench{mb}-pages-articles-multistream-index.txt.bz2"));
    let info = dir.join(format!("bench{mb}.json"));
    if let Ok(s) = std::fs::read_to_string(&info) {
        let v: serde_json::Value = serde_json::from_str(&s).expect("bench info is JSON");
        if bz2_path.exists() && index.exists() {
            let (xml_bytes, pages) = (v["xml_bytes"].as_u64().unwrap_or(0), v["pages"].as_u64().unwrap_or(0));
            return Dump { bz2: bz2_path, index, xml_bytes, pages };
        }
    }
    eprintln!("generating a {mb} MB dump in {} …", dir.display());
    std::fs::create_dir_all(dir).expect("create bench-data dir");
    let mut rng = Rng(0x5EED_1234_ABCD_0001);
    let mut streams: Vec<Vec<(u64, String, String)>> = Vec::new();
    let (mut xml_bytes, mut id) = (HEADER.len() as u64, 0u64);
    while xml_bytes < (mb as u64) << 20 {
        let mut stream = Vec::with_capacity(PAGES_PER_STREAM);
        for _ in 0..PAGES_PER_STREAM {
            id += 1;
            let (title, x) = page_xml(id, &mut rng);
            xml_bytes += x.len() as u64;
            stream.push((id, title, x));
        }
        streams.push(stream);
    }
    let compressed: Vec<Vec<u8>> =
        streams.par_iter().map(|s| bz2(s.iter().map(|p| p.2.as_str()).collect::<String>().as_bytes())).collect();
    let mut file = bz2(HEADER.as_bytes());
    let mut idx = String::new();
    for (stream, c) in streams.iter().zip(&compressed) {
        let offset = file.len();
        for (id, title, _) in stream {
            writeln!(idx, "{offset}:{id}:{title}").unwrap();
        }
        file.extend_from_slice(c);
    }
    file.extend(bz2(b"</mediawiki>\n"));
    xml_bytes += "</mediawiki>\n".len() as u64;
    std::fs::write(&bz2_path, &file).expect("write dump");
    std::fs::write(&index, bz2(idx.as_bytes())).expect("write index");
    std::fs::write(&info, serde_json::json!({"xml_bytes": xml_bytes, "pages": id}).to_string()).expect("write info");
    Dump { bz2: bz2_path, index, xml_bytes, pages: id }
}

/// Median seconds of `RUNS` runs of a shell command; None when it fails (with its stderr shown).
fn time(cmd: &str) -> Option<f64> {
    let mut secs = Vec::new();
    for _ in 0..RUNS {
        let t = Instant::now();
        let out = Command::new("bash").arg("-c").arg(cmd).stdout(Stdio::null()).output().ok()?;
        if !out.status.success() {
            eprintln!("failed: {cmd}\n{}", String::from_utf8_lossy(&out.stderr));
            return None;
        }
        secs.push(t.elapsed().as_secs_f64());
    }
    secs.sort_by(f64::total_cmp);
    Some(secs[RUNS / 2])
}

fn have(tool: &str) -> bool {
    Command::new("bash").arg("-c").arg(format!("command -v {tool}")).output().is_ok_and(|o| o.status.success())
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mb: usize = std::env::var("LANGADAPT_BENCH_MB").ok().and_then(|v| v.parse().ok()).unwrap_or(64);
    let dump = generate(&root.join("target/bench-data"), mb);
    let bin = env!("CARGO_BIN_EXE_langadapt");
    let out = tempfile::tempdir().expect("temp dir");
    let o = out.path().display();
    let (d, i) = (dump.bz2.display(), dump.index.display());
    let wikiextractor = std::env::var("WIKIEXTRACTOR").unwrap_or_else(|_| "/tmp/bench-venv/bin/wikiextractor".into());

    let mut rows: Vec<(String, String, Option<f64>)> = Vec::new();
    let mut add = |name: &str, cmd: String, available: bool| {
        let secs = if available { time(&cmd) } else { None };
        if !available {
            eprintln!("skipped (not installed): {name}");
        }
        rows.push((name.to_string(), cmd, secs));
    };
    add("bzip2 -dc", format!("bzip2 -dc {d} > /dev/null"), have("bzip2"));
    add("lbzip2 -dc -n2", format!("lbzip2 -dc -n2 {d} > /dev/null"), have("lbzip2"));
    let ingest = |threads: usize, index: bool, tag: &str| {
        let idx = if index { format!(" --index {i}") } else { String::new() };
        format!("rm -rf {o}/{tag} && {bin} --quiet --threads {threads} wiki ingest {d}{idx} --out {o}/{tag}")
    };
    add("langadapt, 2 threads, index", ingest(2, true, "a"), true);
    add("langadapt, 1 thread, index", ingest(1, true, "b"), true);
    add("langadapt, 2 threads, no index", ingest(2, false, "c"), true);
    add(
        "wikiextractor --processes 2",
        format!("rm -rf {o}/we && {wikiextractor} --processes 2 -q -o {o}/we {d}"),
        Path::new(&wikiextractor).exists() || have(&wikiextractor),
    );

    let ours = rows[2].2.expect("langadapt ran");
    let xml_mb = dump.xml_bytes as f64 / 1e6;
    let bz2_mb = std::fs::metadata(&dump.bz2).map(|m| m.len()).unwrap_or(0) as f64 / 1e6;
    let mut table = String::from("| tool | seconds (median of 3) | XML MB/s | bz2 MB/s | time / langadapt (2 threads) |\n|---|---|---|---|---|\n");
    for (name, _, secs) in &rows {
        match secs {
            Some(s) => writeln!(table, "| {name} | {s:.2} | {:.1} | {:.1} | {:.2} |", xml_mb / s, bz2_mb / s, s / ours),
            None => writeln!(table, "| {name} | not run | | | |"),
        }
        .unwrap();
    }
    let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
    let mut targets = String::new();
    if let Some(we) = rows[5].2 {
        writeln!(
            targets,
            "- langadapt vs wikiextractor: {:.1}× faster (target ≥ 10×: {})",
            we / ours,
            verdict(we / ours >= 10.0)
        )
        .unwrap();
    } else {
        writeln!(targets, "- langadapt vs wikiextractor: wikiextractor did not run here").unwrap();
    }
    if let Some(lb) = rows[1].2 {
        writeln!(
            targets,
            "- langadapt / lbzip2 -n2 time: {:.2} (target ≤ 1.5: {})",
            ours / lb,
            verdict(ours / lb <= 1.5)
        )
        .unwrap();
    }
    println!("{table}\n{targets}");
    let commands: String = rows.iter().map(|(n, c, _)| format!("- {n}: `{c}`\n")).collect();
    let report = format!(
        "# Benchmark results\n\n## wiki ingest (`cargo bench --bench wiki_ingest`)\n\n\
         Machine: {} cores, {}. Generated dump: {:.1} MB XML, {:.1} MB bz2 multistream ({} streams of {} pages), {} pages.\n\
         Same file, same cores, one run of the bench; the ratio column is time divided by langadapt's (2 threads, index).\n\n\
         {table}\n{targets}\nCommands (`$OUT` a temp dir):\n\n{}",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        cpu_model(),
        xml_mb,
        bz2_mb,
        dump.pages.div_ceil(PAGES_PER_STREAM as u64),
        PAGES_PER_STREAM,
        dump.pages,
        commands.replace(&o.to_string(), "$OUT").replace(bin, "langadapt").replace(&root.display().to_string(), ".")
    );
    std::fs::write(root.join("benches/RESULTS.md"), report).expect("write benches/RESULTS.md");
}
