//! Log-probabilities of tokens given their prefix, batched: what perplexity and multiple-choice scoring read.

use candle_core::Tensor;

use super::kernels::logit_stats;
use super::llama::{ForwardOptions, Llama};
use super::ModelError;

/// The score of the last `n_cont` tokens of a sequence.
#[derive(Debug, Clone, PartialEq)]
pub struct ContinuationScore {
    /// Sum of the log-probabilities (natural log).
    pub ll: f64,
    /// Whether every scored token was the argmax at its position.
    pub is_greedy: bool,
    /// The log-probability of each scored token.
    pub logprobs: Vec<f32>,
}

/// Default scored positions per LM-head block (see [`Scorer::with_logit_rows`]).
pub const DEFAULT_LOGIT_ROWS: usize = 256;

/// Bytes of f32 activations a scoring forward pass holds per token of a batch at its peak, an upper
/// estimate: within a layer the residual stream, its norm, q/k/v and the attention output (6 × hidden), the
/// MLP's gate, up and their product (3 × intermediate), and one query block's attention scores and
/// probabilities against every key (2 × heads × query block). The LM head works in blocks of
/// [`DEFAULT_LOGIT_ROWS`] rows, a fixed cost outside this figure.
pub fn scoring_bytes_per_token(cfg: &super::HfConfig) -> usize {
    let heads = cfg.num_attention_heads;
    4 * (6 * cfg.hidden_size + 3 * cfg.intermediate_size + 2 * heads * super::llama::DEFAULT_QUERY_BLOCK)
}

/// Scores token sequences with a model, `batch_size` sequences per forward pass (right-padded).
#[derive(Debug, Clone)]
pub struct Scorer {
    model: Llama,
    batch_size: usize,
    logit_rows: usize,
}

impl Scorer {
    /// A scorer over `model`.
    pub fn new(model: Llama, batch_size: usize) -> Self {
        Self { model, batch_size: batch_size.max(1), logit_rows: DEFAULT_LOGIT_ROWS }
    }

    /// Scored positions that go through the LM head and log-softmax at once: the f32 logits and their
    /// log-softmax are `n × vocab` each, whatever the sequence length (the numbers do not depend on `n`).
    pub fn with_logit_rows(mut self, n: usize) -> Self {
        self.logit_rows = n.max(1);
        self
    }

    /// The model.
    pub fn model(&self) -> &Llama {
        &self.model
    }

    /// Log-probability of `ids[i]` given `ids[..i]`, for i = 1..n (the first token is never scored).
    pub fn token_logprobs(&self, ids: &[u32]) -> Result<Vec<f32>, ModelError> {
        if ids.len() < 2 {
            return Err(ModelError::Request("token_logprobs: need at least 2 tokens".into()));
        }
        let n = ids.len() - 1;
        Ok(self.score(&[(ids.to_vec(), n)])?.remove(0).logprobs)
    }

