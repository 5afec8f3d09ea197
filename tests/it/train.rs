//! The trainer on the tiny checkpoint: every mode learns, freezes what it must, resumes bit for bit.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use langadapt::model::Checkpoint;
use langadapt::shards::{self, BuildConfig, Kind, SourceConfig};
use langadapt::train::{self, Mode, TrainConfig};
use langadapt::{Env, Progress};

use crate::common::{fixture, langadapt, stderr};

use std::sync::Arc;

use arrow::array::{ListBuilder, RecordBatch, StringBuilder, UInt32Builder, UInt8Builder};
use arrow::datatypes::{DataType, Field};
use langadapt::shards::{token_shard_schema, TokenShardReader};
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;

const ENV: Env = Env { threads: 2, progress: Progress { quiet: true } };

/// Repetitive Turkish documents, blank-line separated, the kind of text a model memorizes in a few steps.
pub(crate) fn corpus(dir: &Path) -> PathBuf {
    let docs: Vec<String> =
        (0..24).map(|i| format!("Kedi {} evde uyuyor. Köpek bahçede koşuyor. Kedi ve köpek arkadaş.", i % 3)).collect();
    let path = dir.join("corpus.txt");
    std::fs::write(&path, docs.join("\n\n")).unwrap();
    path
}

pub(crate) fn build_shards(dir: &Path, kind: Kind, source: PathBuf) -> PathBuf {
    let out = dir.join(format!("shards-{kind:?}"));
    let src = SourceConfig {
        name: "tr".into(),
        path: source,
        lang: "tr".into(),
        share: Some(1.0),
        epochs: None,
        limit: None,
    };
    // The Alpaca prompt alone is ~100 tokens with the tiny byte-fallback vocabulary.
    let seq_len = if kind == Kind::Sft { 256 } else { 32 };
    let mut cfg = BuildConfig::single(fixture("tiny-llama"), src, seq_len, out.clone()).unwrap();
    cfg.kind = kind;
    cfg.val_share = 0.2;
    cfg.seed = 1;
    if kind == Kind::Sft {
        cfg.pack = true;
        cfg.template = Some("alpaca".into());
    }
    shards::run(&cfg, dir, &ENV).unwrap();
    out
}

fn config(dir: &Path, shards: &Path, mode: Mode, out: &str) -> TrainConfig {
    let text = format!(
        "model = {:?}\ntrain = {:?}\nval = {:?}\nout = {:?}\nmax_steps = 30\nmicro_batch = 4\nlr = 1e-2\n\
         warmup_steps = 2\nseed = 7\n",
        fixture("tiny-llama"),
        shards.join("train"),
        shards.join("val"),
        dir.join(out)
    );
    let mut cfg: TrainConfig = toml::from_str(&text).unwrap();
    cfg.mode = mode;
    cfg
}

pub(crate) fn tensors(dir: &Path) -> BTreeMap<String, Tensor> {
    Checkpoint::open(dir).unwrap().read_all(&Device::Cpu).unwrap()
}

