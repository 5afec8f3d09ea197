//! `vocab merge`: append the pieces of a new SentencePiece model that a LLaMA-style base lacks
//! (Chinese-LLaMA style), keeping every base id; write the merged tokenizer in both formats and,
//! optionally, a checkpoint with its vocabulary matrices resized.
//!
//! Scores: added pieces score below every base piece, in the order below, so the merged BPE runs
//! every base merge first and exactly as before; new merges only join what the base leaves.
//! Order: new single characters first (every piece needs its characters), then longer pieces in
//! the new model's order, each only when it splits into two pieces already in the merged
//! vocabulary (otherwise BPE could never produce it: counted as `skipped_unreachable`).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::bytelevel::merge_into_byte_level;
use super::export::{hf_configs, tokenizer_json};
use super::proto::{trainer, ModelProto, ModelType, Piece, PieceType};
use super::spm::SpmModel;
use super::{Tokenizer, VocabError};
use crate::manifest::ManifestBuilder;
use crate::model::{resize_checkpoint, RowInit};
use crate::Env;

/// How `--model` initializes the new embedding rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Init {
    /// Mean of all base rows.
    Mean,
    /// Mean of the base rows of the base tokenizer's pieces of the new piece's text.
    SubwordMean,
    /// Seeded normal noise with the base rows' standard deviation.
    Random,
}

/// Settings of `vocab merge`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MergeConfig {
    /// The base: a SentencePiece BPE `tokenizer.model`, a byte-level BPE `tokenizer.json`, or a
    /// directory holding one (tokenizer.model first).
    pub base: PathBuf,
    /// The SentencePiece model whose pieces are added.
    pub add: PathBuf,
    /// Output directory (a recipe sets it per stage).
    #[serde(default)]
    pub out: PathBuf,
    /// Add at most this many pieces.
    #[serde(default)]
    pub max_added: Option<usize>,
    /// A Hugging Face checkpoint to resize into `out/model/`.
    #[serde(default)]
    pub model: Option<PathBuf>,
    /// Initialization of new rows.
    #[serde(default = "default_init")]
    pub init: Init,
    /// Seed for `random` init.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Texts (files or directories, as `vocab stats` reads them) to measure tokens per word on with the
    /// base and the merged tokenizer: `out/fertility.json`.
    #[serde(default)]
    pub fertility: Vec<PathBuf>,
}

fn default_init() -> Init {
    Init::SubwordMean
}
fn default_seed() -> u64 {
    42
}

/// `merge_report.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MergeReport {
    /// Pieces of the base.
    pub base_size: usize,
    /// Normal and user-defined pieces of the added model.
    pub candidates: usize,
    /// Pieces appended.
    pub added: usize,
    /// Candidates the base already has.
    pub skipped_existing: usize,
    /// Candidates BPE could not produce from the merged vocabulary (see module docs).
    pub skipped_unreachable: usize,
    /// Candidates left out by `max_added`.
    pub skipped_limit: usize,
    /// Pieces of the merged model.
    pub final_size: usize,
}

