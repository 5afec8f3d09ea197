//! Times `langadapt wiki ingest` against bzip2, lbzip2, wikiextractor and gensim on one generated dump.
//!
//! `cargo bench --bench wiki_ingest` (harness = false) builds once, under target/bench-data/, a
//! deterministic Turkish-Wikipedia-like export of `LANGADAPT_BENCH_MB` MB of XML (default 64; MB = 10^6
//! bytes) in Wikimedia's multistream layout with its index, runs every tool on that same file in
//! interleaved rounds, prints a table and rewrites the wiki-ingest section of benches/RESULTS.md.
//! Environment variables, peers and fairness notes: benches/README.md.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use rayon::prelude::*;

#[path = "common/mod.rs"]
mod common;
use serde::{Deserialize, Serialize};

/// Bump when the generator's output changes, so a cached dump is rebuilt.
const GENERATOR_VERSION: u32 = 4;
const SEED: u64 = 0x5EED_1234_ABCD_0001;
/// Pages per bzip2 stream, as Wikimedia writes them.
const PAGES_PER_STREAM: usize = 100;
const MB: f64 = 1e6;

/// `write!` into a String, which cannot fail.
macro_rules! put {
    ($t:expr, $($arg:tt)*) => { write!($t, $($arg)*).expect("writing to a String cannot fail") };
}

// ------------------------------------------------------------------------------------------------
// Generator: realistic wikitext from a fixed seed
// ------------------------------------------------------------------------------------------------

/// Function words first: the Zipf-like pick below makes them the most frequent, as in real prose.
const COMMON: &[&str] = &[
    "ve", "bir", "bu", "ile", "için", "olarak", "da", "de", "en", "daha", "çok", "olan", "sonra", "kadar", "gibi",
    "ilk", "yıl", "büyük", "yeni", "eski", "köy", "şehir", "nüfus", "tarih", "bölge", "ırmak",
];
/// Syllables for the rest of the vocabulary, so the text compresses like real prose (about 4–5× with
/// bzip2) and not like a short word list repeated (8× and more), which would flatter decompression.
const SYLLABLES: &[&str] = &[
    "ka", "la", "ler", "dı", "ğı", "şe", "çi", "ön", "üs", "ır", "man", "lık", "sız", "ya", "be", "de", "ni", "ko",
    "tu", "rı", "ça", "gü", "mü", "iş", "ol", "ar", "en", "im", "ul", "öz", "sa", "tan", "mer", "bol", "kır", "yol",
    "dağ", "su", "ta", "nı", "lu", "cı", "vi", "ze", "hi", "pa", "fı", "rek",
];
const TRAILS: &[&str] = &["lar", "ler", "da", "'da", "'nın", "ın", "dır", "'ye", "ları", "ında"];
/// Namespaces of the non-article pages, as in the header's `<siteinfo>`.
#[rustfmt::skip]
const OTHER_NS: &[(u32, &str)] = &[
    (1, "Tartışma"), (2, "Kullanıcı"), (4, "Vikipedi"), (6, "Dosya"), (10, "Şablon"), (14, "Kategori"), (828, "Modül"),
];

// Wikitext snippets with `$X` placeholders (see `fill`): readable, unlike brace-doubled format strings.
const INFOBOX: &str = "{{Bilgi kutusu yerleşim\n| ad = $T\n| resim = $N manzarası.jpg\n\
| resim_altyazı = [[$N]] ve çevresi\n| nüfus = {{formatnum:$P}}\n| nüfus_yılı = $Y\n\
| koordinat = {{Koordinat|$C|K|$C|D|display=inline,title}}\n| alan = {{dönüştür|$P|km2|mi2}}\n\
| not = {{#if: {{{not|}}} | {{{not}}} | Yok }}\n}}\n";
const CITE: &str = "<ref name=\"k$K\">{{Web kaynağı |url=https://ornek.org/$K |başlık=$T |yayıncı=[[$N]] \
|erişimtarihi=$K Ocak 2024}}</ref>";
const BOOK: &str = "<ref>$N, ''$T'', $N Yayınları, 1987, s.&nbsp;$K.</ref>";
const FOOTER: &str = "\n== Kaynakça ==\n{{Kaynakça|30em}}\n<references />\n\n== Dış bağlantılar ==\n\
* [https://ornek.org/$K $T resmî sitesi]\n\n{{$N ile ilgili maddeler}}\n\n[[Kategori:$N]]\n[[Kategori:$T| ]]\n\
[[en:$T]]\n[[de:$T]]\n";
const TEMPLATE_PAGE: &str = "<includeonly>{{{1|}}} {{#if:{{{2|}}}|({{{2}}})}}</includeonly><noinclude>\n";
const LUA: &str = "local p = {}\nfunction p.main(frame)\n  return frame.args[1] or ''\nend\nreturn p\n";

fn fill(template: &str, vars: &[(&str, &str)]) -> String {
    vars.iter().fold(template.to_string(), |s, (k, v)| s.replace(k, v))
}

/// Turkish capitalisation of the first letter (i → İ, ı → I).
fn capitalise(w: &str) -> String {
    let mut cs = w.chars();
    match cs.next() {
        Some('i') => format!("İ{}", cs.as_str()),
        Some('ı') => format!("I{}", cs.as_str()),
        Some(c) => c.to_uppercase().chain(cs).collect(),
        None => String::new(),
    }
}