    /// For each `(tokens, n_cont)`: the model reads `tokens[..len-1]` and the last `n_cont` tokens are scored.
    /// Results come back in request order; batches are formed from requests of similar length.
    pub fn score(&self, requests: &[(Vec<u32>, usize)]) -> Result<Vec<ContinuationScore>, ModelError> {
        let max_len = self.model.config().max_position_embeddings;
        let vocab = self.model.config().vocab_size;
        for (i, (tokens, n_cont)) in requests.iter().enumerate() {
            if *n_cont == 0 || *n_cont >= tokens.len() {
                return Err(ModelError::Request(format!(
                    "request {i}: {n_cont} continuation tokens of {} (need 1..len-1: a context token first)",
                    tokens.len()
                )));
            }
            if let Some(bad) = tokens.iter().find(|&&id| id as usize >= vocab) {
                return Err(ModelError::Request(format!(
                    "request {i}: token id {bad} is outside the model's vocabulary of {vocab}; was it encoded with \
                     another tokenizer?"
                )));
            }
            if tokens.len() - 1 > max_len {
                return Err(ModelError::Request(format!(
                    "request {i}: {} input tokens exceed the context of {max_len}; keep the last {} tokens",
                    tokens.len() - 1,
                    max_len + 1
                )));
            }
        }
        // Requests that feed the model the same ids (the choices " A".." D" after one prompt, or continuations
        // sharing all but their last token) share one forward pass: the numbers are the same by construction.
        let mut inputs: Vec<&[u32]> = Vec::new();
        let mut members: Vec<Vec<usize>> = Vec::new();
        let mut index: std::collections::HashMap<&[u32], usize> = std::collections::HashMap::new();
        for (i, (tokens, _)) in requests.iter().enumerate() {
            let input = &tokens[..tokens.len() - 1];
            let g = *index.entry(input).or_insert_with(|| {
                inputs.push(input);
                members.push(Vec::new());
                inputs.len() - 1
            });
            members[g].push(i);
        }
        // Longest first, as lm-evaluation-harness does: padding stays small and memory peaks early.
        let mut order: Vec<usize> = (0..inputs.len()).collect();
        order.sort_by_key(|&g| std::cmp::Reverse(inputs[g].len()));
        let mut out: Vec<Option<ContinuationScore>> = vec![None; requests.len()];
        for chunk in order.chunks(self.batch_size) {
            self.score_batch(chunk, &inputs, &members, requests, &mut out)?;
        }
        Ok(out.into_iter().map(|s| s.expect("every request scored")).collect())
    }

    fn score_batch(
        &self,
        chunk: &[usize],
        inputs: &[&[u32]],
        members: &[Vec<usize>],
        requests: &[(Vec<u32>, usize)],
        out: &mut [Option<ContinuationScore>],
    ) -> Result<(), ModelError> {
        let device = self.model.device();
        let t = chunk.iter().map(|&g| inputs[g].len()).max().unwrap_or(0);
        let mut ids = Vec::with_capacity(chunk.len() * t);
        let mut mask = Vec::with_capacity(chunk.len() * t);
        for &g in chunk {
            let input = inputs[g];
            ids.extend_from_slice(input);
            ids.extend(std::iter::repeat_n(0, t - input.len()));
            mask.extend(std::iter::repeat_n(1u32, input.len()));
            mask.extend(std::iter::repeat_n(0u32, t - input.len()));
        }
        let ids = Tensor::from_vec(ids, (chunk.len(), t), device)?;
        let mask = Tensor::from_vec(mask, (chunk.len(), t), device)?;
        let hidden = self.model.hidden(&ids, ForwardOptions { mask: Some(&mask), ..Default::default() })?;
        // The scored positions of every row, one after another (a row's last `span` inputs): the LM head then
        // runs over all of the batch's positions `logit_rows` at a time, not once per row. Short requests
        // score a few positions each, and a product per row would pack the whole head again for each.
        let (rows, hsz) = (chunk.len() * t, hidden.dim(2)?);
        let mut positions: Vec<u32> = Vec::new();
        // Per request of the batch: (request, flat index of its first scored position).
        let mut firsts: Vec<(usize, usize)> = Vec::new();
        for (row, &g) in chunk.iter().enumerate() {
            let input_len = inputs[g].len();
            let span = members[g].iter().map(|&i| requests[i].1).max().unwrap_or(1);
            let base = positions.len();
            positions.extend((input_len - span..input_len).map(|p| (row * t + p) as u32));
            firsts.extend(members[g].iter().map(|&i| (i, base + span - requests[i].1)));
        }
        let n = positions.len();
        let scored = hidden.reshape((rows, hsz))?.index_select(&Tensor::from_vec(positions, n, device)?, 0)?;
        let mut stats = Vec::with_capacity(n);
        let mut picked: Vec<Vec<f32>> = firsts.iter().map(|&(i, _)| Vec::with_capacity(requests[i].1)).collect();
        for start in (0..n).step_by(self.logit_rows) {
            let len = self.logit_rows.min(n - start);
            // Per position max, argmax and log Σ exp(x − max); a token's log-probability is (x − max) − that,
            // as log-softmax computes it, without a second `rows × vocab` tensor.
            let logits = self.model.logits(&scored.narrow(0, start, len)?)?;
            let (block, vocab) = (logit_stats(&logits)?, logits.dim(1)?);
            // Each request's targets in this block, as indices into the flattened logits.
            let (mut at, mut whose) = (Vec::new(), Vec::new());
            for (k, &(i, first)) in firsts.iter().enumerate() {
                let (tokens, n_cont) = (&requests[i].0, requests[i].1);
                for f in first.max(start)..(first + n_cont).min(start + len) {
                    let target = tokens[tokens.len() - n_cont + (f - first)] as usize;
                    at.push(((f - start) * vocab + target) as u32);
                    whose.push((k, f - start));
                }
            }
            if !at.is_empty() {
                let m = at.len();
                let chosen = logits.flatten_all()?.index_select(&Tensor::from_vec(at, m, device)?, 0)?;
                for (x, (k, r)) in chosen.to_vec1::<f32>()?.into_iter().zip(whose) {
                    picked[k].push((x - block[r].max) - block[r].log_sum);
                }
            }
            stats.extend(block);
        }
        for ((i, first), picked) in firsts.into_iter().zip(picked) {
            let (tokens, n_cont) = (&requests[i].0, requests[i].1);
            let targets = &tokens[tokens.len() - n_cont..];
            // Ties count as greedy: the target's log-prob equals the max (−log Σ exp(x − max)).
            let is_greedy = targets
                .iter()
                .zip(&stats[first..first + n_cont])
                .zip(&picked)
                .all(|((&t, s), &p)| t == s.argmax || p >= -s.log_sum);
            let ll = picked.iter().map(|&p| f64::from(p)).sum();
            out[i] = Some(ContinuationScore { ll, is_greedy, logprobs: picked });
        }
        Ok(())
    }
}

