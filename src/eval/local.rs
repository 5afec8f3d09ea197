//! The local backend: the candle model answering token-level requests for `LocalLm`.

use std::path::Path;

use super::lm::{LocalLm, TokenGenerateRequest, TokenScore, TokenScoreRequest, TokenScorer};
use super::EvalError;
use crate::model::{self, Checkpoint, GenerateOptions, Llama, Scorer};
use crate::vocab::Tokenizer;
use crate::Progress;

/// A Hugging Face checkpoint loaded with candle (f32), scoring `batch_size` sequences per forward pass.
pub struct CandleScorer {
    scorer: Scorer,
    tokenizer: Tokenizer,
    batch_size: usize,
}

/// Opens `ckpt` on `device` (`cpu`, `cuda`, `cuda:N`) as the harness's model: `batch_size` requests per
/// forward pass, context `max_length` (default: the model's `max_position_embeddings`).
pub fn open_local_lm(
    ckpt: &Path,
    device: &str,
    batch_size: usize,
    max_length: Option<usize>,
    progress: Progress,
) -> Result<LocalLm<Box<dyn TokenScorer>>, EvalError> {
    let scorer = open_local_scorer(ckpt, device, batch_size)?;
    Ok(LocalLm::new(scorer, batch_size, progress).with_max_length(max_length))
}

fn open_local_scorer(ckpt: &Path, device: &str, batch_size: usize) -> Result<Box<dyn TokenScorer>, EvalError> {
    let checkpoint = Checkpoint::open(ckpt)?;
    let device = model::parse_device(device)?;
    // f32 everywhere: the numbers must agree with transformers in f32 to 1e-4.
    let llama = checkpoint.load(&device, candle_core::DType::F32)?;
    let tokenizer = checkpoint.tokenizer()?;
    Ok(Box::new(CandleScorer::new(llama, tokenizer, batch_size)))
}

impl CandleScorer {
    /// Wraps a loaded model and its tokenizer.
    pub fn new(model: Llama, tokenizer: Tokenizer, batch_size: usize) -> Self {
        Self { scorer: Scorer::new(model, batch_size), tokenizer, batch_size: batch_size.max(1) }
    }
}

impl TokenScorer for CandleScorer {
    fn max_length(&self) -> usize {
        self.scorer.model().config().max_position_embeddings
    }

    fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    fn score(&mut self, requests: &[TokenScoreRequest]) -> Result<Vec<TokenScore>, EvalError> {
        let reqs: Vec<(Vec<u32>, usize)> = requests.iter().map(|r| (r.tokens.clone(), r.n_cont)).collect();
        let scores = self.scorer.score(&reqs)?;
        Ok(scores.into_iter().map(|s| TokenScore { ll: s.ll, is_greedy: s.is_greedy }).collect())
    }

    fn generate(&mut self, requests: &[TokenGenerateRequest]) -> Result<Vec<Vec<u32>>, EvalError> {
        let mut out = Vec::with_capacity(requests.len());
        // Requests with the same settings go through together, `batch_size` at a time.
        let mut start = 0;
        while start < requests.len() {
            let first = &requests[start];
            let same = |r: &TokenGenerateRequest| {
                r.max_new_tokens == first.max_new_tokens && r.until == first.until && r.stop_at_eos == first.stop_at_eos
            };
            let end = (start..requests.len().min(start + self.batch_size))
                .find(|&i| !same(&requests[i]))
                .unwrap_or(requests.len().min(start + self.batch_size));
            let prompts: Vec<Vec<u32>> = requests[start..end].iter().map(|r| r.prompt.clone()).collect();
            let opts = GenerateOptions {
                max_new_tokens: first.max_new_tokens,
                stop: first.until.clone(),
                stop_at_eos: first.stop_at_eos,
                ..Default::default()
            };
            let gens = model::generate(self.scorer.model(), &self.tokenizer, &prompts, &opts)?;
            out.extend(gens.into_iter().map(|g| g.ids));
            start = end;
        }
        Ok(out)
    }
}