fn same(a: &Tensor, b: &Tensor) -> bool {
    a.flatten_all().unwrap().to_vec1::<f32>().unwrap() == b.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

#[test]
fn full_training_learns_and_the_checkpoint_reloads_with_the_same_val_loss() {
    let dir = tempfile::tempdir().unwrap();
    let shards = build_shards(dir.path(), Kind::Pretrain, corpus(dir.path()));
    let cfg = config(dir.path(), &shards, Mode::Full, "full");
    let report = train::run(&cfg, None, &ENV).unwrap();
    let (first, last) = (report.first_loss.unwrap(), report.last_loss.unwrap());
    assert!(last < 0.3 * first, "loss {first} -> {last}");
    assert_eq!(report.trained_parameters, 228_672, "every weight of the tiny model");
    // Reload final/ and train 0 more steps with validation: the same val loss comes out.
    let mut again = cfg.clone();
    again.model = report.final_dir.clone();
    again.out = dir.path().join("reload");
    again.lr = 1e-30;
    again.max_steps = Some(1);
    again.warmup_steps = 0;
    let before = train::run(&again, None, &ENV).unwrap();
    let metrics = std::fs::read_to_string(cfg.out.join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().count(), 31, "30 steps + 1 validation line");
    assert!(metrics.lines().next().unwrap().contains("\"tokens_per_s\""));
    let v = report.val_loss.unwrap();
    assert!((before.val_loss.unwrap() - v).abs() < 1e-4 * v, "{} vs {v}", before.val_loss.unwrap());
}

#[test]
fn embed_align_changes_only_embeddings_and_head() {
    let dir = tempfile::tempdir().unwrap();
    let shards = build_shards(dir.path(), Kind::Pretrain, corpus(dir.path()));
    let cfg = config(dir.path(), &shards, Mode::EmbedAlign, "align");
    let report = train::run(&cfg, None, &ENV).unwrap();
    assert!(report.last_loss.unwrap() < 0.8 * report.first_loss.unwrap());
    let (base, after) = (tensors(&fixture("tiny-llama")), tensors(&report.final_dir));
    for (name, t) in &base {
        let trained = name == "model.embed_tokens.weight" || name == "lm_head.weight";
        assert_eq!(!same(t, &after[name]), trained, "{name}");
    }
}

#[test]
fn lora_trains_adapters_and_listed_modules_only() {
    let dir = tempfile::tempdir().unwrap();
    let shards = build_shards(dir.path(), Kind::Pretrain, corpus(dir.path()));
    let mut cfg = config(dir.path(), &shards, Mode::Lora, "lora");
    cfg.lora = Some(toml::from_str("r = 4\nalpha = 16\ndropout = 0.05\nmodules_to_save = [\"lm_head\"]").unwrap());
    cfg.merge_lora = true;
    let report = train::run(&cfg, None, &ENV).unwrap();
    assert!(report.last_loss.unwrap() < 0.6 * report.first_loss.unwrap());
    let adapter = report.final_dir.join("adapter");
    assert!(adapter.join("adapter_config.json").is_file() && adapter.join("adapter_model.safetensors").is_file());
    let (base, merged) = (tensors(&fixture("tiny-llama")), tensors(&report.final_dir));
    for (name, t) in &base {
        let adapted = name.contains("_proj.") || name == "lm_head.weight";
        assert_eq!(!same(t, &merged[name]), adapted, "{name}");
    }
}

fn instructions(dir: &Path) -> PathBuf {
    let lines: Vec<String> = (0..16)
        .map(|i| {
            serde_json::json!({"id": i.to_string(), "instruction": "Selamla.", "input": if i % 2 == 0 { "" } else { "Ali" },
                "output": "Merhaba!", "lang": "tr"})
            .to_string()
        })
        .collect();
    let path = dir.join("sft.jsonl");
    std::fs::write(&path, lines.join("\n")).unwrap();
    path
}

#[test]
fn sft_on_packed_rows_learns_the_responses() {
    let dir = tempfile::tempdir().unwrap();
    let shards = build_shards(dir.path(), Kind::Sft, instructions(dir.path()));
    let mut cfg = config(dir.path(), &shards, Mode::Sft, "sft");
    cfg.max_steps = Some(20);
    let report = train::run(&cfg, None, &ENV).unwrap();
    assert!(report.last_loss.unwrap() < 0.3 * report.first_loss.unwrap(), "{report:?}");
}

#[test]
fn resumed_run_equals_uninterrupted_run_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let shards = build_shards(dir.path(), Kind::Pretrain, corpus(dir.path()));
    let mut cfg = config(dir.path(), &shards, Mode::Lora, "resume");
    cfg.lora = Some(toml::from_str("r = 4\nalpha = 8\ndropout = 0.1\nmodules_to_save = [\"embed_tokens\"]").unwrap());
    cfg.max_steps = Some(8);
    cfg.save_every = 4;
    cfg.merge_lora = true;
    let whole = train::run(&cfg, None, &ENV).unwrap();
    let want = tensors(&whole.final_dir);
    let metrics = std::fs::read_to_string(cfg.out.join("metrics.jsonl")).unwrap();
    let resumed = train::run(&cfg, Some(&cfg.out.join("checkpoints/step-4")), &ENV).unwrap();
    assert_eq!(resumed.steps, 8);
    for (name, t) in tensors(&resumed.final_dir) {
        assert!(same(&t, &want[&name]), "{name} differs after resume");
    }
    let again = std::fs::read_to_string(cfg.out.join("metrics.jsonl")).unwrap();
    let losses =
        |m: &str| m.lines().map(|l| l.split("\"tokens_per_s\"").next().unwrap().to_string()).collect::<Vec<_>>();
    assert_eq!(losses(&again), losses(&metrics), "the resumed metrics repeat the same losses");
    // Issue 19 (3): the same run resumed into another output folder is accepted and ends with the same bytes.
    let mut moved = cfg.clone();
    moved.out = dir.path().join("elsewhere");
    let r = train::run(&moved, Some(&cfg.out.join("checkpoints/step-4")), &ENV).unwrap();
    for (name, t) in tensors(&r.final_dir) {
        assert!(same(&t, &want[&name]), "{name} differs after resuming into another folder");
    }
    // Another run's checkpoint is refused.
    let mut other = cfg.clone();
    other.seed = 8;
    let err = train::run(&other, Some(&cfg.out.join("checkpoints/step-4")), &ENV).unwrap_err().to_string();
    assert!(err.contains("written by a run with other settings"), "{err}");
}

