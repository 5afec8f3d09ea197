//! Wikitext → plain text, following the rules in README.md ("Wikitext cleaning rules").
//!
//! `clean` runs four linear passes, in MediaWiki's own order (preprocessor first, links next,
//! quotes and entities last):
//! 1. `<`: comments, extension tags (`<ref>`, `<math>`, … removed with their content; `<nowiki>` and
//!    `<pre>` kept literally), HTML tags (the tag goes, its content stays);
//! 2. templates and template parameters `{{…}}`, `{{{…}}}`;
//! 3. tables (by line), internal links `[[…]]`, external links `[url label]`;
//! 4. line by line: headings, list markers, `----`, bold/italic, behaviour switches, entities,
//!    whitespace.
//!
//! Unbalanced markup renders literally, as MediaWiki shows it, and every pass is linear in the input.

/// Site syntax the cleaner needs: localized namespace names, redirect magic words, interlanguage prefixes.
///
/// ```
/// use langadapt::wiki::wikitext::Syntax;
///
/// let syntax = Syntax::new(&[(6, "Dosya".to_string()), (14, "Kategori".to_string())], Some("tr"));
/// let text = "'''Kedi''' bir [[memeli]]dir.<ref>Kaynak</ref>\n[[Dosya:Kedi.jpg|küçükresim|Bir [[kedi]]]]\n\
///             == Tarihçe ==\n{{Kaynak belirt}}Evcil&nbsp;kedi.\n[[Kategori:Kediler]]\n[[en:Cat]]";
/// assert_eq!(syntax.clean(text), "Kedi bir memelidir.\n\nTarihçe\nEvcil\u{a0}kedi.");
/// assert!(syntax.is_redirect("#yönlendirme [[Kedi]]"));
/// assert!(syntax.is_disambiguation("'''Işık''' şunlardan biri olabilir:\n{{Anlam ayrımı}}"));
/// ```
#[derive(Debug, Clone)]
pub struct Syntax {
    /// The wiki's language code, lower-case (`tr`, `zh-yue`); its own interlanguage prefix is a local link.
    lang: Option<String>,
    /// Namespace prefixes whose links are removed whole (files, media, categories), folded.
    hidden_ns: Vec<String>,
    /// Names of the template namespace, folded (for `{{Template:Dab}}`).
    template_ns: Vec<String>,
    /// Redirect magic words, folded, with their `#`.
    redirect_words: Vec<String>,
    /// Disambiguation template names, first letter folded.
    disambig: Vec<String>,
}

/// Localized names of one language (aliases included).
struct LangNames {
    lang: &'static str,
    /// Namespaces 6 (File) and -2 (Media).
    file: &'static [&'static str],
    category: &'static [&'static str],
    template: &'static [&'static str],
    redirect: &'static [&'static str],
}

/// Canonical names, valid on every wiki.
const CANONICAL: LangNames = LangNames {
    lang: "en",
    file: &["File", "Image", "Media"],
    category: &["Category"],
    template: &["Template"],
    redirect: &["#REDIRECT"],
};

/// Per-language names; used for the wiki's language, or all of them when it is unknown.
#[rustfmt::skip]
const LANGS: &[LangNames] = &[
    LangNames {
        lang: "tr",
        file: &["Dosya", "Resim", "Ortam"],
        category: &["Kategori"],
        template: &["Şablon"],
        redirect: &["#YÖNLENDİRME", "#YÖNLENDİR"],
    },
    LangNames {
        lang: "et",
        file: &["Pilt", "Fail", "Meedia"],
        category: &["Kategooria"],
        template: &["Mall"],
        redirect: &["#SUUNA"],
    },
    LangNames {
        lang: "fa",
        file: &["پرونده", "تصویر", "مدیا", "رسانه"],
        category: &["رده"],
        template: &["الگو"],
        redirect: &["#تغییرمسیر", "#تغییر_مسیر"],
    },
    LangNames {
        lang: "zh",
        file: &["文件", "檔案", "档案", "图像", "圖像", "媒体", "媒體"],
        category: &["分类", "分類"],
        template: &["模板", "样板", "樣板"],
        redirect: &["#重定向"],
    },
    LangNames {
        lang: "de",
        file: &["Datei", "Bild", "Medium"],
        category: &["Kategorie"],
        template: &["Vorlage"],
        redirect: &["#WEITERLEITUNG"],
    },
    LangNames {
        lang: "fr",
        file: &["Fichier", "Média"],
        category: &["Catégorie"],
        template: &["Modèle"],
        redirect: &["#REDIRECTION"],
    },
];

/// Disambiguation templates known without configuration.
#[rustfmt::skip]
const DISAMBIG_TEMPLATES: &[&str] = &[
    "Anlam ayrımı", "Disambiguation", "Disambig", "Dab", "Täpsustus", "ابهام‌زدایی", "消歧义",
    "消歧義", "Begriffsklärung", "Homonymie",
];

impl Syntax {
    /// Builds the syntax from `<siteinfo>` namespaces (key, localized name) — may be empty for a dump
    /// without siteinfo — and the wiki's language code if known (e.g. "tr", "et", "fa", "zh").
    pub fn new(namespaces: &[(i32, String)], lang: Option<&str>) -> Syntax {
        let lang = lang.map(|l| l.trim().to_ascii_lowercase().replace('_', "-")).filter(|l| !l.is_empty());
        // Aliases go by the primary subtag (`zh-yue` uses the `zh` names).
        let primary = lang.as_deref().and_then(|l| l.split('-').next());
        let known = LANGS.iter().filter(|l| primary.is_none_or(|p| p == l.lang));
        let mut s = Syntax {
            lang: lang.clone(),
            hidden_ns: Vec::new(),
            template_ns: Vec::new(),
            redirect_words: Vec::new(),
            disambig: Vec::new(),
        };
        for names in std::iter::once(&CANONICAL).chain(known) {
            let fold = |n: &&str| normalize_title(n, true);
            s.hidden_ns.extend(names.file.iter().chain(names.category).map(fold));
            s.template_ns.extend(names.template.iter().map(fold));
            s.redirect_words.extend(names.redirect.iter().map(fold));
        }
        for (key, name) in namespaces {
            match key {
                -2 | 6 | 14 => s.hidden_ns.push(normalize_title(name, true)),
                10 => s.template_ns.push(normalize_title(name, true)),
                _ => {}
            }
        }
        for v in [&mut s.hidden_ns, &mut s.template_ns, &mut s.redirect_words] {
            v.retain(|n| !n.is_empty());
            v.sort();
            v.dedup();
        }
        s.add_disambiguation_templates(DISAMBIG_TEMPLATES.iter().copied());
        s
    }

    /// Adds extra disambiguation template names (user-supplied).
    pub fn with_disambiguation_templates(mut self, names: &[String]) -> Syntax {
        self.add_disambiguation_templates(names.iter().map(String::as_str));
        self
    }