/// xorshift64* over a vocabulary; everything the dump holds comes from here.
struct Gen {
    state: u64,
    words: Vec<&'static str>,
    names: Vec<&'static str>,
}

impl Gen {
    fn new(seed: u64) -> Self {
        let mut g = Gen { state: seed, words: COMMON.to_vec(), names: Vec::new() };
        // Leaked once per run, so words are `&'static str` that the generator can hand out freely.
        for _ in 0..6000 {
            let w: String = (0..1 + g.below(4)).map(|_| g.pick(SYLLABLES)).collect();
            g.words.push(Box::leak(w.into_boxed_str()));
        }
        let names = g.words[COMMON.len()..COMMON.len() + 1500].iter().map(|w| &*capitalise(w).leak());
        g.names = ["Kuzgunlu", "Ankara", "İzmir", "Işıklı", "Ilgaz", "Kızılırmak"].into_iter().chain(names).collect();
        g
    }
    fn next(&mut self) -> u64 {
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        self.state.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len())]
    }
    /// Zipf-like: low indices (the function words) far more often than the tail.
    fn word(&mut self) -> &'static str {
        let i = (self.words.len() as f64 * self.unit().powi(3)) as usize;
        self.words[i]
    }
    fn name(&mut self) -> &'static str {
        let i = (self.names.len() as f64 * self.unit().powi(2)) as usize;
        self.names[i]
    }

    /// One word of running text, now and then wrapped in the markup real articles use.
    fn token(&mut self, t: &mut String) {
        let (w, n, k) = (self.word(), self.name(), self.below(5000));
        // Per 200 tokens: ~11% links (some piped, with an anchor or a trail), ~6% bold/italic, a few
        // entities, numbers and inline templates; external links, <small> and <math> are rare.
        match self.below(200) {
            0..=11 => put!(t, "[[{n}]]"),
            12..=15 => put!(t, "[[{n}|{w}]]"),
            16 => put!(t, "[[{n}#Tarihçe|{n} tarihi]]"),
            17..=21 => put!(t, "[[{w}]]{}", self.pick(TRAILS)),
            22..=25 => put!(t, "'''{w}'''"),
            26..=30 => put!(t, "''{w}''"),
            31 => put!(t, "'''''{w}'''''"),
            32 | 33 => put!(t, "{k}&nbsp;km"),
            34 => put!(t, "{w} &mdash; {n}"),
            35 => put!(t, "[https://ornek.org/{k} {n} {w}]"),
            36 => put!(t, "<small>({w})</small>"),
            37 => put!(t, "{{{{lang|en|{w}}}}}"),
            38 => put!(t, "<math>x_{k} = \\frac{{a}}{{b}}</math>"),
            39..=44 => put!(t, "{}", 1000 + k % 1024),
            _ => t.push_str(w),
        }
    }

    /// A sentence of 6–20 tokens, sometimes followed by a reference or an inline template.
    fn sentence(&mut self, t: &mut String) {
        t.push_str(self.name());
        for _ in 0..5 + self.below(15) {
            t.push(' ');
            self.token(t);
        }
        t.push('.');
        let (k, n, w) = (self.below(40).to_string(), self.name(), self.word());
        match self.below(14) {
            0 => t.push_str(&fill(CITE, &[("$K", &k), ("$T", w), ("$N", n)])),
            1 => t.push_str(&fill(BOOK, &[("$K", &k), ("$T", w), ("$N", n)])),
            2 => put!(t, "<ref name=\"k{k}\" />"),
            3 => put!(t, "<ref name=k{k}/>"),
            4 => put!(t, "{{{{sfn|{n}|1987|s={k}}}}}"),
            5 => t.push_str("{{Kaynak belirt|tarih=Ocak 2024}}"),
            _ => {}
        }
    }

    fn paragraph(&mut self, t: &mut String) {
        for i in 0..2 + self.below(6) {
            if i > 0 {
                t.push(' ');
            }
            self.sentence(t);
        }
        t.push('\n');
    }

    /// Bulleted, numbered (with a nested level) or definition list.
    fn list(&mut self, t: &mut String) {
        let definition = self.chance(20);
        let marker = if self.chance(50) { "*" } else { "#" };
        for _ in 0..2 + self.below(6) {
            if definition {
                put!(t, "; {}\n: ", self.name());
            } else {
                put!(t, "{marker}{} ", if self.chance(20) { marker } else { "" });
            }
            self.sentence(t);
            t.push('\n');
        }
    }

    /// A wikitable with caption, header cells and rows; once in a while one nested in a cell.
    fn table(&mut self, t: &mut String, nested: bool) {
        put!(t, "{{| class=\"wikitable sortable\"\n|+ {} {}\n! Yıl !! Nüfus !! Not\n", self.name(), self.word());
        for _ in 0..2 + self.below(10) {
            let (year, pop, n, w) = (1900 + self.below(124), self.below(90_000), self.name(), self.word());
            put!(t, "|-\n| {year} || {{{{formatnum:{pop}}}}} || [[{n}]] {w}\n");
        }
        if !nested && self.chance(10) {
            t.push_str("|-\n|\n");
            self.table(t, true);
        }
        t.push_str("|}\n");
    }

    /// Mostly a paragraph; else a list, table, file link with a linked caption, gallery, comment or math.
    fn block(&mut self, t: &mut String) {
        let (n, w, k) = (self.name(), self.word(), self.below(999));
        match self.below(20) {
            0..=11 => self.paragraph(t),
            12 | 13 => self.list(t),
            14 | 15 => self.table(t, false),
            16 => put!(t, "[[Dosya:{n} {k}.jpg|küçükresim|sağ|{n} yakınlarında bir [[{w}]]]]\n"),
            17 => put!(t, "<gallery>\nDosya:{n} {k}.jpg|''{w}'' görünümü\nDosya:{n}.png|{n}\n</gallery>\n"),
            18 => put!(t, "<!-- {w} bölümü genişletilmeli:\n{n} -->\n"),
            _ => put!(t, ":<math>\\sum_{{i=1}}^{{{k}}} x_i^2</math>\n"),
        }
    }

    /// An article's wikitext of about `target` bytes: infobox, lead, sections, references, categories.
    fn article(&mut self, title: &str, target: usize) -> String {
        let mut t = String::with_capacity(target + 1024);
        if self.chance(10) {
            t.push_str("__NOTOC__\n");
        }
        if self.chance(15) {
            put!(t, "{{{{Diğer anlamı|{title} (anlam ayrımı)}}}}\n");
        }
        let big = target > 3000;
        if big || self.chance(20) {
            let (pop, year, coord) = (self.below(90_000).to_string(), self.below(2024).to_string(), self.below(90));
            let vars = [("$T", title), ("$N", self.name()), ("$P", &pop), ("$Y", &year), ("$C", &coord.to_string())];
            t.push_str(&fill(INFOBOX, &vars));
        }
        put!(t, "'''{title}''' (''{}''), ", self.word());
        self.paragraph(&mut t);
        while t.len() < target {
            let level = if self.chance(30) { "===" } else { "==" };
            put!(t, "\n{level} {} {} {level}\n", self.name(), self.word());
            for _ in 0..1 + self.below(3) {
                self.block(&mut t);
            }
        }
        if big {
            t.push_str(&fill(FOOTER, &[("$K", &self.below(9999).to_string()), ("$T", title), ("$N", self.name())]));
        } else {
            put!(t, "\n{{{{Taslak}}}}\n[[Kategori:{}]]\n", self.name());
        }
        t
    }

    /// Short text of a talk, user, project, file, template, category or module page.
    fn other_text(&mut self, ns: u32) -> String {
        let mut t = match ns {
            828 => return LUA.to_string(),
            10 => TEMPLATE_PAGE.to_string(),
            6 => "== Özet ==\n{{Bilgi\n|açıklama = ".to_string(),
            _ => String::new(),
        };
        self.paragraph(&mut t);
        match ns {
            1 | 2 | 4 => put!(t, ":Katılıyorum. [[Kullanıcı:{0}|{0}]] 12.00, 1 Ocak 2024 (UTC)\n", self.name()),
            6 => t.push_str("}}\n== Lisans ==\n{{self|cc-by-sa-4.0}}\n"),
            10 => t.push_str("[[Kategori:Şablonlar]]</noinclude>"),
            _ => put!(t, "[[Kategori:{}]]\n", self.name()),
        }
        t
    }

    /// Article sizes from 200 B to 200 KB, log-uniform with a bias to small pages (median ~1 KB, mean
    /// ~16 KB), close to a real wiki's mix of stubs and long articles.
    fn article_size(&mut self) -> usize {
        (200.0 * 1000f64.powf(self.unit().powi(2))) as usize
    }

    /// One `<page>`: ~70% articles, ~15% redirects, ~15% other namespaces; titles with `&` and `: ` too.
    fn page(&mut self, id: u64) -> Page {
        let title = match self.below(40) {
            0 => format!("{} & {} {id}", self.name(), self.name()),
            1 => format!("Masal: {} {id}", self.name()),
            _ => format!("{} {} {id}", self.name(), self.word()),
        };
        let roll = self.below(100);
        let (kind, ns, title, redirect, text) = if roll < 70 {
            let size = self.article_size();
            let text = self.article(&title, size);
            (Kind::Article, 0, title, None, text)
        } else if roll < 85 {
            let target = format!("{} {}", self.name(), self.word());
            let magic = self.pick(&["#YÖNLENDİRME", "#yönlendirme", "#REDIRECT", "#Yönlendirme"]);
            let text = format!("{magic} [[{target}]]\n\n{{{{Yönlendirme kategorisi}}}}");
            (Kind::Redirect, 0, title, Some(target), text)
        } else {
            let (ns, prefix) = self.pick(OTHER_NS);
            (Kind::Other, ns, format!("{prefix}:{title}"), None, self.other_text(ns))
        };
        let xml = self.page_xml(id, &title, ns, redirect.as_deref(), &text);
        Page { id, title, kind, xml }
    }

    /// The `<page>` element laid out as in a real export (see shared/fixtures/wiki/make_trwiki_sample.py).
    fn page_xml(&mut self, id: u64, title: &str, ns: u32, redirect: Option<&str>, text: &str) -> String {
        let (rev, title) = (31_000_000 + id * 7, esc(title));
        let mut x = String::with_capacity(text.len() * 11 / 10 + 700);
        put!(x, "  <page>\n    <title>{title}</title>\n    <ns>{ns}</ns>\n    <id>{id}</id>\n");
        if let Some(target) = redirect {
            put!(x, "    <redirect title=\"{}\" />\n", esc(target));
        }
        put!(x, "    <revision>\n      <id>{rev}</id>\n");
        if id % 3 != 0 {
            put!(x, "      <parentid>{}</parentid>\n", rev - 517);
        }
        let (mo, d, h, mi) = (1 + id % 12, 1 + id % 28, id % 24, id % 60);
        put!(x, "      <timestamp>2024-{mo:02}-{d:02}T{h:02}:{mi:02}:00Z</timestamp>\n");
        let (user, uid, ip) = (self.name(), self.below(1_000_000), self.below(255));
        match self.below(10) {
            0 => put!(x, "      <contributor>\n        <ip>192.0.2.{ip}</ip>\n      </contributor>\n"),
            1 => x.push_str("      <contributor deleted=\"deleted\" />\n"),
            _ => {
                put!(x, "      <contributor>\n        <username>{user}</username>\n        <id>{uid}</id>\n");
                x.push_str("      </contributor>\n");
            }
        }
        if self.chance(20) {
            x.push_str("      <minor />\n");
        }
        if self.chance(60) {
            let comment = esc(&format!("/* {user} */ kaynak eklendi & [[{}]] düzeltildi", self.word()));
            put!(x, "      <comment>{comment}</comment>\n");
        }
        let (model, format) = if ns == 828 { ("Scribunto", "text/plain") } else { ("wikitext", "text/x-wiki") };
        put!(x, "      <origin>{rev}</origin>\n      <model>{model}</model>\n      <format>{format}</format>\n");
        // Shaped like MediaWiki's base-36 sha1; nothing checks it, so it need not be the real one.
        let sha: String = (0..31).map(|_| char::from_digit(self.below(36) as u32, 36).expect("below 36")).collect();
        put!(x, "      <text bytes=\"{}\" sha1=\"{sha}\" xml:space=\"preserve\">{}</text>\n", text.len(), esc(text));
        put!(x, "      <sha1>{sha}</sha1>\n    </revision>\n  </page>\n");
        x
    }
}

