//! `instruct translate` and `instruct translation-pairs` against HTTP servers the tests start on
//! 127.0.0.1: each backend's request shape, faults and retries, order, resume without resending,
//! protected spans byte for byte, keys never written; and the readers' errors.

use std::path::Path;
use std::time::Duration;

use langadapt::instruct::translate::{self, ApiKey, Backend, TranslateConfig};
use langadapt::instruct::{InstructError, InstructRecord, PairsConfig};
use langadapt::{Env, Progress};
use serde_json::{json, Value};

use crate::common::{fixture, langadapt, stderr};
use crate::mock_http::{deepl_echo, ok, openai_echo, status, Mock, Reply};

const SAMPLE: &str = "alpaca/alpaca_sample.json";

fn env() -> Env {
    Env { threads: 2, progress: Progress { quiet: true } }
}

fn sample() -> Vec<Value> {
    serde_json::from_slice(&std::fs::read(fixture(SAMPLE)).unwrap()).unwrap()
}

fn read_jsonl<T: serde::de::DeserializeOwned>(p: &Path) -> Vec<T> {
    std::fs::read_to_string(p).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn config(input: &Path, backend: Backend, out: &Path, endpoint: &str) -> TranslateConfig {
    let mut cfg = TranslateConfig::new(input, "et", backend, out);
    cfg.endpoint = Some(endpoint.to_string());
    cfg.timeout_s = 0.3;
    cfg.backoff_ms = 2;
    cfg.concurrency = 4;
    cfg
}

/// What a record's field must become under an echo backend: empty stays empty, placeholders and
/// code-only fields stay as they are, everything else is `[et] ` + the original bytes.
fn expected_field(src: &str) -> String {
    if src.is_empty() || langadapt::instruct::protect::keep_verbatim(src) {
        src.to_string()
    } else {
        format!("[et] {src}")
    }
}

fn all_files_text(dir: &Path) -> String {
    let mut s = String::new();
    for e in std::fs::read_dir(dir).unwrap() {
        s.push_str(&String::from_utf8_lossy(&std::fs::read(e.unwrap().path()).unwrap()));
    }
    s
}

#[test]
fn deepl_whole_sample_in_order_with_spans_byte_for_byte() {
    let mock = Mock::start(None, |r, _| deepl_echo(r));
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&fixture(SAMPLE), Backend::Deepl, dir.path(), &mock.url);
    cfg.api_key = Some(ApiKey::new("deepl-SECRET-key:fx"));
    let report = translate::run(&cfg, &env()).unwrap();
    let out: Vec<InstructRecord> = read_jsonl(&report.translated);
    let src = sample();
    assert_eq!(out.len(), 200);
    for (i, (o, s)) in out.iter().zip(&src).enumerate() {
        assert_eq!(o.id, langadapt::corpus::DocId::Int(i as i64));
        for (field, got) in ["instruction", "input", "output"].iter().zip([&o.instruction, &o.input, &o.output]) {
            assert_eq!(got, &expected_field(s[field].as_str().unwrap()), "record {i} {field}");
        }
        assert_eq!((o.lang.as_str(), o.translator.as_deref()), ("et", Some("deepl")));
        assert_eq!(o.source_id.as_deref(), Some(format!("alpaca_sample.json:{i}").as_str()));
    }
    // The fenced code record: the fence with its <noinput> went out masked and came back intact.
    let fenced =
        out.iter().find(|o| o.output.contains("```") || o.input.contains("```") || o.instruction.contains("```"));
    assert!(fenced.is_some());
    let reqs = mock.requests();
    for r in &reqs {
        assert_eq!(r.path, "/v2/translate");
        assert_eq!(r.headers["authorization"], "DeepL-Auth-Key deepl-SECRET-key:fx");
        assert_eq!(r.headers["content-type"], "application/json");
        assert_eq!((r.body["source_lang"].as_str(), r.body["target_lang"].as_str()), (Some("EN"), Some("ET")));
        assert_eq!(r.body["tag_handling"], "xml");
        let texts = r.body["text"].as_array().unwrap();
        assert!(!texts.is_empty() && texts.len() <= 50);
        for t in texts {
            let t = t.as_str().unwrap();
            assert!(!t.contains("```") && !t.contains("http") && !t.contains("<noinput>"), "unmasked span sent: {t}");
        }
    }
    let sent: Vec<String> =
        reqs.iter().flat_map(|r| r.body["text"].as_array().unwrap().iter().map(|t| t.to_string())).collect();
    let unique: std::collections::HashSet<_> = sent.iter().collect();
    assert_eq!(unique.len(), sent.len(), "a text was sent twice");
    let c = &report.counts;
    assert_eq!((c["records"], c["records_translated"], c["records_failed"]), (200, 200, 0));
    assert_eq!(c["fields_sent"], sent.len() as u64);
    assert_eq!(c["fields_sent"] + c["fields_from_cache"] + c["fields_empty"] + c["fields_verbatim"], 600);
    assert_eq!(c["requests"], reqs.len() as u64);
    let chars: u64 = sent.iter().map(|t| serde_json::from_str::<String>(t).unwrap().chars().count() as u64).sum();
    assert_eq!(c["characters_billed"], chars);
    // Every echo keeps the English text, so the QA flags it as still in the source language.
    let manifest: Value = serde_json::from_slice(&std::fs::read(&report.manifest).unwrap()).unwrap();
    assert!(manifest["details"]["qa"]["source_language"].as_array().unwrap().len() > 150);
    assert_eq!(manifest["outputs"][0]["rows"], 200);
    assert!(!all_files_text(dir.path()).contains("SECRET"));

    // A second run is served from the cache entirely.
    let before = mock.requests().len();
    let again = translate::run(&cfg, &env()).unwrap();
    assert_eq!(mock.requests().len(), before);
    assert_eq!(std::fs::read(&again.translated).unwrap(), std::fs::read(&report.translated).unwrap());
    assert_eq!(again.counts["fields_sent"], 0);
}