    /// Adds names to the sorted, deduplicated disambiguation list, as `template_key` compares them.
    fn add_disambiguation_templates<'a>(&mut self, names: impl Iterator<Item = &'a str>) {
        let keys: Vec<String> = names.map(|n| self.template_key(n)).filter(|n| !n.is_empty()).collect();
        self.disambig.extend(keys);
        self.disambig.sort();
        self.disambig.dedup();
    }

    /// A template name as compared: normalized, first letter folded, template namespace prefix dropped.
    fn template_key(&self, name: &str) -> String {
        match name.split_once(':') {
            Some((prefix, rest)) if self.template_ns.contains(&normalize_title(prefix, true)) => {
                normalize_title(rest, false)
            }
            _ => normalize_title(name, false),
        }
    }

    /// Clean text of one page's wikitext.
    pub fn clean(&self, wikitext: &str) -> String {
        let text = strip_angle_markup(wikitext);
        let text = strip_templates(&text);
        let text = self.strip_links_and_tables(&text);
        finish_lines(&text)
    }

    /// True when the wikitext starts (after leading whitespace) with a redirect magic word followed by
    /// an optional colon and `[[`, as MediaWiki requires (`#REDIRECTION [[X]]` is no English redirect).
    pub fn is_redirect(&self, wikitext: &str) -> bool {
        let text = wikitext.trim_start();
        self.redirect_words.iter().any(|word| {
            let Some(rest) = strip_prefix_folded(text, word) else { return false };
            let rest = rest.trim_start();
            rest.strip_prefix(':').unwrap_or(rest).trim_start().starts_with("[[")
        })
    }

    /// True when the page is a disambiguation page: `__DISAMBIG__` or a disambiguation template.
    pub fn is_disambiguation(&self, wikitext: &str) -> bool {
        let b = wikitext.as_bytes();
        let mut i = 0;
        while let Some(p) = find_seq(b, b"__", i) {
            if b.len() >= p + 12 && b[p..p + 12].eq_ignore_ascii_case(b"__DISAMBIG__") {
                return true;
            }
            i = p + 1;
        }
        i = 0;
        while let Some(p) = find_seq(b, b"{{", i) {
            let start = p + 2;
            i = start;
            if b.get(start) == Some(&b'{') {
                continue; // a template parameter `{{{…}}}`
            }
            // The name runs to the first `|`, `}` or nested markup; real names are short.
            let len = b[start..].iter().take(256).position(|c| matches!(c, b'|' | b'}' | b'{' | b'<'));
            let Some(len) = len else { continue };
            if self.disambig.contains(&self.template_key(&wikitext[start..start + len])) {
                return true;
            }
        }
        false
    }

    /// Pass 3: tables go by line; links are resolved with a stack so file captions may hold links.
    fn strip_links_and_tables(&self, s: &str) -> String {
        let b = s.as_bytes();
        let mut out = String::with_capacity(s.len());
        // Output offsets of the `[[` still open. Bounded so a pathological nest stays linear.
        let mut open: Vec<usize> = Vec::new();
        let mut ext_memo = 0;
        let (mut i, mut last) = (0, 0);
        let mut line_start = true;
        while i < b.len() {
            if line_start {
                line_start = false;
                if let Some(end) = table_end(b, i) {
                    out.push_str(&s[last..i]);
                    i = end;
                    last = end;
                    continue;
                }
            }
            i = find_any(b, i, [b'\n', b'[', b']']);
            let Some(&c) = b.get(i) else { break };
            let next = b.get(i + 1).copied();
            match c {
                b'\n' => {
                    line_start = true;
                    i += 1;
                }
                b'[' if next == Some(b'[') => {
                    out.push_str(&s[last..i]);
                    if open.len() == MAX_LINK_NESTING {
                        open.remove(0); // the oldest stays literal text
                    }
                    open.push(out.len());
                    out.push_str("[[");
                    i += 2;
                    last = i;
                }
                b'[' => match external_link(b, i, &mut ext_memo) {
                    Some((label, end)) => {
                        out.push_str(&s[last..i]);
                        out.push_str(&s[label]);
                        i = end;
                        last = end;
                    }
                    None => i += 1,
                },
                _ if next == Some(b']') && !open.is_empty() => {
                    out.push_str(&s[last..i]);
                    i += 2;
                    last = i;
                    if let Some(pos) = open.pop() {
                        if !self.resolve_link(&mut out, pos) {
                            out.push_str("]]");
                        }
                    }
                }
                _ => i += 1,
            }
        }
        out.push_str(&s[last..]);
        out
    }

    /// Replaces the link whose `[[` sits at `out[pos..]` (its `]]` not written) by its visible text.
    /// Returns false when it is no link (bad target), so the caller keeps it literally.
    fn resolve_link(&self, out: &mut String, pos: usize) -> bool {
        let inner = pos + 2;
        let bar = out[inner..].find('|').map(|k| inner + k);
        let raw_target = &out[inner..bar.unwrap_or(out.len())];
        if raw_target.bytes().any(|c| matches!(c, b'\n' | b'<' | b'>' | b'[' | b']' | b'{' | b'}')) {
            return false;
        }
        let target = raw_target.trim_matches([' ', '\t', '_']);
        if target.is_empty() {
            return false;
        }
        let mut t_start = inner + (raw_target.len() - raw_target.trim_start_matches([' ', '\t', '_']).len());
        if let Some(rest) = target.strip_prefix(':') {
            // A leading colon makes any namespace an ordinary, visible link.
            t_start += target.len() - rest.trim_start().len();
        } else if let Some((prefix, _)) = target.split_once(':') {
            if self.is_hidden_prefix(prefix) {
                out.truncate(pos);
                return true;
            }
        }
        let t_end = inner + raw_target.trim_end_matches([' ', '\t', '_']).len();
        let label = bar.map(|b| b + 1).filter(|&b| !out[b..].trim().is_empty());
        let (start, end) = match label {
            Some(b) => (b, out.len()),
            None if t_start < t_end => (t_start, t_end),
            None => return false,
        };
        out.truncate(end);
        out.drain(pos..start);
        true
    }

    /// Whether `[[prefix:…]]` is a file, media, category or interlanguage link.
    fn is_hidden_prefix(&self, prefix: &str) -> bool {
        if self.hidden_ns.contains(&normalize_title(prefix, true)) {
            return true;
        }
        let code = prefix.trim().to_ascii_lowercase();
        // The wiki's own prefix is a local link in MediaWiki.
        LANG_CODES.binary_search(&code.as_str()).is_ok() && self.lang.as_deref() != Some(code.as_str())
    }
}

/// Deepest `[[` nesting tracked; deeper openings push out the oldest, which then stays literal.
const MAX_LINK_NESTING: usize = 64;

/// Comparison fold: lower case, with Turkish dotted/dotless I and i all equal (`İ` lower-cases to two
/// chars in Rust, which would break char-by-char comparison).
fn fold_char(c: char) -> char {
    match c {
        'I' | 'ı' | 'İ' | 'i' => 'i',
        c if c.is_ascii() => c.to_ascii_lowercase(),
        c => {
            let mut lower = c.to_lowercase();
            match (lower.next(), lower.next()) {
                (Some(l), None) => l,
                _ => c,
            }
        }
    }
}

/// MediaWiki title normalization: `_` is a space, spaces trimmed and collapsed; the first letter (or
/// every letter, for namespace names) folded.
fn normalize_title(s: &str, fold_all: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for word in s.split([' ', '_', '\t', '\n']).filter(|w| !w.is_empty()) {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    let mut chars = out.chars();
    match chars.next() {
        Some(_) if fold_all => out.chars().map(fold_char).collect(),
        Some(first) => std::iter::once(fold_char(first)).chain(chars).collect(),
        None => out,
    }
}

/// `text` without the prefix `folded` (already folded), comparing with `fold_char`.
fn strip_prefix_folded<'a>(text: &'a str, folded: &str) -> Option<&'a str> {
    let mut chars = text.char_indices();
    for want in folded.chars() {
        let (_, got) = chars.next()?;
        if fold_char(got) != want {
            return None;
        }
    }
    Some(chars.next().map_or("", |(k, _)| &text[k..]))
}

/// Offset of the first byte at or after `from` that is one of `set`, or `b.len()`.
fn find_any(b: &[u8], from: usize, set: [u8; 3]) -> usize {
    let from = from.min(b.len());
    memchr::memchr3(set[0], set[1], set[2], &b[from..]).map_or(b.len(), |k| from + k)
}

