//! Request types and the `LanguageModel` trait (lm-evaluation-harness `lm_eval/api/model.py`), the
//! token-level `TokenScorer` a local model provides, and `LocalLm`, which turns text requests into
//! token requests exactly as lm-evaluation-harness 0.4.13 does (`TemplateLM._encode_pair`,
//! `loglikelihood_rolling`, `utils.get_rolling_token_windows` / `make_disjoint_window`, left
//! truncation to the last `max_length + 1` tokens).

use serde::{Deserialize, Serialize};

use super::EvalError;
use crate::progress::Progress;
use crate::vocab::Tokenizer;

/// One scoring request at the token level: the model reads `tokens[..tokens.len()-1]` and the last
/// `n_cont` tokens of `tokens` are scored (their log-probs summed, and whether each was the argmax).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenScoreRequest {
    /// Context and continuation ids, already truncated to the model's context plus one.
    pub tokens: Vec<u32>,
    /// How many trailing ids of `tokens` are scored.
    pub n_cont: usize,
}

/// Result of a `TokenScoreRequest`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TokenScore {
    /// Sum of the log-probs of the scored ids.
    pub ll: f64,
    /// Whether every scored id was the argmax at its position.
    pub is_greedy: bool,
}

/// A generation request at the token level.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenGenerateRequest {
    /// Prompt ids (BOS included when the model wants one).
    pub prompt: Vec<u32>,
    /// Most ids to generate.
    pub max_new_tokens: usize,
    /// Stop once the decoded new text contains one of these.
    pub until: Vec<String>,
    /// Stop after the EOS id.
    pub stop_at_eos: bool,
}

/// What a local model (candle, CPU/CUDA) provides to the harness.
pub trait TokenScorer {
    /// The model's context length (max_position_embeddings).
    fn max_length(&self) -> usize;
    /// The tokenizer that produced the ids.
    fn tokenizer(&self) -> &crate::vocab::Tokenizer;
    /// Scores a batch of requests (any order; results in request order).
    fn score(&mut self, requests: &[TokenScoreRequest]) -> Result<Vec<TokenScore>, EvalError>;
    /// Greedy generation of new ids for each prompt (stops at EOS if asked, or when the decoded text contains one of `until`).
    fn generate(&mut self, requests: &[TokenGenerateRequest]) -> Result<Vec<Vec<u32>>, EvalError>;
}

impl<T: TokenScorer + ?Sized> TokenScorer for Box<T> {
    fn max_length(&self) -> usize {
        (**self).max_length()
    }
    fn tokenizer(&self) -> &Tokenizer {
        (**self).tokenizer()
    }
    fn score(&mut self, requests: &[TokenScoreRequest]) -> Result<Vec<TokenScore>, EvalError> {
        (**self).score(requests)
    }
    fn generate(&mut self, requests: &[TokenGenerateRequest]) -> Result<Vec<Vec<u32>>, EvalError> {
        (**self).generate(requests)
    }
}

/// lm-eval `loglikelihood(context, continuation)`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Loglikelihood {
    /// The prompt.
    pub context: String,
    /// The text whose log-likelihood given the prompt is wanted.
    pub continuation: String,
}

/// lm-eval `loglikelihood_rolling(text)`: the log-likelihood of a whole text, every token once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoglikelihoodRolling {
    /// The text.
    pub text: String,
}

/// lm-eval `generate_until(context, until, max_tokens)`: greedy generation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenerateUntil {
    /// The prompt.
    pub context: String,
    /// The answer is cut at the first of these strings.
    pub until: Vec<String>,
    /// Most tokens to generate.
    pub max_tokens: usize,
}

/// Answer to a [`Loglikelihood`] request.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LoglikelihoodResult {
    /// Summed log-prob of the continuation tokens.
    pub ll: f64,
    /// Whether greedy decoding would have produced the continuation.
    pub is_greedy: bool,
    /// Number of continuation tokens scored.
    pub n_cont_tokens: usize,
}

/// Answer to a [`LoglikelihoodRolling`] request.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RollingResult {
    /// Summed log-prob of every token of the text.
    pub ll: f64,
    /// Number of tokens scored (the text's tokens, without BOS).
    pub n_tokens: usize,
}