/// Issue 19 (8): the LoRA factors are drawn from the run's seed, so two fresh runs write the same bytes.
#[test]
fn two_fresh_lora_runs_write_identical_adapters() {
    let dir = tempfile::tempdir().unwrap();
    let shards = build_shards(dir.path(), Kind::Pretrain, corpus(dir.path()));
    let run = |out: &str, seed: u64| {
        let mut cfg = config(dir.path(), &shards, Mode::Lora, out);
        cfg.lora = Some(toml::from_str("r = 4\nalpha = 8\ndropout = 0.1").unwrap());
        cfg.max_steps = Some(2);
        cfg.seed = seed;
        train::run(&cfg, None, &ENV).unwrap();
        let adapter = std::fs::read(cfg.out.join("final/adapter/adapter_model.safetensors")).unwrap();
        let metrics = std::fs::read_to_string(cfg.out.join("metrics.jsonl")).unwrap();
        let norms: Vec<String> = metrics.lines().map(|l| l.split("\"tokens_per_s\"").next().unwrap().into()).collect();
        (adapter, norms)
    };
    let (a, b, c) = (run("a", 7), run("b", 7), run("c", 8));
    assert!(a.0 == b.0, "same seed, different adapters");
    assert_eq!(a.1, b.1, "same seed, different step metrics");
    assert!(a.0 != c.0, "the seed must decide the adapter initialisation");
}

#[test]
fn gradient_accumulation_equals_the_larger_batch() {
    let dir = tempfile::tempdir().unwrap();
    let shards = build_shards(dir.path(), Kind::Pretrain, corpus(dir.path()));
    let mut big = config(dir.path(), &shards, Mode::Full, "big");
    big.max_steps = Some(5);
    let mut acc = big.clone();
    acc.out = dir.path().join("acc");
    acc.micro_batch = 2;
    acc.grad_accum = 2;
    let (a, b) = (train::run(&big, None, &ENV).unwrap(), train::run(&acc, None, &ENV).unwrap());
    let (ta, tb) = (tensors(&a.final_dir), tensors(&b.final_dir));
    for (name, t) in &ta {
        let diff = (t - &tb[name]).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(diff < 1e-4, "{name}: {diff}");
    }
    assert!((a.last_loss.unwrap() - b.last_loss.unwrap()).abs() < 1e-4);
}