/// The merged model and what the merge did.
pub fn merge_models(base: &ModelProto, add: &ModelProto, max_added: Option<usize>) -> (ModelProto, MergeReport) {
    let mut have: HashSet<String> = base.pieces.iter().map(|p| p.piece.clone()).collect();
    let candidates: Vec<&Piece> =
        add.pieces.iter().filter(|p| matches!(p.kind, PieceType::Normal | PieceType::UserDefined)).collect();
    let skipped_existing = candidates.iter().filter(|p| have.contains(&p.piece)).count();
    let new: Vec<&Piece> = candidates.iter().copied().filter(|p| !have.contains(&p.piece)).collect();
    let is_char = |p: &&Piece| p.piece.chars().count() == 1;
    let ordered = new.iter().copied().filter(is_char).chain(new.iter().copied().filter(|p| !is_char(p)));
    let limit = max_added.unwrap_or(usize::MAX);
    let base_min = base.pieces.iter().filter(|p| p.kind == PieceType::Normal).map(|p| p.score).fold(0.0f32, f32::min);
    let mut merged = base.clone();
    let (mut unreachable, mut over_limit) = (0, 0);
    let mut last = base_min;
    for p in ordered {
        let reachable = p.kind == PieceType::UserDefined
            || is_char(&p)
            || p.piece
                .char_indices()
                .skip(1)
                .any(|(at, _)| have.contains(&p.piece[..at]) && have.contains(&p.piece[at..]));
        if !reachable {
            unreachable += 1;
            continue;
        }
        let added = merged.pieces.len() - base.pieces.len();
        if added >= limit {
            over_limit += 1;
            continue;
        }
        have.insert(p.piece.clone());
        // One below the previous added piece, and at least one f32 step below it: real bases score pieces
        // down to about -1e9, where `x - 1.0 == x`, and tied scores are broken differently by SentencePiece
        // and tokenizers (issue 19: "ärkasin" split two ways).
        let score = (base_min - 1.0 - added as f32).min(next_below(last));
        last = score;
        merged.pieces.push(Piece { piece: p.piece.clone(), score, kind: p.kind, extra: Default::default() });
    }
    merged.trainer_spec.set_i32(trainer::VOCAB_SIZE, merged.pieces.len() as i32);
    let report = MergeReport {
        base_size: base.pieces.len(),
        candidates: candidates.len(),
        added: merged.pieces.len() - base.pieces.len(),
        skipped_existing,
        skipped_unreachable: unreachable,
        skipped_limit: over_limit,
        final_size: merged.pieces.len(),
    };
    (merged, report)
}

/// The largest f32 strictly below `x` (finite `x`).
fn next_below(x: f32) -> f32 {
    if x == 0.0 {
        -f32::from_bits(1)
    } else if x > 0.0 {
        f32::from_bits(x.to_bits() - 1)
    } else {
        f32::from_bits(x.to_bits() + 1)
    }
}

/// The base file: a SentencePiece `.model` or a Hugging Face `tokenizer.json` (a directory: its
/// tokenizer.model when that is a SentencePiece model, else its tokenizer.json; some converters write
/// other files under the name tokenizer.model). Says on stderr which file of a directory it used.
fn base_file(base: &Path, env: &Env) -> Result<(PathBuf, bool), VocabError> {
    if base.is_dir() {
        let (model, json) = (base.join("tokenizer.model"), base.join("tokenizer.json"));
        let chosen = match ModelProto::read(&model) {
            Ok(_) => (model, false),
            Err(e) if json.is_file() => {
                if model.is_file() && !env.progress.quiet {
                    eprintln!("vocab merge: {e}; using {} beside it", json.display());
                }
                (json, true)
            }
            Err(_) if !model.is_file() => return Err(VocabError::NotFound(base.into())),
            Err(e) => return Err(e),
        };
        if !env.progress.quiet {
            eprintln!("vocab merge: base tokenizer {}", chosen.0.display());
        }
        return Ok(chosen);
    }
    let head = std::fs::read(base).map_err(|source| VocabError::Io { path: base.into(), source })?;
    let is_json = head.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
    Ok((base.to_path_buf(), is_json))
}

