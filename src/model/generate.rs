//! Text generation with a KV cache: greedy or sampled, batched, with stop sequences.

use candle_core::Tensor;
use candle_transformers::generation::LogitsProcessor;
use serde::Serialize;

use super::llama::{ForwardOptions, KvCache, Llama};
use super::ModelError;
use crate::vocab::Tokenizer;

/// How to generate.
#[derive(Debug, Clone)]
pub struct GenerateOptions {
    /// New tokens at most.
    pub max_new_tokens: usize,
    /// Sampling temperature; 0 = greedy (argmax).
    pub temperature: f64,
    /// Nucleus sampling mass (1.0 = off).
    pub top_p: f64,
    /// Seed of the sampler (row k uses `seed + k`).
    pub seed: u64,
    /// Stop when the generated text contains one of these (the text is cut before it).
    pub stop: Vec<String>,
    /// Stop at an EOS id.
    pub stop_at_eos: bool,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        Self { max_new_tokens: 64, temperature: 0.0, top_p: 1.0, seed: 0, stop: Vec::new(), stop_at_eos: true }
    }
}

/// Why generation of a row ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// An EOS id was produced (not included in `ids`).
    Eos,
    /// A stop sequence appeared in the text.
    Stop,
    /// `max_new_tokens` reached, or the model's context is full.
    Length,
}

/// One generated continuation.
#[derive(Debug, Clone, Serialize)]
pub struct Generation {
    /// New token ids.
    pub ids: Vec<u32>,
    /// Their text, cut before a stop sequence.
    pub text: String,
    /// Why it ended.
    pub stop_reason: StopReason,
}

/// Generates a continuation for each prompt (token ids, BOS included if wanted), all rows in one batch.
///
/// Prompts are left-padded; RoPE positions count real tokens only, so a row's result does not depend on the
/// other rows (up to float rounding).
pub fn generate(
    model: &Llama,
    tokenizer: &Tokenizer,
    prompts: &[Vec<u32>],
    opts: &GenerateOptions,
) -> Result<Vec<Generation>, ModelError> {
    if prompts.iter().any(|p| p.is_empty()) {
        return Err(ModelError::Request("generate: empty prompt (add BOS at least)".into()));
    }
    if !(opts.top_p > 0.0 && opts.top_p <= 1.0) || opts.temperature < 0.0 {
        return Err(ModelError::Request("generate: need temperature >= 0 and 0 < top_p <= 1".into()));
    }
    let device = model.device();
    let context = model.config().max_position_embeddings;
    let b = prompts.len();
    let longest = prompts.iter().map(Vec::len).max().unwrap_or(0);
    if longest >= context {
        return Err(ModelError::Request(format!(
            "generate: prompt of {longest} tokens leaves no room in the context of {context}"
        )));
    }
    let eos: Vec<u32> = model.config().eos_token_ids.iter().copied().chain(tokenizer.eos_id()).collect();
    let mut samplers: Vec<Option<LogitsProcessor>> = (0..b)
        .map(|k| {
            (opts.temperature > 0.0).then(|| {
                let top_p = (opts.top_p < 1.0).then_some(opts.top_p);
                LogitsProcessor::new(opts.seed.wrapping_add(k as u64), Some(opts.temperature), top_p)
            })
        })
        .collect();

    let mut ids = Vec::with_capacity(b * longest);
    let mut mask = Vec::with_capacity(b * longest);
    for p in prompts {
        ids.extend(std::iter::repeat_n(0, longest - p.len()).chain(p.iter().copied()));
        mask.extend(std::iter::repeat_n(0u32, longest - p.len()).chain(std::iter::repeat_n(1, p.len())));
    }
    let mut cache = KvCache::with_capacity(model.config().num_layers, (longest + opts.max_new_tokens).min(context));
    let mut input = Tensor::from_vec(ids, (b, longest), device)?;
    let mut step_mask = Tensor::from_vec(mask, (b, longest), device)?;
    let mut out: Vec<Generation> =
        (0..b).map(|_| Generation { ids: Vec::new(), text: String::new(), stop_reason: StopReason::Length }).collect();
    let mut done = vec![false; b];
    for _ in 0..opts.max_new_tokens {
        let hidden = model
            .hidden(&input, ForwardOptions { mask: Some(&step_mask), cache: Some(&mut cache), ..Default::default() })?;
        let t = hidden.dim(1)?;
        let logits = model.logits(&hidden.narrow(1, t - 1, 1)?.squeeze(1)?)?;
        // Greedy rows read one host copy of the batch's logits (one device sync per step, not per row).
        let host: Vec<Vec<f32>> = if samplers.iter().any(Option::is_none) { logits.to_vec2()? } else { Vec::new() };
        let mut next = Vec::with_capacity(b);
        for row in 0..b {
            if done[row] {
                next.push(eos.first().copied().unwrap_or(0));
                continue;
            }
            let id = match samplers[row].as_mut() {
                Some(s) => s.sample(&logits.get(row)?)?,
                None => first_argmax(&host[row]),
            };
            next.push(id);
            let g = &mut out[row];
            if opts.stop_at_eos && eos.contains(&id) {
                g.stop_reason = StopReason::Eos;
                done[row] = true;
                continue;
            }
            g.ids.push(id);
            if !opts.stop.is_empty() {
                let text = tokenizer.decode(&g.ids)?;
                if let Some(cut) = opts.stop.iter().filter_map(|s| text.find(s.as_str())).min() {
                    g.text = text[..cut].to_string();
                    g.stop_reason = StopReason::Stop;
                    done[row] = true;
                }
            }
        }
        if done.iter().all(|&d| d) || cache.len() >= context {
            break;
        }
        let live: Vec<u32> = done.iter().map(|&d| u32::from(!d)).collect();
        input = Tensor::from_vec(next, (b, 1), device)?;
        step_mask = Tensor::from_vec(live, (b, 1), device)?;
    }
    for g in &mut out {
        if g.stop_reason != StopReason::Stop {
            g.text = tokenizer.decode(&g.ids)?;
        }
    }
    Ok(out)
}

/// Index of the first maximum (torch's `argmax` tie rule).
fn first_argmax(xs: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in xs.iter().enumerate() {
        if x > xs[best] {
            best = i;
        }
    }
    best as u32
}
