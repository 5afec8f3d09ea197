//! Evaluation harness: lm-eval token logic against tiny-llama/reference.json, prompt strings against
//! the lm-evaluation-harness 0.4.13 templates, malformed data, batch-size invariance, results.json,
//! perplexity, the OpenAI-compatible backend against a local fake server, and the CLI.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};

use langadapt::eval::lm::{encode_pair, rolling_windows};
use langadapt::eval::metrics::count_words;
use langadapt::eval::openai::OpenAiLm;
use langadapt::eval::perplexity::perplexity;
use langadapt::eval::run::ModelInfo;
use langadapt::eval::{
    self, EvalError, GenerateUntil, LanguageModel, LocalLm, Loglikelihood, RunConfig, TokenGenerateRequest, TokenScore,
    TokenScoreRequest, TokenScorer,
};
use langadapt::vocab::Tokenizer;
use langadapt::{Env, Progress};
use serde_json::Value;

use crate::common::{fixture, langadapt, stderr};

fn tokenizer() -> Tokenizer {
    Tokenizer::from_path(&fixture("tiny-llama")).unwrap()
}

fn reference() -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixture("tiny-llama/reference.json")).unwrap()).unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

fn quiet() -> Progress {
    Progress { quiet: true }
}

fn env() -> Env {
    Env { threads: 1, progress: quiet() }
}

/// A scorer replaying transformers' numbers from reference.json for the token lists it lists.
struct ReplayScorer {
    tok: Tokenizer,
    max_length: usize,
    scores: HashMap<(Vec<u32>, usize), TokenScore>,
    greedy: HashMap<Vec<u32>, Vec<u32>>,
}

impl ReplayScorer {
    fn new(max_length: usize) -> Self {
        let r = reference();
        let mut scores = HashMap::new();
        for c in r["continuations"].as_array().unwrap() {
            let mut tokens = ids(&c["context_enc"]);
            let cont = ids(&c["continuation_enc"]);
            tokens.extend(&cont);
            let s = TokenScore { ll: c["ll"].as_f64().unwrap(), is_greedy: c["is_greedy"].as_bool().unwrap() };
            scores.insert((tokens, cont.len()), s);
        }
        for t in r["rolling"].as_array().unwrap() {
            for w in t["windows"].as_array().unwrap() {
                let mut tokens = ids(&w["context_ids"]);
                let cont = ids(&w["continuation_ids"]);
                tokens.extend(&cont);
                scores.insert((tokens, cont.len()), TokenScore { ll: w["ll"].as_f64().unwrap(), is_greedy: false });
            }
        }
        let greedy =
            r["greedy"].as_array().unwrap().iter().map(|g| (ids(&g["prompt_ids"]), ids(&g["new_ids"]))).collect();
        ReplayScorer { tok: tokenizer(), max_length, scores, greedy }
    }
}

impl TokenScorer for ReplayScorer {
    fn max_length(&self) -> usize {
        self.max_length
    }
    fn tokenizer(&self) -> &Tokenizer {
        &self.tok
    }
    fn score(&mut self, requests: &[TokenScoreRequest]) -> Result<Vec<TokenScore>, EvalError> {
        requests
            .iter()
            .map(|r| {
                self.scores
                    .get(&(r.tokens.clone(), r.n_cont))
                    .copied()
                    .ok_or_else(|| EvalError::Model(format!("no reference for {:?} / {}", r.tokens, r.n_cont)))
            })
            .collect()
    }
    fn generate(&mut self, requests: &[TokenGenerateRequest]) -> Result<Vec<Vec<u32>>, EvalError> {
        requests
            .iter()
            .map(|r| {
                assert_eq!(r.max_new_tokens, 24);
                self.greedy
                    .get(&r.prompt)
                    .cloned()
                    .ok_or_else(|| EvalError::Model(format!("no reference for {:?}", r.prompt)))
            })
            .collect()
    }
}

/// Log-prob of `t` after `prev` in the closed-form fake model: −(1 + (31·prev + 17·t) mod 23) / 8;
/// the argmax has remainder 0 (−0.125).
fn formula_lp(prev: u32, t: u32) -> f64 {
    -((1 + (31 * prev as u64 + 17 * t as u64) % 23) as f64) / 8.0
}

fn formula_score(r: &TokenScoreRequest) -> TokenScore {
    let n = r.tokens.len();
    let mut s = TokenScore { ll: 0.0, is_greedy: true };
    for i in n - r.n_cont..n {
        let lp = formula_lp(r.tokens[i - 1], r.tokens[i]);
        s.ll += lp;
        s.is_greedy &= lp == -0.125;
    }
    s
}

/// A fake local model: the closed formula above, a small context (64) so truncation happens, and
/// generation that answers every prompt with a fixed Chinese sentence with some English in it.
struct FormulaScorer {
    tok: Tokenizer,
    max_length: usize,
    calls: usize,
}

impl TokenScorer for FormulaScorer {
    fn max_length(&self) -> usize {
        self.max_length
    }
    fn tokenizer(&self) -> &Tokenizer {
        &self.tok
    }
    fn score(&mut self, requests: &[TokenScoreRequest]) -> Result<Vec<TokenScore>, EvalError> {
        self.calls += 1;
        Ok(requests.iter().map(formula_score).collect())
    }
    fn generate(&mut self, requests: &[TokenGenerateRequest]) -> Result<Vec<Vec<u32>>, EvalError> {
        requests
            .iter()
            .map(|_| Ok(self.tok.encode("今天天气很好。The weather is really nice today in the city.", false)?))
            .collect()
    }
}

fn formula_lm(batch: usize) -> LocalLm<FormulaScorer> {
    formula_lm_with(batch, 64)
}

fn formula_lm_with(batch: usize, max_length: usize) -> LocalLm<FormulaScorer> {
    LocalLm::new(FormulaScorer { tok: tokenizer(), max_length, calls: 0 }, batch, quiet())
}

#[test]
fn encode_pair_reproduces_reference_token_lists() {
    let tok = tokenizer();
    let r = reference();
    let cases = r["continuations"].as_array().unwrap();
    assert_eq!(cases.len(), 22);
    for c in cases {
        let p = encode_pair(&tok, c["context"].as_str().unwrap(), c["continuation"].as_str().unwrap()).unwrap();
        let id = c["id"].as_str().unwrap();
        assert_eq!(p.context, c["context_used"].as_str().unwrap(), "{id}");
        assert_eq!(p.continuation, c["continuation_used"].as_str().unwrap(), "{id}");
        assert_eq!(p.context_enc, ids(&c["context_enc"]), "{id}");
        assert_eq!(p.whole_enc, ids(&c["whole_enc"]), "{id}");
        assert_eq!(p.continuation_enc, ids(&c["continuation_enc"]), "{id}");
        assert_eq!(p.continuation_enc.len() as u64, c["n_cont_tokens"].as_u64().unwrap(), "{id}");
    }
    // Empty context: just BOS, the continuation encoded alone.
    let p = encode_pair(&tok, "", "Merhaba").unwrap();
    assert_eq!(p.context_enc, vec![1]);
    assert_eq!(p.continuation_enc, tok.encode("Merhaba", false).unwrap());
}

#[test]
fn rolling_windows_reproduce_reference() {
    let tok = tokenizer();
    for t in reference()["rolling"].as_array().unwrap() {
        let text = t["text"].as_str().unwrap();
        let toks = tok.encode(text, false).unwrap();
        assert_eq!(toks, ids(&t["token_ids_no_bos"]));
        let windows = rolling_windows(&toks, 1, 32, 1);
        let expected: Vec<(Vec<u32>, Vec<u32>)> = t["windows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| (ids(&w["context_ids"]), ids(&w["continuation_ids"])))
            .collect();
        assert_eq!(windows, expected, "{text}");
        assert_eq!(toks.len() as u64, t["n_tokens"].as_u64().unwrap());
        assert_eq!(text.len() as u64, t["n_bytes"].as_u64().unwrap());
        assert_eq!(count_words(text) as u64, t["n_words"].as_u64().unwrap());
    }
}

/// The reference's continuation pairs as loglikelihood requests.
fn reference_loglikelihoods(r: &Value) -> Vec<Loglikelihood> {
    r["continuations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| Loglikelihood {
            context: c["context"].as_str().unwrap().into(),
            continuation: c["continuation"].as_str().unwrap().into(),
        })
        .collect()
}

