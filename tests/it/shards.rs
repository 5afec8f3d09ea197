//! `shards build` / `shards stats`: documents come back from the rows exactly as often as the mixture
//! says, shares within 0.5%, SFT loss masks exactly on responses, same bytes for any thread count and
//! `--shard` split, bad configs refused with their message.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use langadapt::corpus::{list_shards, TextShardReader};
use langadapt::manifest::Manifest;
use langadapt::shards::{self, BuildConfig, BuildReport, Instruction, Template, TokenRow, TokenShardReader};
use langadapt::vocab::Tokenizer;
use langadapt::wiki::{self, IngestConfig};
use langadapt::{Env, Progress};

use crate::common::{file_names, fixture, langadapt, parquet_files, stderr};

const TOKENIZER: &str = "tiny-llama/tokenizer.json";
const BOS: u32 = 1;
const EOS: u32 = 2;

fn env(threads: usize) -> Env {
    Env { threads, progress: Progress { quiet: true } }
}

fn tok() -> Tokenizer {
    Tokenizer::from_path(&fixture(TOKENIZER)).unwrap()
}

/// Writes `mix.toml` (tokenizer line prepended) into `dir` and returns its path.
fn write_config(dir: &Path, body: &str) -> PathBuf {
    let p = dir.join("mix.toml");
    let text = format!("tokenizer = {:?}\n{body}", fixture(TOKENIZER).display().to_string());
    std::fs::write(&p, text).unwrap();
    p
}

fn build(config: &Path, out: &Path, threads: usize) -> BuildReport {
    let mut cfg = BuildConfig::load(Some(config), &()).unwrap();
    cfg.out = out.into();
    shards::run(&cfg, config, &env(threads)).unwrap_or_else(|e| panic!("build failed: {e}"))
}

/// `langadapt shards build --config CONFIG --out OUT EXTRA…`.
fn cli_build(config: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["shards", "build", "--config", config.to_str().unwrap(), "--out", out.to_str().unwrap()];
    args.extend_from_slice(extra);
    langadapt(&args)
}

fn rows(dir: &Path) -> Vec<TokenRow> {
    list_shards(dir).unwrap().iter().flat_map(|p| TokenShardReader::open(p).unwrap().map(Result::unwrap)).collect()
}

/// The trwiki fixture as a text-shard directory (the `wiki ingest` output), and its article texts.
fn wiki_source(dir: &Path) -> (PathBuf, Vec<String>) {
    let out = dir.join("trwiki");
    wiki::run(&IngestConfig::new(fixture("wiki/trwiki-sample-pages-articles.xml.bz2"), &out), &env(2)).unwrap();
    let texts = list_shards(&out)
        .unwrap()
        .into_iter()
        .flat_map(|p| TextShardReader::open(&p).unwrap())
        .map(|r| r.unwrap().text);
    (out, texts.collect())
}

/// The documents of the fixtures by an independent reading: blank-line blocks, `text` fields.
fn et_docs() -> Vec<String> {
    let text = std::fs::read_to_string(fixture("shards/et.txt")).unwrap();
    let mut docs = vec![String::new()];
    for line in text.lines() {
        if line.trim().is_empty() {
            docs.push(String::new());
        } else {
            let d = docs.last_mut().unwrap();
            if !d.is_empty() {
                d.push('\n');
            }
            d.push_str(line);
        }
    }
    docs.retain(|d| !d.is_empty());
    docs
}

fn en_docs() -> Vec<String> {
    let text = std::fs::read_to_string(fixture("shards/en.jsonl")).unwrap();
    text.lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["text"].as_str().unwrap().to_string())
        .collect()
}

/// A source's documents as they come out of the rows: its rows' trained tokens (pretrain: all but
/// padding) in order, cut after every EOS.
fn docs_of(rows: &[TokenRow], source: &str) -> Vec<Vec<u32>> {
    let mut docs = vec![Vec::new()];
    for r in rows.iter().filter(|r| r.source == source) {
        assert_eq!(r.input_ids.len(), r.loss_mask.len());
        for (&id, &m) in r.input_ids.iter().zip(&r.loss_mask) {
            if m == 1 {
                docs.last_mut().unwrap().push(id);
                if id == EOS {
                    docs.push(Vec::new());
                }
            }
        }
    }
    assert!(docs.last().unwrap().is_empty(), "every document ends with EOS");
    docs.pop();
    docs
}

