//! The model core against transformers: reference values in tests/fixtures/tiny-llama/reference.json.

use std::collections::BTreeMap;

use candle_core::{DType, Device, Tensor, D};
use langadapt::model::{generate, Checkpoint, ForwardOptions, GenerateOptions, LoraConfig, LoraTarget, Scorer, Train};
use serde_json::Value;

use crate::common::{fixture, langadapt, stderr};

fn reference() -> Value {
    let text = std::fs::read_to_string(fixture("tiny-llama/reference.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
}

fn scorer(batch: usize) -> Scorer {
    let ckpt = Checkpoint::open(&fixture("tiny-llama")).unwrap();
    Scorer::new(ckpt.load(&Device::Cpu, DType::F32).unwrap(), batch)
}

#[test]
fn token_logprobs_match_transformers() {
    let r = reference();
    let s = scorer(4);
    for seq in r["sequences"].as_array().unwrap() {
        let ids = ids(&seq["ids"]);
        let got = s.token_logprobs(&ids).unwrap();
        let want = floats(&seq["token_logprobs"]);
        assert_eq!(got.len(), want.len());
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!((f64::from(*g) - w).abs() <= 1e-4, "{} token {i}: {g} vs {w}", seq["lang"]);
        }
        let sum: f64 = got.iter().map(|&g| f64::from(g)).sum();
        let tol = 1e-4 * want.len() as f64;
        assert!((sum - seq["sum"].as_f64().unwrap()).abs() <= tol, "{} sum {sum}", seq["lang"]);
    }
}

#[test]
fn logits_and_top5_match_transformers() {
    let r = reference();
    let sample = &r["logits_sample"];
    let ids = ids(&sample["ids"]);
    let model = scorer(1).model().clone();
    let input = Tensor::new(ids.as_slice(), &Device::Cpu).unwrap().unsqueeze(0).unwrap();
    let logits = model.forward(&input, ForwardOptions::default()).unwrap().squeeze(0).unwrap();
    let last: Vec<f32> = logits.get(ids.len() - 1).unwrap().to_vec1().unwrap();
    for (i, (g, w)) in last.iter().zip(floats(&sample["last_position_logits"])).enumerate() {
        assert!((f64::from(*g) - w).abs() <= 1e-4, "logit {i}: {g} vs {w}");
    }
    let sorted = logits.arg_sort_last_dim(false).unwrap().narrow(D::Minus1, 0, 5).unwrap();
    let top5: Vec<Vec<u32>> = sorted.to_vec2().unwrap();
    let want: Vec<Vec<u32>> = sample["top5_ids"].as_array().unwrap().iter().map(ids_of).collect();
    assert_eq!(top5, want);
}

fn ids_of(v: &Value) -> Vec<u32> {
    ids(v)
}

/// lm-evaluation-harness step 3: `(context_enc + continuation_enc)[-(max_len+1):]`, last n_cont scored.
fn continuation_requests(r: &Value) -> Vec<(Vec<u32>, usize)> {
    let max_len = r["meta"]["config"]["max_position_embeddings"].as_u64().unwrap() as usize;
    r["continuations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let cont = ids(&c["continuation_enc"]);
            let mut all = ids(&c["context_enc"]);
            all.extend(&cont);
            let start = all.len().saturating_sub(max_len + 1);
            (all[start..].to_vec(), cont.len())
        })
        .collect()
}

#[test]
fn continuation_scores_match_lm_eval_for_any_batch_size() {
    let r = reference();
    let requests = continuation_requests(&r);
    let one = scorer(1).score(&requests).unwrap();
    let many = scorer(7).score(&requests).unwrap();
    for ((c, a), b) in r["continuations"].as_array().unwrap().iter().zip(&one).zip(&many) {
        let n = c["n_cont_tokens"].as_u64().unwrap() as f64;
        let want = c["ll"].as_f64().unwrap();
        assert!((a.ll - want).abs() <= 1e-4 * n, "{}: ll {} vs {want}", c["id"], a.ll);
        assert_eq!(a.is_greedy, c["is_greedy"].as_bool().unwrap(), "{}", c["id"]);
        // Padding changes the shapes of the matmuls, so only float rounding may differ.
        assert!((a.ll - b.ll).abs() <= 1e-6 * n.max(10.0), "{}: batch 1 {} vs batch 7 {}", c["id"], a.ll, b.ll);
        assert_eq!(a.is_greedy, b.is_greedy);
    }
}