/// A model that answers lm-eval requests in batches (results in request order).
pub trait LanguageModel {
    /// Log-likelihoods of continuations given contexts.
    fn loglikelihood(&mut self, requests: &[Loglikelihood]) -> Result<Vec<LoglikelihoodResult>, EvalError>;
    /// Log-likelihoods of whole texts (for perplexity).
    fn loglikelihood_rolling(&mut self, requests: &[LoglikelihoodRolling]) -> Result<Vec<RollingResult>, EvalError>;
    /// Greedy completions, cut at the first `until` string.
    fn generate_until(&mut self, requests: &[GenerateUntil]) -> Result<Vec<String>, EvalError>;
}

/// Python's `str.isspace`, which `str.rstrip()` and `str.split()` use: Unicode White_Space plus
/// the four information separators U+001C..U+001F.
pub fn is_py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Moves the context's trailing whitespace to the front of the continuation (lm-eval `_encode_pair`).
pub fn move_trailing_space(context: &str, continuation: &str) -> (String, String) {
    let kept = context.trim_end_matches(is_py_space);
    (kept.to_string(), format!("{}{}", &context[kept.len()..], continuation))
}

/// The id that starts every sequence: BOS, or EOS for tokenizers without one (lm-eval `prefix_token_id`).
pub fn prefix_token(tok: &Tokenizer) -> Result<u32, EvalError> {
    tok.bos_id().or(tok.eos_id()).ok_or_else(|| {
        EvalError::Config(format!(
            "{}: the tokenizer has neither a BOS nor an EOS token to start sequences with",
            tok.path().display()
        ))
    })
}

/// The ids lm-eval scores for a (context, continuation) pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedPair {
    /// Context after its trailing whitespace moved.
    pub context: String,
    /// Continuation with that whitespace in front.
    pub continuation: String,
    /// `tok(context)` with BOS (just BOS for an empty context).
    pub context_enc: Vec<u32>,
    /// `tok(context + continuation)` with BOS (empty for an empty context).
    pub whole_enc: Vec<u32>,
    /// `whole_enc[len(context_enc)..]`, or `tok(continuation)` for an empty context.
    pub continuation_enc: Vec<u32>,
}

/// lm-eval `_encode_pair` with BOS: both encodings carry BOS and the continuation is what the
/// whole text has past the context's length (no check that the whole starts with the context).
pub fn encode_pair(tok: &Tokenizer, context: &str, continuation: &str) -> Result<EncodedPair, EvalError> {
    if context.is_empty() {
        let continuation_enc = tok.encode(continuation, false)?;
        return Ok(EncodedPair {
            context: String::new(),
            continuation: continuation.to_string(),
            context_enc: vec![prefix_token(tok)?],
            whole_enc: Vec::new(),
            continuation_enc,
        });
    }
    let (context, continuation) = move_trailing_space(context, continuation);
    let whole_enc = tok.encode(&format!("{context}{continuation}"), true)?;
    let context_enc = tok.encode(&context, true)?;
    let continuation_enc = whole_enc.get(context_enc.len()..).unwrap_or_default().to_vec();
    Ok(EncodedPair { context, continuation, context_enc, whole_enc, continuation_enc })
}

/// `(context_enc + continuation_enc)[-(max_length+1):]` with the continuation scored: lm-eval's
/// left truncation. Fails when the continuation alone does not fit the model.
pub fn score_request(
    context_enc: &[u32],
    continuation_enc: &[u32],
    max_length: usize,
) -> Result<TokenScoreRequest, EvalError> {
    if continuation_enc.len() > max_length {
        return Err(EvalError::Request(format!(
            "a continuation of {} tokens does not fit the model's context of {max_length} tokens",
            continuation_enc.len()
        )));
    }
    let all: Vec<u32> = context_enc.iter().chain(continuation_enc).copied().collect();
    let start = all.len().saturating_sub(max_length + 1);
    Ok(TokenScoreRequest { tokens: all[start..].to_vec(), n_cont: continuation_enc.len() })
}