/// XML escaping as in the dumps: wikitext's own `&nbsp;` becomes `&amp;nbsp;` in the file.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Article,
    Redirect,
    Other,
}

struct Page {
    id: u64,
    title: String,
    kind: Kind,
    xml: String,
}

// ------------------------------------------------------------------------------------------------
// The dump on disk: multistream bz2, its index, and the same XML uncompressed
// ------------------------------------------------------------------------------------------------

/// The header of shared/fixtures/wiki (the real trwiki layout).
const HEADER: &str = r#"<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.11/" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:schemaLocation="http://www.mediawiki.org/xml/export-0.11/ http://www.mediawiki.org/xml/export-0.11.xsd" version="0.11" xml:lang="tr">
  <siteinfo>
    <sitename>Vikipedi</sitename>
    <dbname>trwiki</dbname>
    <base>https://tr.wikipedia.org/wiki/Anasayfa</base>
    <generator>MediaWiki 1.44.0-wmf.5</generator>
    <case>first-letter</case>
    <namespaces>
      <namespace key="-2" case="first-letter">Ortam</namespace>
      <namespace key="-1" case="first-letter">Özel</namespace>
      <namespace key="0" case="first-letter" />
      <namespace key="1" case="first-letter">Tartışma</namespace>
      <namespace key="2" case="first-letter">Kullanıcı</namespace>
      <namespace key="3" case="first-letter">Kullanıcı mesaj</namespace>
      <namespace key="4" case="first-letter">Vikipedi</namespace>
      <namespace key="5" case="first-letter">Vikipedi tartışma</namespace>
      <namespace key="6" case="first-letter">Dosya</namespace>
      <namespace key="7" case="first-letter">Dosya tartışma</namespace>
      <namespace key="8" case="first-letter">MediaWiki</namespace>
      <namespace key="9" case="first-letter">MediaWiki tartışma</namespace>
      <namespace key="10" case="first-letter">Şablon</namespace>
      <namespace key="11" case="first-letter">Şablon tartışma</namespace>
      <namespace key="12" case="first-letter">Yardım</namespace>
      <namespace key="13" case="first-letter">Yardım tartışma</namespace>
      <namespace key="14" case="first-letter">Kategori</namespace>
      <namespace key="15" case="first-letter">Kategori tartışma</namespace>
      <namespace key="100" case="first-letter">Portal</namespace>
      <namespace key="101" case="first-letter">Portal tartışma</namespace>
      <namespace key="828" case="first-letter">Modül</namespace>
      <namespace key="829" case="first-letter">Modül tartışma</namespace>
    </namespaces>
  </siteinfo>