#[test]
fn openai_google_libre_request_shapes() {
    let dir = tempfile::tempdir().unwrap();
    // OpenAI-compatible: one message per text, markers as ⟦N⟧, tokens counted.
    let mock = Mock::start(None, |r, _| openai_echo(r));
    let mut cfg = config(&fixture(SAMPLE), Backend::Openai, &dir.path().join("o"), &format!("{}/v1", mock.url));
    cfg.model = Some("gpt-test".into());
    cfg.api_key = Some(ApiKey::new("sk-SECRET"));
    cfg.limit = Some(50);
    let report = translate::run(&cfg, &env()).unwrap();
    let reqs = mock.requests();
    let r = &reqs[0];
    assert_eq!(r.path, "/v1/chat/completions");
    assert_eq!(r.headers["authorization"], "Bearer sk-SECRET");
    assert_eq!((r.body["model"].as_str(), r.body["temperature"].as_i64()), (Some("gpt-test"), Some(0)));
    assert_eq!(r.body["messages"][0]["role"], "system");
    assert!(r.body["messages"][0]["content"].as_str().unwrap().contains("from English to Estonian"));
    assert_eq!(r.body["messages"][1]["role"], "user");
    let with_marker = reqs.iter().find(|r| r.body["messages"][1]["content"].as_str().unwrap().contains("⟦0⟧"));
    assert!(with_marker.is_some(), "the URL records go out with ⟦N⟧ markers");
    assert_eq!(report.counts["llm_tokens"], 15 * reqs.len() as u64);
    let out: Vec<InstructRecord> = read_jsonl(&report.translated);
    assert_eq!(out.len(), 50);
    assert_eq!(out[21].instruction, format!("[et] {}", sample()[21]["instruction"].as_str().unwrap()));
    assert_eq!(out[0].translator.as_deref(), Some("openai:gpt-test"));

    // Google v2: q batches, html format, key as parameter.
    let mock = Mock::start(None, |r, _| {
        let q = r.body["q"].as_array().unwrap();
        let tr: Vec<Value> =
            q.iter().map(|t| json!({"translatedText": format!("[et] {}", t.as_str().unwrap())})).collect();
        ok(json!({"data": {"translations": tr}}))
    });
    let mut cfg = config(&fixture(SAMPLE), Backend::Google, &dir.path().join("g"), &mock.url);
    cfg.api_key = Some(ApiKey::new("AIzaSECRET"));
    cfg.limit = Some(30);
    let report = translate::run(&cfg, &env()).unwrap();
    let r = &mock.requests()[0];
    assert_eq!(r.path, "/language/translate/v2?key=AIzaSECRET");
    assert_eq!(
        (r.body["source"].as_str(), r.body["target"].as_str(), r.body["format"].as_str()),
        (Some("en"), Some("et"), Some("html"))
    );
    assert!(r.body["q"].as_array().unwrap().len() > 1, "texts are batched");
    assert_eq!(read_jsonl::<InstructRecord>(&report.translated).len(), 30);

    // LibreTranslate: one q per request, api_key in the body.
    let mock =
        Mock::start(None, |r, _| ok(json!({"translatedText": format!("[et] {}", r.body["q"].as_str().unwrap())})));
    let mut cfg = config(&fixture(SAMPLE), Backend::Libre, &dir.path().join("l"), &mock.url);
    cfg.api_key = Some(ApiKey::new("libre-SECRET"));
    cfg.limit = Some(5);
    let report = translate::run(&cfg, &env()).unwrap();
    let r = &mock.requests()[0];
    assert_eq!(r.path, "/translate");
    assert_eq!((r.body["api_key"].as_str(), r.body["format"].as_str()), (Some("libre-SECRET"), Some("html")));
    assert!(r.body["q"].is_string());
    assert_eq!(read_jsonl::<InstructRecord>(&report.translated).len(), 5);
    for sub in ["o", "g", "l"] {
        assert!(!all_files_text(&dir.path().join(sub)).contains("SECRET"), "{sub}");
    }
}