#[test]
fn cli_flags_override_the_file_and_bad_configs_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let shards = build_shards(dir.path(), Kind::Pretrain, corpus(dir.path()));
    let toml_path = dir.path().join("train.toml");
    std::fs::write(
        &toml_path,
        format!(
            "model = {:?}\ntrain = {:?}\nout = \"run\"\nmax_steps = 50\nmicro_batch = 2\nlr = 1e-3\n",
            fixture("tiny-llama"),
            shards.join("train")
        ),
    )
    .unwrap();
    let out = langadapt(&["train", "--config", toml_path.to_str().unwrap(), "--max-steps", "2", "--json", "-q"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["steps"], 2);
    assert!(dir.path().join("run/final/model.safetensors").is_file());
    assert!(dir.path().join("run/manifest.json").is_file());

    std::fs::write(&toml_path, "model = \"m\"\ntrain = \"t\"\nout = \"o\"\nmax_step = 3\n").unwrap();
    let out = langadapt(&["train", "--config", toml_path.to_str().unwrap()]);
    // The file's own mistakes come with their line, even though flags are merged in afterwards.
    let want = format!("{}: line 4, column 1: unknown field `max_step`", toml_path.display());
    assert!(stderr(&out).contains(&want), "{}", stderr(&out));
    let out = langadapt(&["train", "--config", toml_path.to_str().unwrap(), "--mode", "lora"]);
    assert!(!out.status.success());

    // [lora] keys as flags change single keys of the file's table.
    std::fs::write(
        &toml_path,
        format!(
            "model = {:?}\ntrain = {:?}\nout = \"lora\"\nmax_steps = 1\nlr = 1e-3\nmode = \"lora\"\n[lora]\nr = 8\nalpha = 16\n",
            fixture("tiny-llama"),
            shards.join("train")
        ),
    )
    .unwrap();
    let out = langadapt(&[
        "train",
        "--config",
        toml_path.to_str().unwrap(),
        "--lora-r",
        "2",
        "--lora-targets",
        "q_proj,v_proj",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let adapter: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("lora/final/adapter/adapter_config.json")).unwrap())
            .unwrap();
    assert_eq!((adapter["r"].as_u64(), adapter["lora_alpha"].as_f64()), (Some(2), Some(16.0)));
    let mut targets: Vec<&str> =
        adapter["target_modules"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    targets.sort();
    assert_eq!(targets, ["q_proj", "v_proj"]);

    let mut cfg = config(dir.path(), &shards, Mode::Lora, "x");
    cfg.lora = None;
    let err = train::run(&cfg, None, &ENV).unwrap_err().to_string();
    assert_eq!(err, "train config: mode = \"lora\" needs a [lora] table");
    // LoRA flags with a mode that has no adapter: named in the config's own words, with what to do.
    let out = langadapt(&["train", "--config", toml_path.to_str().unwrap(), "--mode", "embed-align"]);
    assert!(
        stderr(&out).contains("[lora] is only used with mode lora or sft, not embed-align: drop the [lora] table"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn bf16_compute_with_f32_master_weights_tracks_f32() {
    let dir = tempfile::tempdir().unwrap();
    let shards = build_shards(dir.path(), Kind::Pretrain, corpus(dir.path()));
    let mut f32_cfg = config(dir.path(), &shards, Mode::Full, "f32");
    f32_cfg.max_steps = Some(12);
    let mut bf16_cfg = f32_cfg.clone();
    bf16_cfg.out = dir.path().join("bf16");
    bf16_cfg.dtype = "bf16".into();
    let (a, b) = (train::run(&f32_cfg, None, &ENV).unwrap(), train::run(&bf16_cfg, None, &ENV).unwrap());
    let (fa, fb) = (a.first_loss.unwrap(), b.first_loss.unwrap());
    assert!(fa != fb && ((fa - fb) / fa).abs() < 1e-2, "first-step loss f32 {fa} vs bf16 {fb}");
    assert!(b.last_loss.unwrap() < 0.5 * fb, "bf16 learns: {fb} -> {}", b.last_loss.unwrap());
    // The saved weights are the f32 master copies, not bf16-rounded values.
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(b.final_dir.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["dtype"], "float32");
    let w = &tensors(&b.final_dir)["model.layers.0.mlp.up_proj.weight"];
    let rounded = w.to_dtype(candle_core::DType::BF16).unwrap().to_dtype(candle_core::DType::F32).unwrap();
    assert!(!same(w, &rounded), "master weights keep f32 precision");
    let mut scaled = f32_cfg.clone();
    scaled.loss_scale_init = Some(1024.0);
    let err = train::run(&scaled, None, &ENV).unwrap_err().to_string();
    assert_eq!(
        err,
        "train config: loss_scale_init and loss_scale_window are for dtype = \"f16\" only (dtype is \"f32\")"
    );
    scaled.dtype = "f16".into();
    scaled.loss_scale_window = Some(0);
    let err = train::run(&scaled, None, &ENV).unwrap_err().to_string();
    assert_eq!(err, "train config: loss_scale_init must be a finite number > 0 and loss_scale_window >= 1");
}

/// The training-step lines of a run's `metrics.jsonl` (not the validation ones), without the timing field.
fn step_lines(out: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    text.lines()
        .filter(|l| !l.contains("val_loss"))
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            v.as_object_mut().unwrap().remove("tokens_per_s");
            v
        })
        .collect()
}

/// Issue 15: f16 compute with dynamic loss scaling. A scale of 2^40 overflows f16 in the backward pass: the
/// step is skipped (the weights stay the checkpoint's, bit for bit), counted in metrics.jsonl, and the scale
/// halves; then training proceeds and learns.
#[test]
fn f16_overflow_step_is_skipped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let shards = build_shards(dir.path(), Kind::Pretrain, corpus(dir.path()));
    let run = |out: &str, steps: usize| {
        let mut cfg = config(dir.path(), &shards, Mode::Full, out);
        cfg.dtype = "f16".into();
        cfg.loss_scale_init = Some(2f64.powi(40));
        cfg.max_steps = Some(steps);
        (train::run(&cfg, None, &ENV).unwrap(), step_lines(&cfg.out))
    };
    let (report, lines) = run("f16-skip", 1);
    assert_eq!(lines.len(), 1);
    let line = &lines[0];
    assert_eq!((line["step"].as_u64(), line["overflow_steps"].as_u64()), (Some(1), Some(1)), "{line}");
    assert_eq!(line["loss_scale"].as_f64(), Some(2f64.powi(40)));
    assert!(line.get("grad_norm").is_none(), "an overflow has no finite norm: {line}");
    assert!(line["loss"].as_f64().unwrap() > 1.0, "the loss itself is still reported: {line}");
    let start = tensors(&fixture("tiny-llama"));
    for (name, t) in tensors(&report.final_dir) {
        assert!(same(&t, &start[&name]), "{name} changed in a skipped step");
    }

    let (report, lines) = run("f16-learn", 40);
    let skipped = lines.iter().filter(|l| l.get("grad_norm").is_none()).count() as u64;
    assert_eq!(lines.last().unwrap()["overflow_steps"].as_u64(), Some(skipped));
    assert!((1..30).contains(&skipped), "{skipped} steps skipped");
    for pair in lines.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        let halved = a["loss_scale"].as_f64().unwrap() / 2.0;
        let overflowed = b["overflow_steps"].as_u64() > a["overflow_steps"].as_u64();
        assert_eq!(overflowed, b.get("grad_norm").is_none());
        if a.get("grad_norm").is_none() {
            assert_eq!(b["loss_scale"].as_f64(), Some(halved), "{a} -> {b}");
        }
    }
    let (first, last) = (report.first_loss.unwrap(), report.last_loss.unwrap());
    assert!(last < 0.5 * first, "f16 learns: {first} -> {last}");
}