#[test]
fn local_lm_assembles_reference_scores_perplexities_and_greedy_text() {
    let r = reference();
    // Loglikelihood: the model's numbers replayed; LocalLm must ask exactly the reference token lists.
    let mut lm = LocalLm::new(ReplayScorer::new(256), 5, quiet());
    let reqs = reference_loglikelihoods(&r);
    let got = lm.loglikelihood(&reqs).unwrap();
    for (c, g) in r["continuations"].as_array().unwrap().iter().zip(&got) {
        assert_eq!(g.ll, c["ll"].as_f64().unwrap(), "{}", c["id"]);
        assert_eq!(g.is_greedy, c["is_greedy"].as_bool().unwrap(), "{}", c["id"]);
        assert_eq!(g.n_cont_tokens as u64, c["n_cont_tokens"].as_u64().unwrap());
    }
    assert!(got.last().unwrap().is_greedy, "greedy_match is the model's own argmax");

    // Rolling perplexity with max_length 32, through the perplexity task (one .txt document each).
    let dir = tempfile::tempdir().unwrap();
    let mut lm = LocalLm::new(ReplayScorer::new(256), 3, quiet()).with_max_length(Some(32));
    for (i, t) in r["rolling"].as_array().unwrap().iter().enumerate() {
        let path = dir.path().join(format!("doc{i}.txt"));
        std::fs::write(&path, t["text"].as_str().unwrap()).unwrap();
        let (rep, _) = perplexity(&mut lm, &path, None).unwrap();
        let close = |a: f64, b: &Value| {
            let b = b.as_f64().unwrap();
            assert!(((a - b) / b).abs() < 1e-12, "{a} vs {b}");
        };
        close(rep.ll, &t["ll"]);
        close(rep.token_perplexity(), &t["token_perplexity"]);
        close(rep.word_perplexity(), &t["word_perplexity"]);
        close(rep.byte_perplexity(), &t["byte_perplexity"]);
        close(rep.bits_per_byte(), &t["bits_per_byte"]);
        assert_eq!(
            (rep.n_tokens as u64, rep.n_bytes as u64, rep.n_words as u64),
            (t["n_tokens"].as_u64().unwrap(), t["n_bytes"].as_u64().unwrap(), t["n_words"].as_u64().unwrap())
        );
    }

    // Greedy generation: prompt ids with BOS, 24 new ids, decoded with the tokenizer.json decoder.
    let mut lm = LocalLm::new(ReplayScorer::new(256), 2, quiet());
    let reqs: Vec<GenerateUntil> = r["greedy"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| GenerateUntil { context: g["prompt"].as_str().unwrap().into(), until: vec![], max_tokens: 24 })
        .collect();
    let texts = lm.generate_until(&reqs).unwrap();
    for (g, t) in r["greedy"].as_array().unwrap().iter().zip(&texts) {
        assert_eq!(t, g["text_tokenizers"].as_str().unwrap());
    }
}

#[test]
fn local_lm_truncates_left_and_restores_request_order() {
    let tok = tokenizer();
    let long = "Kedi masanın üzerine atladı ve bardağı devirdi. ".repeat(10);
    let reqs = vec![
        Loglikelihood { context: long.clone(), continuation: " son".into() },
        Loglikelihood { context: "Kısa".into(), continuation: " cevap".into() },
        Loglikelihood { context: "".into(), continuation: "Merhaba dünya".into() },
    ];
    let got = formula_lm(2).loglikelihood(&reqs).unwrap();
    for (r, g) in reqs.iter().zip(&got) {
        let p = encode_pair(&tok, &r.context, &r.continuation).unwrap();
        let mut all = p.context_enc.clone();
        all.extend(&p.continuation_enc);
        let kept = all[all.len().saturating_sub(65)..].to_vec();
        let want = formula_score(&TokenScoreRequest { tokens: kept, n_cont: p.continuation_enc.len() });
        assert_eq!((g.ll, g.is_greedy), (want.ll, want.is_greedy));
    }
    assert!(tok.encode(&long, true).unwrap().len() > 65, "the long context really is truncated");
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn run_config(tasks: &[&str], data_dir: &Path, out: PathBuf) -> RunConfig {
    RunConfig {
        tasks: tasks.iter().map(|s| s.to_string()).collect(),
        data_dir: data_dir.to_path_buf(),
        num_fewshot: Some(0),
        limit: None,
        seed: 1234,
        perplexity_data: None,
        prompt_template: None,
        log_samples: None,
        evals_dir: None,
        fixed_variants: true,
        max_gen_tokens: None,
        judge: None,
        progress: quiet(),
        out,
        model: ModelInfo {
            backend: "local".into(),
            model: "fake".into(),
            weight_files: vec![fixture("tiny-llama/model.safetensors")],
            endpoint: None,
            batch_size: 1,
            device: "cpu".into(),
            max_batch_tokens: None,
            hub: None,
        },
        hub: None,
        batch_budget: None,
    }
}

/// The requests `eval requests` writes, as (task, doc_id, choice_idx) → (context, continuation, target).
fn requests(tasks: &[&str], fewshot: usize) -> HashMap<(String, u64, u64), (String, String, u64)> {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("req.jsonl");
    let mut cfg = run_config(tasks, &fixture("data"), out.clone());
    cfg.num_fewshot = Some(fewshot);
    eval::write_requests(&cfg, &out).unwrap();
    std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (
                (
                    v["task"].as_str().unwrap().to_string(),
                    v["doc_id"].as_u64().unwrap(),
                    v["choice_idx"].as_u64().unwrap(),
                ),
                (
                    v["context"].as_str().unwrap().to_string(),
                    v["continuation"].as_str().unwrap().to_string(),
                    v["target"].as_u64().unwrap(),
                ),
            )
        })
        .collect()
}

fn req<'a>(
    m: &'a HashMap<(String, u64, u64), (String, String, u64)>,
    task: &str,
    doc: u64,
    choice: u64,
) -> (&'a str, &'a str, u64) {
    let (c, k, t) = &m[&(task.to_string(), doc, choice)];
    (c, k, *t)
}

#[test]
fn xcopa_prompts_follow_lm_eval() {
    // lm-eval 0.4.13 tasks/xcopa/utils.py: doc_to_text = premise.strip()[:-1] + f" {connector[question]}",
    // choices convert_choice (first character lower-cased), target_delimiter " ".
    let m = requests(&["xcopa_tr", "xcopa_zh"], 0);
    // tr test row 0 (idx 0): question "effect" as released → "bu yüzden".
    assert_eq!(req(&m, "xcopa_tr", 0, 0), ("Ürün balonlu naylonla paketlenmişti bu yüzden", " kırılgandı.", 0));
    assert_eq!(req(&m, "xcopa_tr", 0, 1), ("Ürün balonlu naylonla paketlenmişti bu yüzden", " küçüktü.", 0));
    // The fixed variant uses the question of every other language ("cause" → "çünkü").
    assert_eq!(req(&m, "xcopa_tr_fixed", 0, 0), ("Ürün balonlu naylonla paketlenmişti çünkü", " kırılgandı.", 0));
    assert_eq!(req(&m, "xcopa_tr_fixed", 1, 0).0, "Ceplerimi boşalttım bu yüzden");
    // zh: the same rule, so the connector follows a space and the full stop 。 is dropped.
    assert_eq!(req(&m, "xcopa_zh", 0, 0), ("该物品用气泡包装纸包着 因为", " 它很易碎。", 0));
    assert_eq!(req(&m, "xcopa_zh", 1, 1), ("我掏空了口袋 所以", " 我找到了一件武器。", 0));
    assert_eq!(m.len(), 3 * 1000, "500 docs × 2 choices for xcopa_tr, xcopa_tr_fixed and xcopa_zh");
    assert!(!m.contains_key(&("xcopa_zh_fixed".to_string(), 0, 0)), "zh has no known defect");
}

#[test]
fn belebele_prompts_follow_lm_eval() {
    // lm-eval 0.4.13 tasks/belebele/_default_template_yaml:
    // "P: {{flores_passage}}\nQ: {{question.strip()}}\nA: {{mc_answer1}}\nB: ...\nD: {{mc_answer4}}\nAnswer:"
    let m = requests(&["belebele_tur_Latn"], 0);
    let p2 = "P: Geçidi aşmayı planlayan yürüyüşçüler güneş doğmadan yola çıkmalıdır. Öğleden sonra sırtın üzerinde sık sık bulutlar toplanır ve temmuz ile ağustosta gök gürültülü fırtınalar yaygındır. Zirvedeki dağ kulübesi su satar, ancak yalnızca nakit kabul eder. Geçidin kuzey tarafında cep telefonu sinyali yoktur.\nQ: Metne göre yürüyüşçüler neden erken yola çıkmalıdır?\nA: Kulübe öğlen kapanır\nB: Öğleden sonra sık sık fırtına çıkar\nC: Yol daha sonra kalabalıklaşır\nD: Telefon sinyali geceleri kaybolur\nAnswer:";
    assert_eq!(req(&m, "belebele_tur_Latn", 2, 0), (p2, " A", 1));
    assert_eq!(req(&m, "belebele_tur_Latn", 2, 3), (p2, " D", 1));
    // 1-shot (first_n from the same split, skipping the scored row): row 0 gets row 1 as example,
    // every other row gets row 0 — "…Answer: C\n\n" (row 0's answer is option 3).
    let m1 = requests(&["belebele_tur_Latn"], 1);
    let (ctx2, _, _) = req(&m1, "belebele_tur_Latn", 2, 0);
    let row0 = &m[&("belebele_tur_Latn".to_string(), 0, 0)].0;
    let row1 = &m[&("belebele_tur_Latn".to_string(), 1, 0)].0;
    assert_eq!(ctx2, format!("{row0} C\n\n{p2}"));
    assert_eq!(req(&m1, "belebele_tur_Latn", 0, 0).0, format!("{row1} B\n\n{row0}"));
}

#[test]
fn ceval_prompts_follow_lm_eval() {
    // lm-eval 0.4.13 tasks/ceval/_default_ceval_yaml + _generate_configs.py description:
    // "以下是中国关于{subject_zh}的单项选择题，请选出其中的正确答案。\n\n" + "{{question.strip()}}\nA. {{A}}\n...\n答案："
    let m = requests(&["ceval-valid"], 0);
    let head = "以下是中国关于计算机网络的单项选择题，请选出其中的正确答案。\n\n";
    // id 3: two leading spaces and a trailing newline stripped.
    assert_eq!(
        req(&m, "ceval-valid_computer_network", 3, 2),
        (
            format!("{head}以下设备中，工作在网络层的是____\nA. 集线器\nB. 交换机\nC. 路由器\nD. 中继器\n答案：")
                .as_str(),
            " C",
            2
        )
    );
    // id 5: a two-line question kept as is.
    assert_eq!(
        req(&m, "ceval-valid_computer_network", 5, 0).0,
        format!("{head}主机A向主机B发送一个TCP报文段，序号为200，携带了100字节的数据。\n若该报文段被正确接收，则主机B发回的确认号是____\nA. 200\nB. 201\nC. 300\nD. 301\n答案：")
    );
    assert!(req(&m, "ceval-valid_high_school_physics", 0, 0).0.starts_with("以下是中国关于高中物理的单项选择题"));
    // 1-shot from dev (first row), the description once at the top.
    let m1 = requests(&["ceval-valid_computer_network"], 1);
    assert_eq!(
        req(&m1, "ceval-valid_computer_network", 0, 0).0,
        format!("{head}在OSI参考模型中，负责在相邻结点之间可靠传输数据帧的是____\nA. 物理层\nB. 数据链路层\nC. 网络层\nD. 传输层\n答案： B\n\n某网络的子网掩码为255.255.255.192，则每个子网最多可分配的主机地址数为____\nA. 30\nB. 62\nC. 64\nD. 126\n答案：")
    );
}