#[test]
fn faults_are_retried_and_every_record_comes_out_once_in_order() {
    // Request n: 0 → 429 Retry-After 1, 1 → 500, 2 → 503, 3 → slower than the timeout,
    // 4 → malformed JSON, 5 → connection closed mid-response; then echo.
    let mock = Mock::start(None, |r, n| {
        let mut reply = match n {
            0 => status(429, "{\"message\":\"Too many requests\"}"),
            1 => status(500, "oops"),
            2 => status(503, "busy"),
            4 => ok(json!({})),
            _ => openai_echo(r),
        };
        match n {
            0 => reply.headers.push(("Retry-After", "1".into())),
            // Far past the 2 s timeout below, which no healthy reply comes near even on a loaded machine.
            3 => reply.delay = Duration::from_secs(6),
            4 => reply.body = "{\"choices\": [".into(),
            5 => reply.cut = true,
            _ => {}
        }
        reply
    });
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&fixture(SAMPLE), Backend::Openai, dir.path(), &mock.url);
    cfg.model = Some("m".into());
    cfg.concurrency = 1;
    cfg.limit = Some(4);
    cfg.max_retries = 6;
    // Issue 19 (6): exact retry counts must not depend on machine load, so the timeout is generous.
    cfg.timeout_s = 2.0;
    let report = translate::run(&cfg, &env()).unwrap();
    let reqs = mock.requests();
    assert!(reqs[1].at - reqs[0].at >= Duration::from_secs(1), "Retry-After honoured: {:?}", reqs[1].at - reqs[0].at);
    // The six faults hit the same first text: it was asked for 7 times.
    let first = &reqs[0].body["messages"][1]["content"];
    assert_eq!(reqs.iter().take_while(|r| &r.body["messages"][1]["content"] == first).count(), 7);
    assert_eq!(report.counts["retried"], 6);
    assert_eq!(report.counts["records_failed"], 0);
    let out: Vec<InstructRecord> = read_jsonl(&report.translated);
    let ids: Vec<_> = out.iter().map(|r| r.id.clone()).collect();
    assert_eq!(ids, (0..4).map(langadapt::corpus::DocId::Int).collect::<Vec<_>>());
    assert_eq!(report.counts["requests"], reqs.len() as u64);
}

