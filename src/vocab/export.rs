//! A SentencePiece model as Hugging Face files: `tokenizer.json` that the tokenizers crate encodes
//! exactly like the `.model` (transformers' `LlamaConverter` with `legacy=True`,
//! `add_prefix_space=True`), plus `tokenizer_config.json` and `special_tokens_map.json`.

use serde_json::{json, Value};

use super::proto::{ModelProto, ModelType, PieceType};
use super::spm::SPACE;

/// BPE merges the way transformers' `generate_merges` derives them from a SentencePiece vocabulary:
/// every split of a piece into two pieces of the vocabulary, ordered by the piece's score
/// (descending), then longer left part, then longer right part; ties keep vocabulary order.
pub fn bpe_merges(proto: &ModelProto) -> Vec<(String, String)> {
    let vocab: std::collections::HashMap<&str, usize> =
        proto.pieces.iter().enumerate().map(|(i, p)| (p.piece.as_str(), i)).collect();
    let mut merges: Vec<(&str, &str, f32)> = Vec::new();
    for p in &proto.pieces {
        let merge = p.piece.as_str();
        let start = merges.len();
        for (at, _) in merge.char_indices().skip(1) {
            let (l, r) = merge.split_at(at);
            if vocab.contains_key(l) && vocab.contains_key(r) {
                merges.push((l, r, p.score));
            }
        }
        merges[start..].sort_by_key(|&(l, r, _)| (vocab[l], vocab[r]));
    }
    // Stable: equal keys keep their order, as Python's sorted(reverse=True) does.
    merges.sort_by(|a, b| {
        b.2.total_cmp(&a.2)
            .then(b.0.chars().count().cmp(&a.0.chars().count()))
            .then(b.1.chars().count().cmp(&a.1.chars().count()))
    });
    merges.into_iter().map(|(l, r, _)| (l.to_string(), r.to_string())).collect()
}

fn added_token(id: usize, content: &str, special: bool) -> Value {
    json!({"id": id, "content": content, "single_word": false, "lstrip": false, "rstrip": false,
           "normalized": false, "special": special})
}

fn replace(from: &str, to: &str) -> Value {
    json!({"type": "Replace", "pattern": {"String": from}, "content": to})
}

/// The `tokenizer.json` document for a SentencePiece BPE or unigram model.
pub fn tokenizer_json(proto: &ModelProto) -> Result<Value, String> {
    let kind = proto.model_type()?;
    if proto.treat_whitespace_as_suffix() {
        return Err("treat_whitespace_as_suffix has no tokenizer.json equivalent".into());
    }
    let mut normalizers = Vec::new();
    if let Some(map) = proto.precompiled_charsmap() {
        let p =
            tokenizers::normalizers::Precompiled::from(map).map_err(|e| format!("bad precompiled_charsmap: {e}"))?;
        normalizers.push(serde_json::to_value(&p).map_err(|e| e.to_string())?);
    }
    if proto.remove_extra_whitespaces() {
        normalizers.push(json!({"type": "Replace", "pattern": {"Regex": " {2,}"}, "content": " "}));
        normalizers.push(json!({"type": "Replace", "pattern": {"Regex": "^ | $"}, "content": ""}));
    }
    let space = if proto.escape_whitespaces() { SPACE } else { " " };
    if proto.add_dummy_prefix() {
        normalizers.push(json!({"type": "Prepend", "prepend": space}));
    }
    if proto.escape_whitespaces() {
        normalizers.push(replace(" ", SPACE));
    }
    let mut decoders = vec![replace(SPACE, " "), json!({"type": "ByteFallback"}), json!({"type": "Fuse"})];
    if proto.add_dummy_prefix() {
        decoders.push(json!({"type": "Strip", "content": " ", "start": 1, "stop": 0}));
    }
    let unk = proto.pieces.iter().position(|p| p.kind == PieceType::Unknown).ok_or("no unknown piece")?;
    let model = match kind {
        ModelType::Bpe => {
            let vocab: serde_json::Map<String, Value> =
                proto.pieces.iter().enumerate().map(|(i, p)| (p.piece.clone(), json!(i))).collect();
            let merges: Vec<Value> = bpe_merges(proto).into_iter().map(|(l, r)| json!([l, r])).collect();
            json!({"type": "BPE", "dropout": null, "unk_token": proto.pieces[unk].piece, "continuing_subword_prefix": null,
                   "end_of_word_suffix": null, "fuse_unk": true, "byte_fallback": proto.byte_fallback(),
                   "ignore_merges": false, "vocab": vocab, "merges": merges})
        }
        ModelType::Unigram => {
            let vocab: Vec<Value> = proto.pieces.iter().map(|p| json!([p.piece, p.score])).collect();
            json!({"type": "Unigram", "unk_id": unk, "vocab": vocab, "byte_fallback": proto.byte_fallback()})
        }
        other => return Err(format!("model_type {other:?} cannot be exported")),
    };
    let added: Vec<Value> = proto
        .pieces
        .iter()
        .enumerate()
        .filter_map(|(i, p)| match p.kind {
            PieceType::Unknown | PieceType::Control => Some(added_token(i, &p.piece, true)),
            PieceType::UserDefined => Some(added_token(i, &p.piece, false)),
            _ => None,
        })
        .collect();
    let bos = special_pieces(proto).bos;
    let post = bos.map(|(id, bos)| {
        let tok = |t: u32| json!({"SpecialToken": {"id": bos, "type_id": t}});
        let seq = |s: &str, t: u32| json!({"Sequence": {"id": s, "type_id": t}});
        json!({"type": "TemplateProcessing", "single": [tok(0), seq("A", 0)], "pair": [tok(0), seq("A", 0), tok(1), seq("B", 1)],
               "special_tokens": {bos: {"id": bos, "ids": [id], "tokens": [bos]}}})
    });
    Ok(json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": added,
        "normalizer": {"type": "Sequence", "normalizers": normalizers},
        "pre_tokenizer": null, "post_processor": post,
        "decoder": {"type": "Sequence", "decoders": decoders},
        "model": model,
    }))
}

