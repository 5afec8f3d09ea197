//! Metrics over generated text, each equal to its reference implementation: BLEU, chrF and chrF++ as
//! sacrebleu 2.x computes them (`bleu.rs`, `chrf.rs`, tokenizers in `tokenize.rs`), exact match and F1 as
//! the official SQuAD v1.1 script (`squad.rs`). Python's string semantics (whitespace, `\w`) are spelled
//! out here because the references split and match with them.

pub mod bleu;
pub mod chrf;
pub mod squad;
pub mod tokenize;

pub use bleu::{Bleu, BleuScore};
pub use chrf::Chrf;
pub use squad::{SquadNorm, SquadScore};
pub use tokenize::BleuTokenizer;

use unicode_categories::UnicodeCategories;

/// The sacrebleu release whose numbers these metrics reproduce (tested), named in their signatures.
pub const SACREBLEU_VERSION: &str = "2.6.0";

/// The language part of a code, lower-cased: `zho_Hans` → `zho`, `pt-BR` → `pt`, `et` → `et`.
pub fn base_code(lang: &str) -> String {
    lang.split(['_', '-']).next().unwrap_or(lang).to_ascii_lowercase()
}

/// Python's `str.split()`: runs of Unicode whitespace (and the ASCII separators `\x1c`–`\x1f`).
pub fn py_split(text: &str) -> impl Iterator<Item = &str> {
    text.split(super::lm::is_py_space).filter(|w| !w.is_empty())
}

/// Python's `' '.join(text.split())`.
pub fn py_squash(text: &str) -> String {
    py_split(text).collect::<Vec<_>>().join(" ")
}

/// Python `re`'s `\w` on `str`: a letter or number of any script, or `_` (combining marks are not).
pub fn py_is_word(c: char) -> bool {
    c == '_' || c.is_letter() || c.is_number()
}

/// One corpus score of a metric, as `eval metric` prints it and results.json stores it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct CorpusScore {
    /// `bleu`, `chrf`, `chrf++`, `exact_match`, `f1`.
    pub metric: String,
    /// The score, 0–100.
    pub score: f64,
    /// The sacrebleu-style signature (or the SQuAD normalisation).
    pub signature: String,
    /// Segments scored.
    pub n: usize,
    /// Metric-specific details (BLEU's counts, precisions, brevity penalty).
    #[serde(skip_serializing_if = "serde_json::Value::is_null")]
    pub details: serde_json::Value,
}

/// A text metric `eval metric` and the generation tasks compute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum)]
pub enum TextMetric {
    /// sacrebleu BLEU.
    #[serde(rename = "bleu")]
    #[value(name = "bleu")]
    Bleu,
    /// sacrebleu chrF (β = 2, character 6-grams).
    #[serde(rename = "chrf")]
    #[value(name = "chrf")]
    Chrf,
    /// sacrebleu chrF++ (chrF with word 1- and 2-grams).
    #[serde(rename = "chrf++")]
    #[value(name = "chrf++")]
    ChrfPlusPlus,
    /// SQuAD v1.1 exact match and F1.
    #[serde(rename = "squad")]
    #[value(name = "squad")]
    Squad,
}

/// Options of the text metrics beyond their defaults.
#[derive(Debug, Clone, Default)]
pub struct MetricOptions {
    /// Target language code (`tr`, `zh`, `est_Latn`): picks BLEU's tokenizer and SQuAD's articles.
    pub lang: Option<String>,
    /// BLEU tokenizer instead of the language's.
    pub tokenize: Option<BleuTokenizer>,
    /// Case-insensitive BLEU/chrF.
    pub lowercase: bool,
    /// SQuAD articles instead of the language's.
    pub articles: Option<Vec<String>>,
}

impl MetricOptions {
    /// BLEU for corpus scores with these options.
    pub fn bleu(&self) -> Bleu {
        let tokenizer = self
            .tokenize
            .unwrap_or_else(|| self.lang.as_deref().map_or(BleuTokenizer::Mteval13a, BleuTokenizer::for_lang));
        Bleu { lowercase: self.lowercase, tokenizer, effective_order: false }
    }

    /// chrF or chrF++ with these options.
    pub fn chrf(&self, plus_plus: bool) -> Chrf {
        let c = if plus_plus { Chrf::chrf_plus_plus() } else { Chrf::default() };
        Chrf { lowercase: self.lowercase, ..c }
    }

    /// SQuAD normalisation with these options.
    pub fn squad(&self) -> SquadNorm {
        match (&self.articles, &self.lang) {
            (Some(a), _) => SquadNorm { articles: a.clone() },
            (None, Some(lang)) => SquadNorm::for_lang(lang),
            (None, None) => SquadNorm::default(),
        }
    }
}