#[test]
fn records_that_keep_failing_are_listed_not_dropped_or_copied() {
    let mock = Mock::start(None, |r, _| {
        let text = r.body["messages"][1]["content"].as_str().unwrap();
        if text.contains("three primary colors") {
            status(500, "always broken")
        } else if text.contains("Give three tips") {
            status(400, "{\"error\":{\"message\":\"bad request\"}}")
        } else if text.contains("atom") {
            // Drops the protected marker: the record must fail, not be written without its span.
            ok(json!({"choices": [{"message": {"content": "no markers"}, "finish_reason": "stop"}]}))
        } else {
            openai_echo(r)
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    let recs = [
        json!({"instruction": "Give three tips for staying healthy.", "input": "", "output": "Eat well."}),
        json!({"instruction": "What are the three primary colors?", "input": "", "output": "Red, blue, yellow."}),
        json!({"id": "x7", "instruction": "Describe an atom, see https://x.org/atom.", "input": "", "output": "Small."}),
        json!({"instruction": "Say hi.", "input": "<noinput>", "output": "Hi!"}),
    ];
    std::fs::write(&input, recs.iter().map(|r| r.to_string() + "\n").collect::<String>()).unwrap();
    let mut cfg = config(&input, Backend::Openai, &dir.path().join("out"), &mock.url);
    cfg.model = Some("m".into());
    cfg.max_retries = 2;
    let report = incomplete(translate::run(&cfg, &env()), 3, 4);
    let out: Vec<InstructRecord> = read_jsonl(&report.translated);
    assert_eq!(out.len(), 1);
    assert_eq!((out[0].id.clone(), out[0].input.as_str()), (langadapt::corpus::DocId::Int(3), "<noinput>"));
    let failed: Vec<Value> = read_jsonl(&report.failed);
    assert_eq!(failed.len(), 3);
    assert_eq!(failed[0]["id"], 0);
    assert!(failed[0]["reason"].as_str().unwrap().starts_with("instruction: HTTP 400 Bad Request"), "{}", failed[0]);
    assert_eq!(failed[1]["id"], 1);
    assert_eq!(
        failed[1]["reason"],
        "instruction: HTTP 500 Internal Server Error: always broken (gave up after 2 retries)"
    );
    assert_eq!(failed[2]["id"], "x7");
    assert!(failed[2]["reason"].as_str().unwrap().contains("protected span 0 (\"https://x.org/atom\") is missing"));
    let manifest: Value = serde_json::from_slice(&std::fs::read(&report.manifest).unwrap()).unwrap();
    assert_eq!(manifest["details"]["failed"].as_array().unwrap().len(), 3);
    assert_eq!(manifest["counts"]["records_failed"], 3);
    assert_eq!(manifest["counts"]["records"], 4);
    assert_eq!(
        manifest["incomplete"],
        "3 of 4 records could not be translated (failed.jsonl); rerun the stage to retry them"
    );
}

/// The report of a run that ended with `failed` of `records` records untranslated (issue 19: an error, so no
/// caller can mistake it for a finished stage).
fn incomplete(
    r: Result<translate::TranslateReport, InstructError>,
    failed: u64,
    records: u64,
) -> translate::TranslateReport {
    match r {
        Err(e @ InstructError::Incomplete { .. }) => {
            let msg = e.to_string();
            let InstructError::Incomplete { failed: f, records: n, report } = e else { unreachable!() };
            assert_eq!((f, n), (failed, records), "{msg}");
            assert_eq!(
                msg,
                format!(
                    "{failed} of {records} records could not be translated (ids and reasons in {}); the stage is \
                     incomplete: rerun to retry them, the cache keeps the rest",
                    report.failed.display()
                )
            );
            *report
        }
        other => panic!("expected an incomplete run, got {other:?}"),
    }
}

#[test]
fn killed_run_resumes_without_sending_any_text_twice() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    // The server dies after 30 requests: the rest of the run fails (connection refused / closed).
    let first = Mock::start(Some(30), |r, _| openai_echo(r));
    let mut cfg = config(&fixture(SAMPLE), Backend::Openai, &out, &first.url);
    cfg.model = Some("m".into());
    cfg.limit = Some(40);
    cfg.max_retries = 1;
    let r1 = match translate::run(&cfg, &env()) {
        Err(InstructError::Incomplete { report, .. }) => *report,
        other => panic!("expected an incomplete run, got {other:?}"),
    };
    assert!(r1.counts["records_failed"] > 0 && r1.counts["records_translated"] > 0, "{:?}", r1.counts);
    let second = Mock::start(None, |r, _| openai_echo(r));
    cfg.endpoint = Some(second.url.clone());
    let r2 = translate::run(&cfg, &env()).unwrap();
    assert_eq!(r2.counts["records_translated"], 40);
    let answered: Vec<String> =
        first.requests()[..30].iter().map(|r| r.body["messages"][1]["content"].to_string()).collect();
    for r in second.requests() {
        let t = r.body["messages"][1]["content"].to_string();
        assert!(!answered.contains(&t), "resent after a crash: {t}");
    }
    let again: Vec<String> = second.requests().iter().map(|r| r.body["messages"][1]["content"].to_string()).collect();
    assert_eq!(again.len(), again.iter().collect::<std::collections::HashSet<_>>().len());
    // The same bytes as a run that never failed.
    let clean = tempfile::tempdir().unwrap();
    let third = Mock::start(None, |r, _| openai_echo(r));
    cfg.out = clean.path().to_path_buf();
    cfg.endpoint = Some(third.url.clone());
    let r3 = translate::run(&cfg, &env()).unwrap();
    assert_eq!(std::fs::read(&r3.translated).unwrap(), std::fs::read(&r2.translated).unwrap());
}

#[test]
fn identical_texts_are_sent_once_across_workers() {
    let mock = Mock::start(None, |r, _| {
        let mut reply = openai_echo(r);
        reply.delay = Duration::from_millis(20);
        reply
    });
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.json");
    let recs: Vec<Value> = (0..24)
        .map(|i| json!({"instruction": "Name a fruit.", "input": "", "output": format!("Fruit number {}", i % 3)}))
        .collect();
    std::fs::write(&input, serde_json::to_string(&recs).unwrap()).unwrap();
    let mut cfg = config(&input, Backend::Openai, &dir.path().join("out"), &mock.url);
    cfg.model = Some("m".into());
    cfg.concurrency = 8;
    let report = translate::run(&cfg, &env()).unwrap();
    assert_eq!(mock.requests().len(), 4);
    assert_eq!((report.counts["fields_sent"], report.counts["fields_from_cache"]), (4, 44));
    assert_eq!(read_jsonl::<InstructRecord>(&report.translated).len(), 24);
}

#[test]
fn a_refused_key_stops_the_run_without_leaving_workers_waiting() {
    // A worker claims "Say b." and "Say c." and gets a 401 on the first; workers holding only
    // "Say c." wait on its claim, which must be released too, or the run would hang.
    let mock = Mock::start(None, |_, _| Reply {
        delay: Duration::from_millis(50),
        ..status(401, "{\"error\":{\"message\":\"Incorrect API key\"}}")
    });
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.json");
    let recs: Vec<Value> = (0..16)
        .map(|i| match i % 2 {
            0 => json!({"instruction": "Say b.", "input": "", "output": "Say c."}),
            _ => json!({"instruction": "Say c.", "input": "", "output": ""}),
        })
        .collect();
    std::fs::write(&input, serde_json::to_string(&recs).unwrap()).unwrap();
    let mut cfg = config(&input, Backend::Openai, &dir.path().join("out"), &mock.url);
    cfg.model = Some("m".into());
    cfg.concurrency = 4;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(translate::run(&cfg, &env()).map_err(|e| e.to_string())).unwrap());
    let err = rx.recv_timeout(Duration::from_secs(10)).expect("the run hangs").unwrap_err();
    assert!(err.starts_with("openai:m: HTTP 401 Unauthorized: {\"error\""), "{err}");
    assert_eq!(crate::common::file_names(&dir.path().join("out")), vec!["cache.jsonl"], "nothing half-written is left");
}

#[test]
fn keys_never_reach_errors_outputs_or_stderr() {
    // A server that reflects the credentials it got, in a 403 and in a 400.
    let mock = Mock::start(None, |r, _| {
        let auth = r.headers.get("authorization").cloned().unwrap_or_default();
        status(if r.path.contains("key=") { 400 } else { 403 }, &format!("bad credentials {auth} {}", r.path))
    });
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&fixture(SAMPLE), Backend::Deepl, &dir.path().join("d"), &mock.url);
    cfg.api_key = Some(ApiKey::new("dk-TOPSECRET"));
    cfg.limit = Some(3);
    let err = translate::run(&cfg, &env()).unwrap_err().to_string();
    assert!(err.starts_with("deepl: HTTP 403 Forbidden: bad credentials DeepL-Auth-Key *** "), "{err}");
    assert!(err.ends_with("(stopped: check the API key and quota)"), "{err}");
    let mut cfg = config(&fixture(SAMPLE), Backend::Google, &dir.path().join("g"), &mock.url);
    cfg.api_key = Some(ApiKey::new("gk-TOPSECRET"));
    cfg.limit = Some(3);
    let report = incomplete(translate::run(&cfg, &env()), 3, 3);
    let failed = std::fs::read_to_string(&report.failed).unwrap();
    assert!(failed.contains("/language/translate/v2?key=***"), "{failed}");
    // Through the binary, with the key in the environment.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_langadapt"))
        .args(["--quiet", "instruct", "translate", "--backend", "google", "--target", "et", "--limit", "2"])
        .args(["--max-retries", "0", "--endpoint", &mock.url, "--input"])
        .arg(fixture(SAMPLE))
        .arg("--out")
        .arg(dir.path().join("cli"))
        .env("GOOGLE_API_KEY", "gk-TOPSECRET")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("2 records could not be translated"), "{err}");
    let mut everything = err + &String::from_utf8_lossy(&out.stdout);
    for sub in ["d", "g", "cli"] {
        everything += &all_files_text(&dir.path().join(sub));
    }
    assert!(!everything.contains("TOPSECRET"));
    // A missing key is named, not guessed.
    let out = langadapt(&[
        "instruct",
        "translate",
        "--backend",
        "deepl",
        "--target",
        "et",
        "--input",
        "x.json",
        "--out",
        "o",
    ]);
    assert!(stderr(&out).contains("DEEPL_AUTH_KEY is not set"), "{}", stderr(&out));
}

