//! `vocab stats`: how long texts get under one or more tokenizers (fertility), per input.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::text::{input_files, total_bytes, Lines};
use super::{Tokenizer, VocabError};
use crate::parallel::ordered_map;
use crate::Env;

/// Counts and rates of one tokenizer on one input (no BOS counted).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Fertility {
    /// The tokenizer file.
    pub tokenizer: String,
    /// The input as given.
    pub input: String,
    /// Non-empty lines.
    pub lines: u64,
    /// Whitespace-separated words.
    pub words: u64,
    /// Unicode characters (line breaks excluded).
    pub chars: u64,
    /// UTF-8 bytes (line breaks excluded).
    pub bytes: u64,
    /// Tokens.
    pub tokens: u64,
    /// Byte-fallback tokens (`<0xNN>`).
    pub byte_tokens: u64,
    /// Unknown tokens.
    pub unk_tokens: u64,
    /// tokens / words.
    pub tokens_per_word: f64,
    /// tokens / chars.
    pub tokens_per_char: f64,
    /// bytes / tokens.
    pub bytes_per_token: f64,
    /// byte_tokens / tokens.
    pub byte_fallback_rate: f64,
    /// unk_tokens / tokens.
    pub unk_rate: f64,
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

impl Fertility {
    fn add_line(&mut self, line: &str, ids: &[u32], tok: &Tokenizer) {
        self.lines += 1;
        self.words += line.split_whitespace().count() as u64;
        self.chars += line.chars().count() as u64;
        self.bytes += line.len() as u64;
        self.tokens += ids.len() as u64;
        self.byte_tokens += ids.iter().filter(|&&i| tok.is_byte(i)).count() as u64;
        self.unk_tokens += ids.iter().filter(|&&i| Some(i) == tok.unk_id()).count() as u64;
    }

    fn finish(&mut self) {
        self.tokens_per_word = ratio(self.tokens, self.words);
        self.tokens_per_char = ratio(self.tokens, self.chars);
        self.bytes_per_token = ratio(self.bytes, self.tokens);
        self.byte_fallback_rate = ratio(self.byte_tokens, self.tokens);
        self.unk_rate = ratio(self.unk_tokens, self.tokens);
    }
}

/// Fertility of every tokenizer on every input, input-major (each input's rows side by side).
pub fn run(tokenizers: &[PathBuf], inputs: &[PathBuf], env: &Env) -> Result<Vec<Fertility>, VocabError> {
    let toks: Vec<Tokenizer> = tokenizers.iter().map(|p| Tokenizer::from_path(p)).collect::<Result<_, _>>()?;
    let mut rows = Vec::new();
    for input in inputs {
        let files = input_files(std::slice::from_ref(input))?;
        let bar = env.progress.bytes(total_bytes(&files), &format!("stats {}", input.display()));
        let mut acc: Vec<Fertility> = toks
            .iter()
            .map(|t| Fertility {
                tokenizer: t.path().display().to_string(),
                input: input.display().to_string(),
                ..Default::default()
            })
            .collect();
        let work = |line: String| -> Result<(String, Vec<Vec<u32>>), VocabError> {
            let ids = toks.iter().map(|t| t.encode(&line, false)).collect::<Result<Vec<_>, _>>()?;
            Ok((line, ids))
        };
        ordered_map(Lines::new(files, bar.clone()), env.threads(), 1024, work, |(line, ids)| {
            for ((a, t), ids) in acc.iter_mut().zip(&toks).zip(&ids) {
                a.add_line(&line, ids, t);
            }
            Ok(())
        })?;
        bar.finish_and_clear();
        acc.iter_mut().for_each(Fertility::finish);
        rows.extend(acc);
    }
    Ok(rows)
}

/// The tab-separated table `vocab stats` prints, one row per input and tokenizer.
pub fn table(rows: &[Fertility]) -> String {
    let mut out = "input\ttokenizer\ttokens\ttokens/word\ttokens/char\tbytes/token\tbyte_fallback\tunk".to_string();
    for r in rows {
        out.push_str(&format!(
            "\n{}\t{}\t{}\t{:.4}\t{:.4}\t{:.4}\t{:.4}\t{:.4}",
            r.input,
            r.tokenizer,
            r.tokens,
            r.tokens_per_word,
            r.tokens_per_char,
            r.bytes_per_token,
            r.byte_fallback_rate,
            r.unk_rate
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_follow_the_counts() {
        let tok = Tokenizer::from_path(std::path::Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/tiny-llama/tokenizer.model"
        )))
        .unwrap();
        let mut f = Fertility::default();
        // "Z" and the emoji are not in the vocabulary: byte fallback (1 + 4 bytes).
        let line = "Zed 😀";
        let ids = tok.encode(line, false).unwrap();
        f.add_line(line, &ids, &tok);
        f.finish();
        assert_eq!((f.words, f.chars, f.bytes, f.byte_tokens, f.unk_tokens), (2, 5, 8, 5, 0));
        assert_eq!(f.tokens, ids.len() as u64);
        assert_eq!(f.tokens_per_word, ids.len() as f64 / 2.0);
        assert_eq!(f.byte_fallback_rate, 5.0 / ids.len() as f64);
    }
}
