//! Models, eval data and dumps by name, against a fake Hugging Face Hub (API, resolve routes with LFS
//! redirects to a separate CDN host, gated repositories) and a fake dump site, both on 127.0.0.1.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use langadapt::hub::{resolve_model, Hub, HubConfig, HubError, RepoKind, RepoRef};
use langadapt::net::RetryPolicy;
use serde_json::{json, Value};
use sha1::Digest;

use crate::common::{fixture, stderr};
use crate::mock_http::{file, ok, status, Mock, Reply, Req};

/// The commit every fake repository is at.
const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";
/// A token that must never show up in any output.
const TOKEN: &str = "hf_SECRETtoken1234567890";

fn sha256(b: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(b))
}

fn git_sha1(b: &[u8]) -> String {
    let mut h = sha1::Sha1::new();
    h.update(format!("blob {}\0", b.len()).as_bytes());
    h.update(b);
    hex::encode(h.finalize())
}

/// Files the Hub stores in LFS (served through a redirect to the CDN).
fn is_lfs(name: &str) -> bool {
    [".safetensors", ".model", ".parquet", ".bin"].iter().any(|e| name.ends_with(e))
}

/// A fake repository: its files, and whether it is gated.
#[derive(Clone, Default)]
struct FakeRepo {
    files: BTreeMap<String, Vec<u8>>,
    gated: bool,
}

/// The tiny-llama fixture as a model repository, plus files a checkpoint does not need.
fn tiny_repo() -> FakeRepo {
    let mut files = BTreeMap::new();
    for f in [
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "special_tokens_map.json",
        "tokenizer.json",
        "tokenizer.model",
        "tokenizer_config.json",
        "README.md",
    ] {
        files.insert(f.to_string(), std::fs::read(fixture("tiny-llama").join(f)).unwrap());
    }
    files.insert("pytorch_model.bin".into(), b"pickle".to_vec());
    files.insert("onnx/model.onnx".into(), b"onnx".to_vec());
    FakeRepo { files, gated: false }
}

/// The fake Hub: `{url}/api/{models,datasets}/{id}/revision/{rev}` and `{url}[/datasets]/{id}/resolve/{rev}/{file}`.
fn hub_handler(repos: BTreeMap<String, FakeRepo>, cdn: String) -> impl Fn(&Req, usize) -> Reply + Send + Sync {
    move |req, _| {
        let path = req.path.strip_prefix("/datasets").unwrap_or(&req.path);
        if let Some(rest) = path.strip_prefix("/api/models/").or_else(|| path.strip_prefix("/api/datasets/")) {
            let (id, rev) = rest.split_once("/revision/").unwrap();
            let Some(repo) = repos.get(id) else {
                return Reply { headers: vec![("X-Error-Code", "RepoNotFound".into())], ..status(404, "") };
            };
            if rev != "main" && rev != COMMIT {
                return Reply { headers: vec![("X-Error-Code", "RevisionNotFound".into())], ..status(404, "") };
            }
            let siblings: Vec<Value> = repo.files.keys().map(|f| json!({ "rfilename": f })).collect();
            return ok(json!({ "id": id, "sha": COMMIT, "siblings": siblings }));
        }
        let (id, rest) = path[1..].split_once("/resolve/").unwrap();
        let (rev, name) = rest.split_once('/').unwrap();
        let Some(repo) = repos.get(id) else {
            return Reply { headers: vec![("X-Error-Code", "RepoNotFound".into())], ..status(401, "") };
        };
        if repo.gated && req.headers.get("authorization").map(String::as_str) != Some(&format!("Bearer {TOKEN}")) {
            let msg = format!("Access to model {id} is restricted. You must have access to it and be authenticated.");
            return Reply {
                headers: vec![("X-Error-Code", "GatedRepo".into()), ("X-Error-Message", msg)],
                ..status(401, "")
            };
        }
        assert!(["main", COMMIT, "refs%2Fconvert%2Fparquet"].contains(&rev), "revision {rev}");
        let Some(bytes) = repo.files.get(name) else {
            return Reply { headers: vec![("X-Error-Code", "EntryNotFound".into())], ..status(404, "") };
        };
        if is_lfs(name) {
            let sha = sha256(bytes);
            Reply {
                headers: vec![
                    ("Location", format!("{cdn}/blob/{sha}")),
                    ("X-Linked-Etag", format!("\"{sha}\"")),
                    ("X-Linked-Size", bytes.len().to_string()),
                    ("X-Repo-Commit", COMMIT.into()),
                ],
                ..status(302, "")
            }
        } else {
            Reply {
                headers: vec![("ETag", format!("\"{}\"", git_sha1(bytes))), ("X-Repo-Commit", COMMIT.into())],
                ..file(req, bytes)
            }
        }
    }
}

/// A CDN serving every LFS file of `repos` by sha256 with ranges; `fault` may answer instead.
fn cdn_handler(
    repos: &BTreeMap<String, FakeRepo>,
    fault: impl Fn(&Req, usize, &[u8]) -> Option<Reply> + Send + Sync,
) -> impl Fn(&Req, usize) -> Reply + Send + Sync {
    let blobs: BTreeMap<String, Vec<u8>> =
        repos.values().flat_map(|r| r.files.values()).map(|b| (sha256(b), b.clone())).collect();
    move |req, n| {
        let bytes = &blobs[req.path.strip_prefix("/blob/").unwrap()];
        fault(req, n, bytes).unwrap_or_else(|| file(req, bytes))
    }
}

/// A fake Hub and its CDN (a different host:port, so the token must not travel there).
struct FakeHub {
    hub: Mock,
    cdn: Mock,
}

