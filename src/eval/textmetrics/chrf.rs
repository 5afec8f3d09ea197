//! chrF and chrF++ as sacrebleu 2.x computes them: character n-grams up to 6 with whitespace removed,
//! word n-grams up to `word_order` (2 for chrF++) with punctuation split off word ends, β = 2; per
//! segment the reference with the best F wins; the corpus score is the F of the summed statistics,
//! averaging precision and recall over the orders both sides have (sacrebleu's default, not eps smoothing).

use std::collections::HashMap;
use std::hash::Hash;

use super::{py_split, SACREBLEU_VERSION};

/// A chrF configuration.
#[derive(Debug, Clone, Copy)]
pub struct Chrf {
    /// Character n-gram order (6).
    pub char_order: usize,
    /// Word n-gram order (0 for chrF, 2 for chrF++).
    pub word_order: usize,
    /// Recall weight (2).
    pub beta: u32,
    /// Lower-case first.
    pub lowercase: bool,
}

impl Default for Chrf {
    /// sacrebleu's `CHRF()`.
    fn default() -> Self {
        Chrf { char_order: 6, word_order: 0, beta: 2, lowercase: false }
    }
}

impl Chrf {
    /// sacrebleu's `CHRF(word_order=2)`.
    pub fn chrf_plus_plus() -> Self {
        Chrf { word_order: 2, ..Chrf::default() }
    }

    fn orders(&self) -> usize {
        self.char_order + self.word_order
    }

    /// Character then word n-gram counts, one map per order.
    fn ngrams(&self, segment: &str) -> Vec<HashMap<String, u64>> {
        let segment = if self.lowercase { segment.to_lowercase() } else { segment.to_string() };
        let chars: Vec<char> = py_split(&segment).flat_map(str::chars).collect();
        let mut out = Vec::with_capacity(self.orders());
        for n in 1..=self.char_order {
            out.push(count(chars.windows(n).map(|w| w.iter().collect::<String>())));
        }
        if self.word_order > 0 {
            let words = split_punctuation(&segment);
            for n in 1..=self.word_order {
                out.push(count(words.windows(n).map(|w| w.join(" "))));
            }
        }
        out
    }

    /// `[hyp, ref, match]` counts per order of one hypothesis against its best reference.
    pub fn stats(&self, hyp: &str, refs: &[&str]) -> Vec<u64> {
        let h = self.ngrams(hyp);
        let mut best: (f64, Vec<u64>) = (-1.0, Vec::new());
        for r in refs {
            let r = self.ngrams(r);
            let mut stats = Vec::with_capacity(3 * self.orders());
            for (hc, rc) in h.iter().zip(&r) {
                let matched: u64 = hc.iter().map(|(g, &c)| c.min(rc.get(g).copied().unwrap_or(0))).sum();
                let hyp_count: u64 = hc.values().sum();
                // sacrebleu counts no hypothesis n-grams where the reference has none of that order.
                stats.extend([if rc.is_empty() { 0 } else { hyp_count }, rc.values().sum(), matched]);
            }
            let f = self.f_score(&stats);
            if f > best.0 {
                best = (f, stats);
            }
        }
        best.1
    }

    /// The score (0–100) of summed statistics.
    pub fn f_score(&self, stats: &[u64]) -> f64 {
        let factor = f64::from(self.beta * self.beta);
        let (mut prec, mut rec, mut effective) = (0.0, 0.0, 0usize);
        for s in stats.chunks(3) {
            let (n_hyp, n_ref, n_match) = (s[0], s[1], s[2]);
            if n_hyp > 0 && n_ref > 0 {
                prec += n_match as f64 / n_hyp as f64;
                rec += n_match as f64 / n_ref as f64;
                effective += 1;
            }
        }
        if effective == 0 {
            return 0.0;
        }
        let (p, r) = (prec / effective as f64, rec / effective as f64);
        if p + r == 0.0 {
            return 0.0;
        }
        100.0 * (1.0 + factor) * p * r / (factor * p + r)
    }

    /// Corpus chrF of `hyps` against reference streams (`refs[k][i]` is the k-th reference of segment i).
    pub fn corpus(&self, hyps: &[String], refs: &[Vec<String>]) -> f64 {
        let mut total = vec![0u64; 3 * self.orders()];
        for (i, h) in hyps.iter().enumerate() {
            let seg_refs: Vec<&str> = refs.iter().map(|r| r[i].as_str()).collect();
            for (t, s) in total.iter_mut().zip(self.stats(h, &seg_refs)) {
                *t += s;
            }
        }
        self.f_score(&total)
    }

    /// sacrebleu's signature, e.g. `nrefs:1|case:mixed|eff:yes|nc:6|nw:0|space:no|version:2.6.0`.
    pub fn signature(&self, nrefs: usize) -> String {
        format!(
            "nrefs:{nrefs}|case:{}|eff:yes|nc:{}|nw:{}|space:no|version:{SACREBLEU_VERSION}",
            if self.lowercase { "lc" } else { "mixed" },
            self.char_order,
            self.word_order
        )
    }
}

fn count<K: Hash + Eq>(items: impl Iterator<Item = K>) -> HashMap<K, u64> {
    let mut m = HashMap::new();
    for k in items {
        *m.entry(k).or_insert(0) += 1;
    }
    m
}

/// sacrebleu's `_remove_punctuation` (from chrF++.py): one ASCII punctuation mark split off the end of a
/// word, else off its start.
fn split_punctuation(segment: &str) -> Vec<String> {
    let punct = |c: char| c.is_ascii_punctuation();
    let mut words = Vec::new();
    for w in py_split(segment) {
        let mut chars = w.chars();
        let (first, last) = (chars.next(), w.chars().next_back());
        if w.chars().nth(1).is_none() {
            words.push(w.to_string());
        } else if let Some(l) = last.filter(|&c| punct(c)) {
            words.push(w[..w.len() - l.len_utf8()].to_string());
            words.push(l.to_string());
        } else if let Some(f) = first.filter(|&c| punct(c)) {
            words.push(f.to_string());
            words.push(w[f.len_utf8()..].to_string());
        } else {
            words.push(w.to_string());
        }
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn punctuation_splits_like_chrf_plus_plus() {
        assert_eq!(split_punctuation("(a) \"hi\" x . ,b"), ["(a", ")", "\"hi", "\"", "x", ".", ",", "b"]);
    }

    /// sacrebleu 2.6.0: identical segments score 100; a hypothesis with no reference n-grams scores 0.
    #[test]
    fn bounds() {
        let c = Chrf::chrf_plus_plus();
        assert_eq!(c.corpus(&["a b c".into()], &[vec!["a b c".into()]]), 100.0);
        assert_eq!(c.corpus(&["xyz".into()], &[vec!["abc".into()]]), 0.0);
        assert_eq!(c.signature(2), "nrefs:2|case:mixed|eff:yes|nc:6|nw:2|space:no|version:2.6.0");
    }
}