fn err_of(tasks: &[&str], dir: &Path) -> String {
    let cfg = run_config(tasks, dir, dir.join("r.jsonl"));
    eval::write_requests(&cfg, &dir.join("r.jsonl")).unwrap_err().to_string()
}

#[test]
fn malformed_rows_name_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let good =
        r#"{"premise": "Adam düştü.", "choice1": "A.", "choice2": "B.", "question": "cause", "label": 0, "idx": 900}"#;
    let f = d.join("xcopa/tr/test.tr.jsonl");
    write(
        &f,
        &format!("{good}\n{}\n", r#"{"premise": "X.", "choice1": "A.", "question": "cause", "label": 1, "idx": 901}"#),
    );
    assert_eq!(err_of(&["xcopa_tr"], d), format!("{}:2: missing field `choice2`", f.display()));
    write(
        &f,
        &format!(
            "{good}\n\n{}\n",
            r#"{"premise": "X.", "choice1": "A.", "choice2": "B.", "question": "cause", "label": 2, "idx": 901}"#
        ),
    );
    assert_eq!(
        err_of(&["xcopa_tr"], d),
        format!("{}:3: field `label` is \"2\", expected one of [\"0\", \"1\"]", f.display())
    );
    write(&f, &format!("{good}\n{{\"premise\": \n"));
    assert!(err_of(&["xcopa_tr"], d).starts_with(&format!("{}:2: not valid JSON", f.display())));
    write(
        &f,
        &format!(
            "{}\n",
            r#"{"premise": "X.", "choice1": "A.", "choice2": "B.", "question": "reason", "label": 0, "idx": 1}"#
        ),
    );
    assert_eq!(
        err_of(&["xcopa_tr"], d),
        format!("{}:1: field `question` is \"reason\", which `connector` has no entry for", f.display())
    );

    let c = d.join("ceval/val/logic_val.csv");
    write(&c, "id,question,A,B,C,D,answer\n0,\"多行\n问题\",1,2,3,4,A\n1,q,1,2,3,4\n");
    let e = err_of(&["ceval-valid_logic"], d);
    assert!(e.starts_with(&format!("{}:4: bad CSV row", c.display())), "{e}");
    write(&c, "id,question,A,B,C,D,answer\n0,q,1,2,3,4,E\n");
    assert_eq!(
        err_of(&["ceval-valid_logic"], d),
        format!("{}:2: field `answer` is \"E\", expected one of [\"A\", \"B\", \"C\", \"D\"]", c.display())
    );
    write(&c, "id,question,A,B,C,answer\n0,q,1,2,3,A\n");
    assert_eq!(err_of(&["ceval-valid_logic"], d), format!("{}:2: missing field `D`", c.display()));

    let e = err_of(&["belebele_est_Latn"], d);
    assert!(e.contains("no data file") && e.contains("belebele/est_Latn.jsonl"), "{e}");
    let e = err_of(&["xcopa_tk"], d);
    assert!(e.starts_with("unknown task `xcopa_tk` (did you mean `xcopa_ta`?)"), "{e}");
}

#[test]
fn fewshot_rules_are_enforced() {
    // XCOPA has no fewshot_split: lm-eval draws from `validation` with its default sampler,
    // random.Random(1234).sample(val_docs, k), one generator for the task's documents in order.
    // Expected strings from CPython 3.11 doing exactly that over val.tr.jsonl.
    let m = requests(&["xcopa_tr"], 2);
    assert_eq!(
        req(&m, "xcopa_tr", 0, 0).0,
        "Kadın kötü bir ruh halindeydi bu yüzden arkadaşına onu yalnız bırakmasını söyledi.\n\nKadın arkadaşıyla övgüyle bahsetti bu yüzden arkadaşından bir iyilik istemek istiyordu.\n\nÜrün balonlu naylonla paketlenmişti bu yüzden"
    );
    assert_eq!(
        req(&m, "xcopa_tr", 1, 1).0,
        "Oyuncu topu yakaladı bu yüzden takım arkadaşı ona attı.\n\nAdam musluğu açtı bu yüzden musluktan su aktı.\n\nCeplerimi boşalttım bu yüzden"
    );
    assert_eq!(
        req(&m, "xcopa_tr", 2, 0).0,
        "Topluluk adamın ölümünü öğrendi bu yüzden ölüm ilanı gazetede yayınlandı.\n\nPolitikacı sahtekarlıktan hüküm giymişti bu yüzden makamından uzaklaştırıldı.\n\nTermitler evi işgal etti bu yüzden"
    );
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = run_config(&["belebele_tur_Latn"], &fixture("data"), dir.path().join("r.jsonl"));
    cfg.num_fewshot = Some(8);
    let e = eval::write_requests(&cfg, &dir.path().join("r.jsonl")).unwrap_err().to_string();
    assert!(e.contains("9 few-shot examples asked for") && e.contains("has only 8"), "{e}");
}

fn run_with(batch: usize, tasks: &[&str], dir: &Path) -> (langadapt::eval::Results, usize) {
    let mut lm = formula_lm(batch);
    let mut cfg = run_config(tasks, &fixture("data"), dir.join(format!("results-{batch}.json")));
    cfg.log_samples = Some(dir.join(format!("samples-{batch}")));
    cfg.model.batch_size = batch;
    let r = eval::run(&cfg, &mut lm, &env()).unwrap();
    (r, lm.scorer().calls)
}

#[test]
fn results_do_not_depend_on_batch_size_and_are_lm_eval_shaped() {
    let dir = tempfile::tempdir().unwrap();
    let tasks = ["xcopa_tr", "belebele_tur_Latn", "belebele_zho_Hans", "ceval-valid"];
    let (r1, calls1) = run_with(1, &tasks, dir.path());
    let (r7, calls7) = run_with(7, &tasks, dir.path());
    let (r500, _) = run_with(500, &tasks, dir.path());
    assert_eq!(r1.results, r7.results);
    assert_eq!(r1.results, r500.results);
    // Identical requests are asked once: xcopa_tr_fixed only adds its 51 changed documents.
    assert_eq!(calls1, 1000 + 102 + 32 + 32 + 48);
    assert_eq!(calls7, calls1.div_ceil(7));

    // Shape: lm-eval metric keys with the ",none" filter suffix, n-samples, versions, config.
    let x = &r1.results["xcopa_tr"];
    let acc = x["acc,none"].as_f64().unwrap();
    let se = x["acc_stderr,none"].as_f64().unwrap();
    assert!((se - (acc * (1.0 - acc) / 499.0).sqrt()).abs() < 1e-12, "sample stderr of a 0/1 mean");
    assert_eq!(r1.n_samples["xcopa_tr"].effective, 500);
    assert_eq!(r1.versions["ceval-valid_computer_network"], "1.0");
    assert_eq!(r1.n_shot["belebele_tur_Latn"], 0);
    assert!(r1.results.contains_key("xcopa_tr_fixed"));
    assert!(r1.warnings.iter().any(|w| w.contains("xcopa_tr") && w.contains("51 rows")));
    assert!(r1.warnings.iter().any(|w| w.contains("only 2 of its 52 subtasks")));
    use sha2::Digest;
    let weights = std::fs::read(fixture("tiny-llama/model.safetensors")).unwrap();
    assert_eq!(r1.config["model_sha256"].as_str().unwrap(), hex::encode(sha2::Sha256::digest(&weights)));

    // The group: mean weighted by size (6 + 6 documents here) and lm-eval's pooled stderr.
    let a = r1.get("ceval-valid_computer_network", "acc").unwrap();
    let b = r1.get("ceval-valid_high_school_physics", "acc").unwrap();
    let (na, nb) = (
        r1.n_samples["ceval-valid_computer_network"].effective,
        r1.n_samples["ceval-valid_high_school_physics"].effective,
    );
    let g = r1.get("ceval-valid", "acc").unwrap();
    assert!((g - (a * na as f64 + b * nb as f64) / (na + nb) as f64).abs() < 1e-15);
    assert_eq!(r1.group_subtasks["ceval-valid"].len(), 2);
    assert!(r1.groups.contains_key("ceval-valid"));

    // Per-doc logs: acc recomputed from the samples equals the reported acc.
    let samples = std::fs::read_to_string(dir.path().join("samples-1/samples_xcopa_tr.jsonl")).unwrap();
    let lines: Vec<Value> = samples.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 1000);
    let correct = lines.iter().filter(|l| l["choice_idx"] == 0).filter(|l| l["pred"] == l["target"]).count();
    assert_eq!(correct as f64 / 500.0, acc);
    assert!(dir.path().join("results-1.manifest.json").is_file());
    let written: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("results-1.json")).unwrap()).unwrap();
    assert_eq!(written["results"]["xcopa_tr"]["acc,none"].as_f64(), Some(acc));
}

