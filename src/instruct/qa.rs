//! Quality checks on translated records, listed by id in the manifest: empty translation of a
//! non-empty source, translation identical to the source, length ratio outside the allowed band,
//! and text still in the source language (whatlang).

use serde::{Deserialize, Serialize};
use whatlang::Lang;

use super::protect::find_spans;

/// ISO 639-1 codes of the languages whatlang knows, with whatlang's language.
const LANGS: [(&str, Lang); 68] = [
    ("af", Lang::Afr),
    ("ak", Lang::Aka),
    ("am", Lang::Amh),
    ("ar", Lang::Ara),
    ("az", Lang::Aze),
    ("be", Lang::Bel),
    ("bg", Lang::Bul),
    ("bn", Lang::Ben),
    ("ca", Lang::Cat),
    ("cs", Lang::Ces),
    ("da", Lang::Dan),
    ("de", Lang::Deu),
    ("el", Lang::Ell),
    ("en", Lang::Eng),
    ("eo", Lang::Epo),
    ("es", Lang::Spa),
    ("et", Lang::Est),
    ("fa", Lang::Pes),
    ("fi", Lang::Fin),
    ("fr", Lang::Fra),
    ("gu", Lang::Guj),
    ("he", Lang::Heb),
    ("hi", Lang::Hin),
    ("hr", Lang::Hrv),
    ("hu", Lang::Hun),
    ("hy", Lang::Hye),
    ("id", Lang::Ind),
    ("it", Lang::Ita),
    ("ja", Lang::Jpn),
    ("jv", Lang::Jav),
    ("ka", Lang::Kat),
    ("km", Lang::Khm),
    ("kn", Lang::Kan),
    ("ko", Lang::Kor),
    ("la", Lang::Lat),
    ("lt", Lang::Lit),
    ("lv", Lang::Lav),
    ("mk", Lang::Mkd),
    ("ml", Lang::Mal),
    ("mr", Lang::Mar),
    ("my", Lang::Mya),
    ("nb", Lang::Nob),
    ("ne", Lang::Nep),
    ("nl", Lang::Nld),
    ("no", Lang::Nob),
    ("or", Lang::Ori),
    ("pa", Lang::Pan),
    ("pl", Lang::Pol),
    ("pt", Lang::Por),
    ("ro", Lang::Ron),
    ("ru", Lang::Rus),
    ("si", Lang::Sin),
    ("sk", Lang::Slk),
    ("sl", Lang::Slv),
    ("sn", Lang::Sna),
    ("sr", Lang::Srp),
    ("sv", Lang::Swe),
    ("ta", Lang::Tam),
    ("te", Lang::Tel),
    ("th", Lang::Tha),
    ("tk", Lang::Tuk),
    ("tl", Lang::Tgl),
    ("tr", Lang::Tur),
    ("uk", Lang::Ukr),
    ("ur", Lang::Urd),
    ("uz", Lang::Uzb),
    ("vi", Lang::Vie),
    ("zh", Lang::Cmn),
];

/// whatlang's language for a code (`et`, `est`, `zh-CN`, `pt-BR`), if it knows it.
pub fn whatlang_lang(code: &str) -> Option<Lang> {
    let base = code.split(['-', '_']).next().unwrap_or(code).to_ascii_lowercase();
    LANGS.iter().find(|(c, _)| *c == base).map(|(_, l)| *l).or_else(|| Lang::from_code(base))
}

/// English name of a language code, for prompts ("Estonian"); the code itself when unknown.
pub fn language_name(code: &str) -> String {
    whatlang_lang(code).map_or_else(|| code.to_string(), |l| l.eng_name().to_string())
}

/// Thresholds of the checks.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QaConfig {
    /// Smallest allowed translated/source length ratio (characters).
    #[serde(default = "default_min_ratio")]
    pub min_ratio: f64,
    /// Largest allowed ratio.
    #[serde(default = "default_max_ratio")]
    pub max_ratio: f64,
    /// Texts shorter than this (characters, without protected spans) skip the ratio and language checks.
    #[serde(default = "default_min_chars")]
    pub min_chars: usize,
}

