//! Issue 19 (4): an error and its causes are printed once, as one whole line (before, every I/O error
//! repeated its cause: `x.bz2: truncated bzip2 stream…: truncated bzip2 stream…`).

use crate::common::{fixture, stderr};

/// Runs `args` in `dir`, expects exit 2, returns stderr.
fn fails_in(dir: &std::path::Path, args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_langadapt"))
        .current_dir(dir)
        .arg("--quiet")
        .args(args)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
    stderr(&out)
}

#[test]
fn io_errors_print_their_cause_once() {
    let dir = tempfile::tempdir().unwrap();
    let dump = std::fs::read(fixture("wiki/trwiki-sample-pages-articles.xml.bz2")).unwrap();
    std::fs::write(dir.path().join("half.xml.bz2"), &dump[..dump.len() / 2]).unwrap();
    let cases: [(&[&str], String); 4] = [
        (
            &["wiki", "ingest", "half.xml.bz2", "--out", "o1"],
            format!(
                "error: half.xml.bz2: truncated bzip2 stream: input ends at byte {} inside a stream (file cut short or \
                 corrupt)\n",
                dump.len() / 2
            ),
        ),
        (
            &["wiki", "ingest", "missing.xml.bz2", "--out", "o2"],
            "error: missing.xml.bz2: No such file or directory (os error 2)\n".into(),
        ),
        (&["audit", "nowhere"], "error: nowhere: No such file or directory (os error 2)\n".into()),
        (&["train", "--config", "nope.toml"], "error: nope.toml: No such file or directory (os error 2)\n".into()),
    ];
    for (args, want) in cases {
        assert_eq!(fails_in(dir.path(), args), want, "{args:?}");
    }
    // A stage error inside a recipe keeps its chain, still printed once.
    let recipe = dir.path().join("r.toml");
    std::fs::write(&recipe, "out = \"out\"\n[wiki.w]\ndump = \"half.xml.bz2\"\n").unwrap();
    let err = fails_in(dir.path(), &["run", "r.toml"]);
    let dump_path = std::fs::canonicalize(dir.path().join("half.xml.bz2")).unwrap();
    assert_eq!(
        err,
        format!(
            "error: stage w: {}: truncated bzip2 stream: input ends at byte {} inside a stream (file cut short or \
             corrupt)\n",
            dump_path.display(),
            dump.len() / 2
        )
    );
}

/// Issue 15: `--device cuda:0` in a build without the `cuda` feature is one line saying how to get CUDA,
/// for the model commands and for training alike (both open the device through `model::parse_device`).
#[cfg(not(feature = "cuda"))]
#[test]
fn cuda_device_without_the_feature_is_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let model = fixture("tiny-llama");
    let model = model.to_str().unwrap();
    let want = "error: device cuda:0: this langadapt was built without CUDA; build it with `cargo build --release \
                --features cuda` (scripts/cuda-toolchain.sh installs the compiler) or use --device cpu\n";
    let generate: &[&str] = &["model", "generate", model, "--prompt", "hi", "--device", "cuda:0"];
    assert_eq!(fails_in(dir.path(), generate), want);
    let shards = fixture("shards");
    let train: &[&str] = &[
        "train",
        "--model",
        model,
        "--train",
        shards.to_str().unwrap(),
        "--out",
        "o",
        "--max-steps",
        "1",
        "--device",
        "cuda:0",
    ];
    assert_eq!(fails_in(dir.path(), train), want);
    assert_eq!(
        fails_in(dir.path(), &["model", "generate", model, "--prompt", "hi", "--device", "cuda:x"]),
        "error: device \"cuda:x\": expected cuda:N\n"
    );
}
