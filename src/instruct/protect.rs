//! Spans that must survive translation byte for byte: fenced code blocks, inline code, URLs, e-mail
//! addresses and placeholders such as `<noinput>`. They are replaced by markers the API keeps (XML
//! tags for DeepL/Google/LibreTranslate markup modes, numbered tokens for LLMs) and put back after;
//! a marker that comes back missing, twice or altered fails the field instead of corrupting it.

use std::ops::Range;

/// How protected spans are hidden from a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaskStyle {
    /// Text is XML-escaped and spans become `<x id="N"/>` (sent with tag handling / HTML format).
    Markup,
    /// Spans become `⟦N⟧`; the LLM prompt asks to keep them.
    Token,
}

/// A text with its protected spans replaced by markers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Masked {
    /// What is sent to the backend.
    pub text: String,
    /// The original spans, by marker number.
    pub spans: Vec<String>,
}

/// Whole-field placeholders of Alpaca-style data that mean "no input": kept as they are, not sent.
const NO_INPUT: [&str; 6] = ["<noinput>", "no input", "noinput", "n/a", "none", "<nooutput>"];

/// Whether a field should be kept verbatim instead of translated: a "no input" placeholder, or
/// nothing but protected spans, digits and punctuation (no letters left to translate).
pub fn keep_verbatim(text: &str) -> bool {
    let t = text.trim();
    if NO_INPUT.iter().any(|p| t.eq_ignore_ascii_case(p)) {
        return true;
    }
    let spans = find_spans(text);
    let mut rest = text.char_indices().filter(|(i, _)| !spans.iter().any(|s| s.contains(i)));
    !rest.any(|(_, c)| c.is_alphabetic())
}

/// Masks the protected spans of `text` in `style`.
pub fn mask(text: &str, style: MaskStyle) -> Masked {
    let mut out = String::with_capacity(text.len() + 16);
    let mut spans = Vec::new();
    let mut at = 0;
    for r in find_spans(text) {
        push_plain(&mut out, &text[at..r.start], style);
        match style {
            MaskStyle::Markup => out.push_str(&format!("<x id=\"{}\"/>", spans.len())),
            MaskStyle::Token => out.push_str(&format!("⟦{}⟧", spans.len())),
        }
        spans.push(text[r.clone()].to_string());
        at = r.end;
    }
    push_plain(&mut out, &text[at..], style);
    Masked { text: out, spans }
}

fn push_plain(out: &mut String, s: &str, style: MaskStyle) {
    match style {
        MaskStyle::Token => out.push_str(s),
        MaskStyle::Markup => {
            for c in s.chars() {
                match c {
                    '&' => out.push_str("&amp;"),
                    '<' => out.push_str("&lt;"),
                    '>' => out.push_str("&gt;"),
                    _ => out.push(c),
                }
            }
        }
    }
}

/// Puts the spans back into a translated masked text; fails when a marker is missing, repeated,
/// unknown, or (markup) the translation holds other tags.
pub fn unmask(translated: &str, spans: &[String], style: MaskStyle) -> Result<String, String> {
    let mut seen = vec![false; spans.len()];
    let mut out = String::with_capacity(translated.len() + spans.iter().map(String::len).sum::<usize>());
    let mut rest = translated;
    let open = match style {
        MaskStyle::Markup => '<',
        MaskStyle::Token => '⟦',
    };
    while let Some(p) = rest.find(open) {
        push_restored(&mut out, &rest[..p], style)?;
        let (id, len) = match style {
            MaskStyle::Markup => parse_tag(&rest[p..]).ok_or_else(|| {
                format!("unexpected markup in the translation: {}", rest[p..].chars().take(30).collect::<String>())
            })?,
            MaskStyle::Token => match parse_token(&rest[p..]) {
                Some(t) => t,
                None => {
                    out.push(open);
                    rest = &rest[p + open.len_utf8()..];
                    continue;
                }
            },
        };
        let slot = seen.get_mut(id).ok_or_else(|| format!("the translation has an unknown protected marker {id}"))?;
        if std::mem::replace(slot, true) {
            return Err(format!("protected span {id} appears twice in the translation"));
        }
        out.push_str(&spans[id]);
        rest = &rest[p + len..];
    }
    push_restored(&mut out, rest, style)?;
    if let Some(id) = seen.iter().position(|s| !s) {
        return Err(format!("protected span {id} ({:?}) is missing from the translation", spans[id]));
    }
    Ok(out)
}

