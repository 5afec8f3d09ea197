//! sacrebleu's BLEU tokenizers: `13a` (mteval-v13a, the default), `zh` (every CJK character a token, then
//! the 13a rules), `intl` (mteval-v14 international) and `none`. Each rewrite rule of the reference is a
//! regex of one or two fixed-width character classes applied left to right without overlaps (`re.sub`);
//! [`sub2`] replays exactly that scan.

use unicode_categories::UnicodeCategories;

use super::py_squash;

/// A BLEU tokenizer, named as in sacrebleu's `--tokenize` and signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum)]
pub enum BleuTokenizer {
    /// No tokenization.
    #[serde(rename = "none")]
    #[value(name = "none")]
    None,
    /// mteval-v13a (sacrebleu's default).
    #[serde(rename = "13a")]
    #[value(name = "13a")]
    Mteval13a,
    /// Chinese: each CJK character separated, the rest by the 13a rules.
    #[serde(rename = "zh")]
    #[value(name = "zh")]
    Zh,
    /// mteval-v14 international: splits on Unicode punctuation and symbols.
    #[serde(rename = "intl")]
    #[value(name = "intl")]
    Intl,
}

impl BleuTokenizer {
    /// The name in sacrebleu's signature (`tok:13a`).
    pub fn name(self) -> &'static str {
        match self {
            BleuTokenizer::None => "none",
            BleuTokenizer::Mteval13a => "13a",
            BleuTokenizer::Zh => "zh",
            BleuTokenizer::Intl => "intl",
        }
    }

    /// sacrebleu's choice for a target language (`-l xx-zh` picks `zh`); `ja`/`ko` would need MeCab, which
    /// sacrebleu also requires, so they get 13a and the signature says so.
    pub fn for_lang(lang: &str) -> Self {
        let code = super::base_code(lang);
        match code.as_str() {
            "zh" | "zho" | "cmn" | "yue" => BleuTokenizer::Zh,
            _ => BleuTokenizer::Mteval13a,
        }
    }

    /// Tokenizes one segment; tokens are separated by single spaces.
    pub fn tokenize(self, line: &str) -> String {
        match self {
            BleuTokenizer::None => line.to_string(),
            BleuTokenizer::Mteval13a => {
                let mut line = line.replace("<skipped>", "").replace("-\n", "").replace('\n', " ");
                if line.contains('&') {
                    // In this order: `&amp;lt;` becomes `<`, as in the reference.
                    for (entity, c) in [("&quot;", "\""), ("&amp;", "&"), ("&lt;", "<"), ("&gt;", ">")] {
                        line = line.replace(entity, c);
                    }
                }
                post_13a(&format!(" {line} "))
            }
            BleuTokenizer::Zh => {
                let mut spaced = String::with_capacity(line.len() * 2);
                for c in line.trim_matches(crate::eval::lm::is_py_space).chars() {
                    if is_zh_char(c) {
                        spaced.push(' ');
                        spaced.push(c);
                        spaced.push(' ');
                    } else {
                        spaced.push(c);
                    }
                }
                post_13a(&spaced)
            }
            BleuTokenizer::Intl => {
                let s = sub2(line, |a, b| !a.is_number() && b.is_punctuation(), Rewrite::After);
                let s = sub2(&s, |a, b| a.is_punctuation() && !b.is_number(), Rewrite::Before);
                let s = sub1(&s, |c| c.is_symbol());
                py_squash(&s)
            }
        }
    }
}

/// sacrebleu's `TokenizerRegexp`, the rules shared by 13a and zh.
fn post_13a(line: &str) -> String {
    // `[\{-\~\[-\` -\&\(-\+\:-\@\/]`: ASCII punctuation except `'`, `,`, `-` and `.`.
    let punct = |c: char| matches!(c, '{'..='~' | '['..='`' | ' '..='&' | '('..='+' | ':'..='@' | '/');
    let s = sub1(line, punct);
    let digit = |c: char| c.is_ascii_digit();
    let dot = |c: char| c == '.' || c == ',';
    let s = sub2(&s, |a, b| !digit(a) && dot(b), Rewrite::After);
    let s = sub2(&s, |a, b| dot(a) && !digit(b), Rewrite::Before);
    let s = sub2(&s, |a, b| digit(a) && b == '-', Rewrite::After);
    py_squash(&s)
}

/// sacrebleu's `_is_chinese_char`, as its ranges actually compare: two of them are written with
/// five-digit `\u` escapes, which Python reads as a four-digit escape and a digit, so they cover
/// U+2001–U+2A6D (general punctuation, currency, arrows, maths) and U+2F81–U+2FA1 instead of the CJK
/// extension planes. Reproduced, because the scores must equal sacrebleu's.
fn is_zh_char(c: char) -> bool {
    const RANGES: [(u32, u32); 13] = [
        (0x2001, 0x2a6d),
        (0x2e80, 0x2fdf),
        (0x2ff0, 0x303f),
        (0x3100, 0x312f),
        (0x31a0, 0x31ef),
        (0x3200, 0x4db5),
        (0x4e00, 0x9fbb),
        (0xf900, 0xfa2d),
        (0xfa30, 0xfa6a),
        (0xfa70, 0xfad9),
        (0xfe10, 0xfe1f),
        (0xfe30, 0xfe4f),
        (0xff00, 0xffef),
    ];
    let c = c as u32;
    RANGES.iter().any(|&(a, b)| (a..=b).contains(&c))
}

/// `re.sub(r'([class])', r' \1 ', s)`.
fn sub1(s: &str, class: impl Fn(char) -> bool) -> String {
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        if class(c) {
            out.push(' ');
            out.push(c);
            out.push(' ');
        } else {
            out.push(c);
        }
    }
    out
}

/// Where a two-character rule puts its spaces.
#[derive(Clone, Copy)]
enum Rewrite {
    /// `\1 \2 `
    After,
    /// ` \1 \2`
    Before,
}

/// `re.sub(r'(A)(B)', repl, s)`: matches are found left to right and never overlap.
fn sub2(s: &str, pair: impl Fn(char, char) -> bool, rewrite: Rewrite) -> String {
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::with_capacity(s.len() + 16);
    let mut i = 0;
    while i < chars.len() {
        if i + 1 < chars.len() && pair(chars[i], chars[i + 1]) {
            let (a, b) = (chars[i], chars[i + 1]);
            match rewrite {
                Rewrite::After => {
                    out.push(a);
                    out.push(' ');
                    out.push(b);
                    out.push(' ');
                }
                Rewrite::Before => {
                    out.push(' ');
                    out.push(a);
                    out.push(' ');
                    out.push(b);
                }
            }
            i += 2;
        } else {
            out.push(chars[i]);
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Outputs of sacrebleu 2.6.0's tokenizers on these lines (computed with it).
    #[test]
    fn tokenizers_match_sacrebleu() {
        let t = BleuTokenizer::Mteval13a;
        assert_eq!(
            t.tokenize("It's 1,000.50 U.S. dollars -- \"quoted\" &amp;lt; 3-4."),
            "It's 1,000.50 U . S . dollars -- \" quoted \" < 3 - 4 ."
        );
        assert_eq!(t.tokenize("a..b,,c"), "a . . b , , c");
        assert_eq!(BleuTokenizer::Zh.tokenize(" GPU 有80GB内存—很大。"), "GPU 有 80GB 内 存 — 很 大 。");
        assert_eq!(BleuTokenizer::Intl.tokenize("Hello, world! 3.5 €5 (a)"), "Hello , world ! 3.5 € 5 ( a )");
    }
}
