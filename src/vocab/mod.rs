//! Vocabulary: SentencePiece model files, tokenizers (tokenizer.json, tokenizer.model), encode and decode.

pub mod bytelevel;
pub mod export;
pub mod merge;
pub mod proto;
pub mod spm;
#[cfg(feature = "sentencepiece")]
mod spm_cpp;
pub mod stats;
pub mod text;
mod tokenizer;
pub mod train;

pub use proto::{ModelProto, ModelType};
pub use tokenizer::{Tokenizer, VocabError};

/// `vocab encode`: each line of `input` as its pieces (or ids with `ids`), space-separated, one line each.
pub fn encode_lines(
    tok: &Tokenizer,
    input: impl std::io::BufRead,
    out: &mut impl std::io::Write,
    ids: bool,
) -> Result<(), VocabError> {
    let stdio = |e: std::io::Error| VocabError::Io { path: "<stdio>".into(), source: e };
    for line in input.lines() {
        let enc = tok.encode(&line.map_err(stdio)?, false)?;
        let fields: Vec<String> = if ids {
            enc.iter().map(u32::to_string).collect()
        } else {
            enc.iter().map(|&i| tok.id_to_piece(i).unwrap_or_default()).collect()
        };
        writeln!(out, "{}", fields.join(" ")).map_err(stdio)?;
    }
    out.flush().map_err(stdio)
}