fn push_restored(out: &mut String, s: &str, style: MaskStyle) -> Result<(), String> {
    if style == MaskStyle::Token {
        out.push_str(s);
        return Ok(());
    }
    let mut rest = s;
    while let Some(p) = rest.find('&') {
        out.push_str(&rest[..p]);
        let tail = &rest[p..];
        let end = tail.find(';').filter(|e| *e <= 10);
        let decoded = end.and_then(|e| decode_entity(&tail[1..e]));
        match (end, decoded) {
            (Some(e), Some(c)) => {
                out.push(c);
                rest = &tail[e + 1..];
            }
            _ => {
                // A bare '&' (some services unescape their output): keep it as text.
                out.push('&');
                rest = &tail[1..];
            }
        }
    }
    out.push_str(rest);
    Ok(())
}

fn decode_entity(name: &str) -> Option<char> {
    match name {
        "amp" => Some('&'),
        "lt" => Some('<'),
        "gt" => Some('>'),
        "quot" => Some('"'),
        "apos" => Some('\''),
        "nbsp" => Some('\u{a0}'),
        _ => {
            let num = name.strip_prefix('#')?;
            let code = match num.strip_prefix(['x', 'X']) {
                Some(hex) => u32::from_str_radix(hex, 16).ok()?,
                None => num.parse().ok()?,
            };
            char::from_u32(code)
        }
    }
}

/// `<x id="N"/>`, `<x id="N" />` or `<x id="N"></x>` at the start of `s`: (N, length).
fn parse_tag(s: &str) -> Option<(usize, usize)> {
    let rest = s.strip_prefix("<x")?.trim_start();
    let rest = rest.strip_prefix("id=")?;
    let q = rest.chars().next().filter(|c| *c == '"' || *c == '\'')?;
    let rest = &rest[1..];
    let close = rest.find(q)?;
    let id: usize = rest[..close].parse().ok()?;
    let after = rest[close + 1..].trim_start();
    let tail =
        after.strip_prefix("/>").or_else(|| after.strip_prefix('>').map(|a| a.strip_prefix("</x>").unwrap_or(a)))?;
    Some((id, s.len() - tail.len()))
}

/// `⟦N⟧` at the start of `s`: (N, length).
fn parse_token(s: &str) -> Option<(usize, usize)> {
    let rest = s.strip_prefix('⟦')?;
    let close = rest.find('⟧')?;
    let id = rest[..close].trim().parse().ok()?;
    Some((id, '⟦'.len_utf8() + close + '⟧'.len_utf8()))
}

/// Byte ranges of the protected spans of `text`, sorted and disjoint. Fenced code wins over
/// inline code, which wins over URLs, e-mail addresses and placeholders inside it.
pub fn find_spans(text: &str) -> Vec<Range<usize>> {
    let mut taken: Vec<Range<usize>> = Vec::new();
    let add = |r: Range<usize>, taken: &mut Vec<Range<usize>>| {
        if !r.is_empty() && !taken.iter().any(|t| t.start < r.end && r.start < t.end) {
            taken.push(r);
        }
    };
    for r in fences(text) {
        add(r, &mut taken);
    }
    for r in inline_code(text) {
        add(r, &mut taken);
    }
    for r in urls(text).into_iter().chain(emails(text)).chain(placeholders(text)) {
        add(r, &mut taken);
    }
    taken.sort_by_key(|r| r.start);
    taken
}