fn fake_hub(
    repos: BTreeMap<String, FakeRepo>,
    fault: impl Fn(&Req, usize, &[u8]) -> Option<Reply> + Send + Sync + 'static,
) -> FakeHub {
    let cdn = Mock::start(None, cdn_handler(&repos, fault));
    let hub = Mock::start(None, hub_handler(repos, cdn.url.clone()));
    FakeHub { hub, cdn }
}

fn no_fault(_: &Req, _: usize, _: &[u8]) -> Option<Reply> {
    None
}

fn repos(list: &[(&str, FakeRepo)]) -> BTreeMap<String, FakeRepo> {
    list.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
}

/// Hub settings as the environment would give them, with fast retries.
fn config(home: &Path, endpoint: &str, token: Option<&str>, offline: bool) -> HubConfig {
    let home = home.to_string_lossy().into_owned();
    let endpoint = endpoint.to_string();
    let token = token.map(str::to_string);
    let mut cfg = HubConfig::from_vars(
        |k| match k {
            "HF_HOME" => Some(home.clone()),
            "HF_ENDPOINT" => Some(endpoint.clone()),
            "HF_TOKEN" => token.clone(),
            "HF_HUB_OFFLINE" => offline.then(|| "1".to_string()),
            _ => None,
        },
        langadapt::Progress { quiet: true },
    );
    cfg.retry =
        RetryPolicy { max_retries: 3, backoff_base: Duration::from_millis(10), backoff_max: Duration::from_millis(40) };
    cfg
}

fn gets(m: &Mock) -> Vec<Req> {
    m.requests().into_iter().filter(|r| r.method == "GET").collect()
}

/// Every file under `dir` (following no links), sorted, relative, with link targets for symlinks.
fn tree(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(dir).unwrap().display().to_string();
            let meta = std::fs::symlink_metadata(&p).unwrap();
            if meta.is_symlink() {
                out.push(format!("{rel} -> {}", std::fs::read_link(&p).unwrap().display()));
            } else if meta.is_dir() {
                stack.push(p);
            } else {
                out.push(rel);
            }
        }
    }
    out.sort();
    out
}

#[test]
fn model_by_name_fetches_only_checkpoint_files_into_the_hf_cache_layout() {
    let repo = tiny_repo();
    let sha = sha256(&repo.files["model.safetensors"]);
    let tok_sha = sha256(&repo.files["tokenizer.model"]);
    let cfg_etag = git_sha1(&repo.files["config.json"]);
    let fake = fake_hub(repos(&[("org/tiny", repo.clone())]), no_fault);
    let home = tempfile::tempdir().unwrap();
    let cfg = config(home.path(), &fake.hub.url, Some(TOKEN), false);

    let m = resolve_model("org/tiny", &cfg).unwrap();
    let cache = home.path().join("hub/models--org--tiny");
    assert_eq!(m.path, cache.join("snapshots").join(COMMIT));
    let src = m.hub.unwrap();
    assert_eq!((src.repo.as_str(), src.revision.as_str(), src.commit.as_str()), ("org/tiny", "main", COMMIT));
    let t = tree(&cache);
    let snap = format!("snapshots/{COMMIT}");
    assert!(t.contains(&"refs/main".to_string()), "{t:?}");
    assert!(t.contains(&format!("blobs/{sha}")) && t.contains(&format!("blobs/{tok_sha}")), "{t:?}");
    assert!(t.contains(&format!("{snap}/model.safetensors -> ../../blobs/{sha}")), "{t:?}");
    assert!(t.contains(&format!("{snap}/config.json -> ../../blobs/{cfg_etag}")), "{t:?}");
    let linked: Vec<&str> =
        t.iter().filter_map(|l| l.strip_prefix(&format!("{snap}/"))).map(|l| l.split(" -> ").next().unwrap()).collect();
    assert_eq!(
        linked,
        [
            "config.json",
            "generation_config.json",
            "model.safetensors",
            "special_tokens_map.json",
            "tokenizer.json",
            "tokenizer.model",
            "tokenizer_config.json"
        ]
    );
    assert_eq!(std::fs::read_to_string(cache.join("refs/main")).unwrap(), COMMIT);
    assert_eq!(std::fs::read(m.path.join("model.safetensors")).unwrap(), repo.files["model.safetensors"]);
    let info = langadapt::model::Checkpoint::open(&m.path).unwrap().info().unwrap();
    assert_eq!(info.model_type, "llama");

    // The token goes to the Hub, never to the CDN host the LFS redirect points at.
    assert!(fake.hub.requests().iter().all(|r| r.headers.get("authorization") == Some(&format!("Bearer {TOKEN}"))));
    assert!(fake.cdn.requests().iter().all(|r| !r.headers.contains_key("authorization")));
    assert_eq!(gets(&fake.cdn).len(), 2, "two LFS files");
    let fetched: Vec<String> = fake.hub.requests().iter().map(|r| r.path.clone()).collect();
    assert!(!fetched.iter().any(|p| p.contains("pytorch_model.bin") || p.contains("README") || p.contains("onnx")));

    // Again: one listing and a HEAD per file, no bytes.
    let (hub_before, cdn_before) = (fake.hub.requests().len(), fake.cdn.requests().len());
    let again = resolve_model("org/tiny@main", &cfg).unwrap();
    assert_eq!(again.path, m.path);
    let new: Vec<String> =
        fake.hub.requests()[hub_before..].iter().map(|r| format!("{} {}", r.method, r.path)).collect();
    assert_eq!(new.len(), 8, "{new:?}");
    assert!(new[1..].iter().all(|r| r.starts_with("HEAD /org/tiny/resolve/")), "{new:?}");
    assert_eq!(fake.cdn.requests().len(), cdn_before);

    // A local path that exists wins over a repository of the same shape.
    let local = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(local.path().join("org/tiny")).unwrap();
    let cwd_path = local.path().join("org/tiny");
    let l = resolve_model(cwd_path.to_str().unwrap(), &cfg).unwrap();
    assert_eq!((l.path, l.hub), (cwd_path, None));
}

