//! `vocab train --backend sentencepiece`: SentencePiece's own C++ trainer through a small C ABI
//! (src/vocab/cpp/spm_train.cc), with LLaMA's settings. Built only with the `sentencepiece` feature.

use std::ffi::{c_char, c_int, CString};

use super::proto::{ModelProto, ModelType};
use super::train::TrainConfig;
use super::VocabError;

extern "C" {
    #[allow(clippy::too_many_arguments)]
    fn langadapt_spm_train(
        keys: *const *const c_char,
        values: *const *const c_char,
        n_kv: usize,
        sentences: *const *const c_char,
        lens: *const usize,
        n_sent: usize,
        model_out: *mut *mut c_char,
        model_len: *mut usize,
        err: *mut c_char,
        err_len: usize,
    ) -> c_int;
    fn langadapt_spm_free(p: *mut c_char);
}

/// Trains on `sentences` with spm_train's LLaMA flags (byte fallback, split digits, identity normalizer,
/// dummy prefix, unk/bos/eos = 0/1/2, no pad) and returns the model.
pub fn train(sentences: &[String], cfg: &TrainConfig, threads: usize, quiet: bool) -> Result<ModelProto, VocabError> {
    let model_type = match cfg.model_type {
        ModelType::Bpe => "bpe",
        _ => "unigram",
    };
    let kwargs: Vec<(&str, String)> = vec![
        ("model_type", model_type.into()),
        ("vocab_size", cfg.vocab_size.to_string()),
        ("character_coverage", cfg.character_coverage.to_string()),
        ("byte_fallback", "true".into()),
        ("split_digits", "true".into()),
        ("normalization_rule_name", "identity".into()),
        ("add_dummy_prefix", "true".into()),
        ("remove_extra_whitespaces", "false".into()),
        ("allow_whitespace_only_pieces", "true".into()),
        ("unk_id", "0".into()),
        ("bos_id", "1".into()),
        ("eos_id", "2".into()),
        ("pad_id", "-1".into()),
        ("num_threads", threads.max(1).to_string()),
        // langadapt already sampled (--max-sentences, --seed); the trainer takes every sentence in order.
        ("input_sentence_size", "0".into()),
        ("shuffle_input_sentence", "false".into()),
        ("minloglevel", if quiet { "2" } else { "0" }.into()),
    ];
    let c = |s: &str| CString::new(s).map_err(|_| VocabError::Train(format!("NUL byte in trainer setting {s:?}")));
    let keys = kwargs.iter().map(|(k, _)| c(k)).collect::<Result<Vec<_>, _>>()?;
    let values = kwargs.iter().map(|(_, v)| c(v)).collect::<Result<Vec<_>, _>>()?;
    let key_ptrs: Vec<*const c_char> = keys.iter().map(|k| k.as_ptr()).collect();
    let value_ptrs: Vec<*const c_char> = values.iter().map(|v| v.as_ptr()).collect();
    let sent_ptrs: Vec<*const c_char> = sentences.iter().map(|s| s.as_ptr() as *const c_char).collect();
    let lens: Vec<usize> = sentences.iter().map(String::len).collect();
    let mut out: *mut c_char = std::ptr::null_mut();
    let mut out_len = 0usize;
    let mut err = vec![0 as c_char; 4096];
    // SAFETY: every pointer outlives the call; sentences are passed with explicit lengths (no NUL needed);
    // the model buffer is malloc'd by the shim and freed below with its own free.
    let rc = unsafe {
        langadapt_spm_train(
            key_ptrs.as_ptr(),
            value_ptrs.as_ptr(),
            key_ptrs.len(),
            sent_ptrs.as_ptr(),
            lens.as_ptr(),
            sent_ptrs.len(),
            &mut out,
            &mut out_len,
            err.as_mut_ptr(),
            err.len(),
        )
    };
    if rc != 0 {
        let bytes: Vec<u8> = err.iter().take_while(|&&b| b != 0).map(|&b| b as u8).collect();
        return Err(VocabError::Train(format!("sentencepiece trainer: {}", String::from_utf8_lossy(&bytes))));
    }
    // SAFETY: the shim returned `out_len` bytes at `out`.
    let bytes = unsafe { std::slice::from_raw_parts(out as *const u8, out_len) }.to_vec();
    unsafe { langadapt_spm_free(out) };
    ModelProto::from_bytes(&bytes).map_err(|e| VocabError::Train(format!("sentencepiece trainer output: {e}")))
}