/// Corpus scores of `predictions` (one per line) against `references`: for BLEU/chrF one file per
/// reference stream, one segment per line; for `squad` one JSONL file with a list of gold answers (or
/// one string) per line. Line counts must agree.
pub fn score_files(
    metric: TextMetric,
    predictions: &std::path::Path,
    references: &[std::path::PathBuf],
    opts: &MetricOptions,
) -> Result<Vec<CorpusScore>, super::EvalError> {
    use super::EvalError;
    let read = |p: &std::path::Path| -> Result<Vec<String>, EvalError> {
        let text = std::fs::read_to_string(p).map_err(|e| EvalError::io(p, e))?;
        Ok(text.lines().map(str::to_string).collect())
    };
    let hyps = read(predictions)?;
    if references.is_empty() {
        return Err(EvalError::Config(
            "no references: give --references FILE (repeat it for more reference streams)".into(),
        ));
    }
    let mut streams = Vec::new();
    for r in references {
        let lines = read(r)?;
        if lines.len() != hyps.len() {
            return Err(EvalError::Config(format!(
                "{} has {} lines but {} has {}: predictions and references must be aligned line by line",
                predictions.display(),
                hyps.len(),
                r.display(),
                lines.len()
            )));
        }
        streams.push(lines);
    }
    let refs: Vec<Vec<String>> = match metric {
        TextMetric::Squad => {
            if streams.len() != 1 {
                return Err(EvalError::Config(
                    "squad takes one references file (JSONL, a list of answers per line)".into(),
                ));
            }
            let path = &references[0];
            streams[0]
                .iter()
                .enumerate()
                .map(|(i, l)| squad::parse_answers(l).map_err(|m| EvalError::data(path, i as u64 + 1, m)))
                .collect::<Result<_, _>>()?
        }
        _ => (0..hyps.len()).map(|i| streams.iter().map(|s| s[i].clone()).collect()).collect(),
    };
    Ok(score(metric, &hyps, &refs, opts, false).map_err(EvalError::Config)?.corpus)
}

/// One metric's scores of a corpus: the corpus-level scores and, when asked for, each segment's own.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricScores {
    /// BLEU, chrF or chrF++ (one score), or SQuAD's exact match and F1.
    pub corpus: Vec<CorpusScore>,
    /// Per segment: sentence BLEU / chrF (0–100), or SQuAD exact match and F1 (0–1); empty unless asked for.
    pub segments: Vec<Vec<(&'static str, f64)>>,
}

/// `metric` of `hyps` against each segment's references (`refs[i]`: BLEU and chrF need the same number for
/// every segment, SQuAD takes any number of gold answers); with `segments`, each segment's score too.
pub fn score(
    metric: TextMetric,
    hyps: &[String],
    refs: &[Vec<String>],
    opts: &MetricOptions,
    segments: bool,
) -> Result<MetricScores, String> {
    let n = hyps.len();
    let corpus_score = |metric: &str, score: f64, signature: String, details: serde_json::Value| CorpusScore {
        metric: metric.into(),
        score,
        signature,
        n,
        details,
    };
    let mut per: Vec<Vec<(&'static str, f64)>> = vec![Vec::new(); if segments { n } else { 0 }];
    let seg_refs = |i: usize| -> Vec<&str> { refs[i].iter().map(String::as_str).collect() };
    let corpus = match metric {
        TextMetric::Bleu | TextMetric::Chrf | TextMetric::ChrfPlusPlus => {
            let nrefs = refs.iter().map(Vec::len).max().unwrap_or(1);
            if refs.iter().any(|r| r.len() != nrefs) {
                return Err("BLEU and chrF need the same number of references for every segment".into());
            }
            // sacrebleu's reference streams: `streams[k][i]` is the k-th reference of segment i.
            let streams: Vec<Vec<String>> = (0..nrefs).map(|k| refs.iter().map(|r| r[k].clone()).collect()).collect();
            if metric == TextMetric::Bleu {
                let b = opts.bleu();
                if segments {
                    let sentence = Bleu::sentence(b.tokenizer);
                    for (i, h) in hyps.iter().enumerate() {
                        per[i].push(("bleu", sentence.score(&sentence.stats(h, &seg_refs(i))).score));
                    }
                }
                let s = b.corpus(hyps, &streams);
                let details = serde_json::to_value(&s).map_err(|e| e.to_string())?;
                vec![corpus_score("bleu", s.score, b.signature(nrefs), details)]
            } else {
                let pp = metric == TextMetric::ChrfPlusPlus;
                let c = opts.chrf(pp);
                let name = if pp { "chrf++" } else { "chrf" };
                if segments {
                    for (i, h) in hyps.iter().enumerate() {
                        per[i].push((name, c.f_score(&c.stats(h, &seg_refs(i)))));
                    }
                }
                vec![corpus_score(name, c.corpus(hyps, &streams), c.signature(nrefs), serde_json::Value::Null)]
            }
        }
        TextMetric::Squad => {
            let norm = opts.squad();
            let s = norm.score(hyps, refs);
            if segments {
                for (p, q) in per.iter_mut().zip(&s.per_question) {
                    p.extend([("exact_match", q.0), ("f1", q.1)]);
                }
            }
            vec![
                corpus_score("exact_match", s.exact_match, norm.signature(), serde_json::Value::Null),
                corpus_score("f1", s.f1, norm.signature(), serde_json::Value::Null),
            ]
        }
    };
    Ok(MetricScores { corpus, segments: per })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_split_and_word_classes() {
        assert_eq!(py_squash("  a\u{1c}b\u{3000}c \n"), "a b c");
        assert!(py_is_word('ş') && py_is_word('中') && py_is_word('٣') && py_is_word('_'));
        // A combining acute accent is not a word character in Python's `re`.
        assert!(!py_is_word('\u{301}') && !py_is_word('-') && !py_is_word('«'));
    }
}