#[test]
fn rolling_windows_give_transformers_perplexity() {
    let r = reference();
    let s = scorer(3);
    for roll in r["rolling"].as_array().unwrap() {
        let windows: Vec<(Vec<u32>, usize)> = roll["windows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| {
                let cont = ids(&w["continuation_ids"]);
                let mut all = ids(&w["context_ids"]);
                all.extend(&cont);
                (all, cont.len())
            })
            .collect();
        let ll: f64 = s.score(&windows).unwrap().iter().map(|x| x.ll).sum();
        let n_tokens = roll["n_tokens"].as_f64().unwrap();
        assert!((ll - roll["ll"].as_f64().unwrap()).abs() <= 1e-4 * n_tokens);
        let ppl = (-ll / n_tokens).exp();
        let want = roll["token_perplexity"].as_f64().unwrap();
        assert!(((ppl - want) / want).abs() <= 1e-4, "token perplexity {ppl} vs {want}");
        let bpb = -ll / roll["n_bytes"].as_f64().unwrap() / std::f64::consts::LN_2;
        assert!((bpb - roll["bits_per_byte"].as_f64().unwrap()).abs() <= 1e-4);
    }
}

#[test]
fn greedy_generation_matches_transformers_batched() {
    let r = reference();
    let ckpt = Checkpoint::open(&fixture("tiny-llama")).unwrap();
    let model = ckpt.load(&Device::Cpu, DType::F32).unwrap();
    let tok = ckpt.tokenizer().unwrap();
    let cases = r["greedy"].as_array().unwrap();
    let prompts: Vec<Vec<u32>> = cases.iter().map(|g| ids(&g["prompt_ids"])).collect();
    let opts = GenerateOptions { max_new_tokens: 24, stop_at_eos: false, ..Default::default() };
    // All prompts in one left-padded batch, then each alone: both must give transformers' ids.
    let batched = generate(&model, &tok, &prompts, &opts).unwrap();
    for (g, out) in cases.iter().zip(&batched) {
        assert_eq!(out.ids, ids(&g["new_ids"]), "prompt {}", g["prompt"]);
        assert_eq!(out.text, g["text_tokenizers"].as_str().unwrap());
        let alone = generate(&model, &tok, &[ids(&g["prompt_ids"])], &opts).unwrap();
        assert_eq!(alone[0].ids, out.ids);
    }
}

#[test]
fn generation_stops_at_eos_and_stop_sequences() {
    let r = reference();
    let ckpt = Checkpoint::open(&fixture("tiny-llama")).unwrap();
    let model = ckpt.load(&Device::Cpu, DType::F32).unwrap();
    let tok = ckpt.tokenizer().unwrap();
    for g in r["greedy"].as_array().unwrap() {
        let want = ids(&g["new_ids"]);
        let opts = GenerateOptions { max_new_tokens: 24, ..Default::default() };
        let out = generate(&model, &tok, &[ids(&g["prompt_ids"])], &opts).unwrap().remove(0);
        match g["first_eos_index"].as_u64() {
            Some(k) => assert_eq!(out.ids, want[..k as usize]),
            None => assert_eq!(out.ids, want),
        }
        // A stop string taken from the middle of the greedy text cuts the text right before it.
        let text = g["text_tokenizers"].as_str().unwrap();
        let chars: Vec<char> = text.chars().collect();
        if chars.len() > 6 {
            let stop: String = chars[chars.len() / 2..chars.len() / 2 + 2].iter().collect();
            let opts = GenerateOptions {
                max_new_tokens: 24,
                stop_at_eos: false,
                stop: vec![stop.clone()],
                ..Default::default()
            };
            let out = generate(&model, &tok, &[ids(&g["prompt_ids"])], &opts).unwrap().remove(0);
            assert_eq!(out.text, &text[..text.find(&stop).unwrap()]);
        }
    }
}