/// Offset of the first `byte` at or after `from`.
fn find_byte(b: &[u8], byte: u8, from: usize) -> Option<usize> {
    memchr::memchr(byte, b.get(from..)?).map(|k| from + k)
}

/// Offset of the first `seq` (non-empty) at or after `from`.
fn find_seq(b: &[u8], seq: &[u8], from: usize) -> Option<usize> {
    memchr::memmem::find(b.get(from..)?, seq).map(|k| from + k)
}

// ---------------------------------------------------------------------------------------------
// Pass 1: comments and tags
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Debug)]
enum TagKind {
    /// Extension tag removed with its content.
    Drop,
    /// Content kept literally (`<nowiki>`, `<pre>`).
    Verbatim,
    /// HTML tag: the tag goes, its content stays.
    Html,
    /// `<br>`: a space, so words on both sides stay apart.
    Break,
}

/// Kind and static name of a lower-case tag name; `None` for unknown tags, which stay text.
fn tag_kind(name: &str) -> Option<(TagKind, &'static str)> {
    #[rustfmt::skip]
    const DROP: &[&str] = &[
        "ref", "references", "math", "gallery", "syntaxhighlight", "source", "timeline", "score",
        "imagemap", "mapframe", "maplink", "templatedata", "chem", "ce", "hiero", "graph",
        "includeonly", "indicator", "inputbox", "categorytree", "templatestyles", "charinsert",
        "dynamicpagelist",
    ];
    #[rustfmt::skip]
    const HTML: &[&str] = &[
        "abbr", "b", "bdi", "bdo", "big", "blockquote", "caption", "center", "cite", "code", "data",
        "dd", "del", "dfn", "div", "dl", "dt", "em", "font", "h1", "h2", "h3", "h4", "h5", "h6", "hr",
        "i", "ins", "kbd", "li", "link", "mark", "meta", "noinclude", "ol", "onlyinclude", "p", "poem",
        "q", "rb", "rp", "rt", "rtc", "ruby", "s", "samp", "section", "small", "span", "strike",
        "strong", "sub", "sup", "table", "tbody", "td", "tfoot", "th", "thead", "time", "tr", "tt", "u",
        "ul", "var", "wbr",
    ];
    if let Some(n) = DROP.iter().find(|n| **n == name) {
        return Some((TagKind::Drop, n));
    }
    if let Some(n) = HTML.iter().find(|n| **n == name) {
        return Some((TagKind::Html, n));
    }
    match name {
        "nowiki" => Some((TagKind::Verbatim, "nowiki")),
        "pre" => Some((TagKind::Verbatim, "pre")),
        "br" => Some((TagKind::Break, "br")),
        _ => None,
    }
}

/// A parsed known tag.
struct Tag {
    kind: TagKind,
    name: &'static str,
    closing: bool,
    self_closing: bool,
    /// Offset just past the `>`.
    end: usize,
}

/// Parses a known tag at `b[lt] == b'<'`. `no_gt_from`: no `>` at or after this offset (memo, so
/// many unterminated `<tag` stay linear).
fn parse_tag(b: &[u8], lt: usize, no_gt_from: &mut usize) -> Option<Tag> {
    let mut j = lt + 1;
    let closing = b.get(j) == Some(&b'/');
    j += usize::from(closing);
    let name_start = j;
    while j < b.len() && b[j].is_ascii_alphanumeric() && j - name_start < 20 {
        j += 1;
    }
    if j == name_start || !b[name_start].is_ascii_alphabetic() {
        return None;
    }
    if !matches!(b.get(j), Some(b'>' | b'/' | b' ' | b'\t' | b'\n' | b'\r')) {
        return None;
    }
    let name = std::str::from_utf8(&b[name_start..j]).ok()?.to_ascii_lowercase();
    let (kind, name) = tag_kind(&name)?;
    if j >= *no_gt_from {
        return None;
    }
    // HTML attributes cannot hold `<` (MediaWiki's sanitizer splits on it); extension tags end at the
    // first `>` whatever comes before.
    let stop = |c: &u8| *c == b'>' || (*c == b'<' && matches!(kind, TagKind::Html | TagKind::Break));
    let Some(k) = b[j..].iter().position(stop) else {
        *no_gt_from = j;
        return None;
    };
    let gt = j + k;
    if b[gt] != b'>' {
        return None;
    }
    Some(Tag { kind, name, closing, self_closing: gt > j && b[gt - 1] == b'/', end: gt + 1 })
}

/// Finds `</name\s*>` from `from`: (start, end). `memo` records names with no closing tag left.
fn find_close(b: &[u8], from: usize, name: &'static str, memo: &mut Vec<&'static str>) -> Option<(usize, usize)> {
    if memo.contains(&name) {
        return None;
    }
    let mut i = from;
    while let Some(p) = find_seq(b, b"</", i) {
        let n = p + 2 + name.len();
        if b.len() >= n && b[p + 2..n].eq_ignore_ascii_case(name.as_bytes()) {
            let mut k = n;
            while k < b.len() && b[k].is_ascii_whitespace() {
                k += 1;
            }
            if b.get(k) == Some(&b'>') {
                return Some((p, k + 1));
            }
        }
        i = p + 2;
    }
    memo.push(name);
    None
}

/// Pass 1: removes comments, extension tags with their content and HTML tags (keeping content).
fn strip_angle_markup(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let (mut i, mut last) = (0, 0);
    let mut no_gt_from = usize::MAX;
    let mut unclosed: Vec<&'static str> = Vec::new();
    while let Some(lt) = find_byte(b, b'<', i) {
        i = lt + 1;
        if b[lt..].starts_with(b"<!--") {
            out.push_str(&s[last..lt]);
            // An unclosed comment runs to the end, as in MediaWiki.
            i = find_seq(b, b"-->", lt + 4).map_or(b.len(), |p| p + 3);
            last = i;
            continue;
        }
        let Some(tag) = parse_tag(b, lt, &mut no_gt_from) else { continue };
        out.push_str(&s[last..lt]);
        i = tag.end;
        last = tag.end;
        match tag.kind {
            TagKind::Break => out.push(' '),
            TagKind::Html => {}
            _ if tag.closing || tag.self_closing => {}
            TagKind::Drop | TagKind::Verbatim => {
                // Unclosed: only the opening tag goes.
                if let Some((start, end)) = find_close(b, tag.end, tag.name, &mut unclosed) {
                    if tag.kind == TagKind::Verbatim {
                        escape_verbatim(&s[tag.end..start], &mut out);
                    }
                    i = end;
                    last = end;
                }
            }
        }
    }
    out.push_str(&s[last..]);
    out
}

/// Writes `<nowiki>` content with markup characters as numeric entities, so later passes leave
/// them alone and the last pass decodes them back.
fn escape_verbatim(s: &str, out: &mut String) {
    let mut last = 0;
    for (k, c) in s.bytes().enumerate() {
        if b"!#'*-:;<=>[]_{|}~".contains(&c) {
            out.push_str(&s[last..k]);
            out.push_str("&#");
            out.push_str(&c.to_string());
            out.push(';');
            last = k + 1;
        }
    }
    out.push_str(&s[last..]);
}

// ---------------------------------------------------------------------------------------------
// Pass 2: templates
// ---------------------------------------------------------------------------------------------