#[test]
fn interrupted_download_resumes_with_a_range_request() {
    let repo = tiny_repo();
    let weights = repo.files["model.safetensors"].clone();
    // The first GET of the weights is cut off half-way (the connection closes).
    let fault = |r: &Req, _: usize, b: &[u8]| {
        (b.len() > 10_000 && !r.headers.contains_key("range")).then(|| Reply { cut: true, ..file(r, b) })
    };
    let fake = fake_hub(repos(&[("org/tiny", repo)]), fault);
    let home = tempfile::tempdir().unwrap();
    let m = resolve_model("org/tiny", &config(home.path(), &fake.hub.url, None, false)).unwrap();
    assert_eq!(std::fs::read(m.path.join("model.safetensors")).unwrap(), weights);
    let w: Vec<Req> = gets(&fake.cdn).into_iter().filter(|r| r.path.ends_with(&sha256(&weights))).collect();
    assert_eq!(w.len(), 2);
    assert_eq!(w[1].headers.get("range"), Some(&format!("bytes={}-", weights.len() / 2)));

    // A `.incomplete` left by a killed process is resumed from its length.
    let home = tempfile::tempdir().unwrap();
    let blobs = home.path().join("hub/models--org--tiny/blobs");
    std::fs::create_dir_all(&blobs).unwrap();
    std::fs::write(blobs.join(format!("{}.incomplete", sha256(&weights))), &weights[..1000]).unwrap();
    let before = gets(&fake.cdn).len();
    resolve_model("org/tiny", &config(home.path(), &fake.hub.url, None, false)).unwrap();
    let w: Vec<Req> =
        gets(&fake.cdn)[before..].iter().filter(|r| r.path.ends_with(&sha256(&weights))).cloned().collect();
    assert_eq!(w.len(), 1);
    assert_eq!(w[0].headers.get("range").map(String::as_str), Some("bytes=1000-"));
    assert!(!blobs.join(format!("{}.incomplete", sha256(&weights))).exists());
}

#[test]
fn corrupted_byte_is_caught_by_the_checksum_and_never_used() {
    let repo = tiny_repo();
    let weights = repo.files["model.safetensors"].clone();
    let sha = sha256(&weights);
    let flip = |r: &Req, b: &[u8]| {
        let mut bad = b.to_vec();
        bad[b.len() / 3] ^= 0x01;
        file(r, &bad)
    };
    // Once corrupted: deleted, fetched again from the start, right the second time.
    let served = Arc::new(AtomicUsize::new(0));
    let (s, w) = (served.clone(), sha.clone());
    let fault = move |r: &Req, _: usize, b: &[u8]| {
        (r.path.ends_with(&w) && s.fetch_add(1, Ordering::SeqCst) == 0).then(|| flip(r, b))
    };
    let fake = fake_hub(repos(&[("org/tiny", repo.clone())]), fault);
    let home = tempfile::tempdir().unwrap();
    let m = resolve_model("org/tiny", &config(home.path(), &fake.hub.url, None, false)).unwrap();
    assert_eq!(std::fs::read(m.path.join("model.safetensors")).unwrap(), weights);
    assert_eq!(served.load(Ordering::SeqCst), 2);

    // Always corrupted: an error, and nothing in the cache that could be used.
    let w = sha.clone();
    let fake = fake_hub(repos(&[("org/tiny", repo)]), move |r, _, b| r.path.ends_with(&w).then(|| flip(r, b)));
    let home = tempfile::tempdir().unwrap();
    let err = resolve_model("org/tiny", &config(home.path(), &fake.hub.url, None, false)).unwrap_err();
    let bad = {
        let mut b = weights.clone();
        b[weights.len() / 3] ^= 0x01;
        sha256(&b)
    };
    assert_eq!(
        err.to_string(),
        format!(
            "{}/blob/{sha}: sha256 mismatch after a refetch (expected {sha}, got {bad}); the file was deleted, \
             nothing was used; retry later or try another mirror",
            fake.cdn.url
        )
    );
    let cache = home.path().join("hub/models--org--tiny");
    assert!(!cache.join("blobs").join(&sha).exists() && !cache.join(format!("blobs/{sha}.incomplete")).exists());
    assert!(!cache.join(format!("snapshots/{COMMIT}/model.safetensors")).exists());
}

#[test]
fn rate_limit_429_waits_for_retry_after() {
    let fault = |_: &Req, n: usize, _: &[u8]| {
        (n == 0).then(|| Reply { headers: vec![("Retry-After", "1".into())], ..status(429, "slow down") })
    };
    let fake = fake_hub(repos(&[("org/tiny", tiny_repo())]), fault);
    let home = tempfile::tempdir().unwrap();
    let mut cfg = config(home.path(), &fake.hub.url, None, false);
    cfg.parallel = 1;
    resolve_model("org/tiny", &cfg).unwrap();
    let r = fake.cdn.requests();
    assert_eq!(r[0].path, r[1].path, "the rate-limited request is repeated");
    let waited = r[1].at.duration_since(r[0].at);
    assert!(waited >= Duration::from_secs(1) && waited < Duration::from_secs(3), "{waited:?}");

    // Retries run out: the error says so and what to do.
    let fake = fake_hub(repos(&[("org/tiny", tiny_repo())]), |_, _, _| Some(status(503, "down")));
    let home = tempfile::tempdir().unwrap();
    let err = resolve_model("org/tiny", &config(home.path(), &fake.hub.url, None, false)).unwrap_err().to_string();
    assert!(
        err.ends_with(
            ": HTTP 503 Service Unavailable (gave up after 3 retries; run again later: downloads resume where they stopped)"
        ),
        "{err}"
    );
}