#[test]
fn sampling_is_reproducible_with_a_seed() {
    let ckpt = Checkpoint::open(&fixture("tiny-llama")).unwrap();
    let model = ckpt.load(&Device::Cpu, DType::F32).unwrap();
    let tok = ckpt.tokenizer().unwrap();
    let prompt = vec![tok.encode("Merhaba dünya", true).unwrap()];
    let opts = |seed| GenerateOptions {
        max_new_tokens: 16,
        temperature: 1.0,
        top_p: 0.9,
        seed,
        stop_at_eos: false,
        ..Default::default()
    };
    let a = generate(&model, &tok, &prompt, &opts(7)).unwrap();
    let b = generate(&model, &tok, &prompt, &opts(7)).unwrap();
    let c = generate(&model, &tok, &prompt, &opts(8)).unwrap();
    assert_eq!(a[0].ids, b[0].ids);
    assert_ne!(a[0].ids, c[0].ids);
}

fn logits_of(model: &langadapt::model::Llama, ids: &[u32]) -> Vec<Vec<f32>> {
    let input = Tensor::new(ids, &Device::Cpu).unwrap().unsqueeze(0).unwrap();
    model.forward(&input, ForwardOptions::default()).unwrap().squeeze(0).unwrap().to_vec2().unwrap()
}