/// lm-eval `get_rolling_token_windows` followed by `make_disjoint_window`: (context, continuation)
/// id pairs that together predict every id of `tokens` exactly once.
pub fn rolling_windows(
    tokens: &[u32],
    prefix: u32,
    max_seq_len: usize,
    context_len: usize,
) -> Vec<(Vec<u32>, Vec<u32>)> {
    assert!(1 <= context_len && context_len <= max_seq_len, "1 <= context_len <= max_seq_len");
    let disjoint = |(ctx, cont): (Vec<u32>, Vec<u32>)| {
        let keep = ctx.len() - (cont.len() - 1);
        (ctx[..keep].to_vec(), cont)
    };
    let mut out = Vec::new();
    if tokens.is_empty() {
        return out;
    }
    let pred_len = max_seq_len - context_len + 1;
    let first = max_seq_len.min(tokens.len());
    let mut ctx = vec![prefix];
    ctx.extend_from_slice(&tokens[..first - 1]);
    out.push(disjoint((ctx, tokens[..first].to_vec())));
    let mut predicted = first;
    while predicted < tokens.len() {
        let n = (tokens.len() - predicted).min(pred_len);
        let end = predicted + n;
        out.push(disjoint((tokens[end - max_seq_len - 1..end - 1].to_vec(), tokens[end - n..end].to_vec())));
        predicted += n;
    }
    out
}

/// Cuts a generated text at the first occurrence of each stop string in turn (lm-eval
/// `s.split(term)[0]` for every term).
pub fn cut_at_stops(text: &str, until: &[String]) -> String {
    let mut s = text;
    for term in until.iter().filter(|t| !t.is_empty()) {
        if let Some(i) = s.find(term.as_str()) {
            s = &s[..i];
        }
    }
    s.to_string()
}

/// How requests are grouped into forward passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Batching {
    /// Requests per batch at most.
    pub rows: usize,
    /// Padded tokens per batch at most (rows × the longest row): long documents make small batches, so
    /// activation memory follows this budget, not `rows` × the longest document. `None`: rows only.
    /// A request longer than the budget goes alone.
    pub tokens: Option<usize>,
}

impl Batching {
    /// At most `rows` requests a batch, no token budget.
    pub fn rows(rows: usize) -> Self {
        Batching { rows: rows.max(1), tokens: None }
    }

    /// How many of the requests, longest first, go into the next batch when its longest has `longest` tokens.
    fn fit(&self, longest: usize) -> usize {
        let by_tokens = self.tokens.map_or(usize::MAX, |budget| budget / longest.max(1));
        by_tokens.clamp(1, self.rows.max(1))
    }
}

