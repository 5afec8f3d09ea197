//! DeepL API v2 (`/v2/translate`, `Authorization: DeepL-Auth-Key …`): up to 50 texts and 128 KiB
//! per request, protected spans as XML tags with `tag_handling=xml`, billed characters from the
//! response.

use serde::Deserialize;

use super::http::{CallError, Http};
use super::protect::MaskStyle;
use super::{translator_name, Limits, Translation, Translator};

/// The DeepL backend.
pub struct DeepL {
    /// `https://api.deepl.com`, `https://api-free.deepl.com` (keys ending in `:fx`), or a test server.
    pub endpoint: String,
    /// `DEEPL_AUTH_KEY`.
    pub key: String,
    /// `model_type` (e.g. `quality_optimized`), if chosen.
    pub model: Option<String>,
    /// Source language code (e.g. `en`).
    pub source: String,
    /// Target language code (e.g. `et`, `en-gb`).
    pub target: String,
}

#[derive(Deserialize)]
struct Response {
    translations: Vec<Item>,
}

#[derive(Deserialize)]
struct Item {
    text: String,
    #[serde(default)]
    billed_characters: Option<u64>,
}

impl DeepL {
    /// The default endpoint for a key: free-plan keys end in `:fx`.
    pub fn default_endpoint(key: &str) -> &'static str {
        if key.ends_with(":fx") {
            "https://api-free.deepl.com"
        } else {
            "https://api.deepl.com"
        }
    }

    /// DeepL's target code: upper case; plain `en`/`pt` get the variant DeepL requires.
    fn target_code(&self) -> String {
        match self.target.to_ascii_lowercase().as_str() {
            "en" => "EN-US".into(),
            "pt" => "PT-PT".into(),
            t => t.to_ascii_uppercase(),
        }
    }
}

impl Translator for DeepL {
    fn name(&self) -> String {
        translator_name("deepl", self.model.as_deref())
    }

    fn mask_style(&self) -> MaskStyle {
        MaskStyle::Markup
    }

    fn limits(&self) -> Limits {
        // 128 KiB is the request limit; leave room for the JSON around the texts.
        Limits { max_texts: 50, max_bytes: 120 << 10 }
    }

    fn translate(&self, http: &Http, texts: &[&str]) -> Result<Translation, CallError> {
        let mut body = serde_json::json!({
            "text": texts,
            "source_lang": self.source.to_ascii_uppercase(),
            "target_lang": self.target_code(),
            "tag_handling": "xml",
            "preserve_formatting": true,
            "show_billed_characters": true,
        });
        if let Some(m) = &self.model {
            body["model_type"] = m.clone().into();
        }
        let headers = [("Authorization", format!("DeepL-Auth-Key {}", self.key))];
        let url = format!("{}/v2/translate", self.endpoint.trim_end_matches('/'));
        let resp: Response = http.post_json(&url, &headers, &body)?;
        let billed = resp.translations.iter().filter_map(|t| t.billed_characters).sum::<u64>();
        let billed = if billed > 0 { billed } else { texts.iter().map(|t| t.chars().count() as u64).sum() };
        Ok(Translation {
            texts: resp.translations.into_iter().map(|t| t.text).collect(),
            billed_chars: billed,
            tokens: 0,
        })
    }
}
