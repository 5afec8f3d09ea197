//! `instruct translation-pairs`: translation-task instruction records from a parallel corpus (TSV,
//! JSON lines, or Moses-style two line-aligned files), as in the Estonian recipe: a stated share of
//! pairs become src→tgt tasks and the rest tgt→src, with prompts in English or in the non-English
//! language of the pair, both chosen per pair from `seed` so the same inputs give the same bytes.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::record::InstructRecord;
use super::InstructError;
use crate::corpus::DocId;
use crate::manifest::ManifestBuilder;
use crate::Env;

/// Settings of `instruct translation-pairs`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PairsConfig {
    /// One TSV/JSONL file, or two line-aligned files (src, tgt).
    pub parallel: Vec<PathBuf>,
    /// Source language code (first column / first file).
    pub src: String,
    /// Target language code.
    pub tgt: String,
    /// Output JSONL file (a recipe sets it per stage).
    #[serde(default)]
    pub out: PathBuf,
    /// Share of pairs made into src→tgt tasks (the rest: tgt→src).
    #[serde(default = "half")]
    pub src_to_tgt: f64,
    /// Share of prompts written in English (the rest: in the pair's other language).
    #[serde(default = "half")]
    pub english_prompts: f64,
    /// Seed of the per-pair choices.
    #[serde(default = "default_seed")]
    pub seed: u64,
}

fn half() -> f64 {
    0.5
}

fn default_seed() -> u64 {
    42
}

impl PairsConfig {
    /// What decides the output, as the manifest records it.
    pub fn settings(&self) -> serde_json::Value {
        serde_json::json!({
            "src": self.src, "tgt": self.tgt, "src_to_tgt": self.src_to_tgt, "english_prompts": self.english_prompts,
        })
    }
}

/// What `instruct translation-pairs` did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PairsReport {
    /// Records written.
    pub records: u64,
    /// src→tgt records.
    pub src_to_tgt: u64,
    /// tgt→src records.
    pub tgt_to_src: u64,
    /// Records with an English prompt.
    pub english_prompts: u64,
    /// Pairs skipped because one side was empty.
    pub skipped_empty: u64,
    /// The manifest written beside the output.
    pub manifest: PathBuf,
}

/// `--ratio en-et:0.5`: the share of pairs translated from `en` to `et`, as the src→tgt share.
pub fn parse_ratio(s: &str, src: &str, tgt: &str) -> Result<f64, String> {
    let bad = |m: &str| format!("invalid --ratio '{s}': {m} (e.g. --ratio {src}-{tgt}:0.5)");
    let (dir, share) = s.rsplit_once(':').ok_or_else(|| bad("expected FROM-TO:SHARE"))?;
    let share: f64 = share.trim().parse().map_err(|_| bad("SHARE must be a number in [0, 1]"))?;
    if !(0.0..=1.0).contains(&share) {
        return Err(bad("SHARE must be a number in [0, 1]"));
    }
    let (a, b) = dir.split_once('-').ok_or_else(|| bad("expected FROM-TO:SHARE"))?;
    if a == src && b == tgt {
        Ok(share)
    } else if a == tgt && b == src {
        Ok(1.0 - share)
    } else {
        Err(bad(&format!("the direction must be {src}-{tgt} or {tgt}-{src}")))
    }
}

/// A prompt template in one language: the instruction, with `{src}` and `{tgt}` language names.
struct Template {
    lang: &'static str,
    text: &'static str,
    /// Names of languages in this template's language (as they fit the template).
    names: &'static [(&'static str, &'static str)],
}