#[test]
fn replay_backend_runs_offline_from_the_fixture_cache() {
    let dir = tempfile::tempdir().unwrap();
    let replay = |limit: &str, out: &Path| {
        let (input, cache) = (fixture(SAMPLE), fixture("alpaca/replay-cache-et.jsonl"));
        langadapt(&[
            "instruct",
            "translate",
            "--backend",
            "replay",
            "--target",
            "et",
            "--limit",
            limit,
            "--input",
            input.to_str().unwrap(),
            "--cache",
            cache.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ])
    };
    let out = replay("10", dir.path());
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let recs: Vec<InstructRecord> = read_jsonl(&dir.path().join("translated.jsonl"));
    assert_eq!(recs.len(), 10);
    assert_eq!(recs[0].translator.as_deref(), Some("deepl"));
    assert_eq!(recs[0].instruction, "Kavanda kullerfirmale rakendus.");
    assert_eq!(
        (recs[1].input.as_str(), recs[1].output.as_str()),
        ("101101", "Kahendarvu 101101 kümnendväärtus on 45.")
    );
    // Real Estonian passes the language check that the echo translations above fail.
    let manifest: Value = serde_json::from_slice(&std::fs::read(dir.path().join("manifest.json")).unwrap()).unwrap();
    assert_eq!(
        manifest["details"]["qa"],
        json!({"empty": [], "identical": [], "length_ratio": [], "source_language": []})
    );
    assert_eq!(
        (manifest["counts"]["fields_from_cache"].as_u64(), manifest["counts"]["requests"].as_u64()),
        (Some(24), Some(0))
    );
    // Beyond the cached records, replay fails them rather than inventing text.
    let out = replay("12", &dir.path().join("more"));
    assert_eq!(out.status.code(), Some(2));
    let failed: Vec<Value> = read_jsonl(&dir.path().join("more/failed.jsonl"));
    assert_eq!(failed.len(), 2);
    assert!(failed[0]["reason"].as_str().unwrap().contains("not in the replay cache"));
}

