//! Text metrics against their reference implementations: BLEU, chrF and chrF++ against sacrebleu 2.6.0
//! (corpus and sentence level, Latin and Chinese script, one and two references, 13a/zh/intl/none,
//! lower-cased), exact match and F1 against the official SQuAD v1.1 script — values computed by
//! `tests/fixtures/metrics/make_reference.py` — and `eval metric` on the command line.

use langadapt::eval::textmetrics::{Bleu, BleuTokenizer, Chrf, SquadNorm};
use serde_json::Value;

use crate::common::{fixture, langadapt, stderr};

fn json(rel: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixture(rel)).unwrap()).unwrap()
}

fn lines(name: &str) -> Vec<String> {
    std::fs::read_to_string(fixture(&format!("metrics/{name}"))).unwrap().lines().map(str::to_string).collect()
}

fn close(a: f64, b: f64, what: &str) {
    assert!((a - b).abs() < 1e-9, "{what}: ours {a}, reference {b}");
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap()
}

fn tokenizer(name: &str) -> BleuTokenizer {
    match name {
        "13a" => BleuTokenizer::Mteval13a,
        "zh" => BleuTokenizer::Zh,
        "intl" => BleuTokenizer::Intl,
        "none" => BleuTokenizer::None,
        other => panic!("tokenizer {other}"),
    }
}

#[test]
fn bleu_and_chrf_equal_sacrebleu() {
    let expected = json("metrics/expected.json");
    for (set, e) in expected["sets"].as_object().unwrap() {
        let hyps = lines(e["hyp"].as_str().unwrap());
        let refs: Vec<Vec<String>> = e["refs"].as_array().unwrap().iter().map(|r| lines(r.as_str().unwrap())).collect();
        let tok = tokenizer(e["bleu_tokenize"].as_str().unwrap());
        let variants = [
            ("bleu", Bleu { tokenizer: tok, ..Bleu::default() }),
            ("bleu_lowercase", Bleu { tokenizer: tok, lowercase: true, ..Bleu::default() }),
            ("bleu_tok_none", Bleu { tokenizer: BleuTokenizer::None, ..Bleu::default() }),
            ("bleu_tok_intl", Bleu { tokenizer: BleuTokenizer::Intl, ..Bleu::default() }),
        ];
        let mut checked = 0;
        for (key, bleu) in variants {
            let Some(want) = e.get(key) else { continue };
            let got = bleu.corpus(&hyps, &refs);
            close(got.score, f(&want["score"]), &format!("{set} {key}"));
            close(got.bp, f(&want["bp"]), &format!("{set} {key} bp"));
            let counts: Vec<u64> = want["counts"].as_array().unwrap().iter().map(|c| c.as_u64().unwrap()).collect();
            let totals: Vec<u64> = want["totals"].as_array().unwrap().iter().map(|c| c.as_u64().unwrap()).collect();
            assert_eq!((got.counts.to_vec(), got.totals.to_vec()), (counts, totals), "{set} {key}");
            assert_eq!(
                (got.sys_len, got.ref_len),
                (want["sys_len"].as_u64().unwrap(), want["ref_len"].as_u64().unwrap())
            );
            assert_eq!(bleu.signature(refs.len()), want["signature"].as_str().unwrap(), "{set} {key}");
            checked += 1;
        }
        assert!(checked >= 1, "{set}: no BLEU variant checked");
        for (key, chrf) in [("chrf", Chrf::default()), ("chrfpp", Chrf::chrf_plus_plus())] {
            close(chrf.corpus(&hyps, &refs), f(&e[key]["score"]), &format!("{set} {key}"));
            assert_eq!(chrf.signature(refs.len()), e[key]["signature"].as_str().unwrap());
        }
        // Sentence level: sacrebleu.sentence_bleu / sentence_chrf defaults, per line.
        let sentence = Bleu::sentence(tok);
        assert_eq!(sentence.signature(refs.len()), e["sentence_bleu_signature"].as_str().unwrap());
        for (i, h) in hyps.iter().enumerate() {
            let seg_refs: Vec<&str> = refs.iter().map(|r| r[i].as_str()).collect();
            close(
                sentence.score(&sentence.stats(h, &seg_refs)).score,
                f(&e["sentence_bleu"][i]),
                &format!("{set} sentence_bleu line {}", i + 1),
            );
            for (key, chrf) in [("sentence_chrf", Chrf::default()), ("sentence_chrfpp", Chrf::chrf_plus_plus())] {
                close(chrf.f_score(&chrf.stats(h, &seg_refs)), f(&e[key][i]), &format!("{set} {key} line {}", i + 1));
            }
        }
    }
}

