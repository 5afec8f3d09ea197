//! An OpenAI-compatible completions backend (vLLM, llama.cpp server, hosted APIs), as lm-eval's
//! `local-completions` (lm_eval/models/openai_completions.py): loglikelihood requests are tokenized
//! here (the same `_encode_pair` and truncation as the local backend) and sent as token-id prompts
//! with `echo: true, logprobs: 1, max_tokens: 0`; the continuation's `token_logprobs` are summed and
//! `is_greedy` is whether each equals the best of its `top_logprobs`. Generation sends the prompt text.
//! The API key comes from `OPENAI_API_KEY` and never appears in errors or logs.

use serde_json::{json, Value};

use super::lm::{
    cut_at_stops, GenerateUntil, LanguageModel, Loglikelihood, LoglikelihoodResult, LoglikelihoodRolling,
    RollingResult, TokenPipeline, TokenScore, TokenScoreRequest,
};
use super::EvalError;
use crate::progress::Progress;
use crate::vocab::Tokenizer;

/// Sampling seed sent with every request (lm-eval's default).
const SEED: u64 = 1234;

/// A model behind `/v1/completions`.
pub struct OpenAiLm {
    client: reqwest::blocking::Client,
    url: String,
    model: String,
    tokenizer: Tokenizer,
    max_length: usize,
    batch_size: usize,
    api_key: Option<String>,
    progress: Progress,
}

/// The URL of an OpenAI API `route` (`completions`, `chat/completions`) of an endpoint given as a server
/// root, a `/v1` base or the full URL.
pub fn api_url(endpoint: &str, route: &str) -> String {
    let e = endpoint.trim_end_matches('/');
    if e.ends_with(&format!("/{route}")) {
        e.to_string()
    } else if e.ends_with("/v1") {
        format!("{e}/{route}")
    } else {
        format!("{e}/v1/{route}")
    }
}

impl OpenAiLm {
    /// A client for `endpoint` serving `model`, whose tokenizer is `tokenizer` (prompts are token ids).
    pub fn new(
        endpoint: &str,
        model: &str,
        tokenizer: Tokenizer,
        max_length: usize,
        batch_size: usize,
        progress: Progress,
    ) -> Result<Self, EvalError> {
        let client = reqwest::blocking::Client::builder()
            .timeout(std::time::Duration::from_secs(600))
            .build()
            .map_err(|e| EvalError::Remote { endpoint: endpoint.into(), message: e.to_string() })?;
        Ok(OpenAiLm {
            client,
            url: api_url(endpoint, "completions"),
            model: model.to_string(),
            tokenizer,
            max_length,
            batch_size: batch_size.max(1),
            api_key: std::env::var("OPENAI_API_KEY").ok().filter(|k| !k.is_empty()),
            progress,
        })
    }

    fn remote(&self, message: impl Into<String>) -> EvalError {
        EvalError::Remote { endpoint: self.url.clone(), message: message.into() }
    }

    fn post(&self, body: &Value) -> Result<Vec<Value>, EvalError> {
        let mut req = self.client.post(&self.url).json(body);
        if let Some(key) = &self.api_key {
            req = req.bearer_auth(key);
        }
        let resp = req.send().map_err(|e| self.remote(format!("request failed: {}", e.without_url())))?;
        let status = resp.status();
        let text = resp.text().map_err(|e| self.remote(format!("reading the answer: {}", e.without_url())))?;
        if !status.is_success() {
            let snippet: String = text.chars().take(300).collect();
            return Err(self.remote(format!("HTTP {status}: {snippet}")));
        }
        let v: Value = serde_json::from_str(&text).map_err(|e| self.remote(format!("answer is not JSON: {e}")))?;
        let mut choices = v
            .get("choices")
            .and_then(|c| c.as_array())
            .cloned()
            .ok_or_else(|| self.remote("answer has no `choices` array"))?;
        choices.sort_by_key(|c| c.get("index").and_then(|i| i.as_u64()).unwrap_or(0));
        Ok(choices)
    }