/// Fenced code blocks: a line starting (after up to 3 spaces) with ``` or ~~~ up to the end of the
/// closing fence line, or to the end of the text when unclosed.
fn fences(text: &str) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut open: Option<(usize, &str)> = None;
    let mut pos = 0;
    for line in text.split_inclusive('\n') {
        let body = line.trim_start_matches(' ');
        let indent = line.len() - body.len();
        let fence = ["```", "~~~"].into_iter().find(|f| indent <= 3 && body.starts_with(f));
        match (open, fence) {
            (None, Some(f)) => open = Some((pos, f)),
            (Some((start, f)), Some(g)) if f == g => {
                let end = pos + line.trim_end_matches(['\n', '\r']).len();
                out.push(start..end);
                open = None;
            }
            _ => {}
        }
        pos += line.len();
    }
    if let Some((start, _)) = open {
        out.push(start..text.len());
    }
    out
}

/// Inline code: a run of backticks up to the next run of the same length.
fn inline_code(text: &str) -> Vec<Range<usize>> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'`' {
            i += 1;
            continue;
        }
        let n = b[i..].iter().take_while(|c| **c == b'`').count();
        let mut j = i + n;
        let mut closed = None;
        while j < b.len() {
            if b[j] == b'`' {
                let m = b[j..].iter().take_while(|c| **c == b'`').count();
                if m == n {
                    closed = Some(j + m);
                    break;
                }
                j += m;
            } else {
                j += 1;
            }
        }
        match closed {
            Some(end) => {
                out.push(i..end);
                i = end;
            }
            None => i += n,
        }
    }
    out
}

fn is_boundary(text: &str, at: usize) -> bool {
    text[..at].chars().next_back().is_none_or(|c| !c.is_alphanumeric())
}

/// URLs starting with `http://`, `https://` or `www.`, up to whitespace or a quote/angle bracket,
/// without trailing sentence punctuation or an unbalanced closing parenthesis.
fn urls(text: &str) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < text.len() {
        let rest = &text[i..];
        let starts = ["https://", "http://", "www."]
            .iter()
            .any(|p| rest.get(..p.len()).is_some_and(|h| h.eq_ignore_ascii_case(p)) && rest.len() > p.len());
        if !(starts && is_boundary(text, i)) {
            i += rest.chars().next().map_or(1, char::len_utf8);
            continue;
        }
        let mut end = i + rest.find(|c: char| c.is_whitespace() || "<>\"`".contains(c)).unwrap_or(rest.len());
        loop {
            let s = &text[i..end];
            let Some(last) = s.chars().next_back() else { break };
            let unbalanced = last == ')' && s.matches('(').count() < s.matches(')').count();
            if ".,;:!?'".contains(last) || unbalanced {
                end -= last.len_utf8();
            } else {
                break;
            }
        }
        out.push(i..end);
        i = end.max(i + 1);
    }
    out
}

/// E-mail addresses: `local@domain.tld` with a letter-only top-level domain of 2+ letters.
fn emails(text: &str) -> Vec<Range<usize>> {
    let b = text.as_bytes();
    let local = |c: u8| c.is_ascii_alphanumeric() || b"._%+-".contains(&c);
    let domain = |c: u8| c.is_ascii_alphanumeric() || c == b'.' || c == b'-';
    let mut out = Vec::new();
    for (at, _) in text.match_indices('@') {
        let start = (0..at).rev().take_while(|k| local(b[*k])).last().unwrap_or(at);
        let mut end = (at + 1..b.len()).take_while(|k| domain(b[*k])).last().map_or(at + 1, |k| k + 1);
        while end > at + 1 && b[end - 1] == b'.' {
            end -= 1;
        }
        let dom = &text[at + 1..end];
        let tld_ok = dom
            .rsplit_once('.')
            .is_some_and(|(h, t)| !h.is_empty() && t.len() >= 2 && t.bytes().all(|c| c.is_ascii_alphabetic()));
        if start < at && tld_ok {
            out.push(start..end);
        }
    }
    out
}

