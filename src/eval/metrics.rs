//! Metrics as lm-evaluation-harness 0.4.13 computes them (lm_eval/api/metrics.py,
//! `ConfigurableTask.process_results` for multiple choice): per-document values, then one
//! aggregation step.

/// Per-document multiple-choice outcome: (acc, acc_norm, acc_bytenorm), each 0 or 1.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct McOutcome {
    /// Index of the option with the highest log-likelihood.
    pub pred: usize,
    /// Highest log-likelihood per character of the option.
    pub pred_norm: usize,
    /// Highest log-likelihood per UTF-8 byte of the option.
    pub pred_bytenorm: usize,
}

/// First index of the maximum (numpy `argmax`: ties go to the first; NaN never wins).
fn argmax(values: impl Iterator<Item = f64>) -> usize {
    let mut best = (0, f64::NEG_INFINITY);
    for (i, v) in values.enumerate() {
        if v > best.1 {
            best = (i, v);
        }
    }
    best.0
}

/// Picks per lm-eval: `acc` by raw ll, `acc_norm` by ll / len(option) in characters (the option
/// without the leading target delimiter), and the byte-normalised variant by ll / UTF-8 bytes.
pub fn mc_outcome(lls: &[f64], choices: &[String]) -> McOutcome {
    let chars = |c: &String| c.chars().count().max(1) as f64;
    let bytes = |c: &String| c.len().max(1) as f64;
    McOutcome {
        pred: argmax(lls.iter().copied()),
        pred_norm: argmax(lls.iter().zip(choices).map(|(l, c)| l / chars(c))),
        pred_bytenorm: argmax(lls.iter().zip(choices).map(|(l, c)| l / bytes(c))),
    }
}

/// Arithmetic mean (0 for no items).
pub fn mean(xs: &[f64]) -> f64 {
    if xs.is_empty() {
        0.0
    } else {
        xs.iter().sum::<f64>() / xs.len() as f64
    }
}

/// Standard error of the mean: sample standard deviation (n − 1) / √n (lm-eval `mean_stderr`);
/// `None` for fewer than two items.
pub fn mean_stderr(xs: &[f64]) -> Option<f64> {
    let n = xs.len();
    if n < 2 {
        return None;
    }
    let mu = mean(xs);
    let var = xs.iter().map(|x| (x - mu).powi(2)).sum::<f64>() / (n - 1) as f64;
    Some(var.sqrt() / (n as f64).sqrt())
}

/// A group's metric from its subtasks' (value, stderr, size), as lm-eval's `consolidate_group_results`:
/// `aggregate_subtask_metrics` (mean weighted by size, or plain mean of subtasks) and, whenever every
/// subtask has a stderr, `pooled_sample_stderr` over the subtask sizes (whatever the weighting).
pub fn group_mean(parts: &[(f64, Option<f64>, usize)], weight_by_size: bool) -> (f64, Option<f64>) {
    let sizes: Vec<f64> = parts.iter().map(|p| if weight_by_size { p.2 as f64 } else { 1.0 }).collect();
    let total: f64 = sizes.iter().sum();
    let value = parts.iter().zip(&sizes).map(|(p, w)| p.0 * w).sum::<f64>() / total;
    let n_docs: usize = parts.iter().map(|p| p.2).sum();
    let stderr = if n_docs > parts.len() && parts.iter().all(|p| p.1.is_some()) {
        // pooled_sample_stderr: sqrt(Σ (n_i − 1) s_i² n_i / (Σ n_i − k) / Σ n_i)
        let pooled = parts.iter().map(|p| (p.2 as f64 - 1.0) * p.1.unwrap_or(0.0).powi(2) * p.2 as f64).sum::<f64>()
            / (n_docs - parts.len()) as f64;
        Some((pooled / n_docs as f64).sqrt())
    } else {
        None
    };
    (value, stderr)
}

/// lm-eval `weighted_perplexity`: exp(−Σll / Σweight).
pub fn weighted_perplexity(ll: f64, weight: f64) -> f64 {
    (-ll / weight).exp()
}

/// lm-eval `bits_per_byte`: −Σll / Σbytes / ln 2.
pub fn bits_per_byte(ll: f64, bytes: f64) -> f64 {
    -ll / bytes / std::f64::consts::LN_2
}