#[test]
fn perplexity_over_text_jsonl_and_shards_and_codeswitch_task() {
    use langadapt::corpus::{DocId, IdKind, TextRecord, TextShardWriter};
    use langadapt::manifest::ShardMeta;
    let dir = tempfile::tempdir().unwrap();
    let texts = ["Kedi masanın üzerine atladı.", "Tallinn on Eesti pealinn.\n", "语言模型通过预测下一个词来学习。"];
    let shard = dir.path().join("shards/part-00000.parquet");
    std::fs::create_dir_all(shard.parent().unwrap()).unwrap();
    let meta = ShardMeta { stage: "test".into(), version: "0".into(), run_id: "x".into() };
    let mut w = TextShardWriter::create(&shard, &meta, IdKind::Int).unwrap();
    for (i, t) in texts.iter().enumerate() {
        w.write(TextRecord {
            id: DocId::Int(i as i64),
            title: String::new(),
            text: t.to_string(),
            lang: "x".into(),
            source: "s".into(),
        })
        .unwrap();
    }
    w.finish(&[]).unwrap();
    let jsonl = dir.path().join("docs.jsonl");
    write(&jsonl, &texts.iter().map(|t| serde_json::json!({ "text": t }).to_string() + "\n").collect::<String>());

    // Expected: every token of every text scored once by the formula, in windows of 64.
    let tok = tokenizer();
    let (mut ll, mut n_tokens) = (0.0, 0);
    for t in texts {
        let toks = tok.encode(t, false).unwrap();
        n_tokens += toks.len();
        for (ctx, cont) in rolling_windows(&toks, 1, 300, 1) {
            let mut all = ctx.clone();
            all.extend(&cont);
            ll += formula_score(&TokenScoreRequest { tokens: all, n_cont: cont.len() }).ll;
        }
    }
    let n_bytes: usize = texts.iter().map(|t| t.len()).sum();
    let n_words: usize = texts.iter().map(|t| count_words(t)).sum();
    assert_eq!(n_words, 4 + 5 + 1, "the trailing newline makes an empty word, as re.split does");
    for data in [shard.parent().unwrap().to_path_buf(), jsonl] {
        let mut lm = formula_lm_with(4, 300);
        let mut cfg = run_config(&["perplexity", "codeswitch_zh"], &fixture("data"), dir.path().join("ppl.json"));
        cfg.limit = Some(12);
        cfg.perplexity_data = Some(langadapt::eval::PerplexityData::One(data.clone()));
        let r = eval::run(&cfg, &mut lm, &env()).unwrap();
        let p = &r.results["perplexity"];
        assert!(
            (p["bits_per_byte,none"].as_f64().unwrap() - (-ll / n_bytes as f64 / std::f64::consts::LN_2)).abs() < 1e-12
        );
        assert!((p["word_perplexity,none"].as_f64().unwrap() / (-ll / n_words as f64).exp() - 1.0).abs() < 1e-12);
        assert!((p["token_perplexity,none"].as_f64().unwrap() / (-ll / n_tokens as f64).exp() - 1.0).abs() < 1e-12);
        assert_eq!(
            (p["n_tokens"].as_u64(), p["n_bytes"].as_u64(), p["n_words"].as_u64()),
            (Some(n_tokens as u64), Some(n_bytes as u64), Some(n_words as u64))
        );
        assert_eq!(p["bits_per_byte_stderr,none"], "N/A");
        assert!(p["note"].as_str().unwrap().contains("not comparable across tokenizers"));
        // Every response is "今天天气很好。" + an English sentence of 9 words.
        let c = &r.results["codeswitch_zh"];
        assert_eq!(c["codeswitch_rate,none"].as_f64(), Some(1.0));
        assert_eq!(c["intruders"][0][0], "eng");
        assert_eq!(r.n_samples["codeswitch_zh"].effective, 12);
        // statsmodels' Wilson interval of 12/12.
        assert!((c["codeswitch_rate_ci95"][0].as_f64().unwrap() - 0.7575059933447589).abs() < 1e-12);
    }
    let cfg = run_config(&["perplexity"], &fixture("data"), dir.path().join("ppl.json"));
    let e = eval::run(&cfg, &mut formula_lm(1), &env()).unwrap_err().to_string();
    assert!(e.contains("--data PATH"), "{e}");
}

/// Answers generation with a fixed Chinese sentence and keeps the requests; scores with the formula.
struct RecordingLm {
    inner: LocalLm<FormulaScorer>,
    asked: Vec<GenerateUntil>,
}

impl LanguageModel for RecordingLm {
    fn loglikelihood(&mut self, r: &[Loglikelihood]) -> Result<Vec<eval::LoglikelihoodResult>, EvalError> {
        self.inner.loglikelihood(r)
    }
    fn loglikelihood_rolling(
        &mut self,
        r: &[eval::LoglikelihoodRolling],
    ) -> Result<Vec<eval::RollingResult>, EvalError> {
        self.inner.loglikelihood_rolling(r)
    }
    fn generate_until(&mut self, r: &[GenerateUntil]) -> Result<Vec<String>, EvalError> {
        self.asked.extend_from_slice(r);
        Ok(r.iter().map(|_| "今天天气很好。".to_string()).collect())
    }
}

/// Issue 17: zh and en perplexity in one eval (a table name → text, or a list named by file stem), and
/// code-switching prompts written in the model's own instruction template.
#[test]
fn several_perplexity_texts_and_prompts_in_the_model_template() {
    use langadapt::eval::PerplexityData;
    let dir = tempfile::tempdir().unwrap();
    let (zh, en) = (dir.path().join("zh.txt"), dir.path().join("en.txt"));
    write(&zh, "今天天气很好。\n\n我们去公园吧。\n");
    write(&en, "The weather is nice today.\n\nLet us go to the park.\n");
    let one = |path: &Path| {
        let mut cfg = run_config(&["perplexity"], &fixture("data"), dir.path().join("one.json"));
        cfg.perplexity_data = Some(PerplexityData::One(path.to_path_buf()));
        eval::run(&cfg, &mut formula_lm(2), &env()).unwrap().results["perplexity"]["bits_per_byte,none"].clone()
    };
    let (zh_bpb, en_bpb) = (one(&zh), one(&en));
    assert_ne!(zh_bpb, en_bpb);
    let named = PerplexityData::Named([("zh".to_string(), zh.clone()), ("en".to_string(), en.clone())].into());
    for (data, names) in [
        (named, ["perplexity_zh", "perplexity_en"]),
        (PerplexityData::List(vec![zh.clone(), en.clone()]), ["perplexity_zh", "perplexity_en"]),
    ] {
        let mut cfg = run_config(&["perplexity", "codeswitch_zh"], &fixture("data"), dir.path().join("two.json"));
        cfg.perplexity_data = Some(data);
        cfg.prompt_template = Some("alpaca_zh".into());
        cfg.limit = Some(2);
        let mut lm = RecordingLm { inner: formula_lm(2), asked: Vec::new() };
        let r = eval::run(&cfg, &mut lm, &env()).unwrap();
        assert_eq!(r.results[names[0]]["bits_per_byte,none"], zh_bpb);
        assert_eq!(r.results[names[1]]["bits_per_byte,none"], en_bpb);
        assert!(!r.results.contains_key("perplexity"));
        assert_eq!(lm.asked.len(), 2);
        let first = &lm.asked[0];
        assert!(
            first.context.starts_with("以下是描述任务的指令。请写出恰当完成该请求的回答。\n\n### 指令:\n"),
            "{}",
            first.context
        );
        assert!(first.context.ends_with("\n\n### 回答:\n"), "{}", first.context);
        assert_eq!(first.until, ["### 指令:"]);
        assert_eq!(r.results["codeswitch_zh"]["codeswitch_rate,none"].as_f64(), Some(0.0));
    }
    // Two texts with one file stem cannot share a result name.
    std::fs::create_dir_all(dir.path().join("b")).unwrap();
    write(&dir.path().join("b/zh.txt"), "再见。\n");
    let mut cfg = run_config(&["perplexity"], &fixture("data"), dir.path().join("three.json"));
    cfg.perplexity_data = Some(PerplexityData::List(vec![zh.clone(), dir.path().join("b/zh.txt")]));
    let e = eval::run(&cfg, &mut formula_lm(2), &env()).unwrap_err().to_string();
    assert!(e.contains("would both report as `perplexity_zh`; name them in a table instead"), "{e}");
    cfg.perplexity_data = Some(PerplexityData::One(zh));
    cfg.prompt_template = Some("vicuna".into());
    let e = eval::run(&cfg, &mut formula_lm(2), &env()).unwrap_err().to_string();
    assert!(e.starts_with("unknown template 'vicuna'; known templates: alpaca, alpaca_tr"), "{e}");
}