/// Issue 16: `--shard i/N` takes records k with k % N == i of the first `--limit`; the shards' outputs together
/// are the unsharded run's records, and only a sharded run's manifest records the shard.
#[test]
fn shards_together_translate_every_record_once() {
    let dir = tempfile::tempdir().unwrap();
    let run = |shard: &str, out: &Path| {
        let (input, cache) = (fixture(SAMPLE), fixture("alpaca/replay-cache-et.jsonl"));
        let (input, cache, out) = (input.to_str().unwrap(), cache.to_str().unwrap(), out.to_str().unwrap());
        let args = ["instruct", "translate", "--backend", "replay", "--target", "et", "--limit", "10", "--shard"];
        let o = langadapt(&[&args[..], &[shard, "--input", input, "--cache", cache, "--out", out]].concat());
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        let recs: Vec<InstructRecord> = read_jsonl(&Path::new(out).join("translated.jsonl"));
        let manifest: Value =
            serde_json::from_slice(&std::fs::read(Path::new(out).join("manifest.json")).unwrap()).unwrap();
        (recs.into_iter().map(|r| serde_json::to_string(&r).unwrap()).collect::<Vec<_>>(), manifest)
    };
    let (whole, m) = run("0/1", &dir.path().join("whole"));
    assert_eq!(m["args"].get("shard"), None);
    let (even, m0) = run("0/2", &dir.path().join("s0"));
    let (odd, m1) = run("1/2", &dir.path().join("s1"));
    assert_eq!((m0["args"]["shard"].as_str(), m1["args"]["shard"].as_str()), (Some("0/2"), Some("1/2")));
    assert_eq!(whole.len(), 10);
    let evens: Vec<String> = whole.iter().step_by(2).cloned().collect();
    let odds: Vec<String> = whole.iter().skip(1).step_by(2).cloned().collect();
    assert_eq!((even, odd), (evens, odds));
}

#[test]
fn bad_inputs_are_named_with_where() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "a.json",
            "[{\"instruction\": \"a\", \"output\": \"b\"},\n {\"instruction\": 3, \"output\": \"b\"}]",
            "a.json: record 1 (byte 39): invalid type: integer `3`",
        ),
        (
            "b.jsonl",
            "{\"instruction\": \"a\", \"output\": \"b\"}\n\n{\"output\": \"b\"}\n",
            "b.jsonl: line 3: missing field `instruction`",
        ),
        (
            "c.json",
            "[{\"instruction\": \"a\", \"output\": \"b\"}",
            "c.json: byte 36: unexpected end of file, expected ',' or ']'",
        ),
        ("d.txt", "hello", "d.txt: not an Alpaca file: expected a JSON array, JSON lines or Parquet"),
    ];
    for (name, text, want) in cases {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        let out = langadapt(&[
            "instruct",
            "translate",
            "--backend",
            "replay",
            "--target",
            "et",
            "--input",
            p.to_str().unwrap(),
            "--cache",
            fixture("alpaca/replay-cache-et.jsonl").to_str().unwrap(),
            "--out",
            dir.path().join("o").to_str().unwrap(),
        ]);
        assert_eq!(out.status.code(), Some(2));
        assert!(stderr(&out).contains(want), "{name}: {}", stderr(&out));
    }
}