/// Placeholders in angle brackets: `<noinput>`, `<name>`, `<Your Name>`-free forms (letters, digits,
/// `_`, no spaces), and HTML-like tags `</b>` in code samples.
fn placeholders(text: &str) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    for (i, _) in text.match_indices('<') {
        let rest = &text[i + 1..];
        let body = rest.strip_prefix('/').unwrap_or(rest);
        let n = body.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(body.len());
        if n > 0 && body[n..].starts_with('>') && body.as_bytes()[0].is_ascii_alphabetic() {
            out.push(i..i + 1 + (rest.len() - body.len()) + n + 1);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spans(t: &str) -> Vec<&str> {
        find_spans(t).into_iter().map(|r| &t[r]).collect()
    }

    #[test]
    fn finds_code_urls_emails_and_placeholders() {
        let t = "See https://en.wikipedia.org/wiki/Foo_(bar). Or (www.x.org), mail a.b@c.co.uk.\n\
                 Run `x = 1` then:\n```python\nprint(\"<noinput>\")\n```\nDone <noinput> and </b>, 3 < 4 > 2.";
        assert_eq!(
            spans(t),
            vec![
                "https://en.wikipedia.org/wiki/Foo_(bar)",
                "www.x.org",
                "a.b@c.co.uk",
                "`x = 1`",
                "```python\nprint(\"<noinput>\")\n```",
                "<noinput>",
                "</b>"
            ]
        );
        assert_eq!(spans("unclosed ``` fence\n```\ncode"), vec!["```\ncode"]);
        assert_eq!(spans("not@mail, x@y.z1, ``` a ` b"), Vec::<&str>::new());
    }

    #[test]
    fn markup_round_trip_escapes_text_and_restores_spans() {
        let t = "If a < b && c, see `a<b>` at http://x.org/?q=1&r=2 <noinput>";
        let m = mask(t, MaskStyle::Markup);
        assert_eq!(m.text, "If a &lt; b &amp;&amp; c, see <x id=\"0\"/> at <x id=\"1\"/> <x id=\"2\"/>");
        assert_eq!(unmask(&m.text, &m.spans, MaskStyle::Markup).unwrap(), t);
        // Services rewrite the empty tag and entities; both forms come back to the same bytes.
        let alt = "Kui a &#60; b & c, vt <x id='0'></x> aadressil <x id=\"1\" /> <x id=\"2\">";
        assert_eq!(
            unmask(alt, &m.spans, MaskStyle::Markup).unwrap(),
            "Kui a < b & c, vt `a<b>` aadressil http://x.org/?q=1&r=2 <noinput>"
        );
    }

    #[test]
    fn token_round_trip_and_every_marker_failure() {
        let t = "Use `len(x)` and ⟦ brackets ⟧.";
        let m = mask(t, MaskStyle::Token);
        assert_eq!(m.text, "Use ⟦0⟧ and ⟦ brackets ⟧.");
        assert_eq!(
            unmask("Kasuta ⟦0⟧ ja ⟦ sulge ⟧.", &m.spans, MaskStyle::Token).unwrap(),
            "Kasuta `len(x)` ja ⟦ sulge ⟧."
        );
        let err = |s: &str| unmask(s, &m.spans, MaskStyle::Token).unwrap_err();
        assert_eq!(err("Kasuta"), "protected span 0 (\"`len(x)`\") is missing from the translation");
        assert_eq!(err("⟦0⟧ ⟦0⟧"), "protected span 0 appears twice in the translation");
        assert_eq!(err("⟦0⟧ ⟦1⟧"), "the translation has an unknown protected marker 1");
        let m = mask("a <noinput>", MaskStyle::Markup);
        assert!(unmask("a <b>x</b>", &m.spans, MaskStyle::Markup).unwrap_err().starts_with("unexpected markup"));
    }

    #[test]
    fn verbatim_fields() {
        for t in ["<noinput>", " No input ", "N/A", "https://x.org", "`a`, 12.5%", ""] {
            assert!(keep_verbatim(t), "{t}");
        }
        for t in ["Nothing", "see https://x.org", "Ülo"] {
            assert!(!keep_verbatim(t), "{t}");
        }
    }
}