/// A fake OpenAI-compatible server on 127.0.0.1 answering `n` requests: echoed logprobs from the
/// formula for token-id prompts, a fixed completion for text prompts, HTTP 500 for prompt "boom".
fn fake_server(n: usize) -> (String, std::thread::JoinHandle<Vec<Value>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    let handle = std::thread::spawn(move || {
        let mut bodies = Vec::new();
        for stream in listener.incoming().take(n) {
            let mut stream = stream.unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut len = 0;
            let mut auth = Value::Null;
            let mut first = String::new();
            reader.read_line(&mut first).unwrap();
            assert!(first.starts_with("POST /v1/completions "), "{first}");
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                if line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap();
                }
                if let Some(v) = line.strip_prefix("authorization: ").or_else(|| line.strip_prefix("Authorization: ")) {
                    auth = Value::String(v.trim().to_string());
                }
            }
            let mut body = vec![0; len];
            reader.read_exact(&mut body).unwrap();
            let req: Value = serde_json::from_slice(&body).unwrap();
            let (status, answer) = if req["prompt"] == "boom" {
                ("500 Internal Server Error", serde_json::json!({"error": "model crashed"}))
            } else if let Some(text) = req["prompt"].as_str() {
                let _ = text;
                (
                    "200 OK",
                    serde_json::json!({"choices": [{"index": 0, "text": "Merhaba dünya.### Instruction: başka"}]}),
                )
            } else {
                assert_eq!(
                    (req["echo"].as_bool(), req["max_tokens"].as_u64(), req["logprobs"].as_u64()),
                    (Some(true), Some(0), Some(1))
                );
                let choices: Vec<Value> = req["prompt"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .enumerate()
                    .rev() // answer out of order: the client must sort by index
                    .map(|(i, p)| {
                        let toks = ids(p);
                        let mut lps = vec![Value::Null];
                        let mut tops = vec![Value::Null];
                        for w in toks.windows(2) {
                            lps.push(serde_json::json!(formula_lp(w[0], w[1])));
                            tops.push(serde_json::json!({ "best": -0.125 }));
                        }
                        serde_json::json!({"index": i, "text": "", "logprobs": {"token_logprobs": lps, "top_logprobs": tops}})
                    })
                    .collect();
                ("200 OK", serde_json::json!({ "choices": choices }))
            };
            let text = answer.to_string();
            write!(stream, "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}", text.len()).unwrap();
            let mut req = req;
            req["authorization"] = auth;
            bodies.push(req);
        }
        bodies
    });
    (url, handle)
}

#[test]
fn openai_backend_matches_local_scores() {
    let reqs = vec![
        Loglikelihood {
            context: "Adam merdivenden düştü çünkü".into(), continuation: " basamaklar ıslaktı.".into()
        },
        Loglikelihood { context: "The capital of France is ".into(), continuation: "Paris.".into() },
        Loglikelihood { context: "Kısa".into(), continuation: " cevap".into() },
    ];
    let local = formula_lm(2).loglikelihood(&reqs).unwrap();
    // 2 scoring calls (batch of 2) + 1 generation + 1 failing generation.
    let (url, server) = fake_server(4);
    let mut lm = OpenAiLm::new(&url, "tiny", tokenizer(), 64, 2, quiet()).unwrap();
    let remote = lm.loglikelihood(&reqs).unwrap();
    assert_eq!(remote, local);
    let text = lm
        .generate_until(&[GenerateUntil {
            context: "Selam".into(),
            until: vec!["### Instruction:".into()],
            max_tokens: 16,
        }])
        .unwrap();
    assert_eq!(text, vec!["Merhaba dünya.".to_string()]);
    let e = lm
        .generate_until(&[GenerateUntil { context: "boom".into(), until: vec![], max_tokens: 4 }])
        .unwrap_err()
        .to_string();
    assert!(e.starts_with(&format!("{url}/completions: HTTP 500")) && e.contains("model crashed"), "{e}");
    let bodies = server.join().unwrap();
    assert_eq!(bodies[0]["prompt"][0][0], 1, "token prompts start with BOS");
    assert_eq!(bodies[2]["stop"][0], "### Instruction:");
}

