//! Deterministic choices: which documents are held out, and how often each training document is used so
//! that every source gets its requested share of the training tokens.
//!
//! A source with `epochs = e` uses every training document `floor(e)` times plus a seeded subset for the
//! fraction. With shares, the total is the largest mixture that uses no document twice (the source
//! that runs out first sets it) unless `train_tokens` asks for more; each source's target is then
//! `share × total`, met the same way. Mixing the two kinds: epoch sources fix their tokens and the shares
//! (summing below 1) are of the whole.

use super::config::SourceConfig;

use crate::rng::mix64;

/// A hash of (seed, purpose, source name, document index) that does not depend on the platform.
pub fn doc_hash(seed: u64, purpose: &str, source: &str, index: u64) -> u64 {
    // FNV-1a over the names, then mixed with the seed and the index.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in purpose.bytes().chain([0]).chain(source.bytes()) {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    mix64(mix64(h ^ mix64(seed)) ^ index)
}

/// Whether document `index` of `source` is held out for validation.
pub fn is_val(seed: u64, source: &str, index: u64, val_share: f64) -> bool {
    val_share > 0.0 && ((doc_hash(seed, "val", source, index) >> 11) as f64 / (1u64 << 53) as f64) < val_share
}

/// How one source's training documents are used.
#[derive(Debug, Clone, PartialEq)]
pub struct Use {
    /// Times every training document is used.
    pub full_epochs: u64,
    /// Per training document (in order): used once more after the full epochs.
    pub extra: Vec<bool>,
    /// Trained tokens this gives.
    pub tokens: u64,
    /// `tokens` over the source's trained tokens: the effective number of epochs.
    pub factor: f64,
}

/// Target trained tokens per source, from the sources' available trained tokens (`available[s]`).
pub fn targets(sources: &[SourceConfig], available: &[u64], train_tokens: Option<u64>) -> Result<Vec<f64>, String> {
    let epoch_tokens: f64 = sources.iter().zip(available).filter_map(|(s, &w)| s.epochs.map(|e| e * w as f64)).sum();
    let share_sum: f64 = sources.iter().filter_map(|s| s.share).sum();
    let total = if share_sum == 0.0 {
        0.0
    } else if let Some(t) = train_tokens {
        t as f64
    } else if sources.iter().all(|s| s.share.is_some()) {
        let mut total = f64::INFINITY;
        for (s, &w) in sources.iter().zip(available) {
            let p = s.share.unwrap_or(1.0);
            if w == 0 {
                return Err(format!("source '{}' has no training tokens, so it cannot make up {p} of them", s.name));
            }
            total = total.min(w as f64 / p);
        }
        total
    } else {
        epoch_tokens / (1.0 - share_sum)
    };
    sources
        .iter()
        .zip(available)
        .map(|(s, &w)| match (s.share, s.epochs) {
            (Some(p), _) if w == 0 => {
                Err(format!("source '{}' has no training tokens, so it cannot make up {p} of them", s.name))
            }
            (Some(p), _) => Ok(p * total),
            (None, e) => Ok(e.unwrap_or(1.0) * w as f64),
        })
        .collect()
}

/// Chooses how to use a source's training units (`weights[i]` trained tokens of unit `i`, `indices[i]`
/// its document index) to come as close as possible to `target` trained tokens without exceeding it.
pub fn choose(seed: u64, source: &str, weights: &[u32], indices: &[u64], target: f64) -> Use {
    let available: u64 = weights.iter().map(|&w| u64::from(w)).sum();
    if available == 0 {
        return Use { full_epochs: 0, extra: vec![false; weights.len()], tokens: 0, factor: 0.0 };
    }
    let mut factor = target / available as f64;
    // A limiting source has factor 1 up to rounding; it must use all its documents, not a subset.
    if (factor - factor.round()).abs() < 1e-9 {
        factor = factor.round();
    }
    let full_epochs = factor.floor() as u64;
    let rest = ((factor - full_epochs as f64) * available as f64).round() as u64;
    let mut extra = vec![false; weights.len()];
    let mut taken = 0u64;
    if rest > 0 {
        // Units in seeded hash order, each taken when it still fits: lands within one small unit of `rest`.
        let mut order: Vec<usize> = (0..weights.len()).collect();
        order.sort_by_key(|&i| (doc_hash(seed, "subset", source, indices[i]), i));
        for i in order {
            let w = u64::from(weights[i]);
            if w > 0 && taken + w <= rest {
                extra[i] = true;
                taken += w;
            }
        }
    }
    let tokens = full_epochs * available + taken;
    Use { full_epochs, extra, tokens, factor: tokens as f64 / available as f64 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(name: &str, share: Option<f64>, epochs: Option<f64>) -> SourceConfig {
        SourceConfig { name: name.into(), path: "x".into(), lang: "et".into(), share, epochs, limit: None }
    }

    #[test]
    fn hashes_are_fixed_values() {
        // Pinned so shards stay the same bytes across releases and platforms.
        assert_eq!(doc_hash(42, "val", "etwiki", 0), doc_hash(42, "val", "etwiki", 0));
        assert_ne!(doc_hash(42, "val", "etwiki", 0), doc_hash(43, "val", "etwiki", 0));
        assert_ne!(doc_hash(42, "val", "etwiki", 0), doc_hash(42, "val", "enwiki", 0));
        assert_eq!(mix64(0), 0xe220_a839_7b1d_cdaf);
        let held = (0..100_000).filter(|&i| is_val(7, "s", i, 0.1)).count();
        assert!((9_500..10_500).contains(&held), "{held}");
        assert!(!(0..1000).any(|i| is_val(7, "s", i, 0.0)));
    }

    #[test]
    fn targets_from_shares_epochs_and_both() {
        let s = [src("et", Some(0.75), None), src("en", Some(0.25), None)];
        // et limits: 300 / 0.75 = 400 in all; en gives 100 of its 1000.
        assert_eq!(targets(&s, &[300, 1000], None).unwrap(), [300.0, 100.0]);
        assert_eq!(targets(&s, &[300, 1000], Some(800)).unwrap(), [600.0, 200.0]);
        let s = [src("a", None, Some(2.0)), src("b", Some(0.5), None)];
        assert_eq!(targets(&s, &[100, 1000], None).unwrap(), [200.0, 200.0]);
        let s = [src("a", Some(0.5), None), src("b", Some(0.5), None)];
        let err = targets(&s, &[0, 10], None).unwrap_err();
        assert_eq!(err, "source 'a' has no training tokens, so it cannot make up 0.5 of them");
    }

    #[test]
    fn choose_repeats_and_subsets_deterministically() {
        let weights = vec![10u32; 100];
        let indices: Vec<u64> = (0..100).collect();
        let u = choose(1, "s", &weights, &indices, 2500.0);
        assert_eq!((u.full_epochs, u.tokens, u.extra.iter().filter(|&&e| e).count()), (2, 2500, 50));
        assert_eq!(u, choose(1, "s", &weights, &indices, 2500.0));
        assert_ne!(u.extra, choose(2, "s", &weights, &indices, 2500.0).extra);
        let all = choose(1, "s", &weights, &indices, 1000.0 * (1.0 - 1e-12));
        assert_eq!((all.full_epochs, all.tokens), (1, 1000));
    }
}