/// Issue 15: the loss scaler's state is in the checkpoint, so a run resumed after the scale went down and up
/// again equals the uninterrupted one bit for bit (weights and metrics).
#[test]
fn f16_resume_across_a_scale_change_is_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let shards = build_shards(dir.path(), Kind::Pretrain, corpus(dir.path()));
    let mut cfg = config(dir.path(), &shards, Mode::Lora, "f16-resume");
    cfg.lora = Some(toml::from_str("r = 4\nalpha = 8\ndropout = 0.1\nmodules_to_save = [\"embed_tokens\"]").unwrap());
    cfg.dtype = "f16".into();
    cfg.loss_scale_init = Some(2f64.powi(21));
    cfg.loss_scale_window = Some(2);
    cfg.max_steps = Some(10);
    cfg.save_every = 5;
    let whole = train::run(&cfg, None, &ENV).unwrap();
    let adapter = |dir: &Path| {
        candle_core::safetensors::load(dir.join("adapter/adapter_model.safetensors"), &Device::Cpu).unwrap()
    };
    let want = adapter(&whole.final_dir);
    let lines = step_lines(&cfg.out);
    let scales: Vec<f64> = lines.iter().map(|l| l["loss_scale"].as_f64().unwrap()).collect();
    eprintln!("scales {scales:?}");
    assert!(scales[..5].windows(2).any(|w| w[1] < w[0]), "the scale went down before the checkpoint: {scales:?}");
    assert!(scales[5..].windows(2).any(|w| w[1] > w[0]), "and up after it: {scales:?}");
    let resumed = train::run(&cfg, Some(&cfg.out.join("checkpoints/step-5")), &ENV).unwrap();
    for (name, t) in adapter(&resumed.final_dir) {
        assert!(same(&t, &want[&name]), "{name} differs after resume");
    }
    assert_eq!(step_lines(&cfg.out), lines, "the resumed metrics repeat the same steps");
}