/// What a merge produces before anything is written.
struct Prepared {
    /// Output files (name, bytes), merge_report.json included.
    files: Vec<(&'static str, Vec<u8>)>,
    report: MergeReport,
    /// Per new id: the base ids of its text (for subword-mean).
    subwords: Vec<Vec<u32>>,
}

fn pretty(v: &serde_json::Value) -> Vec<u8> {
    let mut bytes = serde_json::to_vec_pretty(v).unwrap_or_default();
    bytes.push(b'\n');
    bytes
}

fn prepare_sentencepiece(base_path: &Path, add: &ModelProto, cfg: &MergeConfig) -> Result<Prepared, VocabError> {
    let base = ModelProto::read(base_path)?;
    if base.model_type() != Ok(ModelType::Bpe) {
        let message =
            "the base is not a SentencePiece BPE model (LLaMA-style); merging into unigram bases is not supported";
        return Err(VocabError::Merge { path: base_path.into(), message: message.into() });
    }
    let base_tok =
        SpmModel::new(base.clone()).map_err(|message| VocabError::Load { path: base_path.into(), message })?;
    let (merged, report) = merge_models(&base, add, cfg.max_added);
    // The merged model must load as SentencePiece would load it.
    Tokenizer::from_proto(merged.clone(), &cfg.out.join("tokenizer.model"))?;
    let json = tokenizer_json(&merged).map_err(|message| VocabError::Merge { path: cfg.out.clone(), message })?;
    let (config, special) = hf_configs(&merged);
    // A piece is already in normalized form (`▁` for spaces): segment it as is.
    let subwords = merged.pieces[base.pieces.len()..].iter().map(|p| base_tok.encode_normalized(&p.piece)).collect();
    let files = vec![
        ("tokenizer.model", merged.to_bytes()),
        ("tokenizer.json", pretty(&json)),
        ("tokenizer_config.json", pretty(&config)),
        ("special_tokens_map.json", pretty(&special)),
        ("merge_report.json", pretty(&serde_json::to_value(&report).unwrap_or_default())),
    ];
    Ok(Prepared { files, report, subwords })
}

fn prepare_byte_level(base_path: &Path, add: &ModelProto, cfg: &MergeConfig) -> Result<Prepared, VocabError> {
    let (json, report) = merge_into_byte_level(base_path, add, cfg.max_added)?;
    let bytes = pretty(&json);
    let load = |b: &[u8], path: &Path| {
        tokenizers::Tokenizer::from_bytes(b).map_err(|e| VocabError::Load { path: path.into(), message: e.to_string() })
    };
    let merged = load(&bytes, &cfg.out.join("tokenizer.json"))?;
    let base = load(
        &std::fs::read(base_path).map_err(|source| VocabError::Io { path: base_path.into(), source })?,
        base_path,
    )?;
    let mut subwords = Vec::with_capacity(report.added);
    for id in report.base_size..report.final_size {
        let token = merged.id_to_token(id as u32).unwrap_or_default();
        // The token's text, decoded from its byte-level form, as the base encodes it.
        let text = merged.decode(&[id as u32], false).map_err(|e| VocabError::Codec(e.to_string()))?;
        let enc = base.encode(text.as_str(), false).map_err(|e| VocabError::Codec(format!("{token}: {e}")))?;
        subwords.push(enc.get_ids().to_vec());
    }
    let mut files = vec![("tokenizer.json", bytes)];
    let dir = base_path.parent().unwrap_or(Path::new("."));
    for name in ["tokenizer_config.json", "special_tokens_map.json"] {
        if let Ok(b) = std::fs::read(dir.join(name)) {
            files.push((name, b));
        }
    }
    files.push(("merge_report.json", pretty(&serde_json::to_value(&report).unwrap_or_default())));
    Ok(Prepared { files, report, subwords })
}

/// The checkpoint's config.json must describe the base vocabulary.
fn check_checkpoint(ckpt: &Path, base_size: usize) -> Result<(), VocabError> {
    let path = ckpt.join("config.json");
    let bytes = std::fs::read(&path).map_err(|source| VocabError::Io { path: path.clone(), source })?;
    let config: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| VocabError::Merge { path: path.clone(), message: format!("not JSON: {e}") })?;
    match config["vocab_size"].as_u64() {
        Some(n) if n as usize == base_size => Ok(()),
        n => Err(VocabError::Merge {
            path,
            message: format!("vocab_size is {n:?} but the base tokenizer has {base_size} pieces; pass the checkpoint that goes with --base"),
        }),
    }
}

