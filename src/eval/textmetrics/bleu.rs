//! BLEU as sacrebleu 2.x computes it: tokenized segments, n-grams up to 4 clipped by the most any one
//! reference has, the closest reference length (shorter on ties), statistics summed over the corpus,
//! `exp` smoothing (mteval's: each zero-match order counts as 1/2^k of its total).

use std::collections::HashMap;

use super::tokenize::BleuTokenizer;
use super::{py_split, SACREBLEU_VERSION};

const MAX_ORDER: usize = 4;

/// A BLEU configuration.
#[derive(Debug, Clone, Copy)]
pub struct Bleu {
    /// Lower-case hypotheses and references first.
    pub lowercase: bool,
    /// How segments are tokenized.
    pub tokenizer: BleuTokenizer,
    /// Leave out orders with no n-grams (sacrebleu's `sentence_bleu` sets it).
    pub effective_order: bool,
}

/// Sufficient statistics of one segment (or a sum of them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BleuStats {
    /// Hypothesis tokens.
    pub sys_len: u64,
    /// The closest reference's tokens.
    pub ref_len: u64,
    /// Clipped matching n-grams per order.
    pub correct: [u64; MAX_ORDER],
    /// Hypothesis n-grams per order.
    pub total: [u64; MAX_ORDER],
}

impl std::ops::AddAssign for BleuStats {
    fn add_assign(&mut self, o: Self) {
        self.sys_len += o.sys_len;
        self.ref_len += o.ref_len;
        for n in 0..MAX_ORDER {
            self.correct[n] += o.correct[n];
            self.total[n] += o.total[n];
        }
    }
}

/// A BLEU score with what it was computed from.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct BleuScore {
    /// 0–100.
    pub score: f64,
    /// Matching n-grams per order.
    pub counts: [u64; MAX_ORDER],
    /// Hypothesis n-grams per order.
    pub totals: [u64; MAX_ORDER],
    /// Precision per order, 0–100 (smoothed).
    pub precisions: [f64; MAX_ORDER],
    /// Brevity penalty.
    pub bp: f64,
    /// Hypothesis tokens.
    pub sys_len: u64,
    /// Reference tokens.
    pub ref_len: u64,
}

impl Default for Bleu {
    /// sacrebleu's corpus BLEU: mixed case, 13a.
    fn default() -> Self {
        Bleu { lowercase: false, tokenizer: BleuTokenizer::Mteval13a, effective_order: false }
    }
}

fn ngrams(tokens: &[&str]) -> HashMap<Vec<String>, u64> {
    let mut counts = HashMap::new();
    for n in 1..=MAX_ORDER {
        for w in tokens.windows(n) {
            *counts.entry(w.iter().map(|t| t.to_string()).collect()).or_insert(0) += 1;
        }
    }
    counts
}

impl Bleu {
    /// sacrebleu's `sentence_bleu` settings for this tokenizer.
    pub fn sentence(tokenizer: BleuTokenizer) -> Self {
        Bleu { effective_order: true, tokenizer, ..Bleu::default() }
    }

    fn preprocess(&self, segment: &str) -> String {
        let s = segment.trim_end_matches(crate::eval::lm::is_py_space);
        if self.lowercase {
            self.tokenizer.tokenize(&s.to_lowercase())
        } else {
            self.tokenizer.tokenize(s)
        }
    }