/// Removes `{{…}}` and `{{{…}}}`, nested, pairing brace runs as MediaWiki's preprocessor does (3 with
/// 3 when both sides have them, else 2). Everything is written out and a closed construct truncates
/// the output back to its opening, so nesting costs nothing extra; unclosed braces stay literal.
fn strip_templates(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    // (output offset of the run's first brace, braces still open)
    let mut open: Vec<(usize, usize)> = Vec::new();
    let (mut i, mut last) = (0, 0);
    while i < b.len() {
        i = find_any(b, i, [b'{', b'}', b'}']);
        let Some(&brace) = b.get(i) else { break };
        let run_start = i;
        while i < b.len() && b[i] == brace {
            i += 1;
        }
        let n = i - run_start;
        if brace == b'{' {
            if n >= 2 {
                out.push_str(&s[last..run_start]);
                open.push((out.len(), n));
                out.push_str(&s[run_start..i]);
                last = i;
            }
            continue;
        }
        if open.is_empty() {
            continue;
        }
        out.push_str(&s[last..run_start]);
        let mut closing = n;
        while closing >= 2 {
            let Some(top) = open.last_mut() else { break };
            let matched = if top.1 >= 3 && closing >= 3 { 3 } else { 2 };
            top.1 -= matched;
            closing -= matched;
            out.truncate(top.0 + top.1);
            if top.1 < 2 {
                open.pop();
            }
        }
        out.push_str(&s[i - closing..i]);
        last = i;
    }
    out.push_str(&s[last..]);
    out
}

// ---------------------------------------------------------------------------------------------
// Pass 3 helpers: tables and external links
// ---------------------------------------------------------------------------------------------

/// Offset of the first byte at or after `i` that is no space, tab or CR.
fn skip_blanks(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && matches!(b[i], b' ' | b'\t' | b'\r') {
        i += 1;
    }
    i
}

/// Whether the line at `i` opens a table: `{|`, maybe indented with `:`.
fn opens_table(b: &[u8], i: usize) -> bool {
    let mut j = skip_blanks(b, i);
    while b.get(j) == Some(&b':') {
        j += 1;
    }
    b[skip_blanks(b, j)..].starts_with(b"{|")
}

/// If a table opens on the line at `start`, the offset just past its matching `|}` (the rest of that
/// line stays text, as in MediaWiki), or the end of the text for an unclosed table.
fn table_end(b: &[u8], start: usize) -> Option<usize> {
    if !opens_table(b, start) {
        return None;
    }
    let mut depth = 1;
    let mut i = start;
    while let Some(nl) = find_byte(b, b'\n', i) {
        i = nl + 1;
        let j = skip_blanks(b, i);
        if opens_table(b, i) {
            depth += 1;
        } else if b[j..].starts_with(b"|}") {
            depth -= 1;
            if depth == 0 {
                return Some(j + 2);
            }
        }
    }
    Some(b.len())
}

/// Length of the URL scheme at the start of `b` (`https://`, `mailto:`, `//`, …), if any.
fn url_scheme_len(b: &[u8]) -> Option<usize> {
    #[rustfmt::skip]
    const SCHEMES: &[&str] = &[
        "http://", "https://", "//", "ftp://", "ftps://", "sftp://", "irc://", "ircs://", "gopher://",
        "telnet://", "nntp://", "worldwind://", "mailto:", "news:", "svn://", "git://", "mms://",
        "ssh://", "redis://", "sip:", "sips:", "xmpp:", "geo:", "tel:", "urn:", "bitcoin:", "magnet:",
        "matrix:",
    ];
    SCHEMES.iter().find(|s| b.len() >= s.len() && b[..s.len()].eq_ignore_ascii_case(s.as_bytes())).map(|s| s.len())
}

/// An external link `[url label]` / `[url]` at `b[i] == b'['`: the label's range (empty without a
/// label) and the offset past `]`. `memo`: no `]` before this offset on the current line.
fn external_link(b: &[u8], i: usize, memo: &mut usize) -> Option<(std::ops::Range<usize>, usize)> {
    let url = i + 1;
    let mut j = url + url_scheme_len(&b[url..])?;
    let host = j;
    while j < b.len() && !matches!(b[j], b' ' | b'\t' | b'\n' | b'\r' | b']' | b'[' | b'<' | b'>' | b'"') {
        j += 1;
    }
    if j == host {
        return None;
    }
    match b.get(j) {
        Some(b']') => return Some((j..j, j + 1)),
        Some(b' ' | b'\t') => {}
        _ => return None,
    }
    let label = skip_blanks(b, j);
    if label < *memo {
        return None;
    }
    let k = label + b[label..].iter().position(|&c| c == b']' || c == b'\n').unwrap_or(b.len() - label);
    if b.get(k) != Some(&b']') {
        *memo = k;
        return None;
    }
    Some((label..k, k + 1))
}

// ---------------------------------------------------------------------------------------------
// Pass 4: lines
// ---------------------------------------------------------------------------------------------

/// Pass 4: per line markup, entities and whitespace; joins lines with single empty lines between
/// paragraphs and none at either end.
fn finish_lines(s: &str) -> String {
    let mut res = String::with_capacity(s.len());
    let mut blank = false;
    let mut quoted = String::new();
    for raw in s.split('\n') {
        let body = line_body(raw);
        let mark = res.len();
        if mark > 0 {
            res.push_str(if blank { "\n\n" } else { "\n" });
        }
        let start = res.len();
        let text = if body.contains("''") {
            quoted.clear();
            resolve_quotes(body, &mut quoted);
            quoted.as_str()
        } else {
            body
        };
        emit_inline(text, &mut res);
        if res.len() == start {
            res.truncate(mark);
            blank = mark > 0;
        } else {
            blank = false;
        }
    }
    res
}

/// The text of a line without heading `=`, a leading `----` or list and indent markers.
fn line_body(line: &str) -> &str {
    let l = line.trim_end_matches([' ', '\t', '\r']);
    if l.starts_with('=') {
        if let Some(h) = heading(l) {
            return h;
        }
    }
    if l.starts_with("----") {
        return l.trim_start_matches('-');
    }
    l.trim_start_matches(['*', '#', ':', ';'])
}

/// Heading text: the `=` on both sides (the lesser count, at most 6) removed.
fn heading(l: &str) -> Option<&str> {
    let n = l.len();
    let lead = l.bytes().take_while(|&c| c == b'=').count();
    let level = if lead == n {
        (n - 1) / 2 // a line of `=` only: `===` is a level-1 heading reading `=`
    } else {
        lead.min(l.bytes().rev().take_while(|&c| c == b'=').count())
    }
    .min(6);
    (level > 0).then(|| &l[level..n - level])
}

/// Removes bold/italic apostrophes as MediaWiki's doQuotes: runs of 2, 3, 5 are markup; 4 is `'` +
/// bold; more than 5 leaves the extra ones; with odd bold and odd italic counts one bold becomes
/// `'` + italic (after a one-letter word, else after a longer word, else after a space).
fn resolve_quotes(line: &str, out: &mut String) {
    let b = line.as_bytes();
    // (offset, literal apostrophes, markup apostrophes) per run of two or more
    let mut runs: Vec<(usize, usize, usize)> = Vec::new();
    let mut i = 0;
    while let Some(k) = find_byte(b, b'\'', i) {
        i = k;
        while i < b.len() && b[i] == b'\'' {
            i += 1;
        }
        match i - k {
            1 => {}
            4 => runs.push((k, 1, 3)),
            n if n > 5 => runs.push((k, n - 5, 5)),
            n => runs.push((k, 0, n)),
        }
    }
    let italics = runs.iter().filter(|r| r.2 != 3).count();
    let bold = runs.iter().filter(|r| r.2 != 2).count();
    if italics % 2 == 1 && bold % 2 == 1 {
        let (mut single, mut multi, mut space) = (None, None, None);
        let mut seg_start = 0;
        for (idx, &(at, lit, mark)) in runs.iter().enumerate() {
            if mark == 3 {
                // MediaWiki looks at the last two bytes of the text since the previous run.
                let seg = &b[seg_start..at + lit];
                let x1 = seg.last();
                let x2 = if seg.len() >= 2 { seg.get(seg.len() - 2) } else { seg.first() };
                if x1 == Some(&b' ') {
                    space = space.or(Some(idx));
                } else if x2 == Some(&b' ') {
                    single = Some(idx);
                    break;
                } else {
                    multi = multi.or(Some(idx));
                }
            }
            seg_start = at + lit + mark;
        }
        if let Some(idx) = single.or(multi).or(space) {
            runs[idx].1 += 1;
            runs[idx].2 = 2;
        }
    }
    let mut last = 0;
    for (at, lit, mark) in runs {
        out.push_str(&line[last..at]);
        out.push_str(&line[at..at + lit]);
        last = at + lit + mark;
    }
    out.push_str(&line[last..]);
}

