//! `vocab train`: learn a SentencePiece-style vocabulary with the tokenizers crate's BPE or unigram
//! trainer and write it as a SentencePiece `ModelProto` with LLaMA's conventions: `<unk>`, `<s>`,
//! `</s>` at ids 0, 1, 2, byte pieces `<0x00>`..`<0xFF>` at 3..258, byte fallback, split digits,
//! identity normalizer with a dummy prefix and spaces kept as `▁`.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tokenizers::models::bpe::{BpeTrainer, BPE};
use tokenizers::models::unigram::{Unigram, UnigramTrainer};
use tokenizers::Trainer;

use super::proto::{normalizer, trainer, Message, ModelProto, ModelType, Piece, PieceType};
use super::spm::{byte_piece, SPACE};
use super::text::{input_files, total_bytes, Lines};
use super::VocabError;
use crate::manifest::ManifestBuilder;
use crate::Env;

/// Ids 0..=2 plus the 256 byte pieces: what every trained model holds before learned pieces.
pub const RESERVED_PIECES: usize = 3 + 256;

/// Settings of `vocab train`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// Text files (one sentence per line) or Parquet text shards (files or directories).
    pub input: Vec<PathBuf>,
    /// The `.model` file to write (`manifest.json` goes beside it; a recipe sets it per stage).
    #[serde(default)]
    pub out: PathBuf,
    /// Total pieces, reserved ones included.
    pub vocab_size: usize,
    /// `bpe` or `unigram`.
    #[serde(default = "default_model_type")]
    pub model_type: ModelType,
    /// Share of character occurrences the alphabet must cover; rarer characters use byte fallback.
    #[serde(default = "default_coverage")]
    pub character_coverage: f64,
    /// Train on at most this many sentences, sampled uniformly with `seed` (default: all).
    #[serde(default)]
    pub max_sentences: Option<usize>,
    /// Seed of the sentence sample.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Which trainer: the tokenizers crate (pure Rust), or SentencePiece's C++ trainer (feature `sentencepiece`).
    #[serde(default)]
    pub backend: Backend,
}

/// The trainer behind `vocab train`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// The tokenizers crate's BPE/unigram trainer, written as a LLaMA-style SentencePiece model.
    #[default]
    Tokenizers,
    /// SentencePiece's own trainer (spm_train), linked from libsentencepiece.
    Sentencepiece,
}

fn default_model_type() -> ModelType {
    ModelType::Bpe
}
fn default_coverage() -> f64 {
    0.9995
}
fn default_seed() -> u64 {
    42
}

/// What `vocab train` did.
#[derive(Debug, Clone, Serialize)]
pub struct TrainReport {
    /// Non-empty lines read.
    pub sentences_read: u64,
    /// Lines trained on (after `max_sentences`).
    pub sentences_used: u64,
    /// Distinct characters seen.
    pub characters_seen: usize,
    /// Characters in the alphabet (coverage).
    pub alphabet: usize,
    /// Pieces in the written model.
    pub vocab_size: usize,
    /// Wall time.
    pub seconds: f64,
    /// The model file.
    pub model: PathBuf,
    /// Its manifest.
    pub manifest: PathBuf,
}