"#;
const CLOSING: &str = "</mediawiki>\n";

/// What was generated; stored next to the files so a later run can reuse them.
#[derive(Serialize, Deserialize)]
struct DumpInfo {
    version: u32,
    seed: u64,
    mb: usize,
    xml_bytes: u64,
    bz2_bytes: u64,
    streams: usize,
    pages: u64,
    articles: u64,
    redirects: u64,
    other_namespaces: u64,
}

struct Dump {
    bz2: PathBuf,
    index: PathBuf,
    xml: PathBuf,
    info: DumpInfo,
}

fn bz2(data: &[u8]) -> Vec<u8> {
    let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::best());
    e.write_all(data).expect("compressing in memory cannot fail");
    e.finish().expect("compressing in memory cannot fail")
}

/// Writes through a temporary name, so an interrupted generation is never mistaken for a dump.
fn write_atomic(path: &Path, bytes: &[u8]) {
    let tmp = PathBuf::from(format!("{}.partial", path.display()));
    std::fs::write(&tmp, bytes).unwrap_or_else(|e| panic!("writing {}: {e}", tmp.display()));
    std::fs::rename(&tmp, path).unwrap_or_else(|e| panic!("renaming {}: {e}", tmp.display()));
}

/// The dump for `mb`, reused from `dir` when the same generator version and seed made it.
fn load_or_generate(dir: &Path, mb: usize) -> Dump {
    let path = |suffix: &str| dir.join(format!("trwikibench-{mb}mb-v{GENERATOR_VERSION}{suffix}"));
    let bz2_path = path("-pages-articles-multistream.xml.bz2");
    let (index, xml, meta) =
        (path("-pages-articles-multistream-index.txt.bz2"), path("-pages-articles.xml"), path(".json"));
    let cached = std::fs::read(&meta).ok().and_then(|b| serde_json::from_slice::<DumpInfo>(&b).ok());
    if let Some(info) = cached.filter(|i| i.seed == SEED && i.mb == mb && i.version == GENERATOR_VERSION) {
        if bz2_path.exists() && index.exists() && xml.exists() {
            eprintln!("reusing {}", bz2_path.display());
            return Dump { bz2: bz2_path, index, xml, info };
        }
    }
    std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    eprintln!("generating {mb} MB of XML into {} …", dir.display());
    let started = Instant::now();
    let info = write_dump(&generate_pages(mb), mb, &bz2_path, &index, &xml);
    write_atomic(&meta, &serde_json::to_vec_pretty(&info).expect("DumpInfo serialises"));
    eprintln!("generated in {:.1}s", started.elapsed().as_secs_f64());
    Dump { bz2: bz2_path, index, xml, info }
}