/// Runs `vocab merge`: checks everything, then writes the output directory.
pub fn run(cfg: &MergeConfig, env: &Env) -> Result<MergeReport, VocabError> {
    let start = Instant::now();
    // Hub ids (`org/name[@revision]`) are fetched into the HF cache; the manifest keeps what was asked for
    // and what it resolved to (`base_hub`, `model_hub`: repo, revision, commit).
    let hub = crate::hub::HubConfig::from_env(env.progress);
    let base = crate::hub::resolve_model(&cfg.base.to_string_lossy(), &hub)?;
    let model = cfg.model.as_ref().map(|m| crate::hub::resolve_model(&m.to_string_lossy(), &hub)).transpose()?;
    let mut args = serde_json::to_value(cfg).unwrap_or_default();
    for (key, m) in [("base_hub", Some(&base)), ("model_hub", model.as_ref())] {
        if let Some(source) = m.and_then(|m| m.hub.as_ref()) {
            args[key] = serde_json::to_value(source).unwrap_or_default();
        }
    }
    let resolved = MergeConfig { base: base.path.clone(), model: model.map(|m| m.path), ..cfg.clone() };
    let cfg = &resolved;
    let (base_path, is_json) = base_file(&cfg.base, env)?;
    let add = ModelProto::read(&cfg.add)?;
    SpmModel::new(add.clone()).map_err(|message| VocabError::Load { path: cfg.add.clone(), message })?;
    let prepared = if is_json {
        prepare_byte_level(&base_path, &add, cfg)?
    } else {
        prepare_sentencepiece(&base_path, &add, cfg)?
    };
    let report = prepared.report.clone();
    if let Some(ckpt) = &cfg.model {
        check_checkpoint(ckpt, report.base_size)?;
    }
    let mut manifest = ManifestBuilder::new("vocab merge", args, Some(cfg.seed));
    manifest.add_input(&base_path, &env.progress)?;
    manifest.add_input(&cfg.add, &env.progress)?;

    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| VocabError::Io { path: path.clone(), source }
    };
    std::fs::create_dir_all(&cfg.out).map_err(io_err(&cfg.out))?;
    let mut outputs = Vec::new();
    for (name, bytes) in &prepared.files {
        let path = cfg.out.join(name);
        crate::io::write_atomic(&path, bytes).map_err(io_err(&path))?;
        outputs.push((path, None));
    }
    if let Some(ckpt) = &cfg.model {
        manifest.add_input(&ckpt.join("config.json"), &env.progress)?;
        let init = match cfg.init {
            Init::Mean => RowInit::Mean,
            Init::Random => RowInit::Random { seed: cfg.seed },
            Init::SubwordMean => RowInit::SubwordMean(prepared.subwords),
        };
        let dst = cfg.out.join("model");
        // The base's tokenizer files are replaced by the merged ones.
        let tokenizer_files = ["tokenizer.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"];
        let r = resize_checkpoint(ckpt, &dst, report.final_size, &init, &tokenizer_files)
            .map_err(|source| VocabError::Resize { dst: dst.clone(), source })?;
        for (name, bytes) in prepared.files.iter().filter(|(n, _)| tokenizer_files.contains(n)) {
            let to = dst.join(name);
            crate::io::write_atomic(&to, bytes).map_err(io_err(&to))?;
        }
        manifest.count("resized_tensors", r.resized.len() as u64);
        let files = crate::io::files_under(&dst).map_err(io_err(&dst))?;
        outputs.extend(files.into_iter().map(|f| (f, None)));
    }
    if !cfg.fertility.is_empty() {
        let path = cfg.out.join("fertility.json");
        let merged = cfg.out.join("tokenizer.model");
        let merged = if merged.is_file() { merged } else { cfg.out.join("tokenizer.json") };
        let rows = super::stats::run(&[base_path.clone(), merged], &cfg.fertility, env)?;
        for input in &cfg.fertility {
            for f in super::text::input_files(std::slice::from_ref(input))? {
                manifest.add_input(&f, &env.progress)?;
            }
        }
        // stats::run is input-major: (base, merged) per input.
        let inputs: Vec<serde_json::Value> = rows
            .chunks(2)
            .map(|pair| serde_json::json!({"input": pair[0].input, "base": pair[0], "merged": pair[1]}))
            .collect();
        let mut bytes = serde_json::to_vec_pretty(&serde_json::json!({ "inputs": inputs })).unwrap_or_default();
        bytes.push(b'\n');
        crate::io::write_atomic(&path, &bytes).map_err(io_err(&path))?;
        outputs.push((path, None));
    }
    for (k, v) in [
        ("base_size", report.base_size),
        ("candidates", report.candidates),
        ("added", report.added),
        ("final_size", report.final_size),
    ] {
        manifest.count(k, v as u64);
    }
    manifest.timings.insert("merge_s".into(), start.elapsed().as_secs_f64());
    manifest.finish(&cfg.out, &outputs)?.write(&cfg.out.join("manifest.json"))?;
    Ok(report)
}