/// lm-eval's word count for perplexity (`len(re.split(r"\s+", text))`): pieces between runs of
/// whitespace, counting the empty pieces a leading or trailing run makes.
pub fn count_words(text: &str) -> usize {
    let mut n = 1;
    let mut in_space = false;
    for c in text.chars() {
        let space = super::lm::is_py_space(c);
        if space && !in_space {
            n += 1;
        }
        in_space = space;
    }
    n
}

/// The 95% Wilson score interval of a proportion `k / n`, as statsmodels' `proportion_confint(k, n,
/// method="wilson")`: unlike the normal approximation it stays inside [0, 1] and is honest near 0, where
/// code-switching rates of a few percent lie.
pub fn wilson_ci95(k: usize, n: usize) -> (f64, f64) {
    if n == 0 {
        return (0.0, 1.0);
    }
    const Z: f64 = 1.959963984540054; // scipy.stats.norm.isf(0.025)
    let (n, p) = (n as f64, k as f64 / n as f64);
    let z2 = Z * Z;
    let denom = 1.0 + z2 / n;
    let center = (p + z2 / (2.0 * n)) / denom;
    let dist = Z * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt() / denom;
    (center - dist, center + dist)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn norms_pick_per_character_and_byte() {
        // ll per char: -4/2 = -2 vs -5/5 = -1 → acc_norm picks 1; acc picks 0.
        let o = mc_outcome(&[-4.0, -5.0], &["ab".into(), "abcde".into()]);
        assert_eq!((o.pred, o.pred_norm, o.pred_bytenorm), (0, 1, 1));
        // "çü" is 2 chars, 4 bytes: -3/2 = -1.5 vs -4/3; bytes: -3/4 = -0.75 vs -4/3.
        let o = mc_outcome(&[-3.0, -4.0], &["çü".into(), "abc".into()]);
        assert_eq!((o.pred, o.pred_norm, o.pred_bytenorm), (0, 1, 0));
        assert_eq!(mc_outcome(&[-1.0, -1.0], &["a".into(), "b".into()]).pred, 0);
    }

    #[test]
    fn stderr_is_sample_std_over_sqrt_n() {
        // numpy: np.std([1,0,1,1], ddof=1) / 2 = 0.25
        assert!((mean_stderr(&[1.0, 0.0, 1.0, 1.0]).unwrap() - 0.25).abs() < 1e-15);
        assert_eq!(mean_stderr(&[1.0]), None);
    }

    #[test]
    fn group_pools_by_size() {
        // Two subtasks [1,0,1,1] (mean .75, se .25) and [0,1] (mean .5, se .5): pooled equals the
        // stderr of the 6 items concatenated only approximately; lm-eval's formula gives
        // sqrt((3*.0625*4 + 1*.25*2) / (6-2) / 6) = sqrt(1.25/4/6).
        let (v, se) = group_mean(&[(0.75, Some(0.25), 4), (0.5, Some(0.5), 2)], true);
        assert!((v - 4.0 / 6.0).abs() < 1e-15);
        assert!((se.unwrap() - (1.25f64 / 4.0 / 6.0).sqrt()).abs() < 1e-15);
        assert_eq!(group_mean(&[(0.75, Some(0.25), 4), (0.5, Some(0.5), 2)], false).0, 0.625);
    }

    #[test]
    fn words_count_like_re_split() {
        assert_eq!(count_words("a b  c"), 3);
        assert_eq!(count_words(" a b\n"), 4);
        assert_eq!(count_words(""), 1);
    }

    /// statsmodels 0.14 `proportion_confint(k, n, alpha=0.05, method="wilson")`.
    #[test]
    fn wilson_interval_matches_statsmodels() {
        let cases = [
            (0, 212, 0.0, 0.017797594779441053),
            (4, 212, 0.007361224223275686, 0.04750061226260155),
            (11, 212, 0.029216563525304117, 0.09050769594683644),
            (12, 12, 0.7575059933447589, 0.9999999999999999),
            (1, 3, 0.06149194472039626, 0.7923403991979523),
        ];
        for (k, n, lo, hi) in cases {
            let (l, h) = wilson_ci95(k, n);
            assert!((l - lo).abs() < 1e-12 && (h - hi).abs() < 1e-12, "{k}/{n}: ({l}, {h})");
        }
    }
}
