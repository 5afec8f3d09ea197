//! Code-switching rate of generated responses: how often (and in what share of words) a response
//! leaves the target language, outside code, URLs and numbers. Method (also in evals/codeswitch.toml):
//! 1. Remove fenced code blocks, inline code, URLs and e-mail addresses.
//! 2. Split into sentences (`.!?。！？;` and newlines), sentences into words: runs of letters, also
//!    split where the Unicode script changes (so `用Python写` is three words). Words without letters
//!    (numbers, punctuation, emoji) are not counted.
//! 3. A word whose script is not one of the target language's scripts is foreign; its language is
//!    named by whatlang over the sentence's words of that script when reliable, else by the script.
//! 4. For a target with a language code (Latin- or Arabic-script languages), the sentence's words in
//!    the target script (at least `min_words` of them) are classified by whatlang restricted to the
//!    target and its `rivals` (languages likely to intrude in the same script, default English); when
//!    a rival wins with confidence ≥ 0.5 they are foreign too (an English sentence in a Turkish answer).
//!    Restricting the choice keeps short sentences decidable, which open-set detection is not.
//!
//! A response code-switches when it has any foreign word.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use whatlang::{Lang, Script};

use super::EvalError;

/// The target language of a code-switching measurement.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetLang {
    /// Prompt set (JSONL `{"prompt"}`), relative to the evals directory.
    #[serde(default)]
    pub prompts: String,
    /// Scripts the language is written in (whatlang names: Latin, Arabic, Mandarin, Cyrillic, ...).
    pub scripts: Vec<String>,
    /// whatlang (ISO 639-3) code for sentence-level language ID within those scripts, if any.
    #[serde(default)]
    pub lang: Option<String>,
    /// Fewest words of a sentence for language ID to be trusted.
    #[serde(default = "default_min_words")]
    pub min_words: usize,
    /// whatlang codes of languages that may intrude in the target's own script.
    #[serde(default = "default_rivals")]
    pub rivals: Vec<String>,
}

fn default_min_words() -> usize {
    3
}

fn default_rivals() -> Vec<String> {
    vec!["eng".into()]
}

/// Least confidence of the restricted detector for a rival to count.
const MIN_CONFIDENCE: f64 = 0.5;

/// What the measurement found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CodeswitchReport {
    /// Responses measured.
    pub responses: usize,
    /// Responses with at least one foreign word.
    pub switched_responses: usize,
    /// `switched_responses / responses`.
    pub codeswitch_rate: f64,
    /// Words counted (letters only, outside code and URLs).
    pub words: usize,
    /// Words outside the target language.
    pub foreign_words: usize,
    /// `foreign_words / words`.
    pub foreign_word_share: f64,
    /// Intruding languages (whatlang code or script name) by foreign words, most frequent first.
    pub intruders: Vec<(String, usize)>,
    /// Per response: its foreign words.
    pub per_response: Vec<usize>,
}

struct Target {
    scripts: Vec<Script>,
    /// The language and a detector restricted to it and its rivals.
    lang: Option<(Lang, whatlang::Detector)>,
    min_words: usize,
}

fn parse_lang(code: &str) -> Result<Lang, EvalError> {
    Lang::from_code(code)
        .ok_or_else(|| EvalError::Config(format!("unknown whatlang language code `{code}` (ISO 639-3, e.g. tur)")))
}

impl Target {
    fn new(t: &TargetLang) -> Result<Self, EvalError> {
        let scripts = t
            .scripts
            .iter()
            .map(|name| {
                Script::all().iter().copied().find(|s| s.name() == name).ok_or_else(|| {
                    EvalError::Config(format!(
                        "unknown script `{name}`; known: {}",
                        Script::all().iter().map(|s| s.name()).collect::<Vec<_>>().join(", ")
                    ))
                })
            })
            .collect::<Result<_, _>>()?;
        let lang = match &t.lang {
            Some(code) => {
                let lang = parse_lang(code)?;
                let mut allow = vec![lang];
                for r in &t.rivals {
                    allow.push(parse_lang(r)?);
                }
                Some((lang, whatlang::Detector::with_allowlist(allow)))
            }
            None => None,
        };
        Ok(Target { scripts, lang, min_words: t.min_words })
    }
}