/// Writes one line's text: entities decoded, behaviour switches dropped, spaces and tabs collapsed
/// and trimmed (U+00A0 is no whitespace here).
fn emit_inline(t: &str, res: &mut String) {
    let b = t.as_bytes();
    let mut w = LineWriter { res, pending_space: false, started: false };
    let (mut i, mut last) = (0, 0);
    loop {
        // Spaces are handled piecewise by `LineWriter::push`; tabs are rare and split here.
        i = find_any(b, i, [b'&', b'_', b'\t']);
        let Some(&c) = b.get(i) else { break };
        match c {
            b'\t' => {
                w.push(&t[last..i]);
                while i < b.len() && matches!(b[i], b' ' | b'\t') {
                    i += 1;
                }
                w.pending_space = true;
                last = i;
            }
            b'&' => match decode_entity(&b[i..]) {
                Some((c, len)) => {
                    w.push(&t[last..i]);
                    if matches!(c, ' ' | '\t' | '\n' | '\r') {
                        w.pending_space = true;
                    } else {
                        w.push(c.encode_utf8(&mut [0; 4]));
                    }
                    i += len;
                    last = i;
                }
                None => i += 1,
            },
            b'_' if b.get(i + 1) == Some(&b'_') => match switch_len(&t[i..]) {
                Some(len) => {
                    w.push(&t[last..i]);
                    i += len;
                    last = i;
                }
                None => i += 1,
            },
            _ => i += 1,
        }
    }
    w.push(&t[last..]);
}

/// Appends text to a line, putting one space where whitespace was seen between two pieces.
struct LineWriter<'a> {
    res: &'a mut String,
    pending_space: bool,
    started: bool,
}

impl LineWriter<'_> {
    /// Appends a piece without tabs.
    fn push(&mut self, piece: &str) {
        if piece.contains("  ") {
            for (k, word) in piece.split(' ').enumerate() {
                self.pending_space |= k > 0;
                self.push_run(word);
            }
        } else {
            self.push_run(piece);
        }
    }

    /// Appends a piece without tabs or double spaces; its edge spaces only count between texts.
    fn push_run(&mut self, piece: &str) {
        let inner = piece.trim_start_matches(' ');
        self.pending_space |= inner.len() < piece.len();
        let core = inner.trim_end_matches(' ');
        if core.is_empty() {
            return;
        }
        if self.pending_space && self.started {
            self.res.push(' ');
        }
        self.res.push_str(core);
        self.started = true;
        self.pending_space = core.len() < inner.len();
    }
}

/// Length of a behaviour switch (`__NOTOC__`, `__İÇİNDEKİLERYOK__`) at the start of `t`: letters
/// without lower case (any script), digits and single `_` between double underscores.
fn switch_len(t: &str) -> Option<usize> {
    let rest = t.strip_prefix("__")?;
    let mut letters = false;
    for (k, c) in rest.char_indices().take(64) {
        if c == '_' {
            if rest[k..].starts_with("__") {
                return (k > 0 && letters).then_some(k + 4);
            }
        } else if !c.is_alphanumeric() || c.is_lowercase() {
            return None;
        }
        letters |= c.is_alphabetic();
    }
    None
}

/// Decodes an entity at `b[0] == b'&'`: named (HTML 4 set and `&apos;`), `&#123;` or `&#x7B;`.
/// Returns the character and the entity's length; unknown or invalid entities stay text.
fn decode_entity(b: &[u8]) -> Option<(char, usize)> {
    let semi = b.iter().take(40).position(|&c| c == b';')?;
    let name = &b[1..semi];
    let c = if let Some(num) = name.strip_prefix(b"#") {
        let (digits, radix) = match num.first() {
            Some(b'x' | b'X') => (&num[1..], 16),
            _ => (num, 10),
        };
        if digits.is_empty() || !digits.iter().all(|c| (*c as char).is_digit(radix)) {
            return None;
        }
        let v = u32::from_str_radix(std::str::from_utf8(digits).ok()?, radix).ok()?;
        // The code points MediaWiki's sanitizer accepts.
        if !matches!(v, 0x9 | 0xa | 0xd | 0x20..=0xd7ff | 0xe000..=0xfffd | 0x10000..=0x10ffff) {
            return None;
        }
        char::from_u32(v)?
    } else {
        let k = ENTITIES.binary_search_by(|(n, _)| n.as_bytes().cmp(name)).ok()?;
        ENTITIES[k].1
    };
    Some((c, semi + 1))
}