const TEMPLATES: &[Template] = &[
    Template {
        lang: "en",
        text: "Translate the following text from {src} into {tgt}.",
        names: &[("en", "English"), ("et", "Estonian"), ("tr", "Turkish"), ("fa", "Persian"), ("zh", "Chinese")],
    },
    Template {
        lang: "et",
        text: "Tõlgi järgnev tekst {src} keelest {tgt} keelde.",
        names: &[("en", "inglise"), ("et", "eesti")],
    },
    Template {
        lang: "tr",
        text: "Aşağıdaki metni çevir. Kaynak dil: {src}. Hedef dil: {tgt}.",
        names: &[("en", "İngilizce"), ("tr", "Türkçe")],
    },
    Template {
        lang: "fa",
        text: "متن زیر را از {src} به {tgt} ترجمه کنید.",
        names: &[("en", "انگلیسی"), ("fa", "فارسی")],
    },
    Template {
        lang: "zh", text: "请将以下文本从{src}翻译成{tgt}。", names: &[("en", "英语"), ("zh", "中文")]
    },
];

fn instruction(prompt_lang: &str, from: &str, to: &str) -> Option<String> {
    let t = TEMPLATES.iter().find(|t| t.lang == prompt_lang)?;
    let name = |code: &str| t.names.iter().find(|(c, _)| *c == code).map(|(_, n)| *n);
    Some(t.text.replace("{src}", name(from)?).replace("{tgt}", name(to)?))
}

/// A uniform number in [0, 1) for (seed, pair, draw): the same on every machine and version.
fn draw(seed: u64, pair: u64, what: u8) -> f64 {
    let h =
        Sha256::new().chain_update(seed.to_le_bytes()).chain_update(pair.to_le_bytes()).chain_update([what]).finalize();
    let mut b = [0u8; 8];
    b.copy_from_slice(&h[..8]);
    (u64::from_le_bytes(b) >> 11) as f64 / (1u64 << 53) as f64
}

/// One aligned pair and where it came from.
struct Pair {
    line: u64,
    src: String,
    tgt: String,
}

/// Streams the pairs of the parallel input.
fn pairs<'a>(
    cfg: &'a PairsConfig,
) -> Result<Box<dyn Iterator<Item = Result<Pair, InstructError>> + 'a>, InstructError> {
    let open = |p: &Path| {
        File::open(p).map(|f| BufReader::new(f).lines()).map_err(|source| InstructError::Io { path: p.into(), source })
    };
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |source| InstructError::Io { path: p, source }
    };
    match cfg.parallel.as_slice() {
        [a, b] => {
            let (mut la, mut lb) = (open(a)?, open(b)?);
            let mut line = 0u64;
            Ok(Box::new(std::iter::from_fn(move || {
                line += 1;
                let (x, y) = (la.next(), lb.next());
                Some(match (x, y) {
                    (None, None) => return None,
                    (Some(x), Some(y)) => match (x.map_err(io(a)), y.map_err(io(b))) {
                        (Ok(src), Ok(tgt)) => Ok(Pair { line, src, tgt }),
                        (Err(e), _) | (_, Err(e)) => Err(e),
                    },
                    (x, _) => {
                        let (short, long) = if x.is_none() { (a, b) } else { (b, a) };
                        Err(InstructError::Record {
                            path: short.clone(),
                            at: format!("line {line}"),
                            msg: format!(
                                "ends before {} (the two files must have the same number of lines)",
                                long.display()
                            ),
                        })
                    }
                })
            })))
        }
        [p] => {
            let mut lines = open(p)?;
            let first = {
                let mut f = BufReader::new(File::open(p).map_err(io(p))?);
                f.fill_buf().map_err(io(p))?.iter().copied().find(|b| !b.is_ascii_whitespace())
            };
            let jsonl = first == Some(b'{');
            let mut line = 0u64;
            Ok(Box::new(std::iter::from_fn(move || loop {
                line += 1;
                let l = match lines.next()? {
                    Ok(l) => l,
                    Err(e) => return Some(Err(io(p)(e))),
                };
                if l.trim().is_empty() {
                    continue;
                }
                let bad = |msg: String| InstructError::Record { path: p.clone(), at: format!("line {line}"), msg };
                return Some(
                    if jsonl { json_pair(&l, &cfg.src, &cfg.tgt) } else { tsv_pair(&l) }
                        .map_err(bad)
                        .map(|(src, tgt)| Pair { line, src, tgt }),
                );
            })))
        }
        _ => Err(InstructError::Config("--parallel takes one TSV/JSONL file or two line-aligned files".into())),
    }
}