/// Removes fenced code blocks, inline code, URLs and e-mail addresses (replaced by a newline or space).
pub fn strip_code_and_urls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_fence = false;
    for line in text.split_inclusive('\n') {
        if line.trim_start().starts_with("```") || line.trim_start().starts_with("~~~") {
            in_fence = !in_fence;
            out.push('\n');
            continue;
        }
        if in_fence {
            out.push('\n');
            continue;
        }
        // Inline code: text between single backticks on one line.
        let mut in_code = false;
        for (i, part) in line.split('`').enumerate() {
            if i > 0 {
                in_code = !in_code;
            }
            if !in_code {
                out.push_str(part);
            }
            out.push(' ');
        }
    }
    out.split(' ')
        .map(|w| {
            let lower = w.to_lowercase();
            let is_url = lower.contains("://") || lower.starts_with("www.") || (w.contains('@') && w.contains('.'));
            if is_url {
                // Keep line breaks the word may carry.
                w.chars().filter(|&c| c == '\n').collect::<String>()
            } else {
                w.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The script of one character (None for non-letters and scripts whatlang does not know).
fn char_script(c: char) -> Option<Script> {
    if !c.is_alphabetic() {
        return None;
    }
    let mut buf = [0u8; 4];
    whatlang::detect_script(c.encode_utf8(&mut buf))
}

/// Words of a sentence with their script: maximal runs of letters of one script.
fn words(sentence: &str) -> Vec<(String, Script)> {
    let mut out: Vec<(String, Script)> = Vec::new();
    let mut cur: Option<(String, Script)> = None;
    for c in sentence.chars() {
        // Combining marks continue the word they follow.
        let script = if c.is_alphabetic() { char_script(c) } else { None };
        match (script, cur.as_mut()) {
            (Some(s), Some((w, cs))) if *cs == s => w.push(c),
            (Some(s), _) => {
                out.extend(cur.take());
                cur = Some((c.to_string(), s));
            }
            (None, Some((w, _))) if is_mark(c) => w.push(c),
            (None, _) => out.extend(cur.take()),
        }
    }
    out.extend(cur);
    out
}

/// Unicode combining marks (Mn/Mc ranges used by Latin, Arabic, Indic scripts).
fn is_mark(c: char) -> bool {
    matches!(c, '\u{300}'..='\u{36f}' | '\u{610}'..='\u{61a}' | '\u{64b}'..='\u{65f}' | '\u{670}' | '\u{200c}' | '\u{200d}')
}

/// Names the language of `text` (words of one script) when whatlang is sure, else the script.
fn name_language(text: &str, script: Script) -> String {
    match whatlang::detect(text) {
        Some(info) if info.is_reliable() && info.script() == script => info.lang().code().to_string(),
        _ => script.name().to_string(),
    }
}

/// Foreign words of one response, with their language labels.
fn foreign_words(response: &str, target: &Target) -> (usize, Vec<(String, usize)>) {
    let clean = strip_code_and_urls(response);
    let mut total = 0;
    let mut foreign: Vec<(String, usize)> = Vec::new();
    for sentence in clean.split(['.', '!', '?', '。', '！', '？', ';', '；', '\n']) {
        let ws = words(sentence);
        total += ws.len();
        let mut by_script: BTreeMap<&str, (Script, Vec<&str>)> = BTreeMap::new();
        for (w, s) in &ws {
            by_script.entry(s.name()).or_insert((*s, Vec::new())).1.push(w);
        }
        for (script, ws) in by_script.values() {
            let joined = ws.join(" ");
            if !target.scripts.contains(script) {
                foreign.push((name_language(&joined, *script), ws.len()));
            } else if let Some((lang, detector)) = &target.lang {
                if ws.len() >= target.min_words {
                    if let Some(info) = detector.detect(&joined) {
                        if info.lang() != *lang && info.confidence() >= MIN_CONFIDENCE {
                            foreign.push((info.lang().code().to_string(), ws.len()));
                        }
                    }
                }
            }
        }
    }
    (total, foreign)
}

/// Measures the code-switching of `responses` against `target`.
pub fn measure(responses: &[String], target: &TargetLang) -> Result<CodeswitchReport, EvalError> {
    let target = Target::new(target)?;
    let mut words = 0;
    let mut foreign = 0;
    let mut switched = 0;
    let mut per_response = Vec::with_capacity(responses.len());
    let mut intruders: BTreeMap<String, usize> = BTreeMap::new();
    for r in responses {
        let (n, f) = foreign_words(r, &target);
        let nf: usize = f.iter().map(|x| x.1).sum();
        words += n;
        foreign += nf;
        switched += usize::from(nf > 0);
        per_response.push(nf);
        for (label, k) in f {
            *intruders.entry(label).or_default() += k;
        }
    }
    let mut intruders: Vec<(String, usize)> = intruders.into_iter().collect();
    intruders.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let share = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    Ok(CodeswitchReport {
        responses: responses.len(),
        switched_responses: switched,
        codeswitch_rate: share(switched, responses.len()),
        words,
        foreign_words: foreign,
        foreign_word_share: share(foreign, words),
        intruders,
        per_response,
    })
}

/// Reads responses from JSONL: each line's `response` field (or `text`, or `output`).
pub fn read_responses(path: &std::path::Path) -> Result<Vec<String>, EvalError> {
    let text = std::fs::read_to_string(path).map_err(|e| EvalError::io(path, e))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(line)
            .map_err(|e| EvalError::data(path, i as u64 + 1, format!("not valid JSON: {e}")))?;
        let r = ["response", "text", "output"].iter().find_map(|k| v.get(k).and_then(|x| x.as_str()));
        match r {
            Some(r) => out.push(r.to_string()),
            None => {
                return Err(EvalError::data(
                    path,
                    i as u64 + 1,
                    "expected a string field `response` (or `text`, `output`)",
                ))
            }
        }
    }
    Ok(out)
}

impl std::fmt::Display for CodeswitchReport {
    /// The one-line summary `eval codeswitch` prints.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let intruders: Vec<String> = self.intruders.iter().take(5).map(|(l, n)| format!("{l} {n}")).collect();
        write!(
            f,
            "{}/{} responses code-switch ({:.2}%), {}/{} words foreign ({:.2}%); intruders: {}",
            self.switched_responses,
            self.responses,
            100.0 * self.codeswitch_rate,
            self.foreign_words,
            self.words,
            100.0 * self.foreign_word_share,
            intruders.join(", ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::TaskRegistry;

    /// A target of the shipped evals/codeswitch.toml.
    fn builtin_target(lang: &str) -> TargetLang {
        TaskRegistry::load(None).unwrap().codeswitch_target(lang).unwrap().clone()
    }

    #[test]
    fn shipped_prompt_sets_stay_in_their_language() {
        let sets = [
            ("tr", include_str!("../../evals/prompts/codeswitch_tr.jsonl")),
            ("et", include_str!("../../evals/prompts/codeswitch_et.jsonl")),
            ("fa", include_str!("../../evals/prompts/codeswitch_fa.jsonl")),
            ("zh", include_str!("../../evals/prompts/codeswitch_zh.jsonl")),
        ];
        for (lang, text) in sets {
            let prompts: Vec<String> = text
                .lines()
                .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["prompt"].as_str().unwrap().to_string())
                .collect();
            let rep = measure(&prompts, &builtin_target(lang)).unwrap();
            assert_eq!((rep.responses, rep.foreign_words), (212, 0), "{lang}: {rep:?}");
        }
        assert!(TaskRegistry::load(None).unwrap().codeswitch_target("xx").is_none());
    }

    #[test]
    fn code_urls_and_numbers_are_ignored() {
        let zh = builtin_target("zh");
        let r = "这是一个函数。\n```python\ndef add(a, b):\n    return a + b\n```\n请运行 `pip install x`，访问 https://example.org/docs 查看 2024 年的说明。";
        let rep = measure(&[r.to_string()], &zh).unwrap();
        assert_eq!((rep.switched_responses, rep.foreign_words), (0, 0), "{rep:?}");
    }

    #[test]
    fn foreign_scripts_and_sentences_are_counted() {
        let zh = builtin_target("zh");
        let rep = measure(
            &[
                "我喜欢用Python写代码。".into(),
                "今天天气很好。".into(),
                "The weather is really nice today in the city.".into(),
            ],
            &zh,
        )
        .unwrap();
        assert_eq!(rep.responses, 3);
        assert_eq!(rep.switched_responses, 2);
        assert_eq!(rep.per_response, vec![1, 0, 9]);
        assert_eq!(rep.intruders[0], ("eng".to_string(), 9));
        let tr = builtin_target("tr");
        let rep = measure(
            &["Bugün hava çok güzel ve parkta yürüyüş yapmak istiyorum. However, I think it will rain later today."
                .into()],
            &tr,
        )
        .unwrap();
        assert_eq!(rep.switched_responses, 1);
        assert_eq!(rep.foreign_words, 8);
        assert_eq!(rep.intruders, vec![("eng".to_string(), 8)]);
        let et = builtin_target("et");
        let rep = measure(&["Tallinn on Eesti pealinn ja suurim linn. See on väga ilus.".into()], &et).unwrap();
        assert_eq!(rep.foreign_words, 0, "{rep:?}");
        let bad = TargetLang { scripts: vec!["Klingon".into()], ..builtin_target("zh") };
        assert!(matches!(Target::new(&bad), Err(e) if e.to_string().starts_with("unknown script `Klingon`")));
    }
}
