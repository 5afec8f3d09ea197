//! The MediaWiki export XML: the header (`<mediawiki>` and `<siteinfo>`), splitting the page stream
//! into `<page>` elements, and reading one page's title, namespace, id, redirect flag and text.

use memchr::memmem;
use quick_xml::events::{BytesRef, Event};
use quick_xml::Reader;

/// What the dump header says about the wiki.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SiteInfo {
    /// `xml:lang` of `<mediawiki>`.
    pub xml_lang: Option<String>,
    /// `<dbname>`, e.g. `trwiki`.
    pub dbname: Option<String>,
    /// `(key, localized name)` of every `<namespace>`.
    pub namespaces: Vec<(i32, String)>,
}

impl SiteInfo {
    /// The wiki's language: `xml:lang`, else the dbname without its `wiki` suffix.
    pub fn lang(&self) -> Option<String> {
        self.xml_lang.clone().filter(|l| !l.is_empty()).or_else(|| {
            let db = self.dbname.as_deref()?;
            db.strip_suffix("wiki").map(|l| l.replace('_', "-"))
        })
    }

    /// Namespace key of a title's prefix (`Kategori:X` → 14), 0 when none matches.
    pub fn namespace_of(&self, title: &str) -> i32 {
        if let Some((prefix, _)) = title.split_once(':') {
            for (key, name) in &self.namespaces {
                if !name.is_empty() && name == prefix.trim() {
                    return *key;
                }
            }
        }
        0
    }
}

/// One line of at most 160 characters, so errors stay one-line even when they quote the input.
pub fn one_line(msg: String) -> String {
    let flat: String = msg.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    match flat.char_indices().nth(160) {
        Some((cut, _)) => format!("{}…", &flat[..cut]),
        None => flat,
    }
}

/// A malformed-XML finding: byte offset within the parsed slice, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XmlError {
    /// Byte offset within the slice handed to the parser.
    pub offset: u64,
    /// What is wrong.
    pub msg: String,
}

/// One `<page>` as read from the dump.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawPage {
    /// `<title>`, XML-decoded.
    pub title: String,
    /// `<ns>`, if the dump has it.
    pub ns: Option<i32>,
    /// The page `<id>`.
    pub id: u64,
    /// Whether the page has a `<redirect>` element.
    pub redirect: bool,
    /// The last revision's `<text>`, XML-decoded.
    pub text: String,
}

/// Byte range of the next `<page>…</page>` in `buf` at or after `from`: `Ok(Some((start, end)))`,
/// `Ok(None)` when no page starts, `Err(start)` when a page starts but does not end within `buf`.
pub fn next_page(buf: &[u8], from: usize) -> Result<Option<(usize, usize)>, usize> {
    let Some(start) = find_page_start(buf, from) else { return Ok(None) };
    match memmem::find(&buf[start..], b"</page>") {
        Some(rel) => Ok(Some((start, start + rel + b"</page>".len()))),
        None => Err(start),
    }
}

fn find_page_start(buf: &[u8], mut from: usize) -> Option<usize> {
    let finder = memmem::Finder::new(b"<page");
    while let Some(rel) = finder.find(&buf[from..]) {
        let at = from + rel;
        match buf.get(at + 5) {
            Some(b'>' | b' ' | b'\t' | b'\n' | b'\r') | None => return Some(at),
            _ => from = at + 5,
        }
    }
    None
}