fn counts(docs: Vec<Vec<u32>>) -> BTreeMap<Vec<u32>, usize> {
    let mut m = BTreeMap::new();
    for d in docs {
        *m.entry(d).or_default() += 1;
    }
    m
}

#[test]
fn pretrain_rows_give_back_every_document_as_often_as_the_mixture_says() {
    let tmp = tempfile::tempdir().unwrap();
    let (wiki_dir, wiki_texts) = wiki_source(tmp.path());
    std::fs::copy(fixture("shards/et.txt"), tmp.path().join("et.txt")).unwrap();
    std::fs::copy(fixture("shards/en.jsonl"), tmp.path().join("en.jsonl")).unwrap();
    let config = write_config(
        tmp.path(),
        &format!(
            "seq_len = 64\nseed = 42\nval_share = 0.2\n\
             [[sources]]\nname = \"trwiki\"\npath = {:?}\nlang = \"tr\"\nepochs = 1.0\n\
             [[sources]]\nname = \"et\"\npath = \"et.txt\"\nlang = \"et\"\nepochs = 2.0\n\
             [[sources]]\nname = \"en\"\npath = \"en.jsonl\"\nlang = \"en\"\nepochs = 1.0\n",
            wiki_dir.display().to_string()
        ),
    );
    let out = tmp.path().join("out");
    let report = build(&config, &out, 2);
    let (train, val) = (rows(&out.join("train")), rows(&out.join("val")));
    assert!(train.iter().chain(&val).all(|r| r.input_ids.len() == 64 && r.segment_ids.is_none()));
    let t = tok();
    let manifest = Manifest::read(&out.join("manifest.json")).unwrap();
    for (name, texts, epochs) in [("trwiki", &wiki_texts, 1), ("et", &et_docs(), 2), ("en", &en_docs(), 1)] {
        let (in_train, in_val) = (counts(docs_of(&train, name)), counts(docs_of(&val, name)));
        let mut held_out = 0;
        let empty = texts.iter().filter(|t| t.trim().is_empty()).count();
        for text in texts.iter().filter(|t| !t.trim().is_empty()) {
            let mut ids = t.encode(text, true).unwrap();
            ids.push(EOS);
            assert_eq!(ids[0], BOS);
            let (n_train, n_val) = (in_train.get(&ids).copied().unwrap_or(0), in_val.get(&ids).copied().unwrap_or(0));
            // Held out by document: either only in val (once) or only in train (`epochs` times).
            assert!(
                (n_train, n_val) == (epochs, 0) || (n_train, n_val) == (0, 1),
                "{name}: {n_train} {n_val} {text:?}"
            );
            held_out += n_val;
            assert_eq!(t.decode(&ids).unwrap(), *text, "{name}: decoding gives the document back");
        }
        let total: usize = in_train.values().sum::<usize>() + in_val.values().sum::<usize>();
        assert_eq!(total, (texts.len() - empty - held_out) * epochs + held_out, "{name}: nothing else in the rows");
        let r = report.sources.iter().find(|r| r.name == name).unwrap();
        assert_eq!((r.documents as usize, r.val_documents as usize, r.empty as usize), (texts.len(), held_out, empty));
        let train_tokens: usize = in_train.iter().map(|(d, n)| d.len() * n).sum();
        assert_eq!(manifest.counts[&format!("{name}.train_tokens")], train_tokens as u64);
        assert_eq!(r.train_tokens, train_tokens as u64);
    }
    assert_eq!(report.sources[2].empty, 1, "en.jsonl has one empty document");
    assert!(report.sources.iter().all(|r| r.val_documents > 0 && r.train_documents > 0), "{:?}", report.sources);
}