#[test]
fn translation_pairs_from_tsv_jsonl_and_moses_files() {
    let dir = tempfile::tempdir().unwrap();
    let en: Vec<String> = (0..200).map(|i| format!("Sentence {i}.")).collect();
    let et: Vec<String> = (0..200).map(|i| format!("Lause {i}.")).collect();
    let tsv = dir.path().join("p.tsv");
    std::fs::write(&tsv, en.iter().zip(&et).map(|(a, b)| format!("{a}\t{b}\n")).collect::<String>() + "\tempty\n")
        .unwrap();
    let run = |parallel: Vec<std::path::PathBuf>, out: &str, seed: u64| {
        let cfg = PairsConfig {
            parallel,
            src: "en".into(),
            tgt: "et".into(),
            out: dir.path().join(out),
            src_to_tgt: 0.7,
            english_prompts: 0.5,
            seed,
        };
        let r = langadapt::instruct::pairs::run(&cfg, &env()).unwrap();
        (r, std::fs::read(dir.path().join(out)).unwrap())
    };
    let (r, bytes) = run(vec![tsv.clone()], "a.jsonl", 7);
    assert_eq!((r.records, r.skipped_empty, r.src_to_tgt + r.tgt_to_src), (200, 1, 200));
    assert!((r.src_to_tgt as f64 / 200.0 - 0.7).abs() < 0.1, "{}", r.src_to_tgt);
    assert_eq!(run(vec![tsv.clone()], "b.jsonl", 7).1, bytes, "same seed, same bytes");
    assert_ne!(run(vec![tsv.clone()], "c.jsonl", 8).1, bytes);
    let recs: Vec<InstructRecord> = read_jsonl(&dir.path().join("a.jsonl"));
    for r in &recs {
        let n: String = r.input.chars().filter(|c| c.is_ascii_digit()).collect();
        match r.lang.as_str() {
            "et" => assert_eq!((r.input.clone(), r.output.clone()), (format!("Sentence {n}."), format!("Lause {n}."))),
            _ => assert_eq!((r.input.clone(), r.output.clone()), (format!("Lause {n}."), format!("Sentence {n}."))),
        }
        assert!([
            "Translate the following text from English into Estonian.",
            "Translate the following text from Estonian into English.",
            "Tõlgi järgnev tekst inglise keelest eesti keelde.",
            "Tõlgi järgnev tekst eesti keelest inglise keelde.",
        ]
        .contains(&r.instruction.as_str()));
    }
    // Moses files and JSONL give the same records as the TSV (source ids aside).
    let (a, b, j) = (dir.path().join("c.en"), dir.path().join("c.et"), dir.path().join("p.jsonl"));
    std::fs::write(&a, en.join("\n") + "\n").unwrap();
    std::fs::write(&b, et.join("\n") + "\n").unwrap();
    std::fs::write(
        &j,
        en.iter()
            .zip(&et)
            .map(|(x, y)| json!({"translation": {"en": x, "et": y}}).to_string() + "\n")
            .collect::<String>(),
    )
    .unwrap();
    let strip = |recs: Vec<InstructRecord>| {
        recs.into_iter().map(|r| (r.instruction, r.input, r.output, r.lang)).collect::<Vec<_>>()
    };
    run(vec![a.clone(), b.clone()], "m.jsonl", 7);
    run(vec![j], "j.jsonl", 7);
    assert_eq!(strip(read_jsonl(&dir.path().join("m.jsonl"))), strip(recs.clone()));
    assert_eq!(strip(read_jsonl(&dir.path().join("j.jsonl"))), strip(recs));
    // Bad inputs through the CLI: exit 2 and the message.
    let x = dir.path().join("x.jsonl");
    let fails = |extra: &[&str], want: &str| {
        let mut args =
            vec!["instruct", "translation-pairs", "--src", "en", "--tgt", "et", "--out", x.to_str().unwrap()];
        args.extend_from_slice(extra);
        let out = langadapt(&args);
        assert_eq!(out.status.code(), Some(2));
        assert!(stderr(&out).contains(want), "{}", stderr(&out));
    };
    std::fs::write(&b, "only one\n").unwrap();
    fails(&["--parallel", a.to_str().unwrap(), "--parallel", b.to_str().unwrap()], "c.et: line 2: ends before");
    fails(&["--parallel", tsv.to_str().unwrap(), "--ratio", "en-tr:0.5"], "the direction must be en-et or et-en");
    std::fs::write(&tsv, "a\tb\tc\n").unwrap();
    fails(&["--parallel", tsv.to_str().unwrap()], "p.tsv: line 1: expected 2 tab-separated columns, found 3");
}