impl crate::stage::Stage for MergeConfig {
    fn kind(&self) -> &'static str {
        "vocab-merge"
    }
    fn paths_mut(&mut self) -> Vec<crate::stage::PathKey<'_>> {
        use crate::stage::Need;
        let mut v = vec![
            ("base".to_string(), &mut self.base, Need::Checkpoint),
            ("add".to_string(), &mut self.add, Need::Input),
        ];
        v.extend(self.model.as_mut().map(|p| ("model".to_string(), p, Need::Checkpoint)));
        v.extend(crate::stage::indexed("fertility", &mut self.fertility, Need::Input));
        v
    }
    fn set_out(&mut self, dir: &Path) {
        self.out = dir.into();
    }
    fn run(&self, ctx: &crate::stage::StageCtx) -> Result<(), crate::stage::StageError> {
        // `run` fetches Hub ids itself, so its manifest records the names and revisions asked for.
        run(self, ctx.env)?;
        Ok(())
    }
}

impl std::fmt::Display for MergeReport {
    /// The one-line summary `vocab merge` prints.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "vocab merge: {} + {} added = {} pieces ({} candidates: {} already in the base, {} unreachable, {} over \
             --max-added)",
            self.base_size,
            self.added,
            self.final_size,
            self.candidates,
            self.skipped_existing,
            self.skipped_unreachable,
            self.skipped_limit
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 19 (2): on a base whose pieces score down to -1e9 (Mistral-7B's whitespace runs), added pieces
    /// once tied (-1e9 - 1 - i rounds to -1e9 in f32), and SentencePiece (leftmost pair among equals) and
    /// tokenizers (lowest merge rank) split "qzq" differently. Distinct falling scores make them agree.
    #[test]
    fn added_pieces_get_distinct_scores_below_a_minus_1e9_base() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-llama/tokenizer.model");
        let mut base = ModelProto::read(&path).unwrap();
        let last = base.pieces.iter().rposition(|p| p.kind == PieceType::Normal).unwrap();
        base.pieces[last].score = -1e9;
        let piece =
            |p: &str, score| Piece { piece: p.into(), score, kind: PieceType::Normal, extra: Default::default() };
        let add = ModelProto { pieces: vec![piece("zq", -1.0), piece("qz", -2.0)], ..Default::default() };
        let (merged, report) = merge_models(&base, &add, None);
        assert_eq!(report.added, 2);
        let scores: Vec<f32> = merged.pieces[base.pieces.len()..].iter().map(|p| p.score).collect();
        assert!(scores[0] < -1e9 && scores[1] < scores[0], "{scores:?}");
        let spm = Tokenizer::from_proto(merged.clone(), &path).unwrap();
        let json = serde_json::to_vec(&tokenizer_json(&merged).unwrap()).unwrap();
        let hf = tokenizers::Tokenizer::from_bytes(&json).unwrap();
        for text in ["qzq", "zqz", "qzqzq zq qz"] {
            let want = spm.encode(text, false).unwrap();
            assert_eq!(hf.encode(text, false).unwrap().get_ids(), want.as_slice(), "{text}");
        }
        let pieces: Vec<String> =
            spm.encode("qzq", false).unwrap().iter().map(|&i| spm.id_to_piece(i).unwrap()).collect();
        assert_eq!(pieces, ["▁", "q", "zq"], "the added model's order decides: zq before qz");
    }
}
