//! Vocabulary: SentencePiece parity of `vocab::Tokenizer`, and the `langadapt vocab` commands.

use langadapt::vocab::Tokenizer;
use serde_json::Value;

use crate::common::fixture;

fn json(rel: &str) -> Value {
    serde_json::from_slice(&std::fs::read(fixture(rel)).unwrap()).unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

fn tiny(file: &str) -> Tokenizer {
    Tokenizer::from_path(&fixture(&format!("tiny-llama/{file}"))).unwrap()
}

/// Every id list of tokenizer-cases.json and reference.json (made by sentencepiece 0.2.3 and
/// transformers 4.57.6, see tests/fixtures/README.md), from the .model and from tokenizer.json.
#[test]
fn model_and_json_reproduce_every_reference_id_list() {
    let cases = json("tokenizer-cases.json");
    let reference = json("tiny-llama/reference.json");
    for file in ["tokenizer.model", "tokenizer.json"] {
        let tok = tiny(file);
        assert_eq!((tok.vocab_size(), tok.bos_id(), tok.eos_id(), tok.unk_id()), (1000, Some(1), Some(2), Some(0)));
        let mut checked = 0;
        for case in cases["cases"].as_array().unwrap() {
            let text = case["text"].as_str().unwrap();
            let want = ids(&case["ids"]);
            assert_eq!(tok.encode(text, true).unwrap(), want, "{file}: {text:?}");
            let pieces: Vec<String> = want.iter().map(|&i| tok.id_to_piece(i).unwrap()).collect();
            let expected: Vec<&str> = case["pieces"].as_array().unwrap().iter().map(|p| p.as_str().unwrap()).collect();
            assert_eq!(pieces, expected, "{file}: {text:?}");
            checked += 1;
        }
        for s in reference["sequences"].as_array().unwrap() {
            assert_eq!(tok.encode(s["text"].as_str().unwrap(), true).unwrap(), ids(&s["ids"]), "{file}");
            checked += 1;
        }
        for c in reference["continuations"].as_array().unwrap() {
            let (ctx, cont) = (c["context_used"].as_str().unwrap(), c["continuation_used"].as_str().unwrap());
            assert_eq!(tok.encode(ctx, true).unwrap(), ids(&c["context_enc"]), "{file}: {ctx:?}");
            assert_eq!(tok.encode(&format!("{ctx}{cont}"), true).unwrap(), ids(&c["whole_enc"]), "{file}: {ctx:?}");
            checked += 2;
        }
        for r in reference["rolling"].as_array().unwrap() {
            assert_eq!(tok.encode(r["text"].as_str().unwrap(), false).unwrap(), ids(&r["token_ids_no_bos"]), "{file}");
            checked += 1;
        }
        for g in reference["greedy"].as_array().unwrap() {
            assert_eq!(tok.encode(g["prompt"].as_str().unwrap(), true).unwrap(), ids(&g["prompt_ids"]), "{file}");
            checked += 1;
        }
        assert_eq!(checked, 18 + 8 + 44 + 3 + 4, "{file}");
    }
}

/// SentencePiece's decoder (.model): one U+FFFD per bad byte, ` ⁇ ` for unk; tokenizers' decoder
/// (tokenizer.json): `text_tokenizers`.
#[test]
fn decoders_match_their_reference_tools() {
    let (model, hf) = (tiny("tokenizer.model"), tiny("tokenizer.json"));
    for case in json("tokenizer-cases.json")["cases"].as_array().unwrap() {
        let ids = ids(&case["ids"]);
        assert_eq!(model.decode(&ids[1..]).unwrap(), case["decoded"].as_str().unwrap());
    }
    for g in json("tiny-llama/reference.json")["greedy"].as_array().unwrap() {
        let new = ids(&g["new_ids"]);
        assert_eq!(model.decode(&new).unwrap(), g["text"].as_str().unwrap());
        let full: Vec<u32> = ids(&g["prompt_ids"])[1..].iter().chain(&new).copied().collect();
        assert_eq!(model.decode(&full).unwrap(), g["full_text"].as_str().unwrap());
        assert_eq!(hf.decode(&new).unwrap(), g["text_tokenizers"].as_str().unwrap());
    }
    assert_eq!(model.decode(&[0, 1, 300]).unwrap(), format!(" \u{2047} {}", model.id_to_piece(300).unwrap().replace('▁', " ")));
}

#[test]
fn directory_prefers_tokenizer_json_and_falls_back_to_model() {
    let dir = tempfile::tempdir().unwrap();
    assert!(Tokenizer::from_path(dir.path()).unwrap_err().to_string().contains("no tokenizer.json or tokenizer.model"));
    std::fs::copy(fixture("tiny-llama/tokenizer.model"), dir.path().join("tokenizer.model")).unwrap();
    assert!(Tokenizer::from_path(dir.path()).unwrap().path().ends_with("tokenizer.model"));
    std::fs::copy(fixture("tiny-llama/tokenizer.json"), dir.path().join("tokenizer.json")).unwrap();
    assert!(Tokenizer::from_path(dir.path()).unwrap().path().ends_with("tokenizer.json"));
}

#[test]
fn truncated_model_is_rejected_naming_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(fixture("tiny-llama/tokenizer.model")).unwrap();
    let cut = dir.path().join("cut.model");
    std::fs::write(&cut, &bytes[..5000]).unwrap();
    let e = Tokenizer::from_path(&cut).unwrap_err().to_string();
    assert!(e.starts_with(&format!("{}: not a valid SentencePiece model at byte ", cut.display())), "{e}");
    assert!(e.contains("cut short"), "{e}");
}