/// Scores token requests through `score` in batches (see [`Batching`]), longest first (as lm-eval's
/// `Collator` orders them, so a batch pads little), results back in request order.
pub fn score_sorted(
    requests: &[TokenScoreRequest],
    batching: Batching,
    progress: &Progress,
    what: &str,
    mut score: impl FnMut(&[TokenScoreRequest]) -> Result<Vec<TokenScore>, EvalError>,
) -> Result<Vec<TokenScore>, EvalError> {
    let mut order: Vec<usize> = (0..requests.len()).collect();
    order.sort_by(|&a, &b| {
        let (ra, rb) = (&requests[a], &requests[b]);
        rb.tokens.len().cmp(&ra.tokens.len()).then_with(|| ra.tokens.cmp(&rb.tokens))
    });
    let bar = progress.items(requests.len() as u64, what);
    let mut out = vec![None; requests.len()];
    let mut rest = order.as_slice();
    while let Some(&first) = rest.first() {
        let (chunk, tail) = rest.split_at(batching.fit(requests[first].tokens.len()).min(rest.len()));
        rest = tail;
        let batch: Vec<TokenScoreRequest> = chunk.iter().map(|&i| requests[i].clone()).collect();
        let scores = score(&batch)?;
        if scores.len() != batch.len() {
            return Err(EvalError::Model(format!("{} scores for a batch of {} requests", scores.len(), batch.len())));
        }
        for (&i, s) in chunk.iter().zip(scores) {
            out[i] = Some(s);
        }
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    Ok(out.into_iter().map(|s| s.expect("every request scored once")).collect())
}

/// The harness's view of a local model: text requests → token requests → a [`TokenScorer`].
pub struct LocalLm<S: TokenScorer> {
    scorer: S,
    batching: Batching,
    progress: Progress,
    /// A shorter context than the model's (`--max-length`).
    max_length: Option<usize>,
}

impl<S: TokenScorer> LocalLm<S> {
    /// Wraps `scorer`; requests go to it `batch_size` at a time.
    pub fn new(scorer: S, batch_size: usize, progress: Progress) -> Self {
        LocalLm { scorer, batching: Batching::rows(batch_size), progress, max_length: None }
    }

    /// Also caps each scoring batch at `tokens` padded tokens (see [`Batching`]).
    pub fn with_max_batch_tokens(mut self, tokens: Option<usize>) -> Self {
        self.batching.tokens = tokens;
        self
    }

    /// Uses at most `max_length` tokens of context (never more than the model's).
    pub fn with_max_length(mut self, max_length: Option<usize>) -> Self {
        self.max_length = max_length;
        self
    }

    /// The context length requests are truncated to.
    pub fn max_length(&self) -> usize {
        let model = self.scorer.max_length();
        self.max_length.map_or(model, |m| m.clamp(1, model))
    }

    /// The wrapped scorer.
    pub fn scorer(&self) -> &S {
        &self.scorer
    }
}

/// Token requests for loglikelihood requests (lm-eval `_encode_pair` + truncation).
fn loglikelihood_token_requests(
    tok: &Tokenizer,
    max_length: usize,
    requests: &[Loglikelihood],
) -> Result<Vec<TokenScoreRequest>, EvalError> {
    requests
        .iter()
        .map(|r| {
            let pair = encode_pair(tok, &r.context, &r.continuation)?;
            score_request(&pair.context_enc, &pair.continuation_enc, max_length)
        })
        .collect()
}

/// Per text of a rolling batch: (number of windows, number of tokens).
type WindowSpans = Vec<(usize, usize)>;

/// Token requests for rolling requests: per text, its window requests (lm-eval `loglikelihood_rolling`).
fn rolling_token_requests(
    tok: &Tokenizer,
    max_length: usize,
    requests: &[LoglikelihoodRolling],
) -> Result<(Vec<TokenScoreRequest>, WindowSpans), EvalError> {
    let prefix = prefix_token(tok)?;
    let mut flat = Vec::new();
    let mut spans = Vec::with_capacity(requests.len());
    for r in requests {
        let ids = tok.encode(&r.text, false)?;
        let windows = rolling_windows(&ids, prefix, max_length, 1);
        spans.push((windows.len(), ids.len()));
        for (ctx, cont) in windows {
            flat.push(score_request(&ctx, &cont, max_length)?);
        }
    }
    Ok((flat, spans))
}

/// Sums window scores back into one result per text.
fn sum_windows(scores: &[TokenScore], spans: &[(usize, usize)]) -> Vec<RollingResult> {
    let mut at = 0;
    spans
        .iter()
        .map(|&(n_windows, n_tokens)| {
            let ll = scores[at..at + n_windows].iter().map(|s| s.ll).sum();
            at += n_windows;
            RollingResult { ll, n_tokens }
        })
        .collect()
}

/// How a backend turns text into token requests and scores them: shared by every backend so the
/// lm-eval rules live in one place.
pub struct TokenPipeline<'a> {
    /// The model's tokenizer.
    pub tokenizer: &'a Tokenizer,
    /// Context length requests are truncated to.
    pub max_length: usize,
    /// How requests are grouped into scoring calls.
    pub batching: Batching,
    /// Progress bars.
    pub progress: &'a Progress,
}