/// Trains and writes the model; nothing is written when training fails.
pub fn run(cfg: &TrainConfig, env: &Env) -> Result<TrainReport, VocabError> {
    let start = Instant::now();
    if !(0.0..=1.0).contains(&cfg.character_coverage) || cfg.character_coverage == 0.0 {
        return Err(VocabError::Config(format!("--character-coverage {} must be in (0, 1]", cfg.character_coverage)));
    }
    if !matches!(cfg.model_type, ModelType::Bpe | ModelType::Unigram) {
        return Err(VocabError::Config(format!(
            "--model-type {:?}: only bpe and unigram can be trained",
            cfg.model_type
        )));
    }
    let mut manifest =
        ManifestBuilder::new("vocab train", serde_json::to_value(cfg).unwrap_or_default(), Some(cfg.seed));
    let files = input_files(&cfg.input)?;
    for f in &files {
        manifest.add_input(f, &env.progress)?;
    }
    let (sentences, read) = read_sentences(files, cfg.max_sentences, cfg.seed, env)?;
    if sentences.is_empty() {
        let inputs: Vec<String> = cfg.input.iter().map(|p| p.display().to_string()).collect();
        return Err(VocabError::EmptyCorpus(inputs.join(", ")));
    }
    let (alphabet, seen) = alphabet(&sentences, cfg.character_coverage);
    let learned =
        cfg.vocab_size.checked_sub(RESERVED_PIECES + alphabet.len()).ok_or_else(|| VocabError::VocabTooSmall {
            vocab_size: cfg.vocab_size,
            needed: RESERVED_PIECES + alphabet.len(),
            chars: alphabet.len(),
            coverage: cfg.character_coverage,
        })?;
    if cfg.backend == Backend::Sentencepiece {
        let proto = sentencepiece_train(&sentences, cfg, env)?;
        return finish(proto, cfg, manifest, read, sentences.len(), start, (alphabet.len(), seen));
    }
    let allowed: HashSet<char> = alphabet.iter().copied().collect();
    let split = |s: &str| -> tokenizers::Result<Vec<String>> { Ok(training_words(s, &allowed)) };
    let show = env.progress.visible();
    let train_err = |e: tokenizers::Error| VocabError::Train(e.to_string());
    let pieces = match cfg.model_type {
        ModelType::Bpe => {
            let mut trainer = BpeTrainer::builder()
                .vocab_size(alphabet.len() + learned)
                .initial_alphabet(alphabet.iter().copied().collect())
                .limit_alphabet(alphabet.len())
                .max_token_length(Some(16))
                .show_progress(show)
                .build();
            trainer.feed(sentences.iter(), split).map_err(train_err)?;
            let mut model = BPE::default();
            trainer.train(&mut model).map_err(train_err)?;
            bpe_pieces(&model, &alphabet)?
        }
        _ => {
            let mut trainer = UnigramTrainer::builder()
                // Its vocabulary includes its own `<unk>`, which we replace by ours.
                .vocab_size((alphabet.len() + learned + 1) as u32)
                .initial_alphabet(alphabet.iter().copied().collect())
                .unk_token(Some("<unk>".into()))
                .max_piece_length(16)
                .show_progress(show)
                .build()
                .map_err(|e| VocabError::Train(e.to_string()))?;
            trainer.feed(sentences.iter(), split).map_err(train_err)?;
            let mut model = Unigram::default();
            trainer.train(&mut model).map_err(train_err)?;
            let mut pieces: Vec<Piece> = model
                .iter()
                .filter(|(p, _)| p.as_str() != "<unk>")
                .map(|(p, s)| Piece::new(p.clone(), *s as f32, PieceType::Normal))
                .collect();
            // SentencePiece's unigram layout: best score first.
            pieces.sort_by(|a, b| b.score.total_cmp(&a.score));
            pieces
        }
    };
    finish(llama_model(pieces, cfg), cfg, manifest, read, sentences.len(), start, (alphabet.len(), seen))
}

/// Checks and writes a trained model with its manifest; nothing is written when a check fails.
fn finish(
    proto: ModelProto,
    cfg: &TrainConfig,
    mut manifest: ManifestBuilder,
    read: u64,
    used: usize,
    start: Instant,
    (alphabet, seen): (usize, usize),
) -> Result<TrainReport, VocabError> {
    // SentencePiece's hard_vocab_limit: a smaller model than asked for is an error, not a surprise.
    if proto.pieces.len() < cfg.vocab_size {
        return Err(VocabError::Config(format!(
            "--vocab-size {} is more than this corpus yields ({} pieces); lower --vocab-size or add text",
            cfg.vocab_size,
            proto.pieces.len()
        )));
    }
    // Check the result loads as a tokenizer before it is written.
    super::Tokenizer::from_proto(proto.clone(), &cfg.out)?;
    let io_err = |source| VocabError::Io { path: cfg.out.clone(), source };
    let dir = cfg.out.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_path_buf();
    std::fs::create_dir_all(&dir).map_err(io_err)?;
    proto.write(&cfg.out).map_err(io_err)?;
    manifest.count("sentences_read", read);
    manifest.count("sentences_used", used as u64);
    manifest.count("vocab_size", proto.pieces.len() as u64);
    manifest.timings.insert("train_s".into(), start.elapsed().as_secs_f64());
    let manifest_path = dir.join("manifest.json");
    manifest.finish(&dir, &[(cfg.out.clone(), None)])?.write(&manifest_path)?;
    Ok(TrainReport {
        sentences_read: read,
        sentences_used: used as u64,
        characters_seen: seen,
        alphabet,
        vocab_size: proto.pieces.len(),
        seconds: start.elapsed().as_secs_f64(),
        model: cfg.out.clone(),
        manifest: manifest_path,
    })
}