#[test]
fn cli_requests_run_compare_and_codeswitch() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("req.jsonl");
    let data = fixture("data");
    let o = langadapt(&[
        "eval",
        "requests",
        "--tasks",
        "belebele_zho_Hans,xcopa_zh",
        "--data-dir",
        data.to_str().unwrap(),
        "--limit",
        "3",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(&out).unwrap().lines().count(), 3 * 4 + 3 * 2);

    let o = langadapt(&[
        "eval",
        "run",
        "--model",
        fixture("tiny-llama").to_str().unwrap(),
        "--tasks",
        "xcopa_zh",
        "--data-dir",
        data.to_str().unwrap(),
        "--out",
        dir.path().join("r.json").to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let results: Value = serde_json::from_str(&std::fs::read_to_string(dir.path().join("r.json")).unwrap()).unwrap();
    let acc = results["results"]["xcopa_zh"]["acc,none"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&acc), "{results}");

    let mut a = langadapt::eval::Results::default();
    a.set("xcopa_tr", "acc", 0.55, Some(0.0222), true);
    let mut b = a.clone();
    b.set("xcopa_tr", "acc", 0.6, Some(0.0219), true);
    a.write(&dir.path().join("a.json")).unwrap();
    b.write(&dir.path().join("b.json")).unwrap();
    let o = langadapt(&[
        "eval",
        "compare",
        dir.path().join("a.json").to_str().unwrap(),
        dir.path().join("b.json").to_str().unwrap(),
        "--labels",
        "base,adapted",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "| task | metric | base | adapted | Δ |\n|---|---|---:|---:|---:|\n| xcopa_tr | acc | 0.5500 ± 0.0222 | 0.6000 ± 0.0219 | +0.0500 |\n"
    );

    let responses = dir.path().join("responses.jsonl");
    write(&responses, "{\"response\": \"今天天气很好。\"}\n{\"response\": \"我喜欢用Python写代码。\"}\n{\"response\": \"见 https://example.org/zh 和 `ls -la`。\"}\n{\"response\": \"这是2024年。\"}\n");
    let o = langadapt(&["eval", "codeswitch", "--input", responses.to_str().unwrap(), "--lang", "zh"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        "zh: 1/4 responses code-switch (25.00%), 1/8 words foreign (12.50%); intruders: Latin 1"
    );
    write(&responses, "{\"answer\": \"x\"}\n");
    let o = langadapt(&["eval", "codeswitch", "--input", responses.to_str().unwrap(), "--lang", "zh"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("responses.jsonl:1: expected a string field `response`"), "{}", stderr(&o));
}

#[test]
fn score_answers_a_requests_file() {
    let dir = tempfile::tempdir().unwrap();
    let reqs = dir.path().join("reqs.jsonl");
    write(
        &reqs,
        "{\"id\": \"a\", \"context\": \"Kedi masanın üzerine\", \"continuation\": \" atladı.\"}\n\n{\"id\": 7, \"context\": \"\", \"continuation\": \"Merhaba\"}\n",
    );
    let out = dir.path().join("scores.jsonl");
    assert_eq!(eval::score_requests(&mut formula_lm(3), &reqs, &out).unwrap(), 2);
    let expected = formula_lm(1)
        .loglikelihood(&[
            Loglikelihood { context: "Kedi masanın üzerine".into(), continuation: " atladı.".into() },
            Loglikelihood { context: "".into(), continuation: "Merhaba".into() },
        ])
        .unwrap();
    let lines: Vec<Value> =
        std::fs::read_to_string(&out).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines[0]["id"], "a");
    assert_eq!(lines[1]["id"], 7);
    for (l, e) in lines.iter().zip(&expected) {
        assert_eq!(l["ll"].as_f64(), Some(e.ll));
        assert_eq!(l["is_greedy"].as_bool(), Some(e.is_greedy));
        assert_eq!(l["n_cont_tokens"].as_u64(), Some(e.n_cont_tokens as u64));
    }
    write(&reqs, "{\"id\": 1, \"context\": \"x\"}\n");
    let e = eval::score_requests(&mut formula_lm(3), &reqs, &out).unwrap_err().to_string();
    assert_eq!(e, format!("{}:1: missing string field `continuation`", reqs.display()));
}

/// Issue 21: a token budget changes the batches, not the numbers: rolling perplexity of the reference
/// documents (32-token windows) in batches of at most 40 padded tokens equals batch 1 on the real model.
#[test]
fn token_budget_batches_give_the_numbers_of_batch_one() {
    let r = reference();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("docs.jsonl");
    let lines: Vec<String> =
        r["rolling"].as_array().unwrap().iter().map(|t| serde_json::json!({"text": t["text"]}).to_string()).collect();
    std::fs::write(&path, lines.join("\n")).unwrap();
    let open = |batch| langadapt::eval::open_local_lm(&fixture("tiny-llama"), "cpu", batch, Some(32), quiet()).unwrap();
    let (one, docs_one) = perplexity(&mut open(1), &path, None).unwrap();
    let (budget, docs_budget) = perplexity(&mut open(8).with_max_batch_tokens(Some(40)), &path, None).unwrap();
    assert_eq!((one.n_tokens, one.n_docs), (budget.n_tokens, budget.n_docs));
    assert!(one.n_docs >= 2 && one.n_tokens > 64, "several windows: {one:?}");
    for (a, b) in docs_one.iter().zip(&docs_budget) {
        assert!((a.ll - b.ll).abs() <= 1e-5 * a.n_tokens as f64, "doc {}: {} vs {}", a.doc_id, a.ll, b.ll);
    }
}

/// The candle model behind `LocalLm`: the numbers transformers and lm-evaluation-harness give.
#[test]
fn candle_backend_matches_transformers_end_to_end() {
    let r = reference();
    let mut lm = langadapt::eval::open_local_lm(&fixture("tiny-llama"), "cpu", 4, None, quiet()).unwrap();
    let reqs = reference_loglikelihoods(&r);
    for (c, g) in r["continuations"].as_array().unwrap().iter().zip(lm.loglikelihood(&reqs).unwrap()) {
        let n = c["n_cont_tokens"].as_f64().unwrap();
        assert!((g.ll - c["ll"].as_f64().unwrap()).abs() <= 1e-4 * n, "{}: {} vs {}", c["id"], g.ll, c["ll"]);
        assert_eq!(g.is_greedy, c["is_greedy"].as_bool().unwrap(), "{}", c["id"]);
    }
    let dir = tempfile::tempdir().unwrap();
    let mut lm = langadapt::eval::open_local_lm(&fixture("tiny-llama"), "cpu", 2, Some(32), quiet()).unwrap();
    for (i, t) in r["rolling"].as_array().unwrap().iter().enumerate() {
        let path = dir.path().join(format!("doc{i}.txt"));
        std::fs::write(&path, t["text"].as_str().unwrap()).unwrap();
        let (rep, _) = perplexity(&mut lm, &path, None).unwrap();
        for (got, key) in [(rep.word_perplexity(), "word_perplexity"), (rep.byte_perplexity(), "byte_perplexity")] {
            let want = t[key].as_f64().unwrap();
            assert!(((got - want) / want).abs() <= 1e-4, "{key}: {got} vs {want}");
        }
        assert!((rep.bits_per_byte() - t["bits_per_byte"].as_f64().unwrap()).abs() <= 1e-4);
    }
    let reqs: Vec<GenerateUntil> = r["greedy"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| GenerateUntil { context: g["prompt"].as_str().unwrap().into(), until: vec![], max_tokens: 24 })
        .collect();
    let mut lm = langadapt::eval::open_local_lm(&fixture("tiny-llama"), "cpu", 4, None, quiet()).unwrap();
    for (g, text) in r["greedy"].as_array().unwrap().iter().zip(lm.generate_until(&reqs).unwrap()) {
        // EOS stops generation here (transformers' reference ran past it), so compare up to the first EOS.
        let want = g["text_tokenizers"].as_str().unwrap();
        match g["first_eos_index"].as_u64() {
            None => assert_eq!(text, want),
            Some(_) => assert!(want.starts_with(&text), "{text:?} is not a prefix of {want:?}"),
        }
    }
}

#[test]
fn cli_run_through_an_openai_compatible_server() {
    let dir = tempfile::tempdir().unwrap();
    let (url, server) = fake_server(1);
    let out = dir.path().join("results.json");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_langadapt"))
        .env("OPENAI_API_KEY", "sk-secret-test-key")
        .args(["--quiet", "eval", "run", "--backend", "openai", "--endpoint", &url])
        .args(["--model", fixture("tiny-llama").to_str().unwrap(), "--tasks", "xcopa_zh", "--limit", "3"])
        .args(["--data-dir", fixture("data").to_str().unwrap(), "--out", out.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let bodies = server.join().unwrap();
    assert_eq!(bodies[0]["authorization"], "Bearer sk-secret-test-key");
    assert_eq!(bodies[0]["prompt"].as_array().unwrap().len(), 6, "3 docs × 2 choices in one batch");
    // The same numbers as the local path with the same closed-form model (context 256 from config.json).
    let reqs = requests(&["xcopa_zh"], 0);
    let mut lls = Vec::new();
    for doc in 0..3 {
        for choice in 0..2 {
            let (c, k, _) = req(&reqs, "xcopa_zh", doc, choice);
            lls.push(Loglikelihood { context: c.into(), continuation: k.into() });
        }
    }
    let local = formula_lm_with(1, 256).loglikelihood(&lls).unwrap();
    let correct = (0..3)
        .filter(|d| (local[2 * d].ll >= local[2 * d + 1].ll) == (reqs[&("xcopa_zh".into(), *d as u64, 0)].2 == 0))
        .count();
    let results = langadapt::eval::Results::read(&out).unwrap();
    assert_eq!(results.get("xcopa_zh", "acc"), Some(correct as f64 / 3.0));
    assert_eq!(results.config["backend"], "openai");
    let manifest = std::fs::read_to_string(dir.path().join("results.manifest.json")).unwrap();
    let written = std::fs::read_to_string(&out).unwrap();
    assert!(!manifest.contains("sk-secret") && !written.contains("sk-secret"), "the API key is never written");
}

#[test]
fn a_language_is_a_few_lines_of_toml() {
    let dir = tempfile::tempdir().unwrap();
    let evals = dir.path().join("evals");
    let xcopa = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("evals/xcopa.toml")).unwrap();
    let with_xx = xcopa
        .replace("[instances]\n", "[instances]\nxx = { connector = { cause = \"porque\", effect = \"então\" } }\n");
    write(&evals.join("xcopa.toml"), &with_xx);
    let data = dir.path().join("data");
    write(
        &data.join("xcopa/xx/test.xx.jsonl"),
        "{\"premise\": \"  O homem caiu.\", \"choice1\": \"Escorregou.\", \"choice2\": \"Riu.\", \"question\": \"cause\", \"label\": 0, \"idx\": 0}\n",
    );
    let out = dir.path().join("r.jsonl");
    let mut cfg = run_config(&["xcopa_xx"], &data, out.clone());
    cfg.evals_dir = Some(evals.clone());
    assert_eq!(eval::write_requests(&cfg, &out).unwrap(), 2);
    let first: Value = serde_json::from_str(std::fs::read_to_string(&out).unwrap().lines().next().unwrap()).unwrap();
    assert_eq!(
        (first["context"].as_str(), first["continuation"].as_str()),
        (Some("O homem caiu porque"), Some(" escorregou."))
    );

    write(&evals.join("xcopa.toml"), &with_xx.replace("fewshot_sampler", "few_shot_sampler"));
    let e = eval::write_requests(&cfg, &out).unwrap_err().to_string();
    assert!(
        e.starts_with(&format!("task definition {}", evals.join("xcopa.toml").display()))
            && e.contains("few_shot_sampler"),
        "{e}"
    );
    // Issue 19: an unknown metric or sampler is an error when the file loads, not silently dropped.
    let metrics = with_xx.lines().find(|l| l.starts_with("metrics = ")).unwrap();
    write(&evals.join("xcopa.toml"), &with_xx.replace(metrics, "metrics = [\"acc\", \"f1\"]"));
    let e = eval::write_requests(&cfg, &out).unwrap_err().to_string();
    assert!(e.starts_with(&format!("task definition {}", evals.join("xcopa.toml").display())), "{e}");
    assert!(e.contains("unknown variant `f1`, expected one of `acc`, `acc_norm`, `acc_bytenorm`"), "{e}");
    write(&evals.join("xcopa.toml"), &with_xx.replace("fewshot_sampler = \"random\"", "fewshot_sampler = \"last_n\""));
    let e = eval::write_requests(&cfg, &out).unwrap_err().to_string();
    assert!(e.contains("unknown variant `last_n`, expected `first_n` or `random`"), "{e}");
}

/// A model whose generations are given in advance, in the order asked; it records the requests.
struct Scripted {
    answers: Vec<String>,
    asked: Vec<GenerateUntil>,
}

impl LanguageModel for Scripted {
    fn loglikelihood(&mut self, _: &[Loglikelihood]) -> Result<Vec<eval::LoglikelihoodResult>, EvalError> {
        unreachable!("generation tasks ask no loglikelihoods")
    }
    fn loglikelihood_rolling(
        &mut self,
        _: &[eval::LoglikelihoodRolling],
    ) -> Result<Vec<eval::RollingResult>, EvalError> {
        unreachable!("generation tasks ask no loglikelihoods")
    }
    fn generate_until(&mut self, requests: &[GenerateUntil]) -> Result<Vec<String>, EvalError> {
        let start = self.asked.len();
        self.asked.extend(requests.iter().cloned());
        Ok((start..start + requests.len()).map(|i| self.answers.get(i).cloned().unwrap_or_default()).collect())
    }
}

fn fixture_lines(rel: &str) -> Vec<String> {
    std::fs::read_to_string(fixture(rel)).unwrap().lines().map(str::to_string).collect()
}

/// Issue 18: FLORES translation runs through `eval run`: lm-eval's FLORES prompt with few-shot examples from
/// `dev`, corpus BLEU/chrF/chrF++ of the answers (sacrebleu's numbers, checked in metrics.rs) with their
/// signatures, zh tokenization for a Chinese target, and `samples_{task}.jsonl`.
#[test]
fn flores_translation_prompts_scores_and_logs_samples() {
    let dir = tempfile::tempdir().unwrap();
    let data = fixture("data");
    let devtest = |l: &str| fixture_lines(&format!("data/flores200_dataset/devtest/{l}.devtest"));
    let dev = |l: &str| fixture_lines(&format!("data/flores200_dataset/dev/{l}.dev"));
    let (eng, tur, zho) = (devtest("eng_Latn"), devtest("tur_Latn"), devtest("zho_Hans"));
    // Half the answers are the reference, the rest a cut copy of it or nothing.
    let answers: Vec<String> = tur
        .iter()
        .enumerate()
        .map(|(i, t)| match i % 3 {
            0 => t.clone(),
            1 => t.split(' ').take(6).collect::<Vec<_>>().join(" "),
            _ => String::new(),
        })
        .collect();
    let mut cfg = run_config(&["flores_eng_Latn-tur_Latn"], &data, dir.path().join("results.json"));
    cfg.num_fewshot = Some(1);
    cfg.log_samples = Some(dir.path().join("samples"));
    let mut lm = Scripted { answers: answers.clone(), asked: Vec::new() };
    let r = eval::run(&cfg, &mut lm, &env()).unwrap();

    assert_eq!(lm.asked.len(), 12);
    let expected_context = format!(
        "English sentence: {}\nTurkish sentence: {}\n\nEnglish sentence: {}\nTurkish sentence:",
        dev("eng_Latn")[0],
        dev("tur_Latn")[0],
        eng[0]
    );
    assert_eq!(lm.asked[0].context, expected_context);
    assert_eq!((lm.asked[0].until.clone(), lm.asked[0].max_tokens), (vec!["\n".to_string()], 256));

    let task = "flores_eng_Latn-tur_Latn";
    let refs = vec![tur.clone()];
    let bleu = langadapt::eval::textmetrics::Bleu::default();
    assert_eq!(r.get(task, "bleu"), Some(bleu.corpus(&answers, &refs).score));
    let chrf = langadapt::eval::textmetrics::Chrf::chrf_plus_plus();
    assert_eq!(r.get(task, "chrf++"), Some(chrf.corpus(&answers, &refs)));
    assert!(r.get(task, "chrf").unwrap() > 40.0 && r.get(task, "bleu").unwrap() > 20.0, "{:?}", r.results[task]);
    assert_eq!(r.results[task]["bleu_signature"], "nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0");
    assert_eq!(r.n_shot[task], 1);

    let samples = std::fs::read_to_string(dir.path().join(format!("samples/samples_{task}.jsonl"))).unwrap();
    let rows: Vec<Value> = samples.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len(), 12);
    assert_eq!(rows[0]["target"][0], tur[0].as_str());
    assert_eq!(rows[0]["resps"][0][0], answers[0].as_str());
    assert_eq!(rows[0]["chrf"], 100.0);
    assert_eq!(rows[2]["bleu"], 0.0);
    assert_eq!(rows[0]["arguments"]["context"], expected_context.as_str());

    // A Chinese target gets sacrebleu's zh tokenizer.
    let mut cfg = run_config(&["flores_eng_Latn-zho_Hans"], &data, dir.path().join("zh.json"));
    cfg.limit = Some(4);
    let mut lm = Scripted { answers: zho.clone(), asked: Vec::new() };
    let r = eval::run(&cfg, &mut lm, &env()).unwrap();
    assert_eq!(r.get("flores_eng_Latn-zho_Hans", "chrf"), Some(100.0));
    assert_eq!(
        r.results["flores_eng_Latn-zho_Hans"]["bleu_signature"],
        "nrefs:1|case:mixed|eff:no|tok:zh|smooth:exp|version:2.6.0"
    );
    assert_eq!(r.n_samples["flores_eng_Latn-zho_Hans"].effective, 4);
}

/// Issue 18: an instruction-tuned model gets the instruction in its SFT template, zero-shot, cut at the
/// template's next turn as well as at a newline.
#[test]
fn flores_with_a_prompt_template_asks_the_instruction() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = run_config(&["flores_eng_Latn-est_Latn"], &fixture("data"), dir.path().join("r.json"));
    cfg.prompt_template = Some("alpaca".into());
    cfg.num_fewshot = Some(3);
    cfg.limit = Some(1);
    let mut lm = Scripted { answers: Vec::new(), asked: Vec::new() };
    let r = eval::run(&cfg, &mut lm, &env()).unwrap();
    let eng = fixture_lines("data/flores200_dataset/devtest/eng_Latn.devtest");
    let instruction = format!("Translate the following English text into Estonian.\n\n{}", eng[0]);
    let template = langadapt::shards::Template::by_name("alpaca").unwrap();
    assert_eq!(lm.asked[0].context, template.prompt(&instruction));
    assert_eq!(lm.asked[0].until, ["### Instruction:", "\n"]);
    assert_eq!(r.n_shot["flores_eng_Latn-est_Latn"], 0);
}

/// Issue 18: extractive QA in the SQuAD layout (EstQA): lm-eval's SQuAD prompt with few-shot examples from
/// `train`, and EM/F1 equal to the official script's on the same answers (Estonian: no articles).
#[test]
fn squad_task_scores_like_the_official_script() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = run_config(&["squad_et"], &fixture("data"), dir.path().join("r.json"));
    cfg.num_fewshot = Some(1);
    let answers = fixture_lines("metrics/squad_et.pred");
    let mut lm = Scripted { answers, asked: Vec::new() };
    let r = eval::run(&cfg, &mut lm, &env()).unwrap();
    let expected: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("metrics/squad_expected.json")).unwrap()).unwrap();
    let want = &expected["et"]["articles_none"];
    assert!((r.get("squad_et", "exact_match").unwrap() - want["exact_match"].as_f64().unwrap()).abs() < 1e-9);
    assert!((r.get("squad_et", "f1").unwrap() - want["f1"].as_f64().unwrap()).abs() < 1e-9);
    assert!(r.stderr("squad_et", "f1").is_some());
    assert_eq!(r.results["squad_et"]["squad_normalization"], "squad-v1.1|articles:none");
    assert!(
        lm.asked[0].context.starts_with(
            "Title: Tallinn\n\nBackground: Tallinn on Eesti pealinn ja suurim linn.\n\nQuestion: Mis on Eesti pealinn?\n\nAnswer: Tallinn\n\nTitle: EstQA-vormingus näidis\n\nBackground: Tartu on"
        ),
        "{}",
        lm.asked[0].context
    );
    assert!(lm.asked[0].context.ends_with("\n\nQuestion: Küsimus 1: mis on vastus?\n\nAnswer:"));
}

