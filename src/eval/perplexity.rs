//! The `perplexity` task: rolling log-likelihood of the user's documents, streamed in chunks, and
//! lm-eval's perplexity aggregations (weighted by total tokens, words and bytes).

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::lm::{LanguageModel, LoglikelihoodRolling};
use super::metrics::{bits_per_byte, count_words, weighted_perplexity};
use super::EvalError;
use crate::corpus::TextShardReader;

/// Documents scored per call to the model (bounds memory; windows are batched by the backend).
const CHUNK_DOCS: usize = 64;

/// Totals and perplexities over all documents.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PerplexityReport {
    /// Documents scored.
    pub n_docs: usize,
    /// Summed log-likelihood (natural log).
    pub ll: f64,
    /// Tokens scored (without BOS).
    pub n_tokens: usize,
    /// UTF-8 bytes.
    pub n_bytes: usize,
    /// Words, lm-eval's count (`len(re.split(r"\s+", text))`).
    pub n_words: usize,
}

impl PerplexityReport {
    /// exp(−ll / tokens): depends on the tokenizer, so not comparable across tokenizers.
    pub fn token_perplexity(&self) -> f64 {
        weighted_perplexity(self.ll, self.n_tokens as f64)
    }
    /// exp(−ll / words).
    pub fn word_perplexity(&self) -> f64 {
        weighted_perplexity(self.ll, self.n_words as f64)
    }
    /// exp(−ll / bytes).
    pub fn byte_perplexity(&self) -> f64 {
        weighted_perplexity(self.ll, self.n_bytes as f64)
    }
    /// −ll / bytes / ln 2: comparable across tokenizers.
    pub fn bits_per_byte(&self) -> f64 {
        bits_per_byte(self.ll, self.n_bytes as f64)
    }
}

/// One scored document, for `--log-samples`.
#[derive(Debug, Clone, Serialize)]
pub struct DocScore {
    /// Document index in reading order.
    pub doc_id: usize,
    /// Its log-likelihood.
    pub ll: f64,
    /// Its tokens, bytes, words.
    pub n_tokens: usize,
    /// UTF-8 bytes.
    pub n_bytes: usize,
    /// lm-eval words.
    pub n_words: usize,
}

/// The document files under `path` (itself if a file), sorted by name.
fn doc_files(path: &Path) -> Result<Vec<PathBuf>, EvalError> {
    if path.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let entries = std::fs::read_dir(path).map_err(|e| EvalError::io(path, e))?;
    let mut files = Vec::new();
    for e in entries {
        let p = e.map_err(|e| EvalError::io(path, e))?.path();
        if p.extension().is_some_and(|x| x == "txt" || x == "jsonl" || x == "parquet") {
            files.push(p);
        }
    }
    files.sort();
    if files.is_empty() {
        return Err(EvalError::Config(format!(
            "{}: no .txt, .jsonl or .parquet files to compute perplexity on",
            path.display()
        )));
    }
    Ok(files)
}

/// Calls `f` with every document under `path` (a .txt file is one document; .jsonl: the `text` of each
/// line; .parquet: the text of each text-shard record), stopping after `limit` documents.
fn for_each_doc(
    path: &Path,
    limit: Option<usize>,
    mut f: impl FnMut(String) -> Result<(), EvalError>,
) -> Result<(), EvalError> {
    let mut n = 0usize;
    let limit = limit.unwrap_or(usize::MAX);
    for file in doc_files(path)? {
        let ext = file.extension().map(|e| e.to_string_lossy().into_owned()).unwrap_or_default();
        match ext.as_str() {
            "parquet" => {
                for rec in TextShardReader::open(&file)? {
                    if n >= limit {
                        return Ok(());
                    }
                    f(rec?.text)?;
                    n += 1;
                }
            }
            "jsonl" => {
                let text = std::fs::read_to_string(&file).map_err(|e| EvalError::io(&file, e))?;
                for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
                    if n >= limit {
                        return Ok(());
                    }
                    let v: serde_json::Value = serde_json::from_str(line)
                        .map_err(|e| EvalError::data(&file, i as u64 + 1, format!("not valid JSON: {e}")))?;
                    let t = v
                        .get("text")
                        .and_then(|t| t.as_str())
                        .ok_or_else(|| EvalError::data(&file, i as u64 + 1, "expected a string field `text`"))?;
                    f(t.to_string())?;
                    n += 1;
                }
            }
            _ => {
                if n >= limit {
                    return Ok(());
                }
                f(std::fs::read_to_string(&file).map_err(|e| EvalError::io(&file, e))?)?;
                n += 1;
            }
        }
    }
    Ok(())
}

/// Scores every document under `data` with rolling log-likelihood.
pub fn perplexity(
    lm: &mut dyn LanguageModel,
    data: &Path,
    limit: Option<usize>,
) -> Result<(PerplexityReport, Vec<DocScore>), EvalError> {
    let mut report = PerplexityReport::default();
    let mut docs = Vec::new();
    let mut pending: Vec<String> = Vec::new();
    let mut flush =
        |pending: &mut Vec<String>, report: &mut PerplexityReport, docs: &mut Vec<DocScore>| -> Result<(), EvalError> {
            let reqs: Vec<LoglikelihoodRolling> = pending.drain(..).map(|text| LoglikelihoodRolling { text }).collect();
            for (r, res) in reqs.iter().zip(lm.loglikelihood_rolling(&reqs)?) {
                let d = DocScore {
                    doc_id: report.n_docs,
                    ll: res.ll,
                    n_tokens: res.n_tokens,
                    n_bytes: r.text.len(),
                    n_words: count_words(&r.text),
                };
                report.n_docs += 1;
                report.ll += d.ll;
                report.n_tokens += d.n_tokens;
                report.n_bytes += d.n_bytes;
                report.n_words += d.n_words;
                docs.push(d);
            }
            Ok(())
        };
    for_each_doc(data, limit, |text| {
        pending.push(text);
        if pending.len() >= CHUNK_DOCS {
            flush(&mut pending, &mut report, &mut docs)?;
        }
        Ok(())
    })?;
    flush(&mut pending, &mut report, &mut docs)?;
    if report.n_bytes == 0 {
        return Err(EvalError::Config(format!("{}: no text to compute perplexity on", data.display())));
    }
    Ok((report, docs))
}