/// A token shard written by hand: `rows` of (ids, mask), `group_rows` rows per row group, segment ids
/// (the row number + 1 on every token) when `segments`.
fn write_token_file(path: &Path, rows: &[(Vec<u32>, Vec<u8>)], group_rows: usize, segments: bool) {
    let schema = token_shard_schema(segments);
    let item = |t: DataType| Field::new("item", t, false);
    let mut ids = ListBuilder::new(UInt32Builder::new()).with_field(item(DataType::UInt32));
    let mut mask = ListBuilder::new(UInt8Builder::new()).with_field(item(DataType::UInt8));
    let mut segs = ListBuilder::new(UInt32Builder::new()).with_field(item(DataType::UInt32));
    let mut source = StringBuilder::new();
    for (r, (i, m)) in rows.iter().enumerate() {
        ids.values().append_slice(i);
        ids.append(true);
        mask.values().append_slice(m);
        mask.append(true);
        segs.values().append_slice(&vec![r as u32 + 1; i.len()]);
        segs.append(true);
        source.append_value("tr");
    }
    let mut columns: Vec<arrow::array::ArrayRef> =
        vec![Arc::new(ids.finish()), Arc::new(mask.finish()), Arc::new(source.finish())];
    if segments {
        columns.push(Arc::new(segs.finish()));
    }
    let props = WriterProperties::builder().set_max_row_group_row_count(Some(group_rows)).build();
    let mut w = ArrowWriter::try_new(std::fs::File::create(path).unwrap(), schema.clone(), Some(props)).unwrap();
    w.write(&RecordBatch::try_new(schema, columns).unwrap()).unwrap();
    w.close().unwrap();
}

/// `n` rows of `len` tokens (ids below the tiny model's vocabulary), row `k` of the file starting at `first`.
fn token_rows(first: u32, n: usize, len: usize) -> Vec<(Vec<u32>, Vec<u8>)> {
    (0..n as u32)
        .map(|k| {
            let ids = (0..len as u32).map(|t| 3 + (first + k) * 7 % 200 + t % 50).collect();
            let mask = (0..len).map(|t| u8::from((t + k as usize) % 3 != 0)).collect();
            (ids, mask)
        })
        .collect()
}