fn tsv_pair(l: &str) -> Result<(String, String), String> {
    let cols: Vec<&str> = l.split('\t').collect();
    match cols.as_slice() {
        [s, t] => Ok((s.to_string(), t.to_string())),
        _ => Err(format!("expected 2 tab-separated columns, found {}", cols.len())),
    }
}

fn json_pair(l: &str, src: &str, tgt: &str) -> Result<(String, String), String> {
    let v: serde_json::Value = serde_json::from_str(l).map_err(|e| e.to_string())?;
    // Hugging Face translation datasets nest the pair under "translation".
    let obj = v.get("translation").unwrap_or(&v);
    let get = |k: &str| {
        obj.get(k).and_then(|x| x.as_str()).map(str::to_string).ok_or_else(|| format!("no string field '{k}'"))
    };
    Ok((get(src)?, get(tgt)?))
}

/// Runs `instruct translation-pairs`: writes `cfg.out` (JSONL) and `<out>.manifest.json`.
pub fn run(cfg: &PairsConfig, env: &Env) -> Result<PairsReport, InstructError> {
    for share in [cfg.src_to_tgt, cfg.english_prompts] {
        if !(0.0..=1.0).contains(&share) {
            return Err(InstructError::Config(format!("share {share} is outside [0, 1]")));
        }
    }
    for lang in [&cfg.src, &cfg.tgt] {
        let other = if lang == &cfg.src { &cfg.tgt } else { &cfg.src };
        if instruction(lang, lang, other).is_none() && lang != "en" {
            let have: Vec<_> = TEMPLATES.iter().map(|t| t.lang).collect();
            return Err(InstructError::Config(format!(
                "no prompt templates for '{lang}' (built in: {})",
                have.join(", ")
            )));
        }
    }
    if cfg.src != "en" && cfg.tgt != "en" {
        return Err(InstructError::Config("translation-pairs needs English on one side (--src en or --tgt en)".into()));
    }
    let native = if cfg.src == "en" { cfg.tgt.as_str() } else { cfg.src.as_str() };
    let mut manifest = ManifestBuilder::new("instruct translation-pairs", cfg.settings(), Some(cfg.seed));
    for p in &cfg.parallel {
        manifest.add_input(p, &env.progress)?;
    }
    let source_file = cfg.parallel[0].file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    let tmp = crate::io::tmp_path(&cfg.out);
    let io = |source| InstructError::Io { path: tmp.clone(), source };
    let mut w = std::io::BufWriter::new(File::create(&tmp).map_err(io)?);
    let mut r = PairsReport {
        records: 0,
        src_to_tgt: 0,
        tgt_to_src: 0,
        english_prompts: 0,
        skipped_empty: 0,
        manifest: PathBuf::new(),
    };
    let bar = env.progress.items(0, "pairs");
    for (i, pair) in pairs(cfg)?.enumerate() {
        let pair = pair?;
        bar.inc(1);
        let (s, t) = (pair.src.trim(), pair.tgt.trim());
        if s.is_empty() || t.is_empty() {
            r.skipped_empty += 1;
            continue;
        }
        let forward = draw(cfg.seed, i as u64, 0) < cfg.src_to_tgt;
        let english = draw(cfg.seed, i as u64, 1) < cfg.english_prompts;
        let (from, to, input, output) = if forward { (&cfg.src, &cfg.tgt, s, t) } else { (&cfg.tgt, &cfg.src, t, s) };
        let prompt_lang = if english { "en" } else { native };
        let rec = InstructRecord {
            id: DocId::Int(r.records as i64),
            instruction: instruction(prompt_lang, from, to).unwrap_or_default(),
            input: input.to_string(),
            output: output.to_string(),
            lang: to.clone(),
            source_id: Some(format!("{source_file}:{}", pair.line)),
            translator: None,
        };
        serde_json::to_writer(&mut w, &rec).map_err(|e| io(e.into()))?;
        std::io::Write::write_all(&mut w, b"\n").map_err(io)?;
        r.records += 1;
        if forward {
            r.src_to_tgt += 1;
        } else {
            r.tgt_to_src += 1;
        }
        r.english_prompts += u64::from(english);
    }
    bar.finish_and_clear();
    let file = w.into_inner().map_err(|e| io(e.into_error()))?;
    crate::io::commit(file, &tmp, &cfg.out).map_err(|source| InstructError::Io { path: cfg.out.clone(), source })?;
    for (k, n) in [
        ("records", r.records),
        ("src_to_tgt", r.src_to_tgt),
        ("tgt_to_src", r.tgt_to_src),
        ("english_prompts", r.english_prompts),
        ("skipped_empty", r.skipped_empty),
    ] {
        manifest.count(k, n);
    }
    let dir = cfg.out.parent().unwrap_or(Path::new("."));
    let m = manifest.finish(dir, &[(cfg.out.clone(), Some(r.records))])?;
    r.manifest = manifest_path(&cfg.out);
    m.write(&r.manifest)?;
    Ok(r)
}