fn max_diff(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    a.iter().flatten().zip(b.iter().flatten()).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[test]
fn save_reloads_identically_single_and_sharded() {
    let ckpt = Checkpoint::open(&fixture("tiny-llama")).unwrap();
    let weights = ckpt.read_all(&Device::Cpu).unwrap();
    let ids = [1u32, 300, 400, 500, 600, 700];
    let want = logits_of(&ckpt.load(&Device::Cpu, DType::F32).unwrap(), &ids);
    let dir = tempfile::tempdir().unwrap();
    for (name, shard) in [("single", u64::MAX), ("sharded", 100_000)] {
        let out = dir.path().join(name);
        let opts = langadapt::model::SaveOptions { max_shard_bytes: shard, dtype: None };
        ckpt.save(&weights, &out, &opts).unwrap();
        let again = Checkpoint::open(&out).unwrap();
        assert_eq!(max_diff(&logits_of(&again.load(&Device::Cpu, DType::F32).unwrap(), &ids), &want), 0.0);
        assert!(out.join("tokenizer.model").is_file() && out.join("tokenizer.json").is_file());
        assert_eq!(out.join("model.safetensors.index.json").is_file(), name == "sharded", "{name}");
    }
}

#[test]
fn bf16_load_is_close_to_f32() {
    let ckpt = Checkpoint::open(&fixture("tiny-llama")).unwrap();
    let ids = [1u32, 300, 400, 500];
    let a = logits_of(&ckpt.load(&Device::Cpu, DType::F32).unwrap(), &ids);
    let b = logits_of(&ckpt.load(&Device::Cpu, DType::BF16).unwrap(), &ids);
    let diff = max_diff(&a, &b);
    assert!(diff > 0.0 && diff < 0.5, "bf16 vs f32 logits differ by {diff}");
}

#[test]
fn lora_merge_equals_adapter_forward() {
    let ckpt = Checkpoint::open(&fixture("tiny-llama")).unwrap();
    let cfg = LoraConfig {
        r: 4,
        alpha: 8.0,
        dropout: 0.0,
        targets: LoraTarget::ALL.to_vec(),
        modules_to_save: vec!["lm_head".into()],
        use_rslora: false,
    };
    let save = ["lm_head".to_string()];
    let trainable = ckpt.load_trainable(&Device::Cpu, DType::F32, Some(&cfg), Train::Matching(&save)).unwrap();
    // B starts at zero (identity update); give every factor and the head a deterministic change of the size
    // a trained adapter has (0.01).
    for (name, var) in trainable.trainable_vars() {
        let n = var.elem_count();
        let wave = Tensor::arange(0f32, n as f32, &Device::Cpu).unwrap().sin().unwrap().reshape(var.shape()).unwrap();
        let moved = (var.as_tensor() + (wave * 0.01).unwrap()).unwrap();
        var.set(&moved).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    let dir = tempfile::tempdir().unwrap();
    let adapter = dir.path().join("adapter");
    langadapt::model::save_adapter(&trainable.adapter_weights(), &cfg, &trainable.weights(), "tiny-llama", &adapter)
        .unwrap();
    let ids = [1u32, 310, 420, 530, 640, 750, 860];
    let with_adapter = logits_of(&ckpt.load_with_adapter(&adapter, &Device::Cpu, DType::F32).unwrap(), &ids);
    assert!(max_diff(&with_adapter, &logits_of(&trainable.model().unwrap(), &ids)) <= 1e-5);
    let base = logits_of(&ckpt.load(&Device::Cpu, DType::F32).unwrap(), &ids);
    assert!(max_diff(&with_adapter, &base) > 1e-2, "the adapter changes the output");

    let merged_dir = dir.path().join("merged");
    let out = langadapt(&[
        "model",
        "merge-lora",
        fixture("tiny-llama").to_str().unwrap(),
        adapter.to_str().unwrap(),
        "--out",
        merged_dir.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let merged = Checkpoint::open(&merged_dir).unwrap().load(&Device::Cpu, DType::F32).unwrap();
    let diff = max_diff(&logits_of(&merged, &ids), &with_adapter);
    // f32 rounds W+BA and Wx+B(Ax) differently: 1e-5 relative to the largest logit is float noise, while a
    // wrong scale, transpose or missing module moves logits by > 1e-2 (checked above against the base).
    let scale = with_adapter.iter().flatten().fold(1f32, |m, x| m.max(x.abs()));
    assert!(diff <= 1e-5 * scale, "merged vs adapter forward differ by {diff} (largest logit {scale})");
    let peft: Value =
        serde_json::from_str(&std::fs::read_to_string(adapter.join("adapter_config.json")).unwrap()).unwrap();
    assert_eq!(peft["peft_type"], "LORA");
    assert_eq!(peft["r"], 4);
    assert_eq!(peft["modules_to_save"][0], "lm_head");
}

/// Mean next-token loss of `ids` (what the trainer minimizes).
fn loss(model: &langadapt::model::Llama, ids: &[u32]) -> Tensor {
    let input = Tensor::new(&ids[..ids.len() - 1], &Device::Cpu).unwrap().unsqueeze(0).unwrap();
    let target = Tensor::new(&ids[1..], &Device::Cpu).unwrap();
    let logits =
        model.forward(&input, ForwardOptions { train: Some(0), ..Default::default() }).unwrap().squeeze(0).unwrap();
    candle_nn::loss::cross_entropy(&logits, &target).unwrap()
}

#[test]
fn gradients_reach_every_parameter_and_match_finite_differences() {
    let ckpt = Checkpoint::open(&fixture("tiny-llama")).unwrap();
    let t = ckpt.load_trainable(&Device::Cpu, DType::F32, None, Train::All).unwrap();
    let model = t.model().unwrap();
    let ids = [1u32, 300, 415, 520, 9, 640, 750, 861, 299, 42];
    let grads = loss(&model, &ids).backward().unwrap();
    let vars = t.trainable_vars();
    assert_eq!(vars.len(), 2 * 9 + 3, "every tensor of the checkpoint is a variable");
    for (name, var) in &vars {
        let g = grads.get(var).unwrap_or_else(|| panic!("{name}: no gradient"));
        let norm = g.sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
        // The embedding only gets gradient on rows in the input; the norm over the whole matrix is > 0.
        assert!(norm > 0.0, "{name}: zero gradient");
    }
    // Central differences in f64-sized steps on a few single weights.
    let mut checked = 0;
    for (name, var) in
        vars.iter().filter(|(n, _)| n.contains("layers.1") || n.contains("norm.weight") || n.contains("embed"))
    {
        let g = grads.get(var).unwrap().flatten_all().unwrap();
        let flat: Vec<f32> = g.to_vec1().unwrap();
        let (idx, &analytic) = flat.iter().enumerate().max_by(|a, b| a.1.abs().total_cmp(&b.1.abs())).unwrap();
        let orig = var.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let eps = 1e-2f32;
        let at = |delta: f32| {
            let mut v = orig.clone();
            v[idx] += delta;
            var.set(&Tensor::from_vec(v, var.shape(), &Device::Cpu).unwrap()).unwrap();
            loss(&model, &ids).to_scalar::<f32>().unwrap()
        };
        let numeric = (at(eps) - at(-eps)) / (2.0 * eps);
        var.set(&Tensor::from_vec(orig, var.shape(), &Device::Cpu).unwrap()).unwrap();
        let rel = (numeric - analytic).abs() / analytic.abs().max(1e-3);
        assert!(rel < 2e-2, "{name}[{idx}]: analytic {analytic} vs numeric {numeric}");
        checked += 1;
    }
    assert!(checked >= 5, "checked {checked} parameters");
}

#[test]
fn embed_align_trains_only_embeddings_and_head() {
    let ckpt = Checkpoint::open(&fixture("tiny-llama")).unwrap();
    let parts = ["embed_tokens".to_string(), "lm_head".to_string()];
    let t = ckpt.load_trainable(&Device::Cpu, DType::BF16, None, Train::Matching(&parts)).unwrap();
    let vars = t.trainable_vars();
    let names: Vec<&str> = vars.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["lm_head.weight", "model.embed_tokens.weight"]);
    assert!(vars.iter().all(|(_, v)| v.dtype() == DType::F32), "trained weights are f32 masters");
    // The frozen rest stays in the compute dtype: no f32 copy, no variable.
    let weights = t.weights();
    assert_eq!(weights.len(), 2 * 9 + 3);
    for (name, w) in &weights {
        let want = if names.contains(&name.as_str()) { DType::F32 } else { DType::BF16 };
        assert_eq!(w.dtype(), want, "{name}");
    }
    // A step's gradients reach the trained weights and nothing else is kept for the frozen ones.
    let ids = [1u32, 300, 415, 520, 9, 640, 750, 861, 299, 42];
    let grads = loss(&t.model().unwrap(), &ids).backward().unwrap();
    for (name, var) in &vars {
        assert!(grads.get(var).is_some(), "{name}: no gradient");
    }
    let held: usize = grads.get_ids().map(|id| grads.get_id(*id).unwrap().elem_count()).sum();
    let trained: usize = vars.iter().map(|(_, v)| v.elem_count()).sum();
    let frozen: usize = weights.iter().filter(|(n, _)| !names.contains(&n.as_str())).map(|(_, w)| w.elem_count()).sum();
    assert!(held < trained + frozen / 10, "the gradient store holds {held} values for {trained} trained ones");
}

#[test]
fn pickle_checkpoints_and_bad_configs_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let src = fixture("tiny-llama/config.json");
    std::fs::copy(&src, dir.path().join("config.json")).unwrap();
    std::fs::write(dir.path().join("pytorch_model.bin"), b"not loaded").unwrap();
    let err = Checkpoint::open(dir.path()).unwrap_err().to_string();
    assert!(err.contains("pickle") && err.contains("safe_serialization=True"), "{err}");

    let mut cfg: Value = serde_json::from_str(&std::fs::read_to_string(&src).unwrap()).unwrap();
    cfg["num_key_value_heads"] = 3.into();
    std::fs::write(dir.path().join("config.json"), cfg.to_string()).unwrap();
    let err = Checkpoint::open(dir.path()).unwrap_err().to_string();
    assert!(err.contains("config.json") && err.contains("not a multiple of num_key_value_heads 3"), "{err}");

    cfg["num_key_value_heads"] = 4.into();
    cfg["model_type"] = "gpt2".into();
    std::fs::write(dir.path().join("config.json"), cfg.to_string()).unwrap();
    let err = Checkpoint::open(dir.path()).unwrap_err().to_string();
    assert!(err.contains("\"gpt2\" is not a LLaMA-family model"), "{err}");
}

#[test]
fn gqa_and_llama3_rope_configs_load() {
    // A GQA model with llama3 RoPE scaling and tied embeddings, built from the fixture's tensors.
    let ckpt = Checkpoint::open(&fixture("tiny-llama")).unwrap();
    let w = ckpt.read_all(&Device::Cpu).unwrap();
    let mut gqa: BTreeMap<String, Tensor> = BTreeMap::new();
    for (k, t) in &w {
        if k == "lm_head.weight" {
            continue;
        }
        // k/v projections keep 2 of the 4 heads (rows 0..32 of 64).
        let t = if k.ends_with("k_proj.weight") || k.ends_with("v_proj.weight") {
            t.narrow(0, 0, 32).unwrap()
        } else {
            t.clone()
        };
        gqa.insert(k.clone(), t);
    }
    let dir = tempfile::tempdir().unwrap();
    ckpt.save(&gqa, dir.path(), &Default::default()).unwrap();
    let mut cfg: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("config.json")).unwrap()).unwrap();
    cfg["num_key_value_heads"] = 2.into();
    cfg["tie_word_embeddings"] = true.into();
    cfg["rope_scaling"] = serde_json::json!({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
        "high_freq_factor": 4.0, "original_max_position_embeddings": 64});
    std::fs::write(dir.path().join("config.json"), cfg.to_string()).unwrap();
    let model = Checkpoint::open(dir.path()).unwrap().load(&Device::Cpu, DType::F32).unwrap();
    let logits = logits_of(&model, &[1, 300, 400]);
    assert_eq!(logits.len(), 3);
    assert!(logits.iter().flatten().all(|x| x.is_finite()));
}