/// `n` generated documents of 20–80 words in "language" `lang`, as JSONL.
fn generated_jsonl(path: &Path, lang: &str, n: usize) {
    let words: Vec<String> = (0..50).map(|i| format!("{lang}{i}")).collect();
    let mut x = 12345u64;
    let mut out = String::new();
    for _ in 0..n {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let len = 20 + (x >> 33) % 60;
        let doc: Vec<&str> = (0..len).map(|k| words[((x >> 20) as usize + k as usize * 7) % 50].as_str()).collect();
        out.push_str(&serde_json::json!({ "text": doc.join(" ") }).to_string());
        out.push('\n');
    }
    std::fs::write(path, out).unwrap();
}

#[test]
fn shares_within_half_a_percent_same_bytes_for_any_thread_count_and_stats_agree() {
    let tmp = tempfile::tempdir().unwrap();
    generated_jsonl(&tmp.path().join("et.jsonl"), "et", 400);
    generated_jsonl(&tmp.path().join("en.jsonl"), "en", 900);
    let config = write_config(
        tmp.path(),
        "seq_len = 128\nseed = 3\nval_share = 0.01\nlast_row = \"drop\"\nrows_per_part = 100\n\
         [[sources]]\nname = \"et\"\npath = \"et.jsonl\"\nlang = \"et\"\nshare = 0.75\n\
         [[sources]]\nname = \"en\"\npath = \"en.jsonl\"\nlang = \"en\"\nshare = 0.25\n",
    );
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let report = build(&config, &a, 1);
    build(&config, &b, 3);
    for split in ["train", "val"] {
        assert_eq!(parquet_files(&a.join(split)), parquet_files(&b.join(split)), "{split}");
    }
    assert_eq!(std::fs::read(a.join("stats.json")).unwrap(), std::fs::read(b.join("stats.json")).unwrap());
    assert!(parquet_files(&a.join("train")).len() > 1, "several parts");

    // et limits the mixture (used once), en is subsampled to a quarter of the tokens.
    let (et, en) = (&report.sources[0], &report.sources[1]);
    assert_eq!(et.factor, 1.0);
    assert!(en.factor < 0.5, "{}", en.factor);
    let stats = &report.stats.splits["train"];
    for (s, want) in [(et, 0.75), (en, 0.25)] {
        assert!((s.achieved_share - want).abs() < 0.005, "{}: {}", s.name, s.achieved_share);
        assert_eq!(stats.sources[&s.name].trained_tokens, s.train_tokens);
        assert_eq!(stats.sources[&s.name].share, s.achieved_share);
    }
    // last_row = "drop": every row is full and trained on.
    assert_eq!((stats.row_len, stats.mask_coverage), ([128, 128], 1.0));
    // The first rows already hold both sources near their shares (interleaved, not one after the other).
    let first: Vec<_> = rows(&a.join("train")).into_iter().take(40).map(|r| r.source).collect();
    assert_eq!(first.iter().filter(|s| *s == "en").count(), 10, "{first:?}");

    let out = langadapt(&["shards", "stats", a.to_str().unwrap(), "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let recomputed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let written: serde_json::Value = serde_json::from_slice(&std::fs::read(a.join("stats.json")).unwrap()).unwrap();
    assert_eq!(recomputed, written);
    let m = Manifest::read(&a.join("manifest.json")).unwrap();
    assert_eq!(m.counts["et.requested_share_ppm"], 750_000);
    assert_eq!(m.counts["et.achieved_share_ppm"], (et.achieved_share * 1e6).round() as u64);
    assert_eq!(m.counts["train.rows"], stats.rows);
    assert_eq!(
        m.outputs.iter().filter(|o| o.path.starts_with("train/part-")).map(|o| o.rows.unwrap()).sum::<u64>(),
        stats.rows
    );
}

#[test]
fn upsampling_by_train_tokens_repeats_documents_deterministically() {
    let tmp = tempfile::tempdir().unwrap();
    generated_jsonl(&tmp.path().join("a.jsonl"), "a", 60);
    generated_jsonl(&tmp.path().join("b.jsonl"), "b", 300);
    let body = "seq_len = 64\nseed = 11\ntrain_tokens = 40000\n\
         [[sources]]\nname = \"a\"\npath = \"a.jsonl\"\nlang = \"et\"\nshare = 0.5\n\
         [[sources]]\nname = \"b\"\npath = \"b.jsonl\"\nlang = \"en\"\nshare = 0.5\n";
    let report = build(&write_config(tmp.path(), body), &tmp.path().join("o"), 2);
    let a = &report.sources[0];
    assert!(a.factor > 2.0 && a.factor < 6.0, "{}", a.factor);
    assert!((a.achieved_share - 0.5).abs() < 0.005);
    // Each document of `a` appears floor(f) or floor(f)+1 times.
    let got = counts(docs_of(&rows(&tmp.path().join("o/train")), "a"));
    let k = a.factor.floor() as usize;
    assert_eq!(got.len(), 60);
    assert!(got.values().all(|&n| n == k || n == k + 1), "{got:?}");
    assert_eq!(got.iter().map(|(d, n)| d.len() * n).sum::<usize>() as u64, a.train_tokens);
}

/// The example's expected tokens and how many of them are prompt.
fn example_tokens(t: &Tokenizer, template: Template, r: &Instruction) -> (Vec<u32>, usize) {
    let (prompt, response) = template.format(r);
    let p = t.encode(&prompt, true).unwrap();
    let mut full = t.encode(&(prompt + &response), true).unwrap();
    assert_eq!(full[..p.len()], p[..], "the prompt's tokens are a prefix here");
    full.push(EOS);
    (full, p.len())
}

fn instructions() -> Vec<Instruction> {
    let text = std::fs::read_to_string(fixture("shards/instructions.jsonl")).unwrap();
    text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// Row length of the SFT tests: every fixture example fits but the long story (a7).
const SFT_LEN: usize = 256;

#[test]
fn sft_loss_mask_covers_exactly_the_response_and_eos() {
    let t = tok();
    let recs = instructions();
    for (template, policy) in [("alpaca", "truncate"), ("chat", "drop"), ("alpaca_et", "truncate")] {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::copy(fixture("shards/instructions.jsonl"), tmp.path().join("i.jsonl")).unwrap();
        let body = format!(
            "kind = \"sft\"\nseq_len = {SFT_LEN}\ntemplate = \"{template}\"\nmax_len_policy = \"{policy}\"\n\
             [[sources]]\nname = \"alpaca\"\npath = \"i.jsonl\"\nlang = \"en\"\nepochs = 1.0\n"
        );
        let report = build(&write_config(tmp.path(), &body), &tmp.path().join("o"), 2);
        let got = rows(&tmp.path().join("o/train"));
        let tpl = Template::by_name(template).unwrap();
        let mut expected = recs.iter().map(|r| (r, example_tokens(&t, tpl, r))).collect::<Vec<_>>();
        let long = expected.iter().filter(|(_, (ids, _))| ids.len() > SFT_LEN).count();
        assert_eq!(
            long,
            1,
            "a7 is the one long example: {:?}",
            expected.iter().map(|e| e.1 .0.len()).collect::<Vec<_>>()
        );
        if policy == "drop" {
            expected.retain(|(_, (ids, _))| ids.len() <= SFT_LEN);
            assert_eq!((report.sources[0].too_long, report.sources[0].truncated), (1, 0));
        } else {
            assert_eq!((report.sources[0].too_long, report.sources[0].truncated), (0, 1));
        }
        assert_eq!(got.len(), expected.len(), "{template}: one example per row");
        for (row, (rec, (ids, p))) in got.iter().zip(&expected) {
            let n = ids.len().min(SFT_LEN);
            assert_eq!(row.input_ids[..n], ids[..n]);
            let mask: Vec<u8> = (0..SFT_LEN).map(|i| u8::from(i >= *p && i < n)).collect();
            assert_eq!(row.loss_mask, mask, "{template} {}", rec.id);
            assert!(row.input_ids[n..].iter().all(|&id| id == EOS), "padding");
            if n == ids.len() {
                let trained: Vec<u32> = row.input_ids[*p..n - 1].to_vec();
                assert_eq!(
                    t.decode(&trained).unwrap(),
                    tpl.format(rec).1.trim_start(),
                    "{template}: only the response"
                );
            }
        }
    }
}

#[test]
fn packed_sft_rows_mark_examples_with_segment_ids() {
    let t = tok();
    let tmp = tempfile::tempdir().unwrap();
    std::fs::copy(fixture("shards/instructions.jsonl"), tmp.path().join("i.jsonl")).unwrap();
    let body = "kind = \"sft\"\nseq_len = 256\npack = true\ntemplate = \"chat\"\n\
                [[sources]]\nname = \"alpaca\"\npath = \"i.jsonl\"\nlang = \"en\"\nepochs = 1.0\n";
    build(&write_config(tmp.path(), body), &tmp.path().join("o"), 1);
    let got = rows(&tmp.path().join("o/train"));
    assert!(got.len() < instructions().len(), "several examples share a row");
    let mut examples: Vec<(Vec<u32>, Vec<u8>)> = Vec::new();
    for row in &got {
        let segs = row.segment_ids.as_ref().unwrap();
        assert_eq!(segs.len(), 256);
        let mut next = 1;
        for (i, &seg) in segs.iter().enumerate() {
            let (id, m) = (row.input_ids[i], row.loss_mask[i]);
            if seg == 0 {
                assert_eq!((m, id), (0, EOS), "padding");
                continue;
            }
            if seg == next {
                examples.push((Vec::new(), Vec::new()));
                next += 1;
            } else {
                assert_eq!(seg, next - 1, "segments are contiguous and numbered from 1");
            }
            let e = examples.last_mut().unwrap();
            e.0.push(id);
            e.1.push(m);
        }
        assert!(segs.windows(2).all(|w| w[1] >= w[0] || w[1] == 0), "padding only at the end");
    }
    let want: Vec<(Vec<u32>, Vec<u8>)> = instructions()
        .iter()
        .map(|r| {
            let (mut ids, p) = example_tokens(&t, Template::Chat, r);
            // The long story is cut to the row length (max_len_policy = "truncate", the default).
            ids.truncate(256);
            let mask = (0..ids.len()).map(|i| u8::from(i >= p)).collect();
            (ids, mask)
        })
        .collect();
    assert_eq!(examples, want);
}

#[test]
fn shards_together_hold_the_whole_runs_documents() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::copy(fixture("shards/et.txt"), tmp.path().join("et.txt")).unwrap();
    let config = write_config(
        tmp.path(),
        "seq_len = 32\nseed = 1\nval_share = 0.25\n[[sources]]\nname = \"et\"\npath = \"et.txt\"\nlang = \"et\"\nepochs = 1.0\n",
    );
    let whole = tmp.path().join("whole");
    build(&config, &whole, 2);
    let split = tmp.path().join("split");
    for shard in ["0/2", "1/2"] {
        let out = cli_build(&config, &split, &["--shard", shard]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let names: Vec<_> = parquet_files(&split.join("train")).into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["part-00000-00000.parquet", "part-00001-00000.parquet"]);
    assert!(split.join("manifest-1-of-2.json").is_file() && split.join("stats-0-of-2.json").is_file());
    for s in ["train", "val"] {
        let mut a = docs_of(&rows(&whole.join(s)), "et");
        let mut b = docs_of(&rows(&split.join(s)), "et");
        a.sort();
        b.sort();
        assert_eq!(a, b, "{s}: the same documents, in the same split");
    }
    // A second build into a used directory is refused.
    let out = cli_build(&config, &whole, &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("already holds shards of a build"), "{}", stderr(&out));
}

#[test]
fn single_source_flags_build_and_table_stats() {
    let tmp = tempfile::tempdir().unwrap();
    let out_dir = tmp.path().join("o");
    let out = langadapt(&[
        "shards",
        "build",
        "--tokenizer",
        fixture(TOKENIZER).to_str().unwrap(),
        "--source",
        fixture("shards/et.txt").to_str().unwrap(),
        "--seq-len",
        "16",
        "--add-bos",
        "false",
        "--out",
        out_dir.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let got = docs_of(&rows(&out_dir.join("train")), "et");
    let t = tok();
    let want: Vec<Vec<u32>> = et_docs().iter().map(|d| [t.encode(d, false).unwrap(), vec![EOS]].concat()).collect();
    assert_eq!(got, want, "in order, no BOS");
    let out = langadapt(&["shards", "stats", out_dir.to_str().unwrap()]);
    let table = String::from_utf8(out.stdout).unwrap();
    let tokens: usize = want.iter().map(Vec::len).sum();
    let rows = tokens.div_ceil(16);
    assert!(table.contains(&format!("train\tet\t{rows}\t{}\t{tokens}\t1.000000\t", rows * 16)), "{table}");
}

#[test]
fn bad_configs_are_refused_with_their_message() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::copy(fixture("shards/et.txt"), tmp.path().join("et.txt")).unwrap();
    let src = |extra: &str| format!("[[sources]]\nname = \"et\"\npath = \"et.txt\"\nlang = \"et\"\n{extra}\n");
    let cases = [
        (
            format!("seq_len = 1\n{}", src("share = 1.0")),
            "seq_len = 1 is too small: a row needs at least 2 tokens".to_string(),
        ),
        (
            format!("seq_len = 8\n{}", src("share = 0.5").replace("et.txt", "missing.txt")),
            format!("source 'et': {} does not exist", tmp.path().join("missing.txt").display()),
        ),
        (
            format!(
                "seq_len = 8\n{}{}",
                src("share = 0.5"),
                src("share = 0.3").replace("\"et\"\npath", "\"en\"\npath")
            ),
            "shares sum to 0.8, not 1".into(),
        ),
        (
            format!("seq_len = 8\nkind = \"sft\"\ntemplate = \"vicuna\"\n{}", src("epochs = 1.0")),
            "unknown template 'vicuna'; known templates: alpaca, alpaca_tr, alpaca_et, alpaca_fa, alpaca_zh, chat"
                .into(),
        ),
        (
            format!("seq_len = 8\n{}", src("share = 1.0\nepochs = 2.0")),
            "source 'et': give exactly one of share or epochs".into(),
        ),
        (format!("seq_len = 8\nseq_length = 8\n{}", src("share = 1.0")), "unknown field `seq_length`".into()),
        (
            format!("seq_len = 8\nkind = \"sft\"\n{}", src("epochs = 1.0")),
            "sft sources must be instruction records: .jsonl with instruction/input/output, or an Alpaca .json array"
                .into(),
        ),
    ];
    for (body, want) in cases {
        let config = write_config(tmp.path(), &body);
        let out = cli_build(&config, &tmp.path().join("o"), &[]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{body}");
        assert!(err.contains(&want), "want {want:?} in {err}");
        assert_eq!(err.lines().count(), 1, "one line: {err}");
    }
    assert!(!tmp.path().join("o/train").exists(), "nothing written for a refused config");

    // Known only after tokenizing: a source with a share but no text. No part is left behind.
    std::fs::write(tmp.path().join("blank.txt"), "\n \n\n").unwrap();
    let body = format!(
        "seq_len = 8\nval_share = 0.5\nrows_per_part = 1\n{}{}",
        src("share = 0.5"),
        src("share = 0.5").replace("\"et\"\npath = \"et.txt", "\"b\"\npath = \"blank.txt")
    );
    let config = write_config(tmp.path(), &body);
    let out = cli_build(&config, &tmp.path().join("o"), &[]);
    let err = stderr(&out);
    assert!(err.contains(&format!("{}: source 'b' has no training tokens", config.display())), "{err}");
    assert_eq!(file_names(&tmp.path().join("o/train")), Vec::<String>::new());
    // The val rows of `et` were written before `b` failed: they are removed too.
    assert_eq!(file_names(&tmp.path().join("o/val")), Vec::<String>::new());
}