/// Pages in streams of `PAGES_PER_STREAM` until the XML reaches `mb` MB (serial: one RNG sequence).
fn generate_pages(mb: usize) -> Vec<Vec<Page>> {
    let mut g = Gen::new(SEED);
    let (mut streams, mut bytes, mut id) = (Vec::new(), HEADER.len() + CLOSING.len(), 0u64);
    while bytes < mb * 1_000_000 {
        let mut stream = Vec::with_capacity(PAGES_PER_STREAM);
        for _ in 0..PAGES_PER_STREAM {
            id += 1 + g.below(3) as u64; // gaps, as deleted pages leave in real dumps
            stream.push(g.page(id));
        }
        bytes += stream.iter().map(|p| p.xml.len()).sum::<usize>();
        streams.push(stream);
    }
    streams
}

/// Stream 1 the header, one bz2 stream per page group (compressed in parallel), a last stream closing
/// `<mediawiki>`; the index lists `OFFSET:PAGEID:TITLE` with the offset of the stream holding the page.
fn write_dump(streams: &[Vec<Page>], mb: usize, bz2_path: &Path, index: &Path, xml_path: &Path) -> DumpInfo {
    let pages = streams.iter().map(|s| s.iter().map(|p| p.xml.as_str()).collect::<String>());
    let chunks: Vec<String> = std::iter::once(HEADER.into()).chain(pages).chain([CLOSING.into()]).collect();
    let compressed: Vec<Vec<u8>> = chunks.par_iter().map(|c| bz2(c.as_bytes())).collect();
    let (mut file, mut lines) = (Vec::new(), String::new());
    for (k, c) in compressed.iter().enumerate() {
        for page in k.checked_sub(1).and_then(|s| streams.get(s)).into_iter().flatten() {
            put!(lines, "{}:{}:{}\n", file.len(), page.id, esc(&page.title));
        }
        file.extend_from_slice(c);
    }
    write_atomic(bz2_path, &file);
    write_atomic(index, &bz2(lines.as_bytes()));
    write_atomic(xml_path, chunks.concat().as_bytes());
    let count = |k: Kind| streams.iter().flatten().filter(|p| p.kind == k).count() as u64;
    DumpInfo {
        version: GENERATOR_VERSION,
        seed: SEED,
        mb,
        xml_bytes: chunks.iter().map(|c| c.len() as u64).sum(),
        bz2_bytes: file.len() as u64,
        streams: chunks.len(),
        pages: streams.iter().map(|s| s.len() as u64).sum(),
        articles: count(Kind::Article),
        redirects: count(Kind::Redirect),
        other_namespaces: count(Kind::Other),
    }
}

// ------------------------------------------------------------------------------------------------
// Timing
// ------------------------------------------------------------------------------------------------

const REFERENCE: &str = "langadapt, 2 threads, index";
const LBZIP2: &str = "lbzip2 -dc -n2";
const WX_NO_TEMPLATES: &str = "wikiextractor --processes 2 --no-templates";
const WX_DEFAULT: &str = "wikiextractor --processes 2 (expands templates)";