#[test]
fn packed_segments_do_not_see_each_other() {
    let model = scorer(1).model().clone();
    let (a, b) = ([1u32, 300, 400, 500], [1u32, 610, 720]);
    let packed: Vec<u32> = a.iter().chain(&b).copied().collect();
    let input = Tensor::new(packed.as_slice(), &Device::Cpu).unwrap().unsqueeze(0).unwrap();
    let seg = Tensor::new(&[0u32, 0, 0, 0, 1, 1, 1], &Device::Cpu).unwrap().unsqueeze(0).unwrap();
    let opts = ForwardOptions { segments: Some(&seg), ..Default::default() };
    let got: Vec<Vec<f32>> = model.forward(&input, opts).unwrap().squeeze(0).unwrap().to_vec2().unwrap();
    let (want_a, want_b) = (logits_of(&model, &a), logits_of(&model, &b));
    // Other matmul shapes round differently: 1e-5 relative to the largest logit is float noise.
    let tol = 1e-5 * want_a.iter().chain(&want_b).flatten().fold(1f32, |m, x| m.max(x.abs()));
    assert!(max_diff(&got[..4], &want_a) <= tol, "{}", max_diff(&got[..4], &want_a));
    assert!(max_diff(&got[4..], &want_b) <= tol, "the second example must not attend to the first");
    // Without segments the second example does see the first.
    assert!(max_diff(&logits_of(&model, &packed)[4..], &want_b) > 1e-3);
}