    /// The statistics of one hypothesis against its references.
    pub fn stats(&self, hyp: &str, refs: &[&str]) -> BleuStats {
        let mut ref_counts: HashMap<Vec<String>, u64> = HashMap::new();
        let mut ref_lens = Vec::with_capacity(refs.len());
        for r in refs {
            let r = self.preprocess(r);
            let tokens: Vec<&str> = py_split(&r).collect();
            ref_lens.push(tokens.len() as u64);
            for (g, c) in ngrams(&tokens) {
                let e = ref_counts.entry(g).or_insert(0);
                *e = (*e).max(c);
            }
        }
        let hyp = self.preprocess(hyp);
        let tokens: Vec<&str> = py_split(&hyp).collect();
        let sys_len = tokens.len() as u64;
        // Closest reference length; the shorter one on a tie (the first when equal).
        let mut ref_len = 0;
        let mut best: Option<u64> = None;
        for &l in &ref_lens {
            let diff = sys_len.abs_diff(l);
            if best.is_none_or(|b| diff < b) || (Some(diff) == best && l < ref_len) {
                best = Some(diff);
                ref_len = l;
            }
        }
        let mut s = BleuStats { sys_len, ref_len, ..BleuStats::default() };
        for (g, c) in ngrams(&tokens) {
            let n = g.len() - 1;
            s.total[n] += c;
            s.correct[n] += c.min(ref_counts.get(&g).copied().unwrap_or(0));
        }
        s
    }

    /// The score of summed statistics (sacrebleu's `compute_bleu` with `exp` smoothing).
    pub fn score(&self, s: &BleuStats) -> BleuScore {
        let bp = if s.sys_len < s.ref_len {
            if s.sys_len > 0 {
                (1.0 - s.ref_len as f64 / s.sys_len as f64).exp()
            } else {
                0.0
            }
        } else {
            1.0
        };
        let mut out = BleuScore {
            score: 0.0,
            counts: s.correct,
            totals: s.total,
            precisions: [0.0; MAX_ORDER],
            bp,
            sys_len: s.sys_len,
            ref_len: s.ref_len,
        };
        if s.correct.iter().all(|&c| c == 0) {
            return out;
        }
        let mut smooth = 1.0;
        let mut eff_order = MAX_ORDER;
        for n in 0..MAX_ORDER {
            if s.total[n] == 0 {
                break;
            }
            if self.effective_order {
                eff_order = n + 1;
            }
            out.precisions[n] = if s.correct[n] == 0 {
                smooth *= 2.0;
                100.0 / (smooth * s.total[n] as f64)
            } else {
                100.0 * s.correct[n] as f64 / s.total[n] as f64
            };
        }
        // sacrebleu's `my_log` floors log(0) at -9999999999 (a 0 precision past a break).
        let log = |p: f64| if p == 0.0 { -9_999_999_999.0 } else { p.ln() };
        out.score = bp * (out.precisions[..eff_order].iter().map(|&p| log(p)).sum::<f64>() / eff_order as f64).exp();
        out
    }

    /// Corpus BLEU of `hyps` against reference streams (`refs[k][i]` is the k-th reference of segment i).
    pub fn corpus(&self, hyps: &[String], refs: &[Vec<String>]) -> BleuScore {
        let mut total = BleuStats::default();
        for (i, h) in hyps.iter().enumerate() {
            let seg_refs: Vec<&str> = refs.iter().map(|r| r[i].as_str()).collect();
            total += self.stats(h, &seg_refs);
        }
        self.score(&total)
    }

    /// sacrebleu's signature, e.g. `nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0`.
    pub fn signature(&self, nrefs: usize) -> String {
        format!(
            "nrefs:{nrefs}|case:{}|eff:{}|tok:{}|smooth:exp|version:{SACREBLEU_VERSION}",
            if self.lowercase { "lc" } else { "mixed" },
            if self.effective_order { "yes" } else { "no" },
            self.tokenizer.name()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// sacrebleu 2.6.0: `corpus_score(['a b c'], [['a b c']])` is 0 (no 4-grams: log floor), and
    /// `sentence_bleu('a b c', ['a b d'])` is 55.03212081491043.
    #[test]
    fn short_segments_follow_sacrebleu() {
        let b = Bleu::default();
        assert_eq!(b.corpus(&["a b c".into()], &[vec!["a b c".into()]]).score, 0.0);
        let s = Bleu::sentence(BleuTokenizer::Mteval13a);
        let sc = s.score(&s.stats("a b c", &["a b d"]));
        assert!((sc.score - 55.03212081491043).abs() < 1e-12, "{}", sc.score);
        assert_eq!(b.signature(1), "nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0");
    }
}