/// SentencePiece's C++ trainer on the (sampled) sentences.
#[cfg(feature = "sentencepiece")]
fn sentencepiece_train(sentences: &[String], cfg: &TrainConfig, env: &Env) -> Result<ModelProto, VocabError> {
    super::spm_cpp::train(sentences, cfg, env.threads(), env.progress.quiet)
}

/// Without the feature the C++ trainer is not linked in.
#[cfg(not(feature = "sentencepiece"))]
fn sentencepiece_train(_: &[String], _: &TrainConfig, _: &Env) -> Result<ModelProto, VocabError> {
    Err(VocabError::Config(
        "--backend sentencepiece: this langadapt is built without it; rebuild with `cargo build --release --features \
         sentencepiece` (needs libsentencepiece-dev), or use --backend tokenizers"
            .into(),
    ))
}

/// Non-empty lines of every input (Parquet shards: lines of each record's text); at most `max` of
/// them, a uniform sample (reservoir) when there are more. Returns the sample and the lines read.
fn read_sentences(
    files: Vec<PathBuf>,
    max: Option<usize>,
    seed: u64,
    env: &Env,
) -> Result<(Vec<String>, u64), VocabError> {
    let bar = env.progress.bytes(total_bytes(&files), "reading sentences");
    let mut rng = crate::rng::SplitMix(seed);
    let mut kept: Vec<String> = Vec::new();
    let mut read = 0u64;
    for line in Lines::new(files, bar.clone()) {
        let line = line?;
        read += 1;
        match max {
            Some(m) if kept.len() >= m => {
                let j = (rng.next_u64() % read) as usize;
                if j < m {
                    kept[j] = line;
                }
            }
            _ => kept.push(line),
        }
    }
    bar.finish_and_clear();
    Ok((kept, read))
}

/// The characters covering `coverage` of all character occurrences (spaces as `▁`, always kept),
/// most frequent first; and how many distinct characters there were.
fn alphabet(sentences: &[String], coverage: f64) -> (Vec<char>, usize) {
    let mut counts: HashMap<char, u64> = HashMap::new();
    for s in sentences {
        for c in s.chars() {
            *counts.entry(if c == ' ' { '\u{2581}' } else { c }).or_default() += 1;
        }
        *counts.entry('\u{2581}').or_default() += 1; // the dummy prefix
    }
    let total: u64 = counts.values().sum();
    let mut by_freq: Vec<(char, u64)> = counts.into_iter().collect();
    by_freq.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let seen = by_freq.len();
    let mut covered = 0u64;
    let mut out = Vec::new();
    for (c, n) in by_freq {
        if covered as f64 >= coverage * total as f64 && c != '\u{2581}' {
            break;
        }
        covered += n;
        out.push(c);
    }
    (out, seen)
}

/// Coarse script of a character, so pieces stay within one script as SentencePiece's
/// `split_by_unicode_script` keeps them: `None` for combining marks and joiners (they stay with
/// the character before them).
fn script(c: char) -> Option<u32> {
    let u = c as u32;
    Some(match u {
        0x0300..=0x036F
        | 0x0483..=0x0489
        | 0x0591..=0x05C7
        | 0x0610..=0x061A
        | 0x064B..=0x065F
        | 0x0670
        | 0x06D6..=0x06ED
        | 0x200C
        | 0x200D => return None,
        _ if !c.is_alphanumeric() => 0, // punctuation and symbols ("Common")
        0x3040..=0x30FF | 0x3400..=0x4DBF | 0x4E00..=0x9FFF | 0xF900..=0xFAFF | 0x20000..=0x3FFFF => 1, // Han + kana
        0x0000..=0x024F | 0x1E00..=0x1EFF => 2, // Latin
        0x0600..=0x06FF | 0x0750..=0x077F | 0xFB50..=0xFDFF | 0xFE70..=0xFEFF => 3, // Arabic
        _ => 16 + (u >> 7),             // other scripts by 128-code-point block
    })
}