/// Issue 21/15: inference attention in query blocks gives the numbers of the whole-matrix path (left padding
/// and a batch of two included), so long-context scoring needs memory linear in the length.
#[test]
fn attention_in_query_blocks_equals_the_whole_matrix() {
    let whole = scorer(1).model().clone().with_query_block(usize::MAX);
    let ids: Vec<u32> = (0..200u32).map(|i| 3 + (i * 37 + i / 7) % 990).collect();
    let mut padded = vec![0u32; 40];
    padded.extend(&ids[..160]);
    let input = Tensor::new(vec![ids.clone(), padded.clone()], &Device::Cpu).unwrap();
    let mask: Vec<Vec<u32>> = vec![vec![1; 200], padded.iter().enumerate().map(|(i, _)| u32::from(i >= 40)).collect()];
    let mask = Tensor::new(mask, &Device::Cpu).unwrap();
    let run = |m: &langadapt::model::Llama| -> Vec<Vec<Vec<f32>>> {
        m.forward(&input, ForwardOptions { mask: Some(&mask), ..Default::default() }).unwrap().to_vec3().unwrap()
    };
    let want = run(&whole);
    // The LM head in blocks of scored positions: the same log-probabilities (other matmul shapes round
    // differently in the last bits).
    let close = |a: &[f32], b: &[f32]| a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() <= 1e-5);
    let scores = scorer(2).token_logprobs(&ids).unwrap();
    for rows in [1, 7, 100] {
        assert!(close(&scorer(2).with_logit_rows(rows).token_logprobs(&ids).unwrap(), &scores), "{rows} rows");
    }
    // Requests sharing one forward pass, with other targets and spans, across block edges.
    let mut other = ids[..50].to_vec();
    other[49] = 7;
    let requests = vec![(ids[..50].to_vec(), 10), (other, 10), (ids[..50].to_vec(), 3), (ids[..30].to_vec(), 29)];
    let want_scores = scorer(2).score(&requests).unwrap();
    for (got, want) in scorer(2).with_logit_rows(4).score(&requests).unwrap().iter().zip(&want_scores) {
        assert!(close(&got.logprobs, &want.logprobs) && got.is_greedy == want.is_greedy, "{got:?} vs {want:?}");
    }
    for block in [1, 7, 64, 199] {
        let got = run(&whole.clone().with_query_block(block));
        for (r, (g, w)) in got.iter().zip(&want).enumerate() {
            let rows = if r == 0 { 0..200 } else { 40..200 };
            let d = max_diff(&g[rows.clone()], &w[rows]);
            // Each block reads only the keys up to its last query, so its products have other shapes and
            // round differently: logits up to ~11 agree to a few dozen f32 steps (one step there is 9.5e-7;
            // blocks of one query, single-row products, measured 2.8e-6 relative).
            let largest = w.iter().flatten().fold(1f32, |a, b| a.max(b.abs()));
            assert!(d <= 4e-6 * largest, "block {block}, row {r}: {d} (largest logit {largest})");
        }
    }
}