fn default_min_ratio() -> f64 {
    0.5
}

fn default_max_ratio() -> f64 {
    2.0
}

fn default_min_chars() -> usize {
    20
}

impl Default for QaConfig {
    fn default() -> Self {
        QaConfig { min_ratio: default_min_ratio(), max_ratio: default_max_ratio(), min_chars: default_min_chars() }
    }
}

/// Which checks one record failed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QaFlags {
    /// A non-empty field came back empty.
    pub empty: bool,
    /// A translated field equals its source.
    pub identical: bool,
    /// The record's translated length is outside the ratio band.
    pub ratio: bool,
    /// The translation is still (reliably) in the source language.
    pub source_lang: bool,
}

/// The text without protected spans (code, URLs): what the language and length checks look at.
fn prose(text: &str) -> String {
    let mut out = String::new();
    let mut at = 0;
    for r in find_spans(text) {
        out.push_str(&text[at..r.start]);
        out.push(' ');
        at = r.end;
    }
    out.push_str(&text[at..]);
    out
}

/// Checks the `(source, translation)` pairs of the fields that were sent to the translator.
pub fn check(cfg: &QaConfig, source_lang: Option<Lang>, fields: &[(&str, &str)]) -> QaFlags {
    let mut f = QaFlags::default();
    let (mut src_chars, mut out_chars, mut text) = (0usize, 0usize, String::new());
    for (src, out) in fields {
        f.empty |= out.trim().is_empty();
        f.identical |= out.trim() == src.trim() && prose(src).chars().filter(|c| c.is_alphabetic()).count() >= 2;
        let (s, o) = (prose(src), prose(out));
        src_chars += s.trim().chars().count();
        out_chars += o.trim().chars().count();
        text.push_str(&o);
        text.push('\n');
    }
    if src_chars >= cfg.min_chars {
        let r = out_chars as f64 / src_chars as f64;
        f.ratio = r < cfg.min_ratio || r > cfg.max_ratio;
    }
    if let (Some(lang), true) = (source_lang, text.trim().chars().count() >= cfg.min_chars) {
        f.source_lang = whatlang::detect(&text).is_some_and(|i| i.lang() == lang && i.is_reliable());
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_names() {
        assert_eq!(whatlang_lang("et"), Some(Lang::Est));
        assert_eq!(whatlang_lang("zh-CN"), Some(Lang::Cmn));
        assert_eq!(whatlang_lang("pes"), Some(Lang::Pes));
        assert_eq!(whatlang_lang("xx"), None);
        assert_eq!((language_name("fa"), language_name("xx")), ("Persian".to_string(), "xx".to_string()));
    }

    #[test]
    fn each_check_fires_alone() {
        let cfg = QaConfig::default();
        let en = whatlang_lang("en");
        let src = "Describe the water cycle in three short sentences for a child.";
        let good = "Kirjelda lapsele veeringlust kolme lühikese lausega, palun väga.";
        assert_eq!(check(&cfg, en, &[(src, good)]), QaFlags::default());
        assert_eq!(check(&cfg, en, &[(src, "")]), QaFlags { empty: true, ratio: true, ..Default::default() });
        assert_eq!(
            check(&cfg, en, &[(src, src)]),
            QaFlags { identical: true, source_lang: true, ..Default::default() }
        );
        let long = format!("{good} {good} {good}");
        assert_eq!(check(&cfg, en, &[(src, &long)]), QaFlags { ratio: true, ..Default::default() });
        // Short fields and code-only differences are not judged on length or language.
        assert_eq!(check(&cfg, en, &[("Hi", "Tere tere tere")]), QaFlags::default());
        assert_eq!(check(&cfg, en, &[("42", "42")]), QaFlags::default());
    }
}