/// Pre-split a sentence into the units BPE may merge within: each run of spaces starts a word
/// (`▁▁▁foo` → `▁▁`, `▁foo`), digits stand alone, pieces never cross scripts or characters outside
/// the alphabet (those are dropped: they become bytes when encoding).
fn training_words(sentence: &str, allowed: &HashSet<char>) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut cur_script: Option<u32> = None;
    let mut spaces = 1usize; // the dummy prefix
    let flush = |cur: &mut String, words: &mut Vec<String>| {
        if !cur.is_empty() {
            words.push(std::mem::take(cur));
        }
    };
    for c in sentence.chars() {
        if c == ' ' || c == '\u{2581}' {
            spaces += 1;
            continue;
        }
        if spaces > 0 {
            flush(&mut cur, &mut words);
            if spaces > 1 {
                words.push(SPACE.repeat(spaces - 1));
            }
            cur.push_str(SPACE);
            cur_script = None;
            spaces = 0;
        }
        if !allowed.contains(&c) {
            flush(&mut cur, &mut words);
            cur_script = None;
            continue;
        }
        if c.is_ascii_digit() {
            // split_digits: a digit is a piece of its own, not even `▁1`.
            flush(&mut cur, &mut words);
            words.push(c.to_string());
            cur_script = None;
            continue;
        }
        let s = script(c);
        if s.is_some() && cur_script.is_some() && s != cur_script {
            flush(&mut cur, &mut words);
        }
        cur.push(c);
        if s.is_some() {
            cur_script = s;
        }
    }
    flush(&mut cur, &mut words);
    if spaces > 1 {
        words.push(SPACE.repeat(spaces));
    }
    words
}

/// Learned BPE pieces in merge order (score `-i`), then the alphabet by frequency, as SentencePiece's
/// BPE trainer lays them out.
fn bpe_pieces(model: &BPE, alphabet: &[char]) -> Result<Vec<Piece>, VocabError> {
    let v = serde_json::to_value(model).map_err(|e| VocabError::Train(e.to_string()))?;
    let merges = v["model"]["merges"].as_array().or_else(|| v["merges"].as_array()).cloned().unwrap_or_default();
    let mut seen: HashSet<String> = alphabet.iter().map(|c| c.to_string()).collect();
    let mut pieces = Vec::new();
    for m in merges {
        let pair: Vec<&str> = match &m {
            serde_json::Value::Array(a) => a.iter().filter_map(|x| x.as_str()).collect(),
            serde_json::Value::String(s) => s.splitn(2, ' ').collect(),
            _ => Vec::new(),
        };
        if let [l, r] = pair[..] {
            let piece = format!("{l}{r}");
            if seen.insert(piece.clone()) {
                pieces.push(piece);
            }
        }
    }
    let n = pieces.len();
    let mut out: Vec<Piece> =
        pieces.into_iter().enumerate().map(|(i, p)| Piece::new(p, -(i as f32), PieceType::Normal)).collect();
    out.extend(
        alphabet.iter().enumerate().map(|(j, c)| Piece::new(c.to_string(), -((n + j) as f32), PieceType::Normal)),
    );
    Ok(out)
}

