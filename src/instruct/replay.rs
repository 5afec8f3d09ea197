//! The `replay` backend: translations come only from the cache, so a pipeline runs offline; a text
//! the cache lacks fails its record.

use super::http::{CallError, Http};
use super::protect::MaskStyle;
use super::{Limits, Translation, Translator};

/// Serves nothing itself: every text it is asked for was missing from the cache.
pub struct Replay {
    /// The translator that wrote the cache entries.
    pub recorded: String,
}

impl Translator for Replay {
    fn name(&self) -> String {
        self.recorded.clone()
    }

    fn mask_style(&self) -> MaskStyle {
        // Texts were masked the way the recording backend masks them, or their keys would not match.
        if self.recorded.starts_with("openai") {
            MaskStyle::Token
        } else {
            MaskStyle::Markup
        }
    }

    fn limits(&self) -> Limits {
        Limits { max_texts: usize::MAX, max_bytes: usize::MAX }
    }

    fn translate(&self, _http: &Http, _texts: &[&str]) -> Result<Translation, CallError> {
        Err(CallError::Fail(format!("not in the replay cache (translations by '{}')", self.recorded)))
    }
}
