//! Google Cloud Translation v2 (`/language/translate/v2`): up to 128 `q` segments per request,
//! `format=html` so protected spans travel as tags, the key from `GOOGLE_API_KEY` as the `key`
//! parameter (scrubbed from every message).

use serde::Deserialize;

use super::http::{CallError, Http};
use super::protect::MaskStyle;
use super::{translator_name, Limits, Translation, Translator};

/// The Google Cloud Translation v2 backend.
pub struct Google {
    /// `https://translation.googleapis.com` or a test server.
    pub endpoint: String,
    /// `GOOGLE_API_KEY`.
    pub key: String,
    /// `model` (`nmt` or `base`), if chosen.
    pub model: Option<String>,
    /// Source language code.
    pub source: String,
    /// Target language code.
    pub target: String,
}

#[derive(Deserialize)]
struct Response {
    data: Data,
}

#[derive(Deserialize)]
struct Data {
    translations: Vec<Item>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Item {
    translated_text: String,
}

impl Translator for Google {
    fn name(&self) -> String {
        translator_name("google", self.model.as_deref())
    }

    fn mask_style(&self) -> MaskStyle {
        MaskStyle::Markup
    }

    fn limits(&self) -> Limits {
        // 128 segments per request; Google advises at most ~30k characters per request.
        Limits { max_texts: 128, max_bytes: 30_000 }
    }

    fn translate(&self, http: &Http, texts: &[&str]) -> Result<Translation, CallError> {
        let mut body = serde_json::json!({
            "q": texts,
            "source": self.source,
            "target": self.target,
            "format": "html",
        });
        if let Some(m) = &self.model {
            body["model"] = m.clone().into();
        }
        let url = format!("{}/language/translate/v2?key={}", self.endpoint.trim_end_matches('/'), self.key);
        let resp: Response = http.post_json(&url, &[], &body)?;
        Ok(Translation {
            texts: resp.data.translations.into_iter().map(|t| t.translated_text).collect(),
            billed_chars: texts.iter().map(|t| t.chars().count() as u64).sum(),
            tokens: 0,
        })
    }
}
