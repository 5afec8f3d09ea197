//! `vocab merge` into a Hugging Face byte-level BPE `tokenizer.json` (LLaMA-3, Mistral-Nemo style):
//! new pieces become byte-level tokens after every existing id, each with a merge appended after
//! the base merges (lowest priority), plus the prefix tokens a piece needs to be reachable.

use std::collections::HashMap;
use std::path::Path;

use serde_json::Value;
use tokenizers::{OffsetReferential, OffsetType, PreTokenizedString, PreTokenizer};

use super::merge::MergeReport;
use super::proto::{ModelProto, PieceType};
use super::spm::SPACE;
use super::VocabError;

/// GPT-2's byte → printable character table used by byte-level BPE vocabularies.
fn byte_chars() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut extra = 0u32;
    for b in 0..=255u8 {
        let printable = matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
        table[usize::from(b)] = if printable {
            char::from(b)
        } else {
            extra += 1;
            char::from_u32(255 + extra).expect("valid code point")
        };
    }
    table
}

/// A split of `t` into two tokens of `vocab`, if there is one.
fn two_known_parts<'a>(t: &'a str, vocab: &HashMap<String, u64>) -> Option<(&'a str, &'a str)> {
    t.char_indices().skip(1).map(|(i, _)| t.split_at(i)).find(|(l, r)| vocab.contains_key(*l) && vocab.contains_key(*r))
}

/// True when `json` uses a ByteLevel pre-tokenizer (possibly inside a Sequence).
fn is_byte_level(json: &Value) -> bool {
    let pre = &json["pre_tokenizer"];
    pre["type"] == "ByteLevel"
        || pre["pretokenizers"].as_array().is_some_and(|a| a.iter().any(|p| p["type"] == "ByteLevel"))
}

/// Merges the pieces of `add` into the byte-level BPE `tokenizer.json` at `path`; returns the new
/// document and the report. `max_added` bounds the new tokens, prefix tokens included.
pub fn merge_into_byte_level(
    path: &Path,
    add: &ModelProto,
    max_added: Option<usize>,
) -> Result<(Value, MergeReport), VocabError> {
    let bad = |message: String| VocabError::Merge { path: path.into(), message };
    let bytes = std::fs::read(path).map_err(|source| VocabError::Io { path: path.into(), source })?;
    let mut json: Value = serde_json::from_slice(&bytes).map_err(|e| bad(format!("not JSON: {e}")))?;
    if json["model"]["type"] != "BPE" || !is_byte_level(&json) {
        return Err(bad("not a byte-level BPE tokenizer.json (model BPE with a ByteLevel pre-tokenizer)".into()));
    }
    let base = tokenizers::Tokenizer::from_bytes(&bytes).map_err(|e| bad(e.to_string()))?;
    let pre = base.get_pre_tokenizer().ok_or_else(|| bad("no pre-tokenizer".into()))?;
    let mut vocab: HashMap<String, u64> = json["model"]["vocab"]
        .as_object()
        .ok_or_else(|| bad("model.vocab is not an object".into()))?
        .iter()
        .filter_map(|(k, v)| v.as_u64().map(|id| (k.clone(), id)))
        .collect();
    let added_max = json["added_tokens"].as_array().into_iter().flatten().filter_map(|t| t["id"].as_u64()).max();
    let base_size = vocab.values().copied().chain(added_max).max().map_or(0, |m| m + 1);
    // Keep the merges' own format: "a b" strings (older files) or [a, b] pairs.
    let pairs_as_strings = json["model"]["merges"].as_array().and_then(|m| m.first()).is_some_and(Value::is_string);
    let table = byte_chars();
    let candidates: Vec<_> =
        add.pieces.iter().filter(|p| matches!(p.kind, PieceType::Normal | PieceType::UserDefined)).collect();
    let limit = max_added.unwrap_or(usize::MAX);
    let (mut existing, mut unreachable, mut over_limit) = (0, 0, 0);
    let mut new_tokens: Vec<(String, u64)> = Vec::new();
    let mut new_merges: Vec<(String, String)> = Vec::new();
    for p in candidates.iter() {
        let text = p.piece.replace(SPACE, " ");
        let token: String = text.bytes().map(|b| table[usize::from(b)]).collect();
        if vocab.contains_key(&token) {
            existing += 1;
            continue;
        }
        // A token spanning two pre-tokens can never be produced.
        let mut pts = PreTokenizedString::from(text.as_str());
        pre.pre_tokenize(&mut pts).map_err(|e| bad(e.to_string()))?;
        if pts.get_splits(OffsetReferential::Original, OffsetType::Byte).len() != 1 {
            unreachable += 1;
            continue;
        }
        // The shortest chain of prefix tokens that makes `token` reachable by merges.
        let chars: Vec<(usize, char)> = token.char_indices().collect();
        let mut plan: Vec<(String, String, String)> = Vec::new();
        let known =
            |s: &str, plan: &[(String, String, String)]| vocab.contains_key(s) || plan.iter().any(|(t, _, _)| t == s);
        if let Some((l, r)) = two_known_parts(&token, &vocab) {
            plan.push((token.clone(), l.to_string(), r.to_string()));
        } else {
            for k in 2..chars.len() {
                let end = chars[k].0;
                let prefix = &token[..end];
                if !known(prefix, &plan) {
                    let cut = chars[k - 1].0;
                    plan.push((prefix.to_string(), token[..cut].to_string(), token[cut..end].to_string()));
                }
            }
            let cut = chars[chars.len() - 1].0;
            plan.push((token.clone(), token[..cut].to_string(), token[cut..].to_string()));
        }
        if new_tokens.len() + plan.len() > limit {
            over_limit += 1;
            continue;
        }
        for (t, l, r) in plan {
            let id = base_size + new_tokens.len() as u64;
            vocab.insert(t.clone(), id);
            new_tokens.push((t, id));
            new_merges.push((l, r));
        }
    }
    let model = &mut json["model"];
    for (t, id) in &new_tokens {
        model["vocab"][t] = Value::from(*id);
    }
    if let Some(merges) = model["merges"].as_array_mut() {
        merges.extend(new_merges.into_iter().map(|(l, r)| {
            if pairs_as_strings {
                Value::from(format!("{l} {r}"))
            } else {
                serde_json::json!([l, r])
            }
        }));
    }
    let report = MergeReport {
        base_size: base_size as usize,
        candidates: candidates.len(),
        added: new_tokens.len(),
        skipped_existing: existing,
        skipped_unreachable: unreachable,
        skipped_limit: over_limit,
        final_size: base_size as usize + new_tokens.len(),
    };
    Ok((json, report))
}