/// Issue 18: a FLORES task names its pair and finds both files, or says which file is missing; files of
/// one split that do not align are refused.
#[test]
fn flores_tasks_reject_bad_pairs_and_files() {
    let dir = tempfile::tempdir().unwrap();
    let run = |task: &str, data: &Path| {
        let cfg = run_config(&[task], data, dir.path().join("r.json"));
        let mut lm = Scripted { answers: Vec::new(), asked: Vec::new() };
        eval::run(&cfg, &mut lm, &env()).unwrap_err().to_string()
    };
    let e = run("flores_eng_Latn", &fixture("data"));
    assert!(e.contains("names a language pair") && e.contains("flores_eng_Latn-est_Latn"), "{e}");
    let e = run("flores_eng_Latn-fin_Latn", &fixture("data"));
    assert!(e.contains("fin_Latn.devtest") && e.contains("released layout"), "{e}");

    let bad = dir.path().join("bad/flores200_dataset/devtest");
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::write(bad.join("eng_Latn.devtest"), "a\nb\nc\n").unwrap();
    std::fs::write(bad.join("tur_Latn.devtest"), "x\ny\n").unwrap();
    let e = run("flores_eng_Latn-tur_Latn", &dir.path().join("bad"));
    assert!(e.contains("has 3 sentences but") && e.contains("aligned line by line"), "{e}");
}

/// Issue 18: MMLU from the release's header-less CSVs: every request string equals lm-eval 0.4.13's own
/// (0- and 5-shot, three subjects, written by lm-eval in tests/fixtures/data/mmlu), and the groups nest as
/// lm-eval's: subjects → categories → `mmlu`, weighted by size.
#[test]
fn mmlu_requests_equal_lm_eval_and_groups_nest() {
    let dir = tempfile::tempdir().unwrap();
    for shots in [0, 5] {
        let mut cfg = run_config(&["mmlu"], &fixture("data"), dir.path().join("r.json"));
        cfg.num_fewshot = Some(shots);
        let out = dir.path().join(format!("requests-{shots}.jsonl"));
        assert_eq!(eval::write_requests(&cfg, &out).unwrap(), 36);
        let ours: Vec<Value> =
            std::fs::read_to_string(&out).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        let lm_eval: Vec<Value> = fixture_lines(&format!("data/mmlu/requests_{shots}shot.jsonl"))
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let key = |v: &Value| (v["task"].as_str().unwrap().to_string(), v["doc_id"].as_u64(), v["choice_idx"].as_u64());
        let ours: HashMap<_, _> = ours.iter().map(|v| (key(v), v)).collect();
        for want in &lm_eval {
            assert_eq!(ours[&key(want)], want, "{shots}-shot");
        }
    }

    let mut cfg = run_config(&["mmlu"], &fixture("data"), dir.path().join("r.json"));
    cfg.num_fewshot = Some(5);
    let r = eval::run(&cfg, &mut formula_lm(4), &env()).unwrap();
    assert_eq!(r.group_subtasks["mmlu"], ["mmlu_humanities", "mmlu_other", "mmlu_stem"]);
    assert_eq!(r.group_subtasks["mmlu_stem"], ["mmlu_abstract_algebra"]);
    let subjects = ["mmlu_abstract_algebra", "mmlu_high_school_european_history", "mmlu_nutrition"];
    // Three documents each: weighted by size, `mmlu` is the mean over the nine.
    let mean = subjects.iter().map(|s| r.get(s, "acc").unwrap()).sum::<f64>() / 3.0;
    assert!((r.get("mmlu", "acc").unwrap() - mean).abs() < 1e-12);
    assert_eq!(r.get("mmlu_other", "acc"), r.get("mmlu_nutrition", "acc"));
    assert!(r.groups.contains_key("mmlu_humanities") && r.warnings.iter().any(|w| w.contains("only 3 of its 57")));

    // A category alone is a group of its subjects.
    let cfg = run_config(&["mmlu_humanities"], &fixture("data"), dir.path().join("h.json"));
    let r = eval::run(&cfg, &mut formula_lm(4), &env()).unwrap();
    assert_eq!(r.group_subtasks["mmlu_humanities"], ["mmlu_high_school_european_history"]);
    assert!(r.warnings.iter().any(|w| w.contains("only 1 of its 13")), "{:?}", r.warnings);
}