/// Issue 16: the streamed loader gives, row by row, what reading every file front to back (the in-memory
/// loader it replaced) gives, across files and row groups, in any order of access (the cache evicts).
#[test]
fn streamed_rows_equal_the_shards_read_front_to_back() {
    let dir = tempfile::tempdir().unwrap();
    for (segments, name) in [(false, "plain"), (true, "packed")] {
        let shards = dir.path().join(name);
        std::fs::create_dir_all(&shards).unwrap();
        write_token_file(&shards.join("part-00000.parquet"), &token_rows(0, 7, 6), 3, segments);
        write_token_file(&shards.join("part-00001.parquet"), &token_rows(7, 8, 6), 2, segments);
        let mut want = Vec::new();
        for f in ["part-00000.parquet", "part-00001.parquet"] {
            want.extend(TokenShardReader::open(&shards.join(f)).unwrap().map(|r| r.unwrap()));
        }
        let mut rows = train::Rows::load(&shards).unwrap();
        assert_eq!((rows.len(), rows.seq_len()), (15, 6));
        // Forwards, backwards, and striding across the 7 row groups (more than the cache holds).
        let order: Vec<usize> = (0..15).chain((0..15).rev()).chain((0..45).map(|k| k * 7 % 15)).collect();
        for i in order {
            let r = rows.row(i).unwrap();
            assert_eq!(r.input_ids, want[i].input_ids.as_slice(), "{name} row {i}");
            assert_eq!(r.loss_mask, want[i].loss_mask.as_slice(), "{name} row {i}");
            assert_eq!(r.segment_ids, want[i].segment_ids.as_deref(), "{name} row {i}");
        }
    }
}

/// Issue 16: a truncated shard and a shard whose rows have another length are refused from the footers,
/// before anything is written, naming the file and the row group.
#[test]
fn bad_shards_are_refused_at_start_up_from_the_footers() {
    let dir = tempfile::tempdir().unwrap();
    let shards = build_shards(dir.path(), Kind::Pretrain, corpus(dir.path()));
    let part = shards.join("train/part-00000.parquet");
    let bytes = std::fs::read(&part).unwrap();
    let cfg = config(dir.path(), &shards, Mode::Full, "bad");

    std::fs::write(&part, &bytes[..bytes.len() / 2]).unwrap();
    let err = train::run(&cfg, None, &ENV).unwrap_err();
    let want = format!("train data: {}: cannot read the Parquet footer: the file is truncated", part.display());
    assert!(err.to_string().starts_with(&want), "{err}");
    assert!(!cfg.out.exists(), "refused before the run started");

    std::fs::write(&part, &bytes).unwrap();
    let short = shards.join("train/part-00001.parquet");
    write_token_file(&short, &token_rows(0, 5, 16), 4, false);
    let err = train::run(&cfg, None, &ENV).unwrap_err().to_string();
    let want = format!(
        "train data: {}: row group 0: rows of 16 tokens, but {} row group 0 has rows of 32",
        short.display(),
        part.display()
    );
    assert!(err.starts_with(&want), "{err}");

    let mut mixed = token_rows(0, 2, 32);
    mixed[1].0.pop();
    mixed[1].1.pop();
    write_token_file(&short, &mixed, 4, false);
    let err = train::run(&cfg, None, &ENV).unwrap_err().to_string();
    let want = format!(
        "train data: {}: row group 0: column 'input_ids' holds 63 values in 2 rows: the rows do not all have the \
         same length",
        short.display()
    );
    assert!(err.starts_with(&want), "{err}");
    assert!(!cfg.out.exists(), "refused before the run started");
}

/// Issue 16: rows whose lengths average out to the right one pass the footer check and fail at the row,
/// named by row group and row.
#[test]
fn a_row_of_the_wrong_length_fails_at_that_row() {
    let dir = tempfile::tempdir().unwrap();
    let mut rows = token_rows(0, 6, 32);
    rows[4].0.pop();
    rows[4].1.pop();
    rows[5].0.push(9);
    rows[5].1.push(1);
    let file = dir.path().join("rows.parquet");
    write_token_file(&file, &rows, 3, false);
    let mut cfg = config(dir.path(), dir.path(), Mode::Full, "row");
    cfg.train = file.clone();
    cfg.val = None;
    cfg.max_steps = Some(2);
    cfg.micro_batch = 3;
    let err = train::run(&cfg, None, &ENV).unwrap_err().to_string();
    let want = format!(
        "train data: {}: row group 1, row 1 (row 4 of the file): 31 ids, 31 mask values; every row needs 32",
        file.display()
    );
    assert!(err.starts_with(&want), "{err}");
}