/// How to count the articles a tool wrote, to show every tool did the whole job.
#[derive(Clone, Copy)]
enum Count {
    Nothing,
    Manifest,
    Shell(&'static str),
}

/// One timed command; `$OUT` in it is the tool's scratch directory, emptied before every run.
struct Tool {
    name: &'static str,
    cmd: String,
    out: PathBuf,
    reads_bz2: bool,
    count: Count,
    wall: Vec<f64>,
    cpu: Vec<f64>,
    error: Option<String>,
}

impl Tool {
    /// One run: wall seconds measured here, CPU seconds (user + sys of all children) from bash's `times`.
    fn run_once(&mut self) {
        let _ = std::fs::remove_dir_all(&self.out); // absent before the first run
        std::fs::create_dir_all(&self.out).unwrap_or_else(|e| panic!("creating {}: {e}", self.out.display()));
        let times = self.out.with_extension("times");
        let script = format!("OUT={}\n{}\nrc=$?\ntimes > {}\nexit $rc", quote(&self.out), self.cmd, quote(&times));
        let started = Instant::now();
        let result = Command::new("bash").args(["-c", &script]).stdin(Stdio::null()).stdout(Stdio::null()).output();
        let wall = started.elapsed().as_secs_f64();
        match result {
            Ok(o) if o.status.success() => {
                self.wall.push(wall);
                self.cpu.push(std::fs::read_to_string(&times).ok().and_then(|s| children_cpu(&s)).unwrap_or(f64::NAN));
            }
            Ok(o) => {
                let err = String::from_utf8_lossy(&o.stderr);
                let last = err.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("no message");
                self.error = Some(format!("{last} ({})", o.status));
            }
            Err(e) => self.error = Some(format!("could not start bash: {e}")),
        }
    }

    fn articles(&self) -> Option<u64> {
        match self.count {
            Count::Nothing => None,
            Count::Manifest => manifest_counts(&self.out)?["articles"].as_u64(),
            Count::Shell(cmd) => sh_output(&format!("OUT={}; {cmd}", quote(&self.out)))?.trim().parse().ok(),
        }
    }
}

fn median(xs: &[f64]) -> Option<f64> {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied()
}

/// Children's user + sys seconds: the second line of `times`, e.g. `0m1.234s 0m0.056s`.
fn children_cpu(times: &str) -> Option<f64> {
    let secs = |f: &str| -> Option<f64> {
        let (m, s) = f.trim_end_matches('s').split_once('m')?;
        Some(m.parse::<f64>().ok()? * 60.0 + s.parse::<f64>().ok()?)
    };
    times.lines().nth(1)?.split_whitespace().map(secs).sum()
}

fn manifest_counts(dir: &Path) -> Option<serde_json::Value> {
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).ok()?).ok()?;
    Some(m["counts"].clone())
}

/// Single-quoted for bash.
fn quote(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', r"'\''"))
}

/// Stdout of a shell command when it succeeds.
fn sh_output(cmd: &str) -> Option<String> {
    let o = Command::new("bash").args(["-c", cmd]).stdin(Stdio::null()).stderr(Stdio::null()).output().ok()?;
    o.status.success().then(|| String::from_utf8_lossy(&o.stdout).into_owned())
}

/// First line of a version command's output (stdout or stderr), for the record; None if it fails.
fn version(cmd: &str) -> Option<String> {
    let first = sh_output(&format!("set -o pipefail; ({cmd}) 2>&1 | head -n 1"))?.trim().to_string();
    (!first.is_empty()).then_some(first)
}

fn wikiextractor() -> String {
    std::env::var("WIKIEXTRACTOR").unwrap_or_else(|_| "/tmp/bench-venv/bin/wikiextractor".into())
}

fn gensim_python() -> String {
    std::env::var("GENSIM_PYTHON").unwrap_or_else(|_| "/tmp/bench-venv/bin/python".into())
}