impl TokenPipeline<'_> {
    /// Answers loglikelihood requests with `score`.
    pub fn loglikelihood(
        &self,
        requests: &[Loglikelihood],
        score: impl FnMut(&[TokenScoreRequest]) -> Result<Vec<TokenScore>, EvalError>,
    ) -> Result<Vec<LoglikelihoodResult>, EvalError> {
        let token_requests = loglikelihood_token_requests(self.tokenizer, self.max_length, requests)?;
        let scores = score_sorted(&token_requests, self.batching, self.progress, "loglikelihood", score)?;
        Ok(scores
            .iter()
            .zip(&token_requests)
            .map(|(s, r)| LoglikelihoodResult { ll: s.ll, is_greedy: s.is_greedy, n_cont_tokens: r.n_cont })
            .collect())
    }

    /// Answers rolling requests with `score`.
    pub fn loglikelihood_rolling(
        &self,
        requests: &[LoglikelihoodRolling],
        score: impl FnMut(&[TokenScoreRequest]) -> Result<Vec<TokenScore>, EvalError>,
    ) -> Result<Vec<RollingResult>, EvalError> {
        let (flat, spans) = rolling_token_requests(self.tokenizer, self.max_length, requests)?;
        let scores = score_sorted(&flat, self.batching, self.progress, "loglikelihood_rolling", score)?;
        Ok(sum_windows(&scores, &spans))
    }
}

impl<S: TokenScorer> LocalLm<S> {
    /// Splits `self` into the token pipeline (with its own tokenizer handle) and the scorer.
    fn parts(&mut self) -> (Tokenizer, usize, &mut S) {
        let max_length = self.max_length();
        (self.scorer.tokenizer().clone(), max_length, &mut self.scorer)
    }
}

impl<S: TokenScorer> LanguageModel for LocalLm<S> {
    fn loglikelihood(&mut self, requests: &[Loglikelihood]) -> Result<Vec<LoglikelihoodResult>, EvalError> {
        let (batching, progress) = (self.batching, self.progress);
        let (tokenizer, max_length, scorer) = self.parts();
        let pipe = TokenPipeline { tokenizer: &tokenizer, max_length, batching, progress: &progress };
        pipe.loglikelihood(requests, |b| scorer.score(b))
    }

    fn loglikelihood_rolling(&mut self, requests: &[LoglikelihoodRolling]) -> Result<Vec<RollingResult>, EvalError> {
        let (batching, progress) = (self.batching, self.progress);
        let (tokenizer, max_length, scorer) = self.parts();
        let pipe = TokenPipeline { tokenizer: &tokenizer, max_length, batching, progress: &progress };
        pipe.loglikelihood_rolling(requests, |b| scorer.score(b))
    }