/// HTML 4 named entities plus `apos`, sorted by name (byte order) for binary search.
#[rustfmt::skip]
const ENTITIES: &[(&str, char)] = &[
    ("AElig", '\u{c6}'), ("Aacute", '\u{c1}'), ("Acirc", '\u{c2}'), ("Agrave", '\u{c0}'),
    ("Alpha", '\u{391}'), ("Aring", '\u{c5}'), ("Atilde", '\u{c3}'), ("Auml", '\u{c4}'),
    ("Beta", '\u{392}'), ("Ccedil", '\u{c7}'), ("Chi", '\u{3a7}'), ("Dagger", '\u{2021}'),
    ("Delta", '\u{394}'), ("ETH", '\u{d0}'), ("Eacute", '\u{c9}'), ("Ecirc", '\u{ca}'),
    ("Egrave", '\u{c8}'), ("Epsilon", '\u{395}'), ("Eta", '\u{397}'), ("Euml", '\u{cb}'),
    ("Gamma", '\u{393}'), ("Iacute", '\u{cd}'), ("Icirc", '\u{ce}'), ("Igrave", '\u{cc}'),
    ("Iota", '\u{399}'), ("Iuml", '\u{cf}'), ("Kappa", '\u{39a}'), ("Lambda", '\u{39b}'),
    ("Mu", '\u{39c}'), ("Ntilde", '\u{d1}'), ("Nu", '\u{39d}'), ("OElig", '\u{152}'),
    ("Oacute", '\u{d3}'), ("Ocirc", '\u{d4}'), ("Ograve", '\u{d2}'), ("Omega", '\u{3a9}'),
    ("Omicron", '\u{39f}'), ("Oslash", '\u{d8}'), ("Otilde", '\u{d5}'), ("Ouml", '\u{d6}'),
    ("Phi", '\u{3a6}'), ("Pi", '\u{3a0}'), ("Prime", '\u{2033}'), ("Psi", '\u{3a8}'),
    ("Rho", '\u{3a1}'), ("Scaron", '\u{160}'), ("Sigma", '\u{3a3}'), ("THORN", '\u{de}'),
    ("Tau", '\u{3a4}'), ("Theta", '\u{398}'), ("Uacute", '\u{da}'), ("Ucirc", '\u{db}'),
    ("Ugrave", '\u{d9}'), ("Upsilon", '\u{3a5}'), ("Uuml", '\u{dc}'), ("Xi", '\u{39e}'),
    ("Yacute", '\u{dd}'), ("Yuml", '\u{178}'), ("Zeta", '\u{396}'), ("aacute", '\u{e1}'),
    ("acirc", '\u{e2}'), ("acute", '\u{b4}'), ("aelig", '\u{e6}'), ("agrave", '\u{e0}'),
    ("alefsym", '\u{2135}'), ("alpha", '\u{3b1}'), ("amp", '\u{26}'), ("and", '\u{2227}'),
    ("ang", '\u{2220}'), ("apos", '\u{27}'), ("aring", '\u{e5}'), ("asymp", '\u{2248}'),
    ("atilde", '\u{e3}'), ("auml", '\u{e4}'), ("bdquo", '\u{201e}'), ("beta", '\u{3b2}'),
    ("brvbar", '\u{a6}'), ("bull", '\u{2022}'), ("cap", '\u{2229}'), ("ccedil", '\u{e7}'),
    ("cedil", '\u{b8}'), ("cent", '\u{a2}'), ("chi", '\u{3c7}'), ("circ", '\u{2c6}'),
    ("clubs", '\u{2663}'), ("cong", '\u{2245}'), ("copy", '\u{a9}'), ("crarr", '\u{21b5}'),
    ("cup", '\u{222a}'), ("curren", '\u{a4}'), ("dArr", '\u{21d3}'), ("dagger", '\u{2020}'),
    ("darr", '\u{2193}'), ("deg", '\u{b0}'), ("delta", '\u{3b4}'), ("diams", '\u{2666}'),
    ("divide", '\u{f7}'), ("eacute", '\u{e9}'), ("ecirc", '\u{ea}'), ("egrave", '\u{e8}'),
    ("empty", '\u{2205}'), ("emsp", '\u{2003}'), ("ensp", '\u{2002}'), ("epsilon", '\u{3b5}'),
    ("equiv", '\u{2261}'), ("eta", '\u{3b7}'), ("eth", '\u{f0}'), ("euml", '\u{eb}'),
    ("euro", '\u{20ac}'), ("exist", '\u{2203}'), ("fnof", '\u{192}'), ("forall", '\u{2200}'),
    ("frac12", '\u{bd}'), ("frac14", '\u{bc}'), ("frac34", '\u{be}'), ("frasl", '\u{2044}'),
    ("gamma", '\u{3b3}'), ("ge", '\u{2265}'), ("gt", '\u{3e}'), ("hArr", '\u{21d4}'),
    ("harr", '\u{2194}'), ("hearts", '\u{2665}'), ("hellip", '\u{2026}'), ("iacute", '\u{ed}'),
    ("icirc", '\u{ee}'), ("iexcl", '\u{a1}'), ("igrave", '\u{ec}'), ("image", '\u{2111}'),
    ("infin", '\u{221e}'), ("int", '\u{222b}'), ("iota", '\u{3b9}'), ("iquest", '\u{bf}'),
    ("isin", '\u{2208}'), ("iuml", '\u{ef}'), ("kappa", '\u{3ba}'), ("lArr", '\u{21d0}'),
    ("lambda", '\u{3bb}'), ("lang", '\u{2329}'), ("laquo", '\u{ab}'), ("larr", '\u{2190}'),
    ("lceil", '\u{2308}'), ("ldquo", '\u{201c}'), ("le", '\u{2264}'), ("lfloor", '\u{230a}'),
    ("lowast", '\u{2217}'), ("loz", '\u{25ca}'), ("lrm", '\u{200e}'), ("lsaquo", '\u{2039}'),
    ("lsquo", '\u{2018}'), ("lt", '\u{3c}'), ("macr", '\u{af}'), ("mdash", '\u{2014}'),
    ("micro", '\u{b5}'), ("middot", '\u{b7}'), ("minus", '\u{2212}'), ("mu", '\u{3bc}'),
    ("nabla", '\u{2207}'), ("nbsp", '\u{a0}'), ("ndash", '\u{2013}'), ("ne", '\u{2260}'),
    ("ni", '\u{220b}'), ("not", '\u{ac}'), ("notin", '\u{2209}'), ("nsub", '\u{2284}'),
    ("ntilde", '\u{f1}'), ("nu", '\u{3bd}'), ("oacute", '\u{f3}'), ("ocirc", '\u{f4}'),
    ("oelig", '\u{153}'), ("ograve", '\u{f2}'), ("oline", '\u{203e}'), ("omega", '\u{3c9}'),
    ("omicron", '\u{3bf}'), ("oplus", '\u{2295}'), ("or", '\u{2228}'), ("ordf", '\u{aa}'),
    ("ordm", '\u{ba}'), ("oslash", '\u{f8}'), ("otilde", '\u{f5}'), ("otimes", '\u{2297}'),
    ("ouml", '\u{f6}'), ("para", '\u{b6}'), ("part", '\u{2202}'), ("permil", '\u{2030}'),
    ("perp", '\u{22a5}'), ("phi", '\u{3c6}'), ("pi", '\u{3c0}'), ("piv", '\u{3d6}'),
    ("plusmn", '\u{b1}'), ("pound", '\u{a3}'), ("prime", '\u{2032}'), ("prod", '\u{220f}'),
    ("prop", '\u{221d}'), ("psi", '\u{3c8}'), ("quot", '\u{22}'), ("rArr", '\u{21d2}'),
    ("radic", '\u{221a}'), ("rang", '\u{232a}'), ("raquo", '\u{bb}'), ("rarr", '\u{2192}'),
    ("rceil", '\u{2309}'), ("rdquo", '\u{201d}'), ("real", '\u{211c}'), ("reg", '\u{ae}'),
    ("rfloor", '\u{230b}'), ("rho", '\u{3c1}'), ("rlm", '\u{200f}'), ("rsaquo", '\u{203a}'),
    ("rsquo", '\u{2019}'), ("sbquo", '\u{201a}'), ("scaron", '\u{161}'), ("sdot", '\u{22c5}'),
    ("sect", '\u{a7}'), ("shy", '\u{ad}'), ("sigma", '\u{3c3}'), ("sigmaf", '\u{3c2}'),
    ("sim", '\u{223c}'), ("spades", '\u{2660}'), ("sub", '\u{2282}'), ("sube", '\u{2286}'),
    ("sum", '\u{2211}'), ("sup", '\u{2283}'), ("sup1", '\u{b9}'), ("sup2", '\u{b2}'),
    ("sup3", '\u{b3}'), ("supe", '\u{2287}'), ("szlig", '\u{df}'), ("tau", '\u{3c4}'),
    ("there4", '\u{2234}'), ("theta", '\u{3b8}'), ("thetasym", '\u{3d1}'), ("thinsp", '\u{2009}'),
    ("thorn", '\u{fe}'), ("tilde", '\u{2dc}'), ("times", '\u{d7}'), ("trade", '\u{2122}'),
    ("uArr", '\u{21d1}'), ("uacute", '\u{fa}'), ("uarr", '\u{2191}'), ("ucirc", '\u{fb}'),
    ("ugrave", '\u{f9}'), ("uml", '\u{a8}'), ("upsih", '\u{3d2}'), ("upsilon", '\u{3c5}'),
    ("uuml", '\u{fc}'), ("weierp", '\u{2118}'), ("xi", '\u{3be}'), ("yacute", '\u{fd}'),
    ("yen", '\u{a5}'), ("yuml", '\u{ff}'), ("zeta", '\u{3b6}'), ("zwj", '\u{200d}'),
    ("zwnj", '\u{200c}'),
];