/// The peers and langadapt's modes, in table order, and the reasons for those skipped.
fn tools(d: &Dump, scratch: &Path) -> (Vec<Tool>, Vec<String>) {
    let (bz, idx, xml, bin) = (quote(&d.bz2), quote(&d.index), quote(&d.xml), env!("CARGO_BIN_EXE_langadapt"));
    let (wx, py) = (wikiextractor(), gensim_python());
    let has_lbzip2 = sh_output("command -v lbzip2").is_some();
    let has_wx = sh_output(&format!("{wx} --version")).is_some();
    let has_gensim = sh_output(&format!("{py} -c 'import gensim.scripts.segment_wiki'")).is_some();
    let docs = Count::Shell("cat \"$OUT\"/*/wiki_* | grep -c '^<doc '");
    let la = format!("{bin} --quiet --threads");
    let specs = [
        (true, "bzip2 -dc", format!("bzip2 -dc {bz} > /dev/null"), Count::Nothing),
        (has_lbzip2, LBZIP2, format!("lbzip2 -dc -n2 {bz} > /dev/null"), Count::Nothing),
        (true, REFERENCE, format!("{la} 2 wiki ingest {bz} --index {idx} --out \"$OUT\""), Count::Manifest),
        (
            true,
            "langadapt, 1 thread, index",
            format!("{la} 1 wiki ingest {bz} --index {idx} --out \"$OUT\""),
            Count::Manifest,
        ),
        (true, "langadapt, 2 threads, no index", format!("{la} 2 wiki ingest {bz} --out \"$OUT\""), Count::Manifest),
        (
            true,
            "langadapt, 2 threads, plain .xml (info)",
            format!("{la} 2 wiki ingest {xml} --out \"$OUT\""),
            Count::Manifest,
        ),
        (has_wx, WX_NO_TEMPLATES, format!("{wx} --processes 2 --no-templates -q -o \"$OUT\" {bz}"), docs),
        (has_wx, WX_DEFAULT, format!("{wx} --processes 2 -q -o \"$OUT\" {bz}"), docs),
        (
            has_gensim,
            "gensim segment_wiki -w 2",
            format!("{py} -m gensim.scripts.segment_wiki -f {bz} -o \"$OUT/articles.json.gz\" -w 2"),
            Count::Shell("zcat \"$OUT/articles.json.gz\" | wc -l"),
        ),
    ];
    let tools = specs.into_iter().enumerate().filter(|(_, s)| s.0);
    let tools = tools.map(|(k, (_, name, cmd, count))| {
        let out = scratch.join(format!("tool{k}"));
        Tool { name, reads_bz2: cmd.contains(&bz), cmd, out, count, wall: vec![], cpu: vec![], error: None }
    });
    let mut skipped = Vec::new();
    if !has_lbzip2 {
        skipped.push("lbzip2: not installed (`apt-get install -y lbzip2`)".to_string());
    }
    if !has_wx {
        skipped.push(format!("wikiextractor: `{wx} --version` failed (set WIKIEXTRACTOR; see benches/README.md)"));
    }
    if !has_gensim {
        skipped.push(format!("gensim: `{py}` cannot import gensim (set GENSIM_PYTHON; see benches/README.md)"));
    }
    (tools.collect(), skipped)
}

// ------------------------------------------------------------------------------------------------
// Report
// ------------------------------------------------------------------------------------------------

fn seconds(tools: &[Tool], name: &str) -> Option<f64> {
    tools.iter().find(|t| t.name == name).and_then(|t| median(&t.wall))
}

fn table(tools: &[Tool], info: &DumpInfo, runs: usize) -> String {
    let ours = seconds(tools, REFERENCE).unwrap_or(f64::NAN);
    let (xml_mb, bz2_mb) = (info.xml_bytes as f64 / MB, info.bz2_bytes as f64 / MB);
    let mut t = format!("| tool | wall s (median of {runs}) | CPU s | XML MB/s | bz2 MB/s | articles out ");
    t.push_str("| time ÷ langadapt 2 threads |\n");
    t.push_str("|---|--:|--:|--:|--:|--:|--:|\n");
    for tool in tools {
        let name = tool.name;
        match (median(&tool.wall), &tool.error) {
            (Some(s), None) => {
                let bz = if tool.reads_bz2 { format!("{:.1}", bz2_mb / s) } else { "—".into() };
                let articles = tool.articles().map_or("—".into(), |n| n.to_string());
                let (cpu, xml, ratio) = (median(&tool.cpu).unwrap_or(f64::NAN), xml_mb / s, s / ours);
                put!(t, "| {name} | {s:.2} | {cpu:.2} | {xml:.1} | {bz} | {articles} | {ratio:.2} |\n");
            }
            (_, err) => put!(t, "| {name} | failed: {} | | | | | |\n", err.as_deref().unwrap_or("no runs")),
        }
    }
    t
}

fn targets(tools: &[Tool]) -> String {
    let ours = seconds(tools, REFERENCE).unwrap_or(f64::NAN);
    let verdict = |ok: bool| if ok { "**met**" } else { "**NOT met**" };
    let mut t = String::new();
    let wx = [WX_NO_TEMPLATES, WX_DEFAULT].into_iter().filter_map(|n| Some((seconds(tools, n)?, n)));
    match wx.min_by(|a, b| a.0.total_cmp(&b.0)) {
        Some((s, name)) => {
            let x = s / ours;
            put!(t, "- langadapt (2 threads) vs the faster wikiextractor run (`{name}`): {x:.1}× faster; ");
            put!(t, "target ≥ 10×: {}\n", verdict(x >= 10.0));
        }
        None => t.push_str("- langadapt vs wikiextractor: wikiextractor did not run; target ≥ 10×: not measured\n"),
    }
    match seconds(tools, LBZIP2) {
        Some(lb) => {
            let x = ours / lb;
            put!(t, "- langadapt (2 threads) time ÷ `{LBZIP2}` time: {x:.2}; target ≤ 1.5: {}\n", verdict(x <= 1.5));
        }
        None => t.push_str("- langadapt ÷ lbzip2: lbzip2 did not run; target ≤ 1.5: not measured\n"),
    }
    t
}

/// langadapt's manifest counts against what the generator wrote: a fast wrong answer is no result.
fn check_counts(tools: &[Tool], i: &DumpInfo) -> String {
    let Some(c) = tools.iter().find(|t| t.name == REFERENCE).and_then(|t| manifest_counts(&t.out)) else {
        return "langadapt's manifest could not be read: counts not checked.".into();
    };
    let expected = [
        ("pages", i.pages),
        ("articles", i.articles),
        ("redirects", i.redirects),
        ("other_namespaces", i.other_namespaces),
    ];
    let wrong: Vec<String> = expected
        .iter()
        .filter(|(k, v)| c[k].as_u64() != Some(*v))
        .map(|(k, v)| format!("{k}: {} (generated {v})", c[k]))
        .collect();
    match wrong.is_empty() {
        true => {
            "langadapt's manifest counts (pages, articles, redirects, other namespaces) match the generator.".into()
        }
        false => format!("**langadapt's manifest counts differ from the generator**: {}.", wrong.join(", ")),
    }
}