/// Where `instruct translation-pairs` writes its manifest: `pairs.jsonl` → `pairs.jsonl.manifest.json`.
pub fn manifest_path(out: &Path) -> PathBuf {
    let mut name = out.file_name().unwrap_or_default().to_os_string();
    name.push(".manifest.json");
    out.with_file_name(name)
}

impl crate::stage::Stage for PairsConfig {
    fn kind(&self) -> &'static str {
        "translation-pairs"
    }
    fn paths_mut(&mut self) -> Vec<crate::stage::PathKey<'_>> {
        crate::stage::indexed("parallel", &mut self.parallel, crate::stage::Need::Input).collect()
    }
    fn set_out(&mut self, dir: &Path) {
        self.out = dir.join("pairs.jsonl");
    }
    fn manifest_path(&self, _dir: &Path) -> PathBuf {
        manifest_path(&self.out)
    }
    fn settings(&self) -> Option<serde_json::Value> {
        Some(PairsConfig::settings(self))
    }
    fn run(&self, ctx: &crate::stage::StageCtx) -> Result<(), crate::stage::StageError> {
        run(self, ctx.env)?;
        Ok(())
    }
}

impl std::fmt::Display for PairsReport {
    /// The one-line summary `instruct translation-pairs` prints.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "instruct translation-pairs: {} records ({} source->target, {} target->source; {} English prompts; {} empty \
             pairs skipped); manifest: {}",
            self.records,
            self.src_to_tgt,
            self.tgt_to_src,
            self.english_prompts,
            self.skipped_empty,
            self.manifest.display()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratio_parses_either_direction() {
        assert_eq!(parse_ratio("en-et:0.7", "en", "et"), Ok(0.7));
        assert!((parse_ratio("et-en:0.7", "en", "et").unwrap() - 0.3).abs() < 1e-12);
        assert_eq!(
            parse_ratio("en-tr:0.5", "en", "et").unwrap_err(),
            "invalid --ratio 'en-tr:0.5': the direction must be en-et or et-en (e.g. --ratio en-et:0.5)"
        );
        assert!(parse_ratio("en-et:1.5", "en", "et").is_err());
    }

    #[test]
    fn templates_fill_names() {
        assert_eq!(instruction("et", "en", "et").unwrap(), "Tõlgi järgnev tekst inglise keelest eesti keelde.");
        assert_eq!(instruction("en", "et", "en").unwrap(), "Translate the following text from Estonian into English.");
        assert_eq!(instruction("xx", "en", "et"), None);
    }

    #[test]
    fn draws_are_uniform_enough_and_fixed() {
        let n = 10_000;
        let share = (0..n).filter(|i| draw(42, *i, 0) < 0.3).count() as f64 / n as f64;
        assert!((share - 0.3).abs() < 0.02, "{share}");
        assert_eq!(draw(1, 2, 0), draw(1, 2, 0));
        assert_ne!(draw(1, 2, 0), draw(2, 2, 0));
    }
}