/// Reads the header: everything before the first `<page>`. Errors if it is not a MediaWiki export.
pub fn parse_header(header: &[u8]) -> Result<SiteInfo, XmlError> {
    let mut reader = Reader::from_reader(header);
    let mut info = SiteInfo::default();
    let mut path: Vec<Vec<u8>> = Vec::new();
    let mut ns_key: Option<i32> = None;
    let mut text = String::new();
    let mut saw_root = false;
    loop {
        let offset = reader.buffer_position();
        let event = reader.read_event().map_err(|e| XmlError { offset, msg: one_line(e.to_string()) })?;
        match event {
            Event::Start(e) | Event::Empty(e) if !saw_root => {
                if e.local_name().as_ref() != b"mediawiki" {
                    let name = String::from_utf8_lossy(e.name().as_ref()).into_owned();
                    return Err(XmlError {
                        offset,
                        msg: format!("not a MediaWiki export: root element is <{name}>, expected <mediawiki>"),
                    });
                }
                saw_root = true;
                for attr in e.attributes().flatten() {
                    if attr.key.as_ref() == b"xml:lang" {
                        info.xml_lang = Some(String::from_utf8_lossy(&attr.value).into_owned());
                    }
                }
                path.push(b"mediawiki".to_vec());
            }
            Event::Start(e) => {
                if e.local_name().as_ref() == b"namespace" {
                    ns_key = key_attr(&e);
                }
                path.push(e.local_name().as_ref().to_vec());
                text.clear();
            }
            Event::Empty(e) if e.local_name().as_ref() == b"namespace" => {
                if let Some(k) = key_attr(&e) {
                    info.namespaces.push((k, String::new()));
                }
            }
            Event::Text(t) => text.push_str(&t.xml_content().unwrap_or_default()),
            Event::GeneralRef(r) => push_ref(&mut text, &r),
            Event::End(_) => {
                match path.last().map(Vec::as_slice) {
                    Some(b"dbname") => info.dbname = Some(text.trim().to_string()),
                    Some(b"namespace") => {
                        if let Some(k) = ns_key.take() {
                            info.namespaces.push((k, text.trim().to_string()));
                        }
                    }
                    _ => {}
                }
                path.pop();
                text.clear();
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if !saw_root {
        return Err(XmlError { offset: 0, msg: "not a MediaWiki export: no <mediawiki> element".into() });
    }
    Ok(info)
}

fn key_attr(e: &quick_xml::events::BytesStart) -> Option<i32> {
    e.attributes()
        .flatten()
        .find(|a| a.key.as_ref() == b"key")
        .and_then(|a| std::str::from_utf8(&a.value).ok()?.trim().parse().ok())
}

fn push_ref(out: &mut String, r: &BytesRef) {
    if let Ok(Some(c)) = r.resolve_char_ref() {
        out.push(c);
        return;
    }
    match &**r {
        b"amp" => out.push('&'),
        b"lt" => out.push('<'),
        b"gt" => out.push('>'),
        b"quot" => out.push('"'),
        b"apos" => out.push('\''),
        other => {
            // Not an XML entity: keep it as written so nothing silently disappears.
            out.push('&');
            out.push_str(&String::from_utf8_lossy(other));
            out.push(';');
        }
    }
}

/// Which element's text is being collected.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Field {
    Title,
    Ns,
    Id,
    Text,
    Other,
}

/// Parses one `<page>…</page>` slice. The revision text, nearly all of a page's bytes, is cut out and
/// decoded by [`decode_text`]; the rest goes through the XML parser.
pub fn parse_page(xml: &[u8]) -> Result<RawPage, XmlError> {
    let Some((start, end)) = last_text_content(xml) else { return parse_skeleton(xml) };
    let mut skeleton = Vec::with_capacity(xml.len() - (end - start));
    skeleton.extend_from_slice(&xml[..start]);
    skeleton.extend_from_slice(&xml[end..]);
    let mut page = parse_skeleton(&skeleton).map_err(|mut e| {
        if e.offset >= start as u64 {
            e.offset += (end - start) as u64;
        }
        e
    })?;
    page.text = decode_text(&xml[start..end]).map_err(|mut e| {
        e.offset += start as u64;
        e
    })?;
    Ok(page)
}

/// Byte range of the content of the page's last `<text …>…</text>` (None when absent or self-closing).
/// Searched forwards: the text is most of the page, and it is scanned once, for its `</text>`.
fn last_text_content(xml: &[u8]) -> Option<(usize, usize)> {
    let mut found = None;
    let mut from = 0;
    while let Some(rel) = memmem::find(&xml[from..], b"<text") {
        let at = from + rel;
        from = at + 5;
        if !matches!(xml.get(at + 5), Some(b' ' | b'>' | b'/' | b'\t' | b'\n' | b'\r')) {
            continue;
        }
        let gt = at + memchr::memchr(b'>', &xml[at..])?;
        from = gt + 1;
        if xml[gt - 1] == b'/' {
            found = None;
            continue;
        }
        let end = gt + 1 + memmem::find(&xml[gt + 1..], b"</text>")?;
        found = Some((gt + 1, end));
        from = end;
    }
    found
}

/// Character content of an element, as an XML parser gives it: UTF-8 checked, line ends normalized,
/// the five XML entities and character references decoded (others kept as written).
pub fn decode_text(raw: &[u8]) -> Result<String, XmlError> {
    if let Some(lt) = memchr::memchr(b'<', raw) {
        return Err(XmlError { offset: lt as u64, msg: "malformed XML: '<' inside <text>".into() });
    }
    let Ok(text) = simdutf8::basic::from_utf8(raw) else {
        let valid = std::str::from_utf8(raw).map_or_else(|e| e.valid_up_to(), |_| raw.len());
        return Err(XmlError { offset: valid as u64, msg: "invalid UTF-8 in <text>".into() });
    };
    // Every position cut at below is an ASCII byte ('&', '\r', ';'), so slicing stays on char boundaries.
    let mut out = String::with_capacity(raw.len());
    let mut pos = 0;
    while let Some(rel) = memchr::memchr2(b'&', b'\r', &raw[pos..]) {
        let at = pos + rel;
        out.push_str(&text[pos..at]);
        if raw[at] == b'\r' {
            // XML line-end normalization: \r\n and lone \r become \n.
            out.push('\n');
            pos = at + if raw.get(at + 1) == Some(&b'\n') { 2 } else { 1 };
            continue;
        }
        let semi = raw[at..].iter().take(32).position(|&b| b == b';').map(|p| at + p).ok_or_else(|| XmlError {
            offset: at as u64,
            msg: "malformed XML: '&' not followed by an entity name and ';'".into(),
        })?;
        let decoded = match &text[at + 1..semi] {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            name => match name.strip_prefix('#') {
                Some(hex) if hex.starts_with(['x', 'X']) => char_ref(&hex[1..], 16),
                Some(dec) => char_ref(dec, 10),
                None => None,
            },
        };
        match decoded {
            Some(c) => out.push(c),
            None => out.push_str(&text[at..=semi]),
        }
        pos = semi + 1;
    }
    out.push_str(&text[pos..]);
    Ok(out)
}

fn char_ref(digits: &str, radix: u32) -> Option<char> {
    let v = u32::from_str_radix(digits, radix).ok()?;
    char::from_u32(v).filter(|&c| c != '\0')
}

/// The XML parser's view of a page; the big `<text>` content has usually been cut out by [`parse_page`].
fn parse_skeleton(xml: &[u8]) -> Result<RawPage, XmlError> {
    let mut reader = Reader::from_reader(xml);
    let mut depth = 0usize;
    let mut in_revision = false;
    let mut field = Field::Other;
    let mut buf = String::new();
    let (mut title, mut ns, mut id, mut redirect, mut text) = (None, None, None, false, String::new());
    loop {
        let offset = reader.buffer_position();
        let event =
            reader.read_event().map_err(|e| XmlError { offset, msg: one_line(format!("malformed XML: {e}")) })?;
        match event {
            Event::Start(e) => {
                depth += 1;
                let name = e.local_name();
                field = match (depth, name.as_ref()) {
                    (1, b"page") => Field::Other,
                    (1, other) => {
                        let other = String::from_utf8_lossy(other).into_owned();
                        return Err(XmlError { offset, msg: format!("expected <page>, found <{other}>") });
                    }
                    (2, b"title") => Field::Title,
                    (2, b"ns") => Field::Ns,
                    (2, b"id") => Field::Id,
                    (2, b"revision") => {
                        in_revision = true;
                        Field::Other
                    }
                    (3, b"text") if in_revision => Field::Text,
                    _ => Field::Other,
                };
                buf.clear();
            }
            Event::Empty(e) => match (depth, e.local_name().as_ref()) {
                (1, b"redirect") => redirect = true,
                (2, b"text") if in_revision => text.clear(),
                _ => {}
            },
            Event::Text(t) if field != Field::Other => {
                let s = t.xml_content().map_err(|e| XmlError { offset, msg: format!("invalid text: {e}") })?;
                buf.push_str(&s);
            }
            Event::CData(t) if field != Field::Other => buf.push_str(&String::from_utf8_lossy(&t)),
            Event::GeneralRef(r) if field != Field::Other => push_ref(&mut buf, &r),
            Event::End(_) => {
                let value = std::mem::take(&mut buf);
                match field {
                    Field::Title => title = Some(value),
                    Field::Ns => {
                        ns = Some(
                            value
                                .trim()
                                .parse::<i32>()
                                .map_err(|_| XmlError { offset, msg: format!("<ns> is not an integer: '{value}'") })?,
                        )
                    }
                    Field::Id => {
                        id =
                            Some(value.trim().parse::<u64>().map_err(|_| XmlError {
                                offset,
                                msg: format!("page <id> is not an integer: '{value}'"),
                            })?)
                    }
                    Field::Text => text = value,
                    Field::Other => {}
                }
                if depth == 2 && in_revision && field == Field::Other {
                    in_revision = false;
                }
                field = Field::Other;
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    break;
                }
            }
            Event::Eof => {
                return Err(XmlError { offset, msg: "page ends before </page>".into() });
            }
            _ => {}
        }
    }
    let id = id.ok_or_else(|| XmlError { offset: 0, msg: "page has no <id>".into() })?;
    let title = title.ok_or_else(|| XmlError { offset: 0, msg: format!("page {id} has no <title>") })?;
    Ok(RawPage { title, ns, id, redirect, text })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = r#"<page>
    <title>Ar-Ge &amp; Tasarım</title>
    <ns>0</ns>
    <id>40</id>
    <revision>
      <id>1040</id>
      <contributor><username>X</username><id>7</id></contributor>
      <text bytes="12" xml:space="preserve">a &amp;lt; b &#x131;</text>
    </revision>
  </page>"#;

    #[test]
    fn reads_a_page() {
        let p = parse_page(PAGE.as_bytes()).unwrap();
        assert_eq!(
            p,
            RawPage {
                title: "Ar-Ge & Tasarım".into(),
                ns: Some(0),
                id: 40,
                redirect: false,
                text: "a &lt; b ı".into()
            }
        );
        let r = parse_page(b"<page><title>K</title><ns>0</ns><id>8</id><redirect title=\"Kedi\" /><revision><text /></revision></page>").unwrap();
        assert!(r.redirect);
        assert_eq!(r.text, "");
    }

    #[test]
    fn text_decoding_matches_an_xml_parser() {
        assert_eq!(decode_text(b"a &amp;lt; b &#x131;&#305; &foo; \r\nx\ry").unwrap(), "a &lt; b ıı &foo; \nx\ny");
        let e = decode_text(b"ab<c").unwrap_err();
        assert_eq!((e.offset, e.msg.as_str()), (2, "malformed XML: '<' inside <text>"));
        let e = decode_text(b"ok \xff").unwrap_err();
        assert_eq!((e.offset, e.msg.as_str()), (3, "invalid UTF-8 in <text>"));
        assert!(decode_text(b"a & b").unwrap_err().msg.contains("'&' not followed"));
        let page = b"<page><title>T</title><ns>0</ns><id>1</id><revision><text bytes=\"3\" xml:space=\"preserve\">x &lt; y</text></revision></page>";
        assert_eq!(parse_page(page).unwrap().text, "x < y");
        let bad = b"<page><title>T</title><ns>0</ns><id>1</id><revision><text>x<y</text></revision></page>";
        let e = parse_page(bad).unwrap_err();
        assert_eq!((e.offset, e.msg.as_str()), (59, "malformed XML: '<' inside <text>"));
    }

    #[test]
    fn rejects_malformed_pages() {
        let err = parse_page(b"<page><title>K</title><ns>0</ns><id>8</id><revision><text>x</txet></revision></page>")
            .unwrap_err();
        assert!(err.msg.starts_with("malformed XML"), "{err:?}");
        let err = parse_page(b"<page><title>K</title><ns>zero</ns><id>8</id></page>").unwrap_err();
        assert_eq!(err.msg, "<ns> is not an integer: 'zero'");
        let err = parse_page(b"<page><title>K</title></page>").unwrap_err();
        assert_eq!(err.msg, "page has no <id>");
    }

    #[test]
    fn finds_pages_and_header() {
        let doc = format!("<mediawiki xml:lang=\"tr\"><siteinfo><dbname>trwiki</dbname><namespaces><namespace key=\"0\" /><namespace key=\"14\">Kategori</namespace></namespaces></siteinfo>\n{PAGE}\n<pages>");
        let b = doc.as_bytes();
        let (s, e) = next_page(b, 0).unwrap().unwrap();
        assert!(b[s..e].starts_with(b"<page>") && b[s..e].ends_with(b"</page>"));
        assert_eq!(next_page(b, e), Ok(None));
        assert_eq!(next_page(&b[..e - 1], 0), Err(s));
        let info = parse_header(&b[..s]).unwrap();
        assert_eq!(info.lang().as_deref(), Some("tr"));
        assert_eq!(info.namespaces, vec![(0, String::new()), (14, "Kategori".into())]);
        assert_eq!(info.namespace_of("Kategori:Kediler"), 14);
        assert_eq!(info.namespace_of("Masal: Üç Elma"), 0);
        let err = parse_header(b"<html><body>").unwrap_err();
        assert!(err.msg.contains("root element is <html>"), "{err:?}");
    }
}