#[test]
fn offline_mode_uses_the_cache_and_names_what_is_missing() {
    let fake = fake_hub(repos(&[("org/tiny", tiny_repo())]), no_fault);
    let home = tempfile::tempdir().unwrap();
    let online = resolve_model("org/tiny", &config(home.path(), &fake.hub.url, None, false)).unwrap();
    // A dead endpoint: offline mode must not even try it.
    let dead = "http://127.0.0.1:9";
    let offline = resolve_model("org/tiny", &config(home.path(), dead, None, true)).unwrap();
    assert_eq!((offline.path, offline.hub.unwrap().commit), (online.path, COMMIT.to_string()));
    let err = resolve_model("org/other@v2", &config(home.path(), dead, None, true)).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "HF_HUB_OFFLINE=1 and org/other@v2 is not in the cache {}; run once online (unset HF_HUB_OFFLINE) or \
             fetch it with transformers / huggingface-cli into the same HF_HOME",
            home.path().join("hub/models--org--other").display()
        )
    );
}

#[test]
fn gated_repo_without_token_is_a_clear_error() {
    let gated = FakeRepo { gated: true, ..tiny_repo() };
    let fake = fake_hub(repos(&[("org/gated", gated)]), no_fault);
    let home = tempfile::tempdir().unwrap();
    let err = resolve_model("org/gated", &config(home.path(), &fake.hub.url, None, false)).unwrap_err();
    assert!(matches!(err, HubError::Gated { .. }));
    let u = &fake.hub.url;
    assert_eq!(
        err.to_string(),
        format!(
            "org/gated is a gated repository and HF_TOKEN is not set: accept its terms at {u}/org/gated while logged \
             in, then set HF_TOKEN to an access token of that account ({u}/settings/tokens)"
        )
    );
    let err = resolve_model("org/gated", &config(home.path(), u, Some("hf_wrong"), false)).unwrap_err().to_string();
    assert!(err.starts_with("org/gated is a gated repository and HF_TOKEN's account has no access yet: "), "{err}");
    assert!(!err.contains("hf_wrong"));
    resolve_model("org/gated", &config(home.path(), u, Some(TOKEN), false)).unwrap();

    let err = resolve_model("org/nope", &config(home.path(), u, None, false)).unwrap_err().to_string();
    assert_eq!(
        err,
        format!("org/nope@main: no such repository on {u} (a private one needs HF_TOKEN); nor is there a local path org/nope")
    );
    let err = resolve_model("org/gated@v9", &config(home.path(), u, Some(TOKEN), false)).unwrap_err().to_string();
    assert_eq!(
        err,
        format!(
            "org/gated@v9: no revision `v9`; see the branches, tags and commits at {u}/org/gated/tree/main; nor is \
             there a local path org/gated@v9"
        )
    );
}

#[test]
fn pickle_only_repo_is_refused_with_the_conversion_hint() {
    let mut pickle = FakeRepo::default();
    pickle.files.insert("config.json".into(), b"{}".to_vec());
    pickle.files.insert("pytorch_model.bin".into(), b"pickle".to_vec());
    let fake = fake_hub(repos(&[("org/pickle", pickle)]), no_fault);
    let home = tempfile::tempdir().unwrap();
    let err = resolve_model("org/pickle", &config(home.path(), &fake.hub.url, None, false)).unwrap_err();
    assert_eq!(err.to_string(), format!("org/pickle@main: {}", langadapt::model::PICKLE_HINT));
    assert!(fake.hub.requests().iter().all(|r| r.method == "GET" && r.path.starts_with("/api/")), "nothing fetched");
}

/// A cache laid out the way huggingface_hub writes it (blobs named by etag, refs/main, relative links).
fn handmade_cache(home: &Path, repo: &FakeRepo) -> PathBuf {
    let cache = home.join("hub/models--org--tiny");
    let snap = cache.join("snapshots").join(COMMIT);
    std::fs::create_dir_all(cache.join("blobs")).unwrap();
    std::fs::create_dir_all(cache.join("refs")).unwrap();
    std::fs::create_dir_all(&snap).unwrap();
    std::fs::write(cache.join("refs/main"), COMMIT).unwrap();
    for (name, bytes) in &repo.files {
        if name.contains('/') || name.ends_with(".bin") || name == "README.md" {
            continue;
        }
        let etag = if is_lfs(name) { sha256(bytes) } else { git_sha1(bytes) };
        std::fs::write(cache.join("blobs").join(&etag), bytes).unwrap();
        std::os::unix::fs::symlink(format!("../../blobs/{etag}"), snap.join(name)).unwrap();
    }
    snap
}

