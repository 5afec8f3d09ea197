//! Helpers shared by the integration tests.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A fixture file under tests/fixtures.
pub fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(rel)
}

/// Runs the langadapt binary with `args` (quiet).
pub fn langadapt(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_langadapt")).arg("--quiet").args(args).output().expect("binary runs")
}

/// Stderr as text.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The `*.parquet` files of a directory, sorted, with their bytes.
pub fn parquet_files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(&p).unwrap()))
        .collect();
    v.sort();
    v
}

/// Every file name in a directory, sorted.
pub fn file_names(dir: &Path) -> Vec<String> {
    let mut v: Vec<_> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

/// Pretraining shards of `text` (one source, no validation split, 16 tokens a row) in `dir/shards`.
pub fn text_shards(tokenizer: &Path, text: &str, dir: &Path) {
    let path = dir.join("t.txt");
    std::fs::write(&path, text).unwrap();
    let src = langadapt::shards::SourceConfig {
        name: "t".into(),
        path,
        lang: "und".into(),
        share: Some(1.0),
        epochs: None,
        limit: None,
    };
    let mut cfg = langadapt::shards::BuildConfig::single(tokenizer.to_path_buf(), src, 16, dir.join("shards")).unwrap();
    cfg.val_share = 0.0;
    let env = langadapt::Env { threads: 1, progress: langadapt::Progress { quiet: true } };
    langadapt::shards::run(&cfg, dir, &env).unwrap();
}