/// A SentencePiece model with LLaMA's reserved pieces and settings around `learned`.
fn llama_model(learned: Vec<Piece>, cfg: &TrainConfig) -> ModelProto {
    let mut pieces = vec![
        Piece::new("<unk>", 0.0, PieceType::Unknown),
        Piece::new("<s>", 0.0, PieceType::Control),
        Piece::new("</s>", 0.0, PieceType::Control),
    ];
    pieces.extend((0..=255u8).map(|b| Piece::new(byte_piece(b), 0.0, PieceType::Byte)));
    pieces.extend(learned);
    let mut ts = Message::default();
    let inputs: Vec<String> = cfg.input.iter().map(|p| p.display().to_string()).collect();
    ts.set_strings(trainer::INPUT, &inputs);
    let prefix = cfg.out.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    ts.set_str(trainer::MODEL_PREFIX, &prefix);
    ts.set_i32(trainer::MODEL_TYPE, if cfg.model_type == ModelType::Bpe { 2 } else { 1 });
    ts.set_i32(trainer::VOCAB_SIZE, pieces.len() as i32);
    ts.set_f32(trainer::CHARACTER_COVERAGE, cfg.character_coverage as f32);
    ts.set_bool(trainer::SPLIT_DIGITS, true);
    ts.set_bool(trainer::ALLOW_WHITESPACE_ONLY_PIECES, true);
    ts.set_bool(trainer::BYTE_FALLBACK, true);
    ts.set_i32(trainer::UNK_ID, 0);
    ts.set_i32(trainer::BOS_ID, 1);
    ts.set_i32(trainer::EOS_ID, 2);
    ts.set_i32(trainer::PAD_ID, -1);
    let mut ns = Message::default();
    ns.set_str(normalizer::NAME, "identity");
    ns.set(normalizer::PRECOMPILED_CHARSMAP, super::proto::Value::Bytes(Vec::new()));
    ns.set_bool(normalizer::ADD_DUMMY_PREFIX, true);
    ns.set_bool(normalizer::REMOVE_EXTRA_WHITESPACES, false);
    ModelProto { pieces, trainer_spec: ts, normalizer_spec: ns, rest: Message::default() }
}

impl crate::stage::Stage for TrainConfig {
    fn kind(&self) -> &'static str {
        "vocab-train"
    }
    fn paths_mut(&mut self) -> Vec<crate::stage::PathKey<'_>> {
        crate::stage::indexed("input", &mut self.input, crate::stage::Need::Input).collect()
    }
    fn set_out(&mut self, dir: &Path) {
        self.out = dir.join("spm.model");
    }
    fn run(&self, ctx: &crate::stage::StageCtx) -> Result<(), crate::stage::StageError> {
        run(self, ctx.env)?;
        Ok(())
    }
}

impl std::fmt::Display for TrainReport {
    /// The one-line summary `vocab train` prints.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "vocab train: {} pieces ({} characters of {} seen) from {} of {} sentences in {:.1}s -> {}; manifest: {}",
            self.vocab_size,
            self.alphabet,
            self.characters_seen,
            self.sentences_used,
            self.sentences_read,
            self.seconds,
            self.model.display(),
            self.manifest.display()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `word` and `char` (readable in .model files) are refused before training, with nothing written.
    #[test]
    fn word_and_char_models_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("t.txt");
        std::fs::write(&input, "kedi köpek\nev okul\n").unwrap();
        for model_type in [ModelType::Word, ModelType::Char] {
            let cfg = TrainConfig {
                input: vec![input.clone()],
                out: dir.path().join("m.model"),
                vocab_size: 300,
                model_type,
                character_coverage: 1.0,
                max_sentences: None,
                seed: 1,
                backend: Backend::Tokenizers,
            };
            let env = Env { threads: 1, progress: crate::Progress { quiet: true } };
            let e = run(&cfg, &env).unwrap_err().to_string();
            assert!(e.ends_with("only bpe and unigram can be trained"), "{e}");
            assert!(!cfg.out.exists());
        }
    }

    #[test]
    fn training_words_follow_sentencepiece_piece_rules() {
        let allowed: HashSet<char> = "abcfoİstnbul'd01234:,國語日本。".chars().collect();
        let w = training_words("foo   bar 2024, İstanbul'da 國語日本。", &allowed);
        assert_eq!(w, ["▁foo", "▁▁", "▁ba", "▁", "2", "0", "2", "4", ",", "▁İstanbul", "'", "da", "▁國語日本", "。"]);
        // Characters outside the alphabet split words and vanish; trailing spaces form their own word.
        assert_eq!(training_words("bxb  ", &allowed), ["▁b", "b", "▁▁"]);
    }

    #[test]
    fn alphabet_keeps_the_most_frequent_characters_up_to_the_coverage() {
        let s = vec!["aaaa aaab".to_string()];
        // a:7, ▁:2 (space + dummy prefix), b:1 → 10 occurrences.
        assert_eq!(alphabet(&s, 1.0), (vec!['a', '▁', 'b'], 3));
        assert_eq!(alphabet(&s, 0.85), (vec!['a', '▁'], 3));
    }
}