/// The BOS, EOS and unknown pieces of a model, by SentencePiece's default names and types.
pub struct SpecialPieces<'a> {
    /// `<s>` (id, piece) when it is a control piece.
    pub bos: Option<(u32, &'a str)>,
    /// `</s>` (id, piece) when it is a control piece.
    pub eos: Option<(u32, &'a str)>,
    /// The unknown piece.
    pub unk: Option<(u32, &'a str)>,
}

/// Finds the special pieces of `proto`.
pub fn special_pieces(proto: &ModelProto) -> SpecialPieces<'_> {
    use super::proto::trainer;
    let find = |field: u32, default: &str, kind: PieceType| {
        let name = proto.trainer_spec.str_or(field, default);
        proto
            .pieces
            .iter()
            .enumerate()
            .find(|(_, p)| p.piece == name && p.kind == kind)
            .map(|(i, p)| (i as u32, p.piece.as_str()))
    };
    SpecialPieces {
        bos: find(trainer::BOS_PIECE, "<s>", PieceType::Control),
        eos: find(trainer::EOS_PIECE, "</s>", PieceType::Control),
        unk: find(trainer::UNK_PIECE, "<unk>", PieceType::Unknown),
    }
}

/// `tokenizer_config.json` and `special_tokens_map.json` for a LLaMA-style checkpoint.
pub fn hf_configs(proto: &ModelProto) -> (Value, Value) {
    let sp = special_pieces(proto);
    let entry = |p: &str, special: bool| json!({"content": p, "lstrip": false, "normalized": false, "rstrip": false, "single_word": false, "special": special});
    let mut decoder = serde_json::Map::new();
    for (i, p) in proto.pieces.iter().enumerate() {
        match p.kind {
            PieceType::Unknown | PieceType::Control => decoder.insert(i.to_string(), entry(&p.piece, true)),
            PieceType::UserDefined => decoder.insert(i.to_string(), entry(&p.piece, false)),
            _ => None,
        };
    }
    let config = json!({
        "add_bos_token": sp.bos.is_some(), "add_eos_token": false, "add_prefix_space": true,
        "added_tokens_decoder": decoder, "bos_token": sp.bos.map(|b| b.1), "eos_token": sp.eos.map(|e| e.1), "unk_token": sp.unk.map(|u| u.1),
        "pad_token": null, "clean_up_tokenization_spaces": false, "legacy": true, "sp_model_kwargs": {},
        "spaces_between_special_tokens": false, "tokenizer_class": "LlamaTokenizer",
        "model_max_length": 1_000_000_000_000_000_019_884_624_838_656f64,
    });
    let mut map = serde_json::Map::new();
    for (key, piece) in [("bos_token", sp.bos), ("eos_token", sp.eos), ("unk_token", sp.unk)] {
        if let Some((_, p)) = piece {
            let mut e = entry(p, true);
            e.as_object_mut().expect("object").remove("special");
            map.insert(key.into(), e);
        }
    }
    (config, Value::Object(map))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-llama").join(name)
    }

    /// The fixture's tokenizer.json came from transformers 4.57.6 `LlamaTokenizerFast(legacy=True,
    /// add_prefix_space=True)`; ours must be the same document.
    #[test]
    fn export_equals_transformers_conversion_of_the_fixture() {
        let proto = ModelProto::read(&fixture("tokenizer.model")).unwrap();
        let ours = tokenizer_json(&proto).unwrap();
        let theirs: Value = serde_json::from_slice(&std::fs::read(fixture("tokenizer.json")).unwrap()).unwrap();
        assert_eq!(ours["model"]["merges"], theirs["model"]["merges"]);
        assert_eq!(ours, theirs);
        let (config, map) = hf_configs(&proto);
        let want: Value = serde_json::from_slice(&std::fs::read(fixture("special_tokens_map.json")).unwrap()).unwrap();
        assert_eq!(map, want);
        let want: Value = serde_json::from_slice(&std::fs::read(fixture("tokenizer_config.json")).unwrap()).unwrap();
        for key in [
            "add_bos_token",
            "add_eos_token",
            "add_prefix_space",
            "added_tokens_decoder",
            "bos_token",
            "eos_token",
            "legacy",
            "tokenizer_class",
        ] {
            assert_eq!(config[key], want[key], "{key}");
        }
    }
}