#[test]
fn cli_info_and_generate() {
    let ckpt = fixture("tiny-llama");
    let out = langadapt(&["model", "info", ckpt.to_str().unwrap(), "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let info: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(info["parameters"], 228_672);
    assert_eq!(info["dtypes"][0], "f32");
    assert_eq!(info["architecture"]["num_hidden_layers"], 2);
    assert_eq!(info["tokenizer"][1], 1000);

    let r = reference();
    let g = &r["greedy"][0];
    let prompt = g["prompt"].as_str().unwrap();
    let out = langadapt(&[
        "model",
        "generate",
        ckpt.to_str().unwrap(),
        "--prompt",
        prompt,
        "--greedy",
        "--ignore-eos",
        "--max-new-tokens",
        "24",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(String::from_utf8(out.stdout).unwrap(), format!("{}\n", g["text_tokenizers"].as_str().unwrap()));

    let out = langadapt(&["model", "generate", "/nonexistent", "--prompt", "x"]);
    assert_eq!(stderr(&out).trim(), "error: /nonexistent: not a directory (expected a Hugging Face checkpoint folder)");
}

#[test]
fn choices_after_one_prompt_share_a_forward_pass_with_identical_numbers() {
    let s = scorer(1);
    let ctx = [1u32, 300, 415, 520, 9, 640];
    // " A".." D"-style one-token choices, and two-token continuations sharing their first token.
    let mut requests: Vec<(Vec<u32>, usize)> =
        [700u32, 701, 702, 703].iter().map(|&c| ([&ctx[..], &[c]].concat(), 1)).collect();
    requests.push(([&ctx[..], &[800, 801]].concat(), 2));
    requests.push(([&ctx[..], &[800, 802]].concat(), 2));
    let together = s.score(&requests).unwrap();
    for (r, t) in requests.iter().zip(&together) {
        let alone = s.score(std::slice::from_ref(r)).unwrap().remove(0);
        assert_eq!(alone, *t, "grouped scoring changed a number");
    }
}

/// The KV cache writes each step into buffers and attends over views of them: decoding one token at a time
/// (buffers grown by doubling from the prompt's size, or sized up front) gives the hidden states of one
/// forward pass over the whole sequence.
#[test]
fn kv_cache_steps_equal_one_pass() {
    let model = scorer(1).model().clone();
    let layers = model.config().num_layers;
    let ids: Vec<u32> = (0..40u32).map(|i| 3 + (i * 53 + 11) % 990).collect();
    let ones = |n: usize| Tensor::ones((1, n), DType::U32, &Device::Cpu).unwrap();
    let input = |r: std::ops::Range<usize>| Tensor::new(&ids[r], &Device::Cpu).unwrap().unsqueeze(0).unwrap();
    let whole: Vec<Vec<f32>> = model
        .hidden(&input(0..40), ForwardOptions { mask: Some(&ones(40)), ..Default::default() })
        .unwrap()
        .squeeze(0)
        .unwrap()
        .to_vec2()
        .unwrap();
    for mut cache in [langadapt::model::KvCache::new(layers), langadapt::model::KvCache::with_capacity(layers, 40)] {
        let prompt = model.hidden(
            &input(0..9),
            ForwardOptions { mask: Some(&ones(9)), cache: Some(&mut cache), ..Default::default() },
        );
        let mut got: Vec<Vec<f32>> = prompt.unwrap().squeeze(0).unwrap().to_vec2().unwrap();
        for i in 9..40 {
            let h = model.hidden(
                &input(i..i + 1),
                ForwardOptions { mask: Some(&ones(1)), cache: Some(&mut cache), ..Default::default() },
            );
            got.extend(h.unwrap().squeeze(0).unwrap().to_vec2::<f32>().unwrap());
        }
        assert_eq!(cache.len(), 40);
        let d = max_diff(&got, &whole);
        assert!(d <= 1e-5, "{d}");
    }
}

/// Requests the model cannot answer are refused with what is wrong, before any forward pass: a token id past
/// the vocabulary (ids from another tokenizer), nothing to score, more tokens than the context.
#[test]
fn scoring_refuses_bad_requests_with_the_reason() {
    let s = scorer(2);
    let vocab = s.model().config().vocab_size;
    let cases: [(Vec<u32>, usize, &str); 3] = [
        (
            vec![1, 5, vocab as u32 + 7],
            1,
            &format!("token id {} is outside the model's vocabulary of {vocab}", vocab + 7),
        ),
        (vec![1, 5, 6], 0, "request 0: 0 continuation tokens of 3"),
        (vec![1; s.model().config().max_position_embeddings + 2], 1, "exceed the context of"),
    ];
    for (tokens, n_cont, want) in cases {
        let err = s.score(&[(tokens, n_cont)]).unwrap_err().to_string();
        assert!(err.contains(want), "{err}");
    }
}
