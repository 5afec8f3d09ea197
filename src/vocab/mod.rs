//! Vocabulary: load tokenizers (tokenizer.json, SentencePiece tokenizer.model), encode and decode.

mod tokenizer;

pub use tokenizer::{Tokenizer, VocabError};