    fn generate_until(&mut self, requests: &[GenerateUntil]) -> Result<Vec<String>, EvalError> {
        let max_length = self.max_length();
        let mut token_requests = Vec::with_capacity(requests.len());
        for r in requests {
            if r.max_tokens >= max_length {
                return Err(EvalError::Request(format!(
                    "max_tokens {} leaves no room for the prompt in a context of {max_length}",
                    r.max_tokens
                )));
            }
            let ids = self.scorer.tokenizer().encode(&r.context, true)?;
            // lm-eval keeps the last max_length - max_gen_toks prompt ids.
            let keep = max_length - r.max_tokens;
            let prompt = ids[ids.len().saturating_sub(keep)..].to_vec();
            token_requests.push(TokenGenerateRequest {
                prompt,
                max_new_tokens: r.max_tokens,
                until: r.until.clone(),
                stop_at_eos: true,
            });
        }
        // Longest prompts first, as lm-eval orders generation requests.
        let mut order: Vec<usize> = (0..requests.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(token_requests[i].prompt.len()));
        let bar = self.progress.items(requests.len() as u64, "generate_until");
        let mut out = vec![String::new(); requests.len()];
        for chunk in order.chunks(self.batching.rows) {
            let batch: Vec<TokenGenerateRequest> = chunk.iter().map(|&i| token_requests[i].clone()).collect();
            let generated = self.scorer.generate(&batch)?;
            if generated.len() != batch.len() {
                return Err(EvalError::Model(format!(
                    "{} generations for a batch of {}",
                    generated.len(),
                    batch.len()
                )));
            }
            for (&i, ids) in chunk.iter().zip(generated) {
                let text = self.scorer.tokenizer().decode(&ids)?;
                out[i] = cut_at_stops(&text, &requests[i].until);
            }
            bar.inc(chunk.len() as u64);
        }
        bar.finish_and_clear();
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 21: a token budget makes batches of at most `budget` padded tokens (a longer request alone),
    /// at most `rows` requests, longest first, and the scores come back in request order, as with batch 1.
    #[test]
    fn token_budget_batches_bound_padded_tokens_and_keep_the_results() {
        let lens = [3usize, 40, 7, 7, 100, 1, 25, 64, 2, 9, 13, 64];
        let requests: Vec<TokenScoreRequest> = lens
            .iter()
            .enumerate()
            .map(|(i, &n)| TokenScoreRequest { tokens: (0..n as u32).map(|t| t + i as u32).collect(), n_cont: 1 })
            .collect();
        let score_of =
            |r: &TokenScoreRequest| TokenScore { ll: r.tokens.iter().map(|&t| f64::from(t)).sum(), is_greedy: false };
        let run = |batching: Batching| {
            let mut shapes = Vec::new();
            let scores = score_sorted(&requests, batching, &Progress { quiet: true }, "t", |b| {
                shapes.push((b.len(), b.iter().map(|r| r.tokens.len()).max().unwrap_or(0)));
                Ok(b.iter().map(score_of).collect())
            })
            .unwrap();
            (scores, shapes)
        };
        let (one, _) = run(Batching::rows(1));
        let (got, shapes) = run(Batching { rows: 4, tokens: Some(128) });
        assert_eq!(got, one);
        assert_eq!(got, requests.iter().map(score_of).collect::<Vec<_>>());
        assert_eq!(shapes, [(1, 100), (2, 64), (3, 40), (4, 9), (2, 2)]);
        for (rows, longest) in shapes {
            assert!(rows * longest <= 128 || rows == 1, "{rows} x {longest}");
        }
        let (_, shapes) = run(Batching::rows(5));
        assert_eq!(shapes.iter().map(|s| s.0).collect::<Vec<_>>(), [5, 5, 2], "no budget: rows only");
    }

    #[test]
    fn trailing_whitespace_moves_to_the_continuation() {
        assert_eq!(move_trailing_space("a b \n", "c"), ("a b".to_string(), " \nc".to_string()));
        assert_eq!(move_trailing_space("a\u{1f}", "c"), ("a".to_string(), "\u{1f}c".to_string()));
        assert_eq!(move_trailing_space("ab", " c"), ("ab".to_string(), " c".to_string()));
    }

    #[test]
    fn rolling_windows_match_lm_eval() {
        // get_rolling_token_windows(list(range(10)), prefix_token=99, max_seq_len=4, context_len=1)
        // then make_disjoint_window, worked by hand from lm_eval/utils.py: the last window's context
        // is token_list[5:9] = [5, 6, 7, 8] cut to len 4 - (2 - 1) = 3.
        let toks: Vec<u32> = (0..10).collect();
        let w = rolling_windows(&toks, 99, 4, 1);
        assert_eq!(w, vec![(vec![99], vec![0, 1, 2, 3]), (vec![3], vec![4, 5, 6, 7]), (vec![5, 6, 7], vec![8, 9]),]);
        // context_len 2: windows predict 3 tokens with 1 token of overlap context.
        let w = rolling_windows(&toks, 99, 4, 2);
        assert_eq!(w[1], (vec![2, 3], vec![4, 5, 6]));
        assert!(rolling_windows(&[], 99, 4, 1).is_empty());
        let flat: Vec<u32> = w.iter().flat_map(|(_, c)| c.clone()).collect();
        assert_eq!(flat, toks);
    }

    #[test]
    fn truncation_keeps_the_last_max_length_plus_one() {
        let r = score_request(&[1, 2, 3, 4], &[5, 6], 4).unwrap();
        assert_eq!(r, TokenScoreRequest { tokens: vec![2, 3, 4, 5, 6], n_cont: 2 });
        let e = score_request(&[1], &[5, 6, 7], 2).unwrap_err().to_string();
        assert!(e.contains("continuation of 3 tokens does not fit"), "{e}");
    }

    #[test]
    fn stops_cut_in_turn() {
        assert_eq!(cut_at_stops("ab\n\ncd###x", &["###".into(), "\n\n".into()]), "ab");
        assert_eq!(cut_at_stops("abc", &["".into()]), "abc");
    }
}