/// What [`score_sequences`] measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ScoreRun {
    /// Sequences scored per round.
    pub sequences: usize,
    /// Tokens scored per round (every token but each sequence's first).
    pub tokens: usize,
    /// Wall time of the fastest round, seconds (the first round, which loads kernels, is not timed when
    /// there are more).
    pub seconds: f64,
    /// `tokens / seconds`.
    pub tokens_per_s: f64,
    /// Per sequence, the log-probability of each token after the first.
    pub logprobs: Vec<Vec<f32>>,
}

/// Token-id sequences from JSON lines, one array of ids a line (blank lines skipped): `model score --ids`.
pub fn read_id_lines(path: &std::path::Path) -> Result<Vec<Vec<u32>>, ModelError> {
    let text = std::fs::read_to_string(path).map_err(|e| ModelError::io(path, e))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| {
                ModelError::Request(format!("{}: line {}: not a JSON array of token ids: {e}", path.display(), i + 1))
            })
        })
        .collect()
}

/// Scores every token after the first of each sequence, `rounds` times (at least 1), and keeps the
/// fastest time: the throughput and numerical check of `langadapt model score` (benches/gpu.sh).
pub fn score_sequences(scorer: &Scorer, sequences: &[Vec<u32>], rounds: usize) -> Result<ScoreRun, ModelError> {
    let requests: Vec<(Vec<u32>, usize)> = sequences.iter().map(|s| (s.clone(), s.len().saturating_sub(1))).collect();
    let mut best = f64::INFINITY;
    let mut logprobs = Vec::new();
    for round in 0..rounds.max(1) {
        let t0 = std::time::Instant::now();
        let scores = scorer.score(&requests)?;
        let seconds = t0.elapsed().as_secs_f64();
        if round > 0 || rounds <= 1 {
            best = best.min(seconds);
        }
        logprobs = scores.into_iter().map(|s| s.logprobs).collect();
    }
    let tokens = requests.iter().map(|(_, n)| n).sum();
    Ok(ScoreRun { sequences: sequences.len(), tokens, seconds: best, tokens_per_s: tokens as f64 / best, logprobs })
}