#[test]
fn squad_equals_the_official_script() {
    let expected = json("metrics/squad_expected.json");
    let en = &expected["en"];
    let golds = |name: &str| -> Vec<Vec<String>> {
        lines(name).iter().map(|l| langadapt::eval::textmetrics::squad::parse_answers(l).unwrap()).collect()
    };
    let s = SquadNorm::default().score(&lines("squad_en.pred"), &golds("squad_en.ref.jsonl"));
    close(s.exact_match, f(&en["exact_match"]), "en exact_match");
    close(s.f1, f(&en["f1"]), "en f1");
    for (i, (em, f1)) in s.per_question.iter().enumerate() {
        close(*em, f(&en["per_item_em"][i]), &format!("en em {i}"));
        close(*f1, f(&en["per_item_f1"][i]), &format!("en f1 {i}"));
    }
    let et = &expected["et"];
    let (preds, refs) = (lines("squad_et.pred"), golds("squad_et.ref.jsonl"));
    for (key, norm) in [("articles_en", SquadNorm::default()), ("articles_none", SquadNorm::for_lang("et"))] {
        let s = norm.score(&preds, &refs);
        close(s.exact_match, f(&et[key]["exact_match"]), &format!("et {key} em"));
        close(s.f1, f(&et[key]["f1"]), &format!("et {key} f1"));
    }
}

#[test]
fn eval_metric_prints_the_corpus_score_and_rejects_misaligned_files() {
    let expected = json("metrics/expected.json");
    let dir = fixture("metrics");
    let p = |n: &str| dir.join(n).display().to_string();
    let out = langadapt(&[
        "eval",
        "metric",
        "bleu",
        "--predictions",
        &p("zh.hyp"),
        "--references",
        &p("zh.ref"),
        "--lang",
        "zho_Hans",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    close(f(&v["score"]), f(&expected["sets"]["zh"]["bleu"]["score"]), "cli zh bleu");
    assert_eq!(v["signature"], expected["sets"]["zh"]["bleu"]["signature"]);

    let out = langadapt(&[
        "eval",
        "metric",
        "chrf++",
        "--predictions",
        &p("tr.hyp"),
        "--references",
        &p("tr.ref"),
        "--references",
        &p("tr.ref2"),
    ]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    close(f(&v["score"]), f(&expected["sets"]["tr_multi"]["chrfpp"]["score"]), "cli tr chrf++");

    let out = langadapt(&[
        "eval",
        "metric",
        "squad",
        "--predictions",
        &p("squad_et.pred"),
        "--references",
        &p("squad_et.ref.jsonl"),
        "--lang",
        "et",
    ]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let squad = json("metrics/squad_expected.json");
    close(f(&v[1]["score"]), f(&squad["et"]["articles_none"]["f1"]), "cli squad et f1");
    assert_eq!(v[0]["signature"], "squad-v1.1|articles:none");

    let out = langadapt(&["eval", "metric", "bleu", "--predictions", &p("en.hyp"), "--references", &p("zh.ref")]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("has 10 lines but") && stderr(&out).contains("aligned line by line"),
        "{}",
        stderr(&out)
    );

    let out = langadapt(&["eval", "metric", "squad", "--predictions", &p("en.hyp"), "--references", &p("en.ref")]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("en.ref:1:") && err.contains("list of answer strings"), "{err}");
}
