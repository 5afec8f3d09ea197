//! LibreTranslate (`/translate`): one text per request, `format=html` so protected spans travel as
//! tags, `api_key` in the body when `LIBRETRANSLATE_API_KEY` is set.

use serde::Deserialize;

use super::http::{CallError, Http};
use super::protect::MaskStyle;
use super::{Limits, Translation, Translator};

/// The LibreTranslate backend.
pub struct Libre {
    /// Server URL, e.g. `http://localhost:5000`.
    pub endpoint: String,
    /// `LIBRETRANSLATE_API_KEY`, if the server needs one.
    pub key: Option<String>,
    /// Source language code.
    pub source: String,
    /// Target language code.
    pub target: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Response {
    translated_text: String,
}

impl Translator for Libre {
    fn name(&self) -> String {
        "libre".into()
    }

    fn mask_style(&self) -> MaskStyle {
        MaskStyle::Markup
    }

    fn limits(&self) -> Limits {
        Limits { max_texts: 1, max_bytes: usize::MAX }
    }

    fn translate(&self, http: &Http, texts: &[&str]) -> Result<Translation, CallError> {
        let [text] = texts else { return Err(CallError::Fail("LibreTranslate takes one text per request".into())) };
        let mut body = serde_json::json!({"q": text, "source": self.source, "target": self.target, "format": "html"});
        if let Some(k) = &self.key {
            body["api_key"] = k.clone().into();
        }
        let url = format!("{}/translate", self.endpoint.trim_end_matches('/'));
        let resp: Response = http.post_json(&url, &[], &body)?;
        Ok(Translation { texts: vec![resp.translated_text], billed_chars: text.chars().count() as u64, tokens: 0 })
    }
}
