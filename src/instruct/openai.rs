//! OpenAI-compatible chat completions (`{endpoint}/chat/completions`): OpenAI, vLLM, llama.cpp
//! server, Ollama. One text per request; protected spans travel as `⟦N⟧` tokens the prompt asks
//! the model to keep.

use serde::Deserialize;

use super::http::{CallError, Http};
use super::protect::MaskStyle;
use super::{translator_name, Limits, Translation, Translator};

/// The OpenAI-compatible backend.
pub struct OpenAi {
    /// Base URL, e.g. `https://api.openai.com/v1` or `http://localhost:8000/v1`.
    pub endpoint: String,
    /// Model name sent as `model`.
    pub model: String,
    /// `OPENAI_API_KEY`; local servers need none.
    pub key: Option<String>,
    /// Source language name (English), for the prompt.
    pub source: String,
    /// Target language name (English), for the prompt.
    pub target: String,
}

#[derive(Deserialize)]
struct Response {
    choices: Vec<Choice>,
    #[serde(default)]
    usage: Option<Usage>,
}

#[derive(Deserialize)]
struct Choice {
    message: Message,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct Message {
    #[serde(default)]
    content: Option<String>,
}

#[derive(Deserialize)]
struct Usage {
    #[serde(default)]
    total_tokens: u64,
}

impl OpenAi {
    /// The system prompt: translation only, formatting and markers kept.
    pub fn system_prompt(&self) -> String {
        format!(
            "You are a professional translator. Translate the user's message from {} to {}. \
             Reply with the translation only, without explanations, notes or quotation marks. \
             Keep the formatting exactly: line breaks, lists, Markdown and numbers. \
             Copy every marker such as ⟦0⟧ unchanged, in the place where it belongs in the translation.",
            self.source, self.target
        )
    }
}

impl Translator for OpenAi {
    fn name(&self) -> String {
        translator_name("openai", Some(&self.model))
    }

    fn mask_style(&self) -> MaskStyle {
        MaskStyle::Token
    }

    fn limits(&self) -> Limits {
        Limits { max_texts: 1, max_bytes: usize::MAX }
    }

    fn translate(&self, http: &Http, texts: &[&str]) -> Result<Translation, CallError> {
        let [text] = texts else {
            return Err(CallError::Fail("the chat backend translates one text per request".into()));
        };
        let body = serde_json::json!({
            "model": self.model,
            "temperature": 0,
            "messages": [
                {"role": "system", "content": self.system_prompt()},
                {"role": "user", "content": text},
            ],
        });
        let headers: Vec<_> = self.key.iter().map(|k| ("Authorization", format!("Bearer {k}"))).collect();
        let url = format!("{}/chat/completions", self.endpoint.trim_end_matches('/'));
        let resp: Response = http.post_json(&url, &headers, &body)?;
        let choice = resp
            .choices
            .into_iter()
            .next()
            .ok_or_else(|| CallError::Retry { reason: "malformed response: no choices".into(), after: None })?;
        if choice.finish_reason.as_deref() == Some("length") {
            return Err(CallError::Fail("the model stopped at its output token limit (translation cut off)".into()));
        }
        let content = choice.message.content.unwrap_or_default();
        Ok(Translation {
            texts: vec![content],
            billed_chars: text.chars().count() as u64,
            tokens: resp.usage.map_or(0, |u| u.total_tokens),
        })
    }
}
