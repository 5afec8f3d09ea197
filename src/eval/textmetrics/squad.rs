//! Exact match and F1 of the official SQuAD v1.1 evaluation script (`evaluate-v1.1.py`): answers are
//! lower-cased, ASCII punctuation removed, articles removed as whole words, whitespace squashed; a
//! prediction scores its best over the gold answers; both are means over questions, times 100. The
//! article list is English (`a`, `an`, `the`) in the script; a language without articles (Estonian) sets
//! an empty list.

use std::collections::HashMap;

use super::{py_is_word, py_split};

/// How answers are normalised before comparing.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SquadNorm {
    /// Whole words removed (the script's `\b(a|an|the)\b`).
    pub articles: Vec<String>,
}

impl Default for SquadNorm {
    /// The official script's English articles.
    fn default() -> Self {
        SquadNorm { articles: ["a", "an", "the"].map(String::from).to_vec() }
    }
}

/// Exact match and F1, 0–100, with the per-question values.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SquadScore {
    /// Mean exact match × 100.
    pub exact_match: f64,
    /// Mean F1 × 100.
    pub f1: f64,
    /// Per question: (exact match 0/1, F1 0–1).
    #[serde(skip)]
    pub per_question: Vec<(f64, f64)>,
}

impl SquadNorm {
    /// The articles of a language: English as the official script; Spanish, German and Vietnamese as the
    /// MLQA evaluation script (`mlqa_evaluation_v1.py`); none for the rest (Estonian, Turkish, Persian,
    /// Chinese, ... have no articles; MLQA's Arabic rule strips a prefix, which a word list cannot).
    pub fn for_lang(lang: &str) -> Self {
        let code = super::base_code(lang);
        let words: &[&str] = match code.as_str() {
            "en" | "eng" => &["a", "an", "the"],
            "es" | "spa" => &["un", "una", "unos", "unas", "el", "la", "los", "las"],
            "de" | "deu" => {
                &["ein", "eine", "einen", "einem", "eines", "einer", "der", "die", "das", "den", "dem", "des"]
            }
            "vi" | "vie" => &["của", "là", "cái", "chiếc", "những"],
            _ => &[],
        };
        SquadNorm { articles: words.iter().map(|w| w.to_string()).collect() }
    }

    /// The script's `normalize_answer`.
    pub fn normalize(&self, s: &str) -> String {
        let lower = s.to_lowercase();
        let no_punct: String = lower.chars().filter(|c| !c.is_ascii_punctuation()).collect();
        let chars: Vec<char> = no_punct.chars().collect();
        let mut out = String::with_capacity(no_punct.len());
        let mut i = 0;
        'scan: while i < chars.len() {
            // `\b` before: the previous character is not a word character (or there is none).
            if i == 0 || !py_is_word(chars[i - 1]) {
                for a in &self.articles {
                    let a: Vec<char> = a.chars().collect();
                    let end = i + a.len();
                    if !a.is_empty()
                        && chars[i..].starts_with(&a)
                        && (end == chars.len() || !py_is_word(chars[end]))
                        && py_is_word(a[a.len() - 1])
                    {
                        out.push(' ');
                        i = end;
                        continue 'scan;
                    }
                }
            }
            out.push(chars[i]);
            i += 1;
        }
        py_split(&out).collect::<Vec<_>>().join(" ")
    }

    /// The script's `exact_match_score`.
    pub fn exact_match(&self, prediction: &str, gold: &str) -> bool {
        self.normalize(prediction) == self.normalize(gold)
    }

    /// The script's `f1_score`: token overlap of the normalised answers.
    pub fn f1(&self, prediction: &str, gold: &str) -> f64 {
        let (p, g) = (self.normalize(prediction), self.normalize(gold));
        let (p, g): (Vec<&str>, Vec<&str>) = (py_split(&p).collect(), py_split(&g).collect());
        let mut gold_counts: HashMap<&str, usize> = HashMap::new();
        for t in &g {
            *gold_counts.entry(t).or_insert(0) += 1;
        }
        let mut same = 0;
        for t in &p {
            if let Some(c) = gold_counts.get_mut(t).filter(|c| **c > 0) {
                *c -= 1;
                same += 1;
            }
        }
        if same == 0 {
            return 0.0;
        }
        let precision = same as f64 / p.len() as f64;
        let recall = same as f64 / g.len() as f64;
        2.0 * precision * recall / (precision + recall)
    }

    /// The script's `evaluate`: each prediction's best over its gold answers, averaged, × 100.
    pub fn score(&self, predictions: &[String], golds: &[Vec<String>]) -> SquadScore {
        let per_question: Vec<(f64, f64)> = predictions
            .iter()
            .zip(golds)
            .map(|(p, gs)| {
                let em = gs.iter().any(|g| self.exact_match(p, g));
                let f1 = gs.iter().map(|g| self.f1(p, g)).fold(0.0, f64::max);
                (f64::from(u8::from(em)), f1)
            })
            .collect();
        let n = per_question.len().max(1) as f64;
        SquadScore {
            exact_match: 100.0 * per_question.iter().map(|q| q.0).sum::<f64>() / n,
            f1: 100.0 * per_question.iter().map(|q| q.1).sum::<f64>() / n,
            per_question,
        }
    }

    /// What results.json names the normalisation by.
    pub fn signature(&self) -> String {
        format!(
            "squad-v1.1|articles:{}",
            if self.articles.is_empty() { "none".into() } else { self.articles.join(",") }
        )
    }
}

/// One line of a SQuAD references file: a JSON list of gold answers, or one JSON string.
pub fn parse_answers(line: &str) -> Result<Vec<String>, String> {
    match serde_json::from_str::<serde_json::Value>(line) {
        Ok(serde_json::Value::String(s)) => Ok(vec![s]),
        Ok(serde_json::Value::Array(a)) if !a.is_empty() => a
            .into_iter()
            .map(|v| v.as_str().map(str::to_string).ok_or_else(|| format!("gold answer {v} is not a string")))
            .collect(),
        Ok(_) => Err("expected a non-empty JSON list of answer strings, e.g. [\"Tartu\", \"Tartus\"]".into()),
        Err(e) => Err(format!("not valid JSON ({e}); expected a list of answer strings per line")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values of the official script's functions on these strings.
    #[test]
    fn normalisation_follows_the_script() {
        let en = SquadNorm::default();
        assert_eq!(en.normalize("The  Beatles, an 'a'-team!"), "beatles ateam");
        assert_eq!(en.normalize("theatre a1 a_b"), "theatre a1 ab");
        let et = SquadNorm { articles: Vec::new() };
        assert_eq!(et.normalize("The Beatles"), "the beatles");
        assert!((en.f1("the cat sat", "a cat sat down") - 0.8).abs() < 1e-12);
        assert_eq!(en.f1("", "x"), 0.0);
    }
}