/// A judge on 127.0.0.1: scores by the answer's length, with faults: the first request fails (500), the answer
/// to "malformed-once" is prose the first time, the answer to "malformed-always" always is.
fn mock_judge() -> crate::mock_http::Mock {
    use crate::mock_http::{ok, status, Mock};
    let seen = std::sync::Mutex::new(HashMap::<String, usize>::new());
    Mock::start(None, move |req, n| {
        if n == 0 {
            return status(500, "overloaded");
        }
        let user = req.body["messages"].as_array().unwrap().last().unwrap()["content"].as_str().unwrap().to_string();
        let times = {
            let mut s = seen.lock().unwrap();
            let t = s.entry(user.clone()).or_default();
            *t += 1;
            *t
        };
        let answer = if user.contains("malformed-always") || (user.contains("malformed-once") && times == 1) {
            "The answer is rather good.".to_string()
        } else if user.contains("[[A]]") {
            // Pairwise: prefer the longer answer, whichever position it is in.
            let a = user.split("Assistant A's Answer]\n").nth(1).unwrap().split("\n[The End").next().unwrap().len();
            let b = user.split("Assistant B's Answer]\n").nth(1).unwrap().split("\n[The End").next().unwrap().len();
            format!(
                "Verdict: {}",
                if a > b {
                    "[[A]]"
                } else if b > a {
                    "[[B]]"
                } else {
                    "[[C]]"
                }
            )
        } else {
            let answer = user.split("[Answer]\n").nth(1).unwrap().split("\n\nReply").next().unwrap();
            let x = (answer.chars().count() % 4).to_string();
            format!("{{\"correctness\": {x}, \"fluency\": 3, \"informativeness\": \"{x}\", \"logical_coherence\": 2, \"harmlessness\": 3}}")
        };
        ok(serde_json::json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": answer}}]}))
    })
}

fn judged_run(
    dir: &Path,
    task: &str,
    mock: &crate::mock_http::Mock,
    answers: Vec<String>,
) -> (langadapt::eval::Results, Scripted) {
    let evals = dir.join("evals");
    std::fs::create_dir_all(evals.join("prompts")).unwrap();
    let prompts =
        ["Tell me about Tartu.", "malformed-once: what is 2+2?", "malformed-always: name a colour.", "Say hi."];
    let lines: String = prompts.iter().map(|p| serde_json::json!({ "prompt": p }).to_string() + "\n").collect();
    std::fs::write(evals.join("prompts/codeswitch_et.jsonl"), lines).unwrap();
    let mut cfg = run_config(&[task], &fixture("data"), dir.join("results.json"));
    cfg.evals_dir = Some(evals);
    cfg.judge = Some(langadapt::eval::judge::JudgeSettings {
        endpoint: mock.url.clone(),
        model: "judge-model-x".into(),
        api_key_env: "LANGADAPT_TEST_JUDGE_KEY".into(),
        cache: None,
        reference: Some(dir.join("reference.jsonl")),
        workers: 2,
    });
    let mut lm = Scripted { answers, asked: Vec::new() };
    let r = eval::run(&cfg, &mut lm, &env()).unwrap();
    (r, lm)
}

/// Issue 18: LLM-as-judge, pointwise: scores per criterion and their average from a judge behind an
/// OpenAI-compatible chat API, a 500 retried, a malformed judgement asked again, one that stays malformed
/// counted; judgements cached, so a second run asks nothing; the key is sent but written nowhere.
#[test]
fn llm_judge_scores_retries_caches_and_hides_the_key() {
    std::env::set_var("LANGADAPT_TEST_JUDGE_KEY", "sk-test-very-secret");
    let dir = tempfile::tempdir().unwrap();
    let mock = mock_judge();
    let answers: Vec<String> = ["Tartu on ülikoolilinn.", "Neli.", "Punane.", "Tere!"].map(String::from).to_vec();
    let (r, lm) = judged_run(dir.path(), "llm_eval_et", &mock, answers.clone());
    assert!(lm.asked[0].context.contains("### Instruction:\nTell me about Tartu."));
    let t = &r.results["llm_eval_et"];
    assert_eq!(t["n_malformed"], 1);
    // Judged: answers 0, 1, 3 (22, 5, 5 characters: correctness 2, 1, 1).
    assert!((r.get("llm_eval_et", "correctness").unwrap() - 4.0 / 3.0).abs() < 1e-12, "{t:?}");
    assert_eq!(r.get("llm_eval_et", "fluency"), Some(3.0));
    let avg = [(2.0 + 3.0 + 2.0 + 2.0 + 3.0) / 5.0, (1.0 + 3.0 + 1.0 + 2.0 + 3.0) / 5.0, 2.0];
    assert!((r.get("llm_eval_et", "avg").unwrap() - avg.iter().sum::<f64>() / 3.0).abs() < 1e-12);
    assert_eq!((t["judge_model"].as_str(), t["rubric"].as_str()), (Some("judge-model-x"), Some("llm_eval")));
    assert_eq!(t["rubric_sha256"].as_str().unwrap().len(), 64);
    assert_eq!(r.n_samples["llm_eval_et"].effective, 3);
    // 4 prompts + the 500 + one re-ask of malformed-once + two re-asks of malformed-always.
    assert_eq!(t["judge_requests"], 7);
    let reqs = mock.requests();
    assert_eq!(reqs.len(), 8);
    assert!(reqs
        .iter()
        .all(|q| q.headers["authorization"] == "Bearer sk-test-very-secret" && q.path == "/v1/chat/completions"));
    assert_eq!(reqs[1].body["temperature"], 0);

    let (r2, _) = judged_run(dir.path(), "llm_eval_et", &mock, answers);
    assert_eq!(r2.results["llm_eval_et"]["judge_requests"], 0);
    assert_eq!(mock.requests().len(), 8);
    assert_eq!(r2.get("llm_eval_et", "avg"), r.get("llm_eval_et", "avg"));
    for f in ["judgements.jsonl", "results.json", "results.manifest.json"] {
        let text = std::fs::read_to_string(dir.path().join(f)).unwrap();
        assert!(!text.contains("sk-test-very-secret"), "{f} holds the key");
    }
    assert_eq!(std::fs::read_to_string(dir.path().join("judgements.jsonl")).unwrap().lines().count(), 7);
}

/// Issue 18: pairwise judging against a reference model's answers, both orders: the model wins a prompt
/// only when it wins in both; without a judge or a reference the run says what to give.
#[test]
fn pairwise_judge_asks_both_orders() {
    let dir = tempfile::tempdir().unwrap();
    let mock = mock_judge();
    let prompts =
        ["Tell me about Tartu.", "malformed-once: what is 2+2?", "malformed-always: name a colour.", "Say hi."];
    let reference: String = prompts
        .iter()
        .zip(["Linn.", "Neli, sest kaks pluss kaks on neli.", "Sinine.", "Tere!"])
        .map(|(p, r)| serde_json::json!({"prompt": p, "response": r}).to_string() + "\n")
        .collect();
    std::fs::write(dir.path().join("reference.jsonl"), reference).unwrap();
    let answers: Vec<String> =
        ["Tartu on Eesti vanim ülikoolilinn.", "4", "Punane.", "Tere!"].map(String::from).to_vec();
    let (r, _) = judged_run(dir.path(), "pairwise_et", &mock, answers);
    let t = &r.results["pairwise_et"];
    // Longer wins: prompt 0 won, 1 lost, 2 malformed, 3 tied.
    assert_eq!(t["wins_ties_losses"], serde_json::json!([1, 1, 1]));
    assert!((r.get("pairwise_et", "win_rate").unwrap() - 0.5).abs() < 1e-12);
    assert_eq!(t["n_malformed"], 1);

    let mut cfg = run_config(&["llm_eval_et"], &fixture("data"), dir.path().join("x.json"));
    cfg.limit = Some(1);
    let e = eval::run(&cfg, &mut Scripted { answers: Vec::new(), asked: Vec::new() }, &env()).unwrap_err().to_string();
    assert!(e.contains("--judge-model") && e.contains("--judge-endpoint"), "{e}");
}

/// Issue 18: classification as multiple choice with per-language verbalizers (evals/classification.toml):
/// the options are the language's words, few-shot examples come from the same file (never the scored row)
/// answered with their own label's word, and a label outside the set is refused with file and line.
#[test]
fn classification_uses_the_languages_label_words() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = run_config(&["classify_sentiment_tr"], &fixture("data"), dir.path().join("r.json"));
    cfg.num_fewshot = Some(2);
    let out = dir.path().join("req.jsonl");
    assert_eq!(eval::write_requests(&cfg, &out).unwrap(), 12);
    let reqs: Vec<Value> =
        std::fs::read_to_string(&out).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(
        (reqs[0]["continuation"].as_str(), reqs[1]["continuation"].as_str()),
        (Some(" olumlu"), Some(" olumsuz"))
    );
    assert_eq!(reqs[2]["target"], 1);
    let context = reqs[4]["context"].as_str().unwrap();
    // Document 2: its text stripped, after two examples answered with their label words.
    assert!(context.ends_with("\n\nYorum: Fiyatına göre gayet başarılı bir telefon.\nDuygu:"), "{context}");
    assert_eq!(context.matches("\nDuygu: olum").count(), 2, "{context}");
    assert!(!context.contains("Fiyatına göre gayet başarılı bir telefon.\nDuygu: "), "{context}");
    // Without --num-fewshot the file's k (4) applies.
    let mut cfg = run_config(&["classify_sentiment_tr"], &fixture("data"), dir.path().join("r.json"));
    cfg.num_fewshot = None;
    let r = eval::run(&cfg, &mut formula_lm(2), &env()).unwrap();
    assert_eq!((r.n_samples["classify_sentiment_tr"].effective, r.n_shot["classify_sentiment_tr"]), (6, 4));

    let bad = dir.path().join("bad/classify/sentiment");
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::write(
        bad.join("tr.jsonl"),
        "{\"text\": \"iyi\", \"label\": \"positive\"}\n{\"text\": \"kötü\", \"label\": \"neutral\"}\n",
    )
    .unwrap();
    let cfg = run_config(&["classify_sentiment_tr"], &dir.path().join("bad"), dir.path().join("b.json"));
    let e = eval::write_requests(&cfg, &dir.path().join("b.jsonl")).unwrap_err().to_string();
    assert!(e.contains("tr.jsonl:2") && e.contains("\"neutral\"") && e.contains("positive"), "{e}");
}