#[test]
fn cache_written_by_huggingface_hub_is_reused() {
    let repo = tiny_repo();
    let fake = fake_hub(repos(&[("org/tiny", repo.clone())]), no_fault);
    let home = tempfile::tempdir().unwrap();
    let snap = handmade_cache(home.path(), &repo);
    let m = resolve_model("org/tiny", &config(home.path(), &fake.hub.url, None, false)).unwrap();
    assert_eq!(m.path, snap);
    assert!(gets(&fake.cdn).is_empty(), "no LFS bytes downloaded");
    assert!(gets(&fake.hub).iter().all(|r| r.path.starts_with("/api/")), "no small file downloaded");
    let offline = resolve_model("org/tiny", &config(home.path(), "http://127.0.0.1:9", None, true)).unwrap();
    assert_eq!(offline.path, snap);
    assert_eq!(langadapt::model::Checkpoint::open(&snap).unwrap().info().unwrap().model_type, "llama");
}

/// XCOPA rows of a JSONL fixture as the Hub's Parquet export serves them (ints, bools and strings).
fn xcopa_parquet(jsonl: &Path) -> Vec<u8> {
    use arrow::array::{ArrayRef, BooleanArray, Int64Array, StringArray};
    let rows: Vec<Value> =
        std::fs::read_to_string(jsonl).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let text = |k: &str| -> ArrayRef {
        Arc::new(StringArray::from(rows.iter().map(|r| r[k].as_str().unwrap().to_string()).collect::<Vec<_>>()))
    };
    let int = |k: &str| -> ArrayRef {
        Arc::new(Int64Array::from(rows.iter().map(|r| r[k].as_i64().unwrap()).collect::<Vec<_>>()))
    };
    let batch = arrow::record_batch::RecordBatch::try_from_iter([
        ("premise", text("premise")),
        ("choice1", text("choice1")),
        ("choice2", text("choice2")),
        ("question", text("question")),
        ("label", int("label")),
        ("idx", int("idx")),
        (
            "changed",
            Arc::new(BooleanArray::from(rows.iter().map(|r| r["changed"].as_bool().unwrap()).collect::<Vec<_>>()))
                as ArrayRef,
        ),
    ])
    .unwrap();
    let mut out = Vec::new();
    let mut w = parquet::arrow::ArrowWriter::try_new(&mut out, batch.schema(), None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    out
}

/// Runs the binary with the Hub environment pointing at `endpoint`.
fn langadapt_with_hub(args: &[&str], home: &Path, endpoint: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_langadapt"))
        .arg("--quiet")
        .args(args)
        .env("HF_HOME", home)
        .env("HF_ENDPOINT", endpoint)
        .env("HF_TOKEN", TOKEN)
        .env_remove("HF_HUB_OFFLINE")
        .env_remove("HF_HUB_CACHE")
        .output()
        .unwrap()
}

/// Every file's text under `dir` (links followed), for looking for the token.
fn all_text(dir: &Path) -> String {
    let mut out = String::new();
    for line in tree(dir) {
        let rel = line.split(" -> ").next().unwrap();
        out.push_str(&String::from_utf8_lossy(&std::fs::read(dir.join(rel)).unwrap_or_default()));
    }
    out
}

#[test]
fn eval_run_with_model_and_task_data_by_name() {
    let mut xcopa = FakeRepo::default();
    let data = fixture("data/xcopa/tr");
    xcopa.files.insert("tr/test/0000.parquet".into(), xcopa_parquet(&data.join("test.tr.jsonl")));
    xcopa.files.insert("tr/validation/0000.parquet".into(), xcopa_parquet(&data.join("val.tr.jsonl")));
    let fake = fake_hub(repos(&[("org/tiny", tiny_repo()), ("cambridgeltl/xcopa", xcopa)]), no_fault);
    let work = tempfile::tempdir().unwrap();
    let (home, empty) = (work.path().join("hf"), work.path().join("empty"));
    std::fs::create_dir_all(&empty).unwrap();
    let run = |model: &str, data_dir: &Path, out: &str| {
        let out = work.path().join(out);
        let o = langadapt_with_hub(
            &[
                "eval",
                "run",
                "--model",
                model,
                "--tasks",
                "xcopa_tr",
                "--limit",
                "12",
                "--num-fewshot",
                "1",
                "--data-dir",
                data_dir.to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
            ],
            &home,
            &fake.hub.url,
        );
        assert!(o.status.success(), "{}", stderr(&o));
        let results: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
        (o, results)
    };
    let (o, by_name) = run("org/tiny", &empty, "hub.json");
    let (_, local) = run(fixture("tiny-llama").to_str().unwrap(), &fixture("data"), "local.json");
    // The same scores from the Hub's Parquet as from the released JSONL, the Turkish defect found in both.
    assert_eq!(by_name["results"], local["results"]);
    assert!(by_name["results"]["xcopa_tr_fixed"].is_object(), "{by_name}");
    let c = &by_name["config"];
    assert_eq!(c["model"], "org/tiny");
    assert_eq!(c["model_hub"], json!({"repo": "org/tiny", "kind": "model", "revision": "main", "commit": COMMIT}));
    assert_eq!(
        c["datasets"]["xcopa_tr"],
        json!({"config": "tr", "repo": "cambridgeltl/xcopa", "kind": "dataset", "revision": "refs/convert/parquet", "commit": COMMIT})
    );
    assert_eq!(local["config"]["datasets"], json!({}));
    let cached = home.join("hub/datasets--cambridgeltl--xcopa/refs/refs/convert/parquet");
    assert_eq!(std::fs::read_to_string(cached).unwrap(), COMMIT);

    // The token reached the Hub's Authorization header and nothing else.
    assert!(fake.hub.requests().iter().any(|r| r.headers.get("authorization") == Some(&format!("Bearer {TOKEN}"))));
    let outputs = [String::from_utf8_lossy(&o.stdout).into_owned(), stderr(&o), all_text(work.path())];
    assert!(outputs.iter().all(|t| !t.contains(TOKEN)), "the token leaked");
}

/// The fake dump site: an index of dates, a dumpstatus.json per date, and the files.
/// `langadapt wiki download tr` from `mirror` into `out`, at `date` (default latest).
fn download(mirror: &str, date: Option<&str>, out: &str, json: bool) -> std::process::Output {
    let mut args = vec!["wiki", "download", "tr", "--mirror", mirror, "--out", out];
    args.extend(date.map(|d| ["--date", d]).into_iter().flatten());
    args.extend(json.then_some("--json"));
    crate::common::langadapt(&args)
}

fn dump_site(
    dumps: BTreeMap<String, (String, Vec<u8>, Vec<u8>)>,
    fault: impl Fn(&Req, usize, &[u8]) -> Option<Reply> + Send + Sync + 'static,
) -> Mock {
    Mock::start(None, move |req, n| {
        let p = req.path.as_str();
        if p == "/trwiki/" {
            let links: String = dumps.keys().map(|d| format!("<a href=\"{d}/\">{d}/</a>\n")).collect();
            return Reply {
                body: format!("<html><body>{links}<a href=\"latest/\">latest/</a></body></html>").into(),
                ..status(200, "")
            };
        }
        let parts: Vec<&str> = p.trim_start_matches('/').split('/').collect();
        let Some((state, dump, index)) = dumps.get(parts[1]) else { return status(404, "") };
        let base = format!("trwiki-{}-pages-articles-multistream", parts[1]);
        let entry = |name: &str, b: &[u8]| json!({ "size": b.len(), "url": format!("/trwiki/{}/{name}", parts[1]), "sha1": hex::encode(sha1::Sha1::digest(b)), "md5": "x" });
        match parts[2] {
            "dumpstatus.json" => ok(json!({"jobs": {
                "articlesmultistreamdump": {"status": state, "updated": "2024-06-02 10:00:00", "files": {
                    format!("{base}.xml.bz2"): entry(&format!("{base}.xml.bz2"), dump),
                    format!("{base}-index.txt.bz2"): entry(&format!("{base}-index.txt.bz2"), index),
                }},
                "xmlstubsdump": {"status": "done", "files": {}},
            }, "version": "0.8"})),
            f if f.ends_with("-index.txt.bz2") => file(req, index),
            _ => fault(req, n, dump).unwrap_or_else(|| file(req, dump)),
        }
    })
}

#[test]
fn wiki_download_resumes_checks_sha1_and_feeds_ingest() {
    let dump = std::fs::read(fixture("wiki/trwiki-sample-pages-articles-multistream.xml.bz2")).unwrap();
    let index = std::fs::read(fixture("wiki/trwiki-sample-pages-articles-multistream-index.txt.bz2")).unwrap();
    let mut dumps = BTreeMap::new();
    dumps.insert("20240501".to_string(), ("done".to_string(), dump.clone(), index.clone()));
    dumps.insert("20240601".to_string(), ("in-progress".to_string(), dump.clone(), index.clone()));
    // The first GET of the dump is cut off; the second, a range request, completes it.
    let site =
        dump_site(dumps, |r, _, b| (!r.headers.contains_key("range")).then(|| Reply { cut: true, ..file(r, b) }));
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("dumps");
    let o = download(&site.url, None, out.to_str().unwrap(), true);
    assert!(o.status.success(), "{}", stderr(&o));
    let report: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["date"], "20240501", "latest = the newest finished dump");
    let got = out.join("trwiki-20240501-pages-articles-multistream.xml.bz2");
    assert_eq!(std::fs::read(&got).unwrap(), dump);
    assert_eq!(report["bytes_fetched"], (dump.len() + index.len()) as u64, "the cut-off half counts too");
    let dump_gets: Vec<Req> = gets(&site).into_iter().filter(|r| r.path.ends_with("multistream.xml.bz2")).collect();
    assert_eq!(dump_gets.len(), 2);
    assert_eq!(dump_gets[1].headers.get("range"), Some(&format!("bytes={}-", dump.len() / 2)));
    assert_eq!(
        crate::common::file_names(&out),
        [
            "manifest.json",
            "trwiki-20240501-pages-articles-multistream-index.txt.bz2",
            "trwiki-20240501-pages-articles-multistream.xml.bz2"
        ]
    );
    let manifest: Value = serde_json::from_str(&std::fs::read_to_string(out.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["stage"], "wiki download");
    assert_eq!(manifest["outputs"][0]["sha256"], sha256(&dump));

    // Run again: nothing is fetched.
    let before = site.requests().len();
    let o = download(&site.url, Some("20240501"), out.to_str().unwrap(), true);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(serde_json::from_slice::<Value>(&o.stdout).unwrap()["bytes_fetched"], 0);
    assert_eq!(site.requests().len() - before, 1, "only dumpstatus.json");

    // What was downloaded is a dump `wiki ingest` reads with its index.
    let shards = work.path().join("shards");
    let o = crate::common::langadapt(&[
        "wiki",
        "ingest",
        got.to_str().unwrap(),
        "--index",
        out.join("trwiki-20240501-pages-articles-multistream-index.txt.bz2").to_str().unwrap(),
        "--out",
        shards.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));

    // An unfinished dump is refused with its status.
    let o = download(&site.url, Some("20240601"), out.to_str().unwrap(), false);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(
        stderr(&o),
        format!(
            "error: {}/trwiki/20240601/dumpstatus.json: job articlesmultistreamdump is `in-progress`, not `done`: this \
             dump is unfinished; wait for it or pass an older --date\n",
            site.url
        )
    );
}

#[test]
fn wiki_download_catches_a_corrupted_dump() {
    let dump = std::fs::read(fixture("wiki/trwiki-sample-pages-articles-multistream.xml.bz2")).unwrap();
    let index = std::fs::read(fixture("wiki/trwiki-sample-pages-articles-multistream-index.txt.bz2")).unwrap();
    let mut dumps = BTreeMap::new();
    dumps.insert("20240501".to_string(), ("done".to_string(), dump.clone(), index));
    let site = dump_site(dumps, |r, _, b| {
        let mut bad = b.to_vec();
        bad[100] ^= 0x80;
        Some(file(r, &bad))
    });
    let out = tempfile::tempdir().unwrap();
    let o = download(&site.url, Some("20240501"), out.path().to_str().unwrap(), false);
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    let want = format!(
        "error: {}/trwiki/20240501/trwiki-20240501-pages-articles-multistream.xml.bz2: sha1 mismatch after a refetch (expected {}, got ",
        site.url,
        hex::encode(sha1::Sha1::digest(&dump))
    );
    assert!(e.starts_with(&want), "{e}");
    assert!(!out.path().join("trwiki-20240501-pages-articles-multistream.xml.bz2").exists());
    assert!(!out.path().join("manifest.json").exists());
}

#[test]
fn dataset_files_by_name_share_the_cache() {
    let mut ds = FakeRepo::default();
    ds.files.insert("tr/test/0000.parquet".into(), b"PAR1".to_vec());
    let fake = fake_hub(repos(&[("cambridgeltl/xcopa", ds)]), no_fault);
    let home = tempfile::tempdir().unwrap();
    let hub = Hub::new(config(home.path(), &fake.hub.url, None, false)).unwrap();
    let repo =
        RepoRef { kind: RepoKind::Dataset, id: "cambridgeltl/xcopa".into(), revision: "refs/convert/parquet".into() };
    let snap = hub.files(&repo, &["tr/test/0000.parquet".to_string()]).unwrap();
    assert_eq!(snap.dir, home.path().join(format!("hub/datasets--cambridgeltl--xcopa/snapshots/{COMMIT}")));
    assert_eq!(std::fs::read(snap.dir.join("tr/test/0000.parquet")).unwrap(), b"PAR1");
    let link = std::fs::read_link(snap.dir.join("tr/test/0000.parquet")).unwrap();
    assert_eq!(link, PathBuf::from(format!("../../../../blobs/{}", sha256(b"PAR1"))));
    let err = hub.files(&repo, &["et/test/0000.parquet".to_string()]).unwrap_err().to_string();
    assert_eq!(err, "cambridgeltl/xcopa@refs/convert/parquet: et/test/0000.parquet: no such file at this revision");
}

#[test]
fn recipe_wiki_stage_names_lang_and_date_instead_of_a_file() {
    let dump = std::fs::read(fixture("wiki/trwiki-sample-pages-articles-multistream.xml.bz2")).unwrap();
    let index = std::fs::read(fixture("wiki/trwiki-sample-pages-articles-multistream-index.txt.bz2")).unwrap();
    let mut dumps = BTreeMap::new();
    dumps.insert("20240501".to_string(), ("done".to_string(), dump, index));
    let site = dump_site(dumps, no_fault);
    let work = tempfile::tempdir().unwrap();
    let recipe = work.path().join("recipe.toml");
    let out = work.path().join("out");
    let toml = format!("out = \"out\"\n[wiki.trwiki]\nlang = \"tr\"\ndate = \"20240501\"\nmirror = \"{}\"\n", site.url);
    std::fs::write(&recipe, toml).unwrap();
    let o = crate::common::langadapt(&["run", recipe.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(out.join("trwiki.dump/trwiki-20240501-pages-articles-multistream.xml.bz2").is_file());
    assert!(!crate::common::parquet_files(&out.join("trwiki")).is_empty());
    let m: Value = serde_json::from_str(&std::fs::read_to_string(out.join("trwiki/manifest.json")).unwrap()).unwrap();
    assert!(
        m["inputs"][0]["path"]
            .as_str()
            .unwrap()
            .ends_with("trwiki.dump/trwiki-20240501-pages-articles-multistream.xml.bz2"),
        "{m}"
    );

    std::fs::write(&recipe, "out = \"out\"\n[wiki.trwiki]\ndate = \"20240501\"\n").unwrap();
    let o = crate::common::langadapt(&["run", recipe.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert!(e.contains("`date` needs `lang` (the Wikipedia language code) to name the dump"), "{e}");
}

/// A recipe names its model by Hub id (in `[inputs]`): `--dry-run` accepts it without fetching anything, the
/// run fetches it into the HF cache when the eval stage runs (the resolved recipe keeps the name asked for).
#[test]
fn recipe_stages_take_a_model_by_hub_id() {
    let fake = fake_hub(repos(&[("org/tiny", tiny_repo())]), no_fault);
    let work = tempfile::tempdir().unwrap();
    let home = work.path().join("hf");
    let recipe = work.path().join("r.toml");
    std::fs::write(
        &recipe,
        format!(
            "out = \"out\"\n[inputs]\nmodel = \"org/tiny\"\n[eval.score]\nmodel = \"$model\"\ntasks = [\"xcopa_tr\"]\n\
             data_dir = {:?}\nlimit = 4\n",
            fixture("data")
        ),
    )
    .unwrap();
    let out = work.path().join("out");
    let args = |extra: &[&str]| {
        let mut a = vec!["run", recipe.to_str().unwrap(), "--out", out.to_str().unwrap()];
        a.extend_from_slice(extra);
        a.into_iter().map(String::from).collect::<Vec<_>>()
    };
    let dry: Vec<String> = args(&["--dry-run", "--json"]);
    let o = langadapt_with_hub(&dry.iter().map(String::as_str).collect::<Vec<_>>(), &home, &fake.hub.url);
    assert!(o.status.success(), "{}", stderr(&o));
    let plan: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(plan["stages"][0]["config"]["settings"]["model"], "org/tiny");
    assert!(gets(&fake.hub).is_empty(), "--dry-run must not download");
    let run: Vec<String> = args(&[]);
    let o = langadapt_with_hub(&run.iter().map(String::as_str).collect::<Vec<_>>(), &home, &fake.hub.url);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(home.join("hub/models--org--tiny/refs/main").is_file());
    let results: Value = serde_json::from_slice(&std::fs::read(out.join("score/results.json")).unwrap()).unwrap();
    assert!(results["results"]["xcopa_tr"]["acc,none"].is_number(), "{results}");
    assert_eq!(
        (&results["config"]["model"], &results["config"]["model_hub"]),
        (&json!("org/tiny"), &json!({"repo": "org/tiny", "kind": "model", "revision": "main", "commit": COMMIT}))
    );
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(out.join("score/results.manifest.json")).unwrap()).unwrap();
    assert!(manifest["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .any(|i| i["path"].as_str().unwrap().contains("models--org--tiny")));
}

/// `train --model org/name` and `vocab merge --base/--model org/name` fetch the model themselves and their
/// manifests record what was asked for and what it resolved to (repo, revision, commit), not just a path.
#[test]
fn train_and_merge_manifests_record_the_hub_revision() {
    let fake = fake_hub(repos(&[("org/tiny", tiny_repo())]), no_fault);
    let work = tempfile::tempdir().unwrap();
    let home = work.path().join("hf");
    crate::common::text_shards(
        &fixture("tiny-llama"),
        "Kedi evde uyuyor. Köpek bahçede koşuyor.\n\nKedi ve köpek arkadaş.",
        work.path(),
    );
    let (train, out) = (work.path().join("shards/train"), work.path().join("run"));
    let o = langadapt_with_hub(
        &[
            "train",
            "--model",
            "org/tiny@main",
            "--train",
            train.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--max-steps",
            "1",
            "--micro-batch",
            "1",
        ],
        &home,
        &fake.hub.url,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let manifest: Value = serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["args"]["model"], "org/tiny@main");
    assert_eq!(
        manifest["args"]["model_hub"],
        json!({"repo": "org/tiny", "kind": "model", "revision": "main", "commit": COMMIT})
    );
    assert!(manifest["inputs"][0]["path"].as_str().unwrap().contains(&format!("models--org--tiny/snapshots/{COMMIT}")));
    // vocab merge with --base and --model by name: the same provenance for both.
    let merged = work.path().join("merged");
    let o = langadapt_with_hub(
        &[
            "vocab",
            "merge",
            "--base",
            "org/tiny",
            "--model",
            "org/tiny@main",
            "--add",
            fixture("vocab/tokenizer-train-bpe.model").to_str().unwrap(),
            "--out",
            merged.to_str().unwrap(),
        ],
        &home,
        &fake.hub.url,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let manifest: Value = serde_json::from_slice(&std::fs::read(merged.join("manifest.json")).unwrap()).unwrap();
    let source = |rev: &str| json!({"repo": "org/tiny", "kind": "model", "revision": rev, "commit": COMMIT});
    assert_eq!((&manifest["args"]["base"], &manifest["args"]["model"]), (&json!("org/tiny"), &json!("org/tiny@main")));
    assert_eq!((&manifest["args"]["base_hub"], &manifest["args"]["model_hub"]), (&source("main"), &source("main")));
}

/// Issue 18: MMLU by name reads lm-eval's own source, the Hub's Parquet rows of cais/mmlu (`choices` a list,
/// `answer` an integer), into the same requests lm-eval 0.4.13 builds from them (5-shot, from `dev`).
#[test]
fn mmlu_from_the_hubs_parquet_rows_builds_lm_evals_requests() {
    let mut mmlu = FakeRepo::default();
    let hub = fixture("data/mmlu/hub/abstract_algebra");
    for split in ["test", "dev"] {
        let bytes = std::fs::read(hub.join(format!("{split}/0000.parquet"))).unwrap();
        mmlu.files.insert(format!("abstract_algebra/{split}/0000.parquet"), bytes);
    }
    let fake = fake_hub(repos(&[("cais/mmlu", mmlu)]), no_fault);
    let work = tempfile::tempdir().unwrap();
    let (home, empty, out) = (work.path().join("hf"), work.path().join("empty"), work.path().join("req.jsonl"));
    std::fs::create_dir_all(&empty).unwrap();
    let args = [
        "eval",
        "requests",
        "--tasks",
        "mmlu_abstract_algebra",
        "--num-fewshot",
        "5",
        "--data-dir",
        empty.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    let o = langadapt_with_hub(&args, &home, &fake.hub.url);
    assert!(o.status.success(), "{}", stderr(&o));
    let ours: Vec<Value> =
        std::fs::read_to_string(&out).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let lm_eval: Vec<Value> = std::fs::read_to_string(fixture("data/mmlu/requests_5shot.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v["task"] == "mmlu_abstract_algebra")
        .collect();
    assert_eq!(ours, lm_eval);
}