/// Wikipedia language codes (interlanguage link prefixes), sorted for binary search.
#[rustfmt::skip]
const LANG_CODES: &[&str] = &[
    "aa", "ab", "ace", "ady", "af", "ak", "als", "alt", "am", "ami", "an", "ang", "ann", "anp", "ar", "arc", "ary",
    "arz", "as", "ast", "atj", "av", "avk", "awa", "ay", "az", "azb", "ba", "ban", "bar", "bat-smg", "bbc", "bcl",
    "bdr", "be", "be-tarask", "be-x-old", "bew", "bg", "bh", "bi", "bjn", "blk", "bm", "bn", "bo", "bpy", "br",
    "bs", "btm", "bug", "bxr", "ca", "cbk-zam", "cdo", "ce", "ceb", "ch", "cho", "chr", "chy", "ckb", "co", "cr",
    "crh", "cs", "csb", "cu", "cv", "cy", "da", "dag", "de", "dga", "din", "diq", "dsb", "dtp", "dty", "dv", "dz",
    "ee", "el", "eml", "en", "eo", "es", "et", "eu", "ext", "fa", "fat", "ff", "fi", "fiu-vro", "fj", "fo", "fon",
    "fr", "frp", "frr", "fur", "fy", "ga", "gag", "gan", "gcr", "gd", "gl", "glk", "gn", "gom", "gor", "got", "gpe",
    "gsw", "gu", "guc", "gur", "guw", "gv", "ha", "hak", "haw", "he", "hi", "hif", "ho", "hr", "hsb", "ht", "hu",
    "hy", "hyw", "hz", "ia", "iba", "id", "ie", "ig", "igl", "ii", "ik", "ilo", "inh", "io", "is", "it", "iu", "ja",
    "jam", "jbo", "jv", "ka", "kaa", "kab", "kbd", "kbp", "kcg", "kg", "kge", "ki", "kj", "kk", "kl", "km", "kn",
    "knc", "ko", "koi", "kr", "krc", "ks", "ksh", "ku", "kus", "kv", "kw", "ky", "la", "lad", "lb", "lbe", "lez",
    "lfn", "lg", "li", "lij", "lld", "lmo", "ln", "lo", "lrc", "lt", "ltg", "lv", "lzh", "mad", "mai", "map-bms",
    "mdf", "mg", "mh", "mhr", "mi", "min", "mk", "ml", "mn", "mni", "mnw", "mo", "mos", "mr", "mrj", "ms", "mt",
    "mus", "mwl", "my", "myv", "mzn", "na", "nah", "nan", "nap", "nb", "nds", "nds-nl", "ne", "new", "ng", "nia",
    "nl", "nn", "no", "nov", "nqo", "nr", "nrm", "nso", "nup", "nv", "ny", "oc", "olo", "om", "or", "os", "pa",
    "pag", "pam", "pap", "pcd", "pcm", "pdc", "pfl", "pi", "pih", "pl", "pms", "pnb", "pnt", "ps", "pt", "pwn",
    "qu", "rki", "rm", "rmy", "rn", "ro", "roa-rup", "roa-tara", "rsk", "ru", "rue", "rup", "rw", "sa", "sah",
    "sat", "sc", "scn", "sco", "sd", "se", "sg", "sgs", "sh", "shi", "shn", "shy", "si", "simple", "sk", "skr",
    "sl", "sm", "smn", "sn", "so", "sq", "sr", "srn", "ss", "st", "stq", "su", "sv", "sw", "syl", "szl", "szy",
    "ta", "tay", "tcy", "tdd", "te", "tet", "tg", "th", "ti", "tig", "tk", "tl", "tly", "tn", "to", "tpi", "tr",
    "trv", "ts", "tt", "tum", "tw", "ty", "tyv", "udm", "ug", "uk", "ur", "uz", "ve", "vec", "vep", "vi", "vls",
    "vo", "vro", "wa", "war", "wo", "wuu", "xal", "xh", "xmf", "yi", "yo", "yue", "za", "zea", "zgh", "zh",
    "zh-classical", "zh-min-nan", "zh-yue", "zu",
];

#[cfg(test)]
mod tests {
    use super::*;

    fn tr() -> Syntax {
        let ns = [(-2, "Ortam"), (6, "Dosya"), (10, "Şablon"), (14, "Kategori"), (4, "Vikipedi")];
        Syntax::new(&ns.map(|(k, n)| (k, n.to_string())), Some("tr"))
    }

    fn clean(s: &str) -> String {
        tr().clean(s)
    }