fn cpu_model() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo.lines().find(|l| l.starts_with("model name")).and_then(|l| l.split_once(':'));
    model.map_or_else(|| "unknown CPU".into(), |(_, m)| m.trim().to_string())
}

const GENSIM_VERSION: &str =
    r#"import gensim, sys; print("gensim", gensim.__version__, "on Python", sys.version.split()[0])"#;

fn versions(root: &Path) -> String {
    let (wx, py) = (wikiextractor(), gensim_python());
    // Only src/ and the manifests decide what binary was timed; edits to benches/ do not.
    let dirty = "git diff --quiet HEAD -- src Cargo.toml Cargo.lock || echo ', src/ modified'";
    let git = sh_output(&format!("cd {} && echo $(git rev-parse --short HEAD)$({dirty})", quote(root)));
    let git = git.map_or_else(|| "?".into(), |g| g.trim().to_string());
    let bzip2 = version("bzip2 -h < /dev/null").map(|v| v.replace(", a block-sorting file compressor.  Version", ""));
    let tools = [
        bzip2.map(|v| v.trim_end_matches('.').to_string()),
        version("lbzip2 -V"),
        version(&format!("{wx} --version")),
        version(&format!("{py} -c '{GENSIM_VERSION}'")),
    ];
    let langadapt = format!("langadapt {} (git {git})", env!("CARGO_PKG_VERSION"));
    std::iter::once(langadapt).chain(tools.into_iter().flatten()).collect::<Vec<_>>().join("; ")
}

fn report(tools: &[Tool], skipped: &[String], d: &DumpInfo, runs: usize, root: &Path) -> String {
    let nproc = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (date, cpu) = (time::OffsetDateTime::now_utc().date(), cpu_model());
    let (xml, bz2, ratio) = (d.xml_bytes as f64 / MB, d.bz2_bytes as f64 / MB, d.xml_bytes as f64 / d.bz2_bytes as f64);
    let mut r = String::from("## wiki ingest (`cargo bench --bench wiki_ingest`)\n\n");
    put!(r, "Date: {date} (UTC). Machine: {nproc} cores (nproc), {cpu}.\n\n");
    put!(r, "Dump (generated, seed {SEED:#x}, generator v{GENERATOR_VERSION}): {xml:.1} MB XML, {bz2:.1} MB bz2 ");
    put!(r, "multistream ({} streams of up to {PAGES_PER_STREAM} pages, compression {ratio:.1}×) ", d.streams);
    put!(r, "with its index; {} pages: {} articles, {} redirects, ", d.pages, d.articles, d.redirects);
    put!(r, "{} in other namespaces. MB = 10^6 bytes.\n\n", d.other_namespaces);
    put!(r, "All tools read the same file on the same cores, in {runs} interleaved rounds; wall time is the ");
    r.push_str("median. CPU s is user + sys of the command and all its children.\n\n");
    r.push_str(&table(tools, d, runs));
    put!(r, "\nTargets (issue 3):\n\n{}\n{}\n", targets(tools), check_counts(tools, d));
    for s in skipped {
        put!(r, "\nSkipped: {s}\n");
    }
    r.push_str("\nCommands (`$OUT` is the tool's scratch directory, emptied before each run):\n\n");
    for t in tools {
        let cmd = t.cmd.replace(env!("CARGO_BIN_EXE_langadapt"), "langadapt");
        put!(r, "- {}: `{}`\n", t.name, cmd.replace(&root.display().to_string(), "."));
    }
    put!(r, "\nVersions: {}.\n", versions(root));
    r
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let (mb, runs) = (
        common::env_number("LANGADAPT_BENCH_MB").unwrap_or(64),
        common::env_number("LANGADAPT_BENCH_RUNS").unwrap_or(3).max(1),
    );
    let data = root.join("target/bench-data");
    let dump = load_or_generate(&data, mb);
    // Scratch next to the dump: one disk for every tool, never a RAM-backed /tmp for some of them.
    let scratch =
        tempfile::Builder::new().prefix("run-").tempdir_in(&data).expect("create scratch in target/bench-data");
    let (mut tools, skipped) = tools(&dump, scratch.path());
    skipped.iter().for_each(|s| eprintln!("skipped: {s}"));
    // Interleaved rounds, so a slow patch of the machine (another job, thermal) hits every tool alike.
    for round in 1..=runs {
        for tool in tools.iter_mut().filter(|t| t.error.is_none()) {
            tool.run_once();
            match (&tool.error, tool.wall.last()) {
                (Some(e), _) => eprintln!("round {round}/{runs}: {} FAILED: {e}", tool.name),
                (None, Some(s)) => eprintln!("round {round}/{runs}: {} {s:.2}s", tool.name),
                (None, None) => {}
            }
        }
    }
    let section = report(&tools, &skipped, &dump.info, runs, root);
    println!("\n{section}");
    common::update_results(&root.join("benches/RESULTS.md"), "wiki_ingest", &section);
}