    fn pipeline(&self) -> TokenPipeline<'_> {
        TokenPipeline {
            tokenizer: &self.tokenizer,
            max_length: self.max_length,
            batching: super::lm::Batching::rows(self.batch_size),
            progress: &self.progress,
        }
    }

    fn score_batch(&self, batch: &[TokenScoreRequest]) -> Result<Vec<TokenScore>, EvalError> {
        let prompts: Vec<&[u32]> = batch.iter().map(|r| r.tokens.as_slice()).collect();
        let body = json!({
            "model": self.model, "prompt": prompts, "max_tokens": 0, "echo": true, "logprobs": 1,
            "temperature": 0, "seed": SEED,
        });
        let choices = self.post(&body)?;
        if choices.len() != batch.len() {
            return Err(self.remote(format!("{} choices for {} prompts", choices.len(), batch.len())));
        }
        batch
            .iter()
            .zip(&choices)
            .map(|(r, c)| {
                let lp = &c["logprobs"];
                let token_lps = lp["token_logprobs"]
                    .as_array()
                    .ok_or_else(|| self.remote("choice without logprobs.token_logprobs (is `echo` supported?)"))?;
                let top =
                    lp["top_logprobs"].as_array().ok_or_else(|| self.remote("choice without logprobs.top_logprobs"))?;
                let end = r.tokens.len();
                if token_lps.len() < end || top.len() < end {
                    return Err(
                        self.remote(format!("{} echoed logprobs for a prompt of {end} tokens", token_lps.len()))
                    );
                }
                let mut score = TokenScore { ll: 0.0, is_greedy: true };
                for i in end - r.n_cont..end {
                    let x = token_lps[i]
                        .as_f64()
                        .ok_or_else(|| self.remote(format!("token_logprobs[{i}] is not a number")))?;
                    score.ll += x;
                    let best = top[i]
                        .as_object()
                        .map(|m| m.values().filter_map(Value::as_f64).fold(f64::NEG_INFINITY, f64::max))
                        .unwrap_or(f64::NEG_INFINITY);
                    // lm-eval: greedy when the token's logprob equals the best of the top list.
                    if x != best {
                        score.is_greedy = false;
                    }
                }
                Ok(score)
            })
            .collect()
    }
}

impl LanguageModel for OpenAiLm {
    fn loglikelihood(&mut self, requests: &[Loglikelihood]) -> Result<Vec<LoglikelihoodResult>, EvalError> {
        self.pipeline().loglikelihood(requests, |b| self.score_batch(b))
    }

    fn loglikelihood_rolling(&mut self, requests: &[LoglikelihoodRolling]) -> Result<Vec<RollingResult>, EvalError> {
        self.pipeline().loglikelihood_rolling(requests, |b| self.score_batch(b))
    }

    fn generate_until(&mut self, requests: &[GenerateUntil]) -> Result<Vec<String>, EvalError> {
        let bar = self.progress.items(requests.len() as u64, "generate_until");
        let mut out = Vec::with_capacity(requests.len());
        // One prompt per call: servers batch concurrent work themselves, and `stop` is per request.
        for r in requests {
            let body = json!({
                "model": self.model, "prompt": r.context, "max_tokens": r.max_tokens, "temperature": 0,
                "stop": r.until, "seed": SEED,
            });
            let choices = self.post(&body)?;
            let text =
                choices.first().and_then(|c| c["text"].as_str()).ok_or_else(|| self.remote("choice without `text`"))?;
            out.push(cut_at_stops(text, &r.until));
            bar.inc(1);
        }
        bar.finish_and_clear();
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_forms() {
        assert_eq!(api_url("http://h:8000", "completions"), "http://h:8000/v1/completions");
        assert_eq!(api_url("http://h:8000/v1/", "completions"), "http://h:8000/v1/completions");
        assert_eq!(api_url("http://h/v1/completions", "completions"), "http://h/v1/completions");
        assert_eq!(api_url("http://h/v1", "chat/completions"), "http://h/v1/chat/completions");
    }
}