    #[test]
    fn tables_are_sorted() {
        assert!(ENTITIES.windows(2).all(|w| w[0].0.as_bytes() < w[1].0.as_bytes()));
        assert!(LANG_CODES.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn comments() {
        assert_eq!(clean("a<!-- x -->b\n<!--\nc\n-->\nd"), "ab\n\nd");
        assert_eq!(clean("a <!-- never closed\nb"), "a");
    }

    #[test]
    fn refs_of_every_form() {
        let s = "A.<ref>x</ref> B.<ref name=\"n\">y</ref><ref name=\"n\" /><ref name=köy/>\
                 <ref group=not>z</ref><REF>w</REF > C.<ref/>";
        assert_eq!(clean(s), "A. B. C.");
        assert_eq!(
            clean("a\n<references />\n<references/>\n<references group=\"g\">\n<ref>x</ref>\n</references>\nb"),
            "a\n\nb"
        );
        assert_eq!(clean("a<ref>unclosed b"), "aunclosed b");
    }

    #[test]
    fn extension_tags_and_html() {
        assert_eq!(clean("E <math>x^2</math> = m. <gallery>\nDosya:a.jpg|b\n</gallery>"), "E = m.");
        assert_eq!(clean("<syntaxhighlight lang=\"rust\">fn x() {}</syntaxhighlight>k"), "k");
        assert_eq!(clean("<small>(a)</small> <span style=\"c\">b</span><br />c<br>d"), "(a) b c d");
        assert_eq!(clean("3 < 5 and <foo> stays"), "3 < 5 and <foo> stays");
        assert_eq!(clean("<nowiki>[[a]] {{b}} ''c''</nowiki>"), "[[a]] {{b}} ''c''");
        assert_eq!(clean("<pre>\n* x\n</pre>"), "* x");
    }

    #[test]
    fn templates_nested() {
        assert_eq!(clean("{{a|b={{c|{{{d|}}}}}}}\nText{{sfn|x}} here {{e\n|f\n}}."), "Text here .");
        assert_eq!(clean("a {{{p|{{q}}}}} b"), "a b");
        assert_eq!(clean("x {{unclosed {{t}} y"), "x {{unclosed y");
        assert_eq!(clean("}} a {{{{b}} c"), "}} a {{ c");
    }

    #[test]
    fn tables_nested() {
        let s = "a\n{| class=\"w\"\n| x || {{t}}\n{|\n| inner\n|}\n|}\nb\n :{|\n|c\n|} tail";
        assert_eq!(clean(s), "a\n\nb\ntail");
        assert_eq!(clean("a\n{|\n| never closed\nb"), "a");
    }

    #[test]
    fn links() {
        assert_eq!(clean("[[A]] [[A|b]] [[A#B|c]] [[A#B]]"), "A b c A#B");
        assert_eq!(
            clean("[[fare]]ler [[buğday]]ın [[manyetik alan]]ına [[fırın]]da"),
            "fareler buğdayın manyetik alanına fırında"
        );
        assert_eq!(clean("[[Ankara]]'da [[Vikipedi:Deneme|x]] [[Vikipedi:Deneme]]"), "Ankara'da x Vikipedi:Deneme");
        assert_eq!(clean("[[:Kategori:A|b]] [[:Kategori:A]] [[:en:Cat]]"), "b Kategori:A en:Cat");
        assert_eq!(clean("[[Türk kahvesi|'''Türk''']] [[a|''b'' c]]"), "Türk b c");
    }

    #[test]
    fn hidden_links() {
        let s = "a [[Dosya:x.jpg|thumb|Bir [[kedi]] ve [[b|c]]]] b\n[[File:y.png]][[Image:z.png|1px]]\
                 [[Resim:r.jpg]][[ortam:m.ogg]][[Kategori:K| ]][[category:C]][[kATEGORİ:D]]\n\
                 [[en:Cat]][[zh-yue:貓]][[EN:Cat]]";
        assert_eq!(clean(s), "a b");
        assert_eq!(clean("[[tr:Kedi]]"), "tr:Kedi");
    }

    #[test]
    fn namespaces_without_siteinfo() {
        let bare = Syntax::new(&[], None);
        assert_eq!(bare.clean("a[[Datei:x.png]][[Pilt:y]][[Kategooria:z]][[رده:w]][[分類:v]] b"), "a b");
        let et = Syntax::new(&[], Some("et"));
        assert_eq!(et.clean("[[Pilt:y]][[File:z]][[Dosya:w|v]]"), "v");
    }

    #[test]
    fn unbalanced_brackets() {
        assert_eq!(clean("a [[b c\n\nd]] e ]] f [["), "a [[b c\n\nd]] e ]] f [[");
        assert_eq!(clean("[[a [[b]] c"), "[[a b c");
        assert_eq!(clean("[[|x]] [[]]"), "[[|x]] [[]]");
        assert_eq!(clean("[https://x.org unclosed\n[http://y.org]"), "[https://x.org unclosed");
    }

    #[test]
    fn external_links() {
        let s = "[https://a.org Etiket] [https://b.org] c https://d.org/e [//f.org ''g''] [notalink x]";
        assert_eq!(clean(s), "Etiket c https://d.org/e g [notalink x]");
    }

    #[test]
    fn apostrophes() {
        assert_eq!(clean("'''Simit''''in ''a'' '''b''' '''''c''''' d'e"), "Simit'in a b c d'e");
        assert_eq!(clean("''''''x''''''"), "'x'");
        // Odd bold and italic counts: the bold after a longer word keeps one apostrophe.
        assert_eq!(clean("''Kedi'''nin"), "Kedi'nin");
        assert_eq!(clean("l'''amour''"), "l'amour");
    }

    #[test]
    fn headings_lists_rules() {
        let s = "== A ==\n=== B ===\n==C==  \n= D =\n* x\n**  y\n#: z\n; t\n: u\n----\n---- v\n==\nw = x";
        assert_eq!(clean(s), "A\nB\nC\nD\nx\ny\nz\nt\nu\n\nv\n==\nw = x");
    }

    #[test]
    fn entities() {
        let s = "12&nbsp;kg &mdash; &lt;b&gt; &quot;q&quot; &amp;amp; &#65;&#x42;&#X43; \
                 &hellip;&apos;&unknown; &#xD800; & x";
        assert_eq!(clean(s), "12\u{a0}kg — <b> \"q\" &amp; ABC …'&unknown; &#xD800; & x");
        assert_eq!(clean("&nbsp;a&#32;&#32;b "), "\u{a0}a b");
    }

    #[test]
    fn whitespace_and_switches() {
        assert_eq!(clean("__NOTOC__\n\n\n  a \t b  \n\n\n\nc __İÇİNDEKİLERYOK__ d\n\n"), "a b\n\nc d");
        assert_eq!(clean("__init__ and __A_B__x"), "__init__ and x");
    }

    #[test]
    fn total_and_linear_on_garbage() {
        // Each input is ~100 kB: a quadratic pass would not finish in test time.
        #[rustfmt::skip]
        const PIECES: &[&str] = &[
            "{{", "}}", "[[", "]]", "[[a|x ", "[[Dosya:a|", "[[a\n", "<", "<ref", "<ref>", "<ref x ", "<b x ",
            "&", "&#", "&#x", "'''a'' ", "{|\n", "|}\n", "[http://x y ", "é{{é", "<!--", "__", "__AB",
            "<nowiki>{{", "{{{", "\u{130}[[\u{131}", " \t ",
        ];
        for piece in PIECES {
            let _ = clean(piece);
            let long = piece.repeat(100_000 / piece.len());
            let _ = clean(&long);
            let _ = tr().is_disambiguation(&long);
        }
        let _ = clean(&format!("{}{}", "[[a|x ".repeat(20_000), "]]".repeat(20_000)));
        assert_eq!(clean("[[a|x [[b|y [[c|z]] ]] ]]"), "x y z");
        assert_eq!(clean("İ{{x"), "İ{{x");
    }

    #[test]
    fn random_markup_mixes_never_break_the_whitespace_rules() {
        #[rustfmt::skip]
        const PIECES: &[&str] = &[
            "{{", "}}", "[[", "]]", "|", "[[Kategori:", "[[Dosya:x|", "<ref>", "</ref>", "<ref name=a/>", "<!--",
            "-->", "'''", "''", "&nbsp;", "&amp;", "{|", "|}", "\n", "\n\n", "== ", " ==", "* ", "# ", ": ", "kedi",
            " ", "\t", "İ", "ı", "[http://x.org ", "]", "<math>", "</math>", "__NOTOC__", "----", "中文", "فارسی",
        ];
        // xorshift: deterministic, no extra crate.
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        for _ in 0..3000 {
            let mut text = String::new();
            for _ in 0..(x % 40) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                text.push_str(PIECES[(x % PIECES.len() as u64) as usize]);
            }
            let out = clean(&text);
            assert!(!out.contains("\n\n\n") && !out.starts_with('\n') && !out.ends_with('\n'), "{text:?} -> {out:?}");
            assert!(out.lines().all(|l| l.trim_matches([' ', '\t']) == l && !l.contains("  ")), "{text:?} -> {out:?}");
        }
    }

    #[test]
    fn redirects() {
        let s = tr();
        for t in [
            "#YÖNLENDİRME [[Kedi]]",
            "#yönlendirme [[Işık]]",
            "#Yönlendirme [[K#N]]",
            "  #REDIRECT:[[Çay]]",
            "#redirect[[x]]",
            "#YÖNLENDİR [[x]]",
        ] {
            assert!(s.is_redirect(t), "{t}");
        }
        for t in ["#REDIRECTION [[x]]", "#REDIRECT x", "Metin #REDIRECT [[x]]", "#SUUNA [[x]]", ""] {
            assert!(!s.is_redirect(t), "{t}");
        }
        assert!(Syntax::new(&[], Some("et")).is_redirect("#suuna [[x]]"));
        assert!(Syntax::new(&[], Some("fa")).is_redirect("#تغییرمسیر [[x]]"));
        assert!(Syntax::new(&[], Some("zh")).is_redirect("#重定向 [[x]]"));
        assert!(Syntax::new(&[], None).is_redirect("#REDIRECTION [[x]]"));
    }

    #[test]
    fn disambiguation() {
        let s = tr();
        for t in [
            "a\n{{Anlam ayrımı}}",
            "{{anlam_ayrımı|x}}",
            "{{ Disambig }}",
            "{{dab}}",
            "__DISAMBIG__",
            "{{Şablon:Anlam ayrımı}}",
        ] {
            assert!(s.is_disambiguation(t), "{t}");
        }
        for t in ["{{Anlam ayrımı sayfaları}}", "{{{Dab}}}", "Anlam ayrımı", "{{Disambig"] {
            assert!(!s.is_disambiguation(t), "{t}");
        }
        let custom = s.with_disambiguation_templates(&["Belirsiz".to_string()]);
        assert!(custom.is_disambiguation("{{belirsiz}}"));
    }
}