#[test]
fn parquet_input_with_string_ids_and_missing_columns() {
    use std::sync::Arc;

    use arrow::array::{ArrayRef, RecordBatch, StringArray};
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, cols: Vec<(&str, Vec<Option<&str>>)>| {
        let arrays: Vec<(&str, ArrayRef)> =
            cols.into_iter().map(|(n, v)| (n, Arc::new(StringArray::from(v)) as ArrayRef)).collect();
        let batch = RecordBatch::try_from_iter(arrays).unwrap();
        let p = dir.path().join(name);
        let mut w =
            parquet::arrow::ArrowWriter::try_new(std::fs::File::create(&p).unwrap(), batch.schema(), None).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
        p
    };
    let p = write(
        "a.parquet",
        vec![
            ("id", vec![Some("q1"), Some("q2")]),
            ("instruction", vec![Some("Say hi."), Some("Count.")]),
            ("input", vec![None, Some("1, 2")]),
            ("output", vec![Some("Hi."), Some("3")]),
        ],
    );
    let recs: Vec<_> = langadapt::instruct::RecordReader::open(&p).unwrap().map(Result::unwrap).collect();
    assert_eq!(recs.len(), 2);
    assert_eq!(recs[0].id, langadapt::corpus::DocId::Str("q1".into()));
    assert_eq!(recs[0].fields, ["Say hi.".to_string(), String::new(), "Hi.".to_string()]);
    assert_eq!((recs[1].index, recs[1].fields[1].as_str()), (1, "1, 2"));
    let p = write("b.parquet", vec![("instruction", vec![Some("x")])]);
    let err = langadapt::instruct::RecordReader::open(&p).err().unwrap().to_string();
    assert!(
        err.ends_with(
            "b.parquet: Parquet file has no 'output' column (need instruction, output, optional input and id)"
        ),
        "{err}"
    );
    let p = write("c.parquet", vec![("instruction", vec![None]), ("output", vec![Some("y")])]);
    let err = langadapt::instruct::RecordReader::open(&p).unwrap().next().unwrap().unwrap_err().to_string();
    assert!(err.ends_with("c.parquet: row 0: 'instruction' is null"), "{err}");
}

/// Issue 19 (1): inside a recipe, a translation with failed records fails the run naming failed.jsonl, is
/// not skipped by the next run, and the rerun sends only the texts that failed.
#[test]
fn a_recipe_fails_on_untranslated_records_and_the_rerun_retries_only_those() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let healed = Arc::new(AtomicBool::new(false));
    let h = healed.clone();
    let mock = Mock::start(None, move |r, _| {
        let text = r.body["messages"][1]["content"].as_str().unwrap_or_default();
        if text.contains("binary number") && !h.load(Ordering::SeqCst) {
            status(500, "down")
        } else {
            openai_echo(r)
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let recipe = dir.path().join("r.toml");
    std::fs::write(
        &recipe,
        format!(
            "out = \"out\"\n[translate.tr]\ninput = {:?}\ntarget = \"tr\"\nbackend = \"openai\"\nmodel = \"m\"\n\
             endpoint = \"{}\"\nlimit = 6\nmax_retries = 0\n",
            fixture(SAMPLE),
            mock.url
        ),
    )
    .unwrap();
    let run = || {
        let r = langadapt::pipeline::Recipe::load(&recipe, Some(dir.path().join("out")), false).unwrap();
        r.run(&env())
    };
    let err = langadapt::error::render_chain(&run().unwrap_err());
    let failed = dir.path().join("out/tr/failed.jsonl");
    assert_eq!(
        err,
        format!(
            "stage tr: 1 of 6 records could not be translated (ids and reasons in {}); the stage is incomplete: rerun \
             to retry them, the cache keeps the rest",
            failed.display()
        )
    );
    let content = |r: &crate::mock_http::Req| r.body["messages"][1]["content"].to_string();
    let answered: Vec<String> = mock.requests().iter().map(content).filter(|t| !t.contains("binary number")).collect();
    // Still broken: the stage is run again (not skipped) and fails again.
    assert!(run().is_err());
    healed.store(true, Ordering::SeqCst);
    let before = mock.requests().len();
    let report = run().unwrap();
    assert_eq!(report.stages[0].2, langadapt::pipeline::Outcome::Resumed);
    let resent: Vec<String> = mock.requests()[before..].iter().map(content).collect();
    assert!(resent.iter().any(|t| t.contains("binary number")), "{resent:?}");
    assert!(resent.iter().all(|t| !answered.contains(t)), "a text answered before was sent again: {resent:?}");
    assert_eq!(read_jsonl::<InstructRecord>(&dir.path().join("out/tr/translated.jsonl")).len(), 6);
    assert!(std::fs::read_to_string(&failed).unwrap().is_empty());
    // Complete now: the next run skips it.
    assert_eq!(run().unwrap().stages[0].2, langadapt::pipeline::Outcome::Skipped);
}
