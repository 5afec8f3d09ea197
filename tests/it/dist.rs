//! Issue 16: data-parallel `train` on CPU ranks over 127.0.0.1 — the same result as one process with the
//! same global batch, a lost rank stops every rank, another config is refused at the rendezvous.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use langadapt::shards::Kind;

use crate::common::{fixture, langadapt, stderr};
use crate::train::{build_shards, corpus, tensors};

/// A port that was free a moment ago (the OS picks it), for MASTER_PORT.
fn free_port() -> u16 {
    std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap().local_addr().unwrap().port()
}

/// train.toml for the tiny model on `shards`, with `extra` lines.
fn train_toml(dir: &Path, shards: &Path, extra: &str) -> std::path::PathBuf {
    let path = dir.join("train.toml");
    let text = format!(
        "model = {:?}\ntrain = {:?}\nval = {:?}\nmicro_batch = 2\nlr = 1e-3\nwarmup_steps = 1\nseed = 7\n{extra}",
        fixture("tiny-llama"),
        shards.join("train"),
        shards.join("val")
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// The loss, learning rate and grad norm of every step line of a metrics.jsonl.
fn curve(out: &Path) -> Vec<(f64, f64, f64)> {
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|m| m.get("loss").is_some())
        .map(|m| (m["loss"].as_f64().unwrap(), m["lr"].as_f64().unwrap(), m["grad_norm"].as_f64().unwrap()))
        .collect()
}

fn assert_same_run(one: &Path, two: &Path, what: &str) {
    let (a, b) = (curve(one), curve(two));
    assert_eq!(a.len(), b.len(), "{what}: steps");
    for (step, (x, y)) in a.iter().zip(&b).enumerate() {
        let close = |p: f64, q: f64| (p - q).abs() <= 1e-5 * p.abs().max(1.0);
        assert!(close(x.0, y.0) && x.1 == y.1 && close(x.2, y.2), "{what} step {}: {x:?} vs {y:?}", step + 1);
    }
    let (ta, tb) = (tensors(&one.join("final")), tensors(&two.join("final")));
    assert_eq!(ta.len(), tb.len());
    for (name, t) in &ta {
        let diff = (t - &tb[name]).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(diff < 1e-5, "{what}: {name} differs by {diff}");
    }
}

/// 2 ranks × micro_batch 2 × grad_accum 2 equals 1 rank × 2 × 4: same loss curve and weights within 1e-5
/// (only the summation order differs), for full training and for LoRA with dropout (seeded per global
/// micro-batch). The 2-rank runs go through `--nproc-per-node 2`.
#[test]
fn two_ranks_equal_one_rank_with_twice_the_accumulation() {
    let dir = tempfile::tempdir().unwrap();
    let shards = build_shards(dir.path(), Kind::Pretrain, corpus(dir.path()));
    let lora = "mode = \"lora\"\nmerge_lora = true\n[lora]\nr = 4\nalpha = 8\ndropout = 0.1\nmodules_to_save = [\"lm_head\"]\n";
    for (what, extra) in
        [("full", "max_steps = 4\neval_every = 2\n".to_string()), ("lora", format!("max_steps = 4\n{lora}"))]
    {
        let toml = train_toml(dir.path(), &shards, &extra);
        let (one, two) = (dir.path().join(format!("{what}-1")), dir.path().join(format!("{what}-2")));
        let t = toml.to_str().unwrap();
        let out = langadapt(&["train", "--config", t, "--grad-accum", "4", "--out", one.to_str().unwrap()]);
        assert!(out.status.success(), "{}", stderr(&out));
        let two_s = two.to_str().unwrap();
        let out = langadapt(&[
            "train",
            "--nproc-per-node",
            "2",
            "--config",
            t,
            "--grad-accum",
            "2",
            "--out",
            two_s,
            "--json",
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
        // Rank 0 alone reports, writes metrics and the manifest.
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(report["steps"], 4);
        assert!(two.join("manifest.json").is_file());
        assert_same_run(&one, &two, what);
    }
}

/// One rank process of a 2-rank job on `port`, with `args` after `train`.
fn rank(rank: usize, port: u16, args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_langadapt"))
        .arg("--quiet")
        .arg("train")
        .args(args)
        .env("RANK", rank.to_string())
        .env("WORLD_SIZE", "2")
        .env("MASTER_ADDR", "127.0.0.1")
        .env("MASTER_PORT", port.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits at most `limit` for `child`; its exit status and stderr.
fn finish(mut child: Child, limit: Duration) -> (std::process::ExitStatus, String) {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
            return (status, err);
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("rank still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Killing rank 1 mid-run makes rank 0 exit non-zero within seconds, naming rank 1; the newest checkpoint
/// then resumes on 2 ranks to the same weights as an uninterrupted 2-rank run.
#[test]
fn a_killed_rank_stops_the_job_and_the_last_checkpoint_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let shards = build_shards(dir.path(), Kind::Pretrain, corpus(dir.path()));
    let toml = train_toml(dir.path(), &shards, "max_steps = 200\nsave_every = 4\n");
    let (t, out) = (toml.to_str().unwrap(), dir.path().join("killed"));
    let args = ["--config", t, "--out", out.to_str().unwrap()];
    let port = free_port();
    let (zero, mut one) = (rank(0, port, &args), rank(1, port, &args));
    let start = Instant::now();
    while !out.join("checkpoints/step-4/trainer_state.json").is_file() {
        assert!(start.elapsed() < Duration::from_secs(120), "no checkpoint after 2 minutes");
        std::thread::sleep(Duration::from_millis(5));
    }
    one.kill().unwrap();
    one.wait().unwrap();
    let (status, err) = finish(zero, Duration::from_secs(60));
    assert!(!status.success());
    assert!(err.contains("rank 1 lost (connection closed); every rank stops"), "{err}");
    assert!(!out.join("final").exists(), "the job stopped before its end");

    let ckpt = langadapt::train::latest_checkpoint(&out).unwrap();
    let resume = ["train", "--nproc-per-node", "2", "--resume", ckpt.to_str().unwrap()];
    let r = langadapt(&[&resume[..], &args[..]].concat()[..]);
    assert!(r.status.success(), "{}", stderr(&r));
    let whole = dir.path().join("whole");
    let w = langadapt(&["train", "--nproc-per-node", "2", "--config", t, "--out", whole.to_str().unwrap()]);
    assert!(w.status.success(), "{}", stderr(&w));
    for (name, t) in tensors(&whole.join("final")) {
        let resumed = &tensors(&out.join("final"))[&name];
        assert!(
            t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
                == resumed.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            "{name}"
        );
    }
}

/// A rank started with another setting is refused at the rendezvous, and rank 0 stops too, at once.
#[test]
fn a_rank_with_another_config_is_refused_at_the_rendezvous() {
    let dir = tempfile::tempdir().unwrap();
    let shards = build_shards(dir.path(), Kind::Pretrain, corpus(dir.path()));
    let toml = train_toml(dir.path(), &shards, "max_steps = 2\n");
    let (t, out) = (toml.to_str().unwrap(), dir.path().join("refused"));
    let port = free_port();
    let zero = rank(0, port, &["--config", t, "--out", out.to_str().unwrap()]);
    let one = rank(1, port, &["--config", t, "--out", out.to_str().unwrap(), "--lr", "2e-3"]);
    let (s0, e0) = finish(zero, Duration::from_secs(60));
    let (s1, e1) = finish(one, Duration::from_secs(60));
    assert!(!s0.success() && !s1.success());
    assert!(e1.contains("rank 1 refused by rank 0: its config hash"), "{e1}");
    assert!(e1.contains("every rank must run the same train.toml, flags, model and shards"), "{e1}");
    assert!(e0.contains("rank 1 refused: its config hash"), "{e0}");
    assert!(!out.join("final").exists());
}
