//! Command-line flags (clap): one args struct per command, converted into the library's config (whose
//! serde defaults are the only defaults); the work and the summaries printed are the library's.

mod eval;
mod instruct;
mod model;
mod shards;
mod train;
mod vocab;
mod wiki;

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use langadapt::pipeline::{self, Recipe};
use langadapt::{Env, Progress};

/// Take an English-centric LLaMA-family model to a new language and measure the result.
#[derive(Debug, Parser)]
#[command(name = "langadapt", version, about)]
pub struct Cli {
    /// Worker threads (default: all cores).
    #[arg(long, global = true, default_value_t = 0)]
    threads: usize,
    /// No progress bars.
    #[arg(long, short, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a recipe: every stage it lists, in order, into OUT/<stage>/.
    Run(RunArgs),
    /// Wikipedia dumps.
    #[command(subcommand)]
    Wiki(wiki::WikiCommand),
    /// Text shards.
    #[command(subcommand)]
    Corpus(shards::CorpusCommand),
    /// LLaMA-family checkpoints: inspect, generate, merge LoRA adapters.
    #[command(subcommand)]
    Model(model::ModelCommand),
    /// Train a checkpoint on token shards: full, embed-align, lora or sft.
    Train(Box<train::TrainArgs>),
    /// Re-hash every file the manifests under DIR list and check that they explain each other (exit 1 if not).
    Audit {
        /// A run's output directory.
        dir: PathBuf,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Write DIR/report/report.md and SVG plots (loss, learning rate, mixture, fertility, eval) from a run's stages.
    Report {
        /// A run's output directory (the stages' manifests are read from it).
        dir: PathBuf,
    },
    /// Vocabulary: train, merge, measure, inspect tokenizers.
    #[command(subcommand)]
    Vocab(vocab::VocabCommand),
    /// Token shards for training: mix, tokenize, pack.
    #[command(subcommand)]
    Shards(shards::ShardsCommand),
    /// Evaluation: XCOPA, Belebele, C-Eval, perplexity, code-switching (lm-evaluation-harness compatible).
    #[command(subcommand)]
    Eval(eval::EvalCommand),
    /// Instruction data: Alpaca translation, translation-task records.
    #[command(subcommand)]
    Instruct(instruct::InstructCommand),
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// The recipe (TOML).
    recipe: PathBuf,
    /// Output root (overrides the recipe's `out`).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Check the recipe and print the plan without running anything.
    #[arg(long)]
    dry_run: bool,
    /// Run this stage and the ones after it (earlier ones are not run or checked).
    #[arg(long)]
    from: Option<String>,
    /// Run only this stage.
    #[arg(long)]
    only: Option<String>,
    /// Lay the recipe's `[smoke]` table over it (bundled samples, tiny model) and cap every training at
    /// a few steps and every eval at a few documents: checks the whole recipe end to end in minutes.
    #[arg(long)]
    smoke: bool,
    /// Print JSON: with --dry-run the resolved recipe (every stage's full settings, absolute paths),
    /// otherwise what each stage did.
    #[arg(long)]
    json: bool,
}

impl Cli {
    /// Runs the parsed command.
    pub fn run(self) -> anyhow::Result<()> {
        let env = Env { threads: self.threads, progress: Progress { quiet: self.quiet } };
        if self.threads > 0 {
            // candle sizes its matmul and rayon pools from RAYON_NUM_THREADS, read when first used: set it
            // before any model work so `--threads` bounds model stages too, not only data stages.
            std::env::set_var("RAYON_NUM_THREADS", self.threads.to_string());
        }
        match self.command {
            Command::Run(a) => run_recipe(a, &env),
            Command::Wiki(c) => wiki::run(c, &env),
            Command::Corpus(c) => shards::run_corpus(c),
            Command::Model(c) => model::run(c, &env),
            Command::Train(a) => train::run(*a, &env),
            Command::Audit { dir, json } => {
                let report = pipeline::audit(&dir, &env.progress)?;
                emit(&report, json, To::Stdout)?;
                anyhow::ensure!(
                    report.ok(),
                    CheckFailed(format!("audit: {} findings under {}", report.findings.len(), dir.display()))
                );
                Ok(())
            }
            Command::Report { dir } => {
                println!("{}", pipeline::write_report(&dir, &[], &env)?.report.display());
                Ok(())
            }
            Command::Shards(c) => shards::run(c, &env),
            Command::Eval(c) => eval::run(c, &env),
            Command::Vocab(c) => vocab::run(c, &env),
            Command::Instruct(c) => instruct::run(c, &env),
        }
    }
}

fn run_recipe(a: RunArgs, env: &Env) -> anyhow::Result<()> {
    let mut recipe = Recipe::load(&a.recipe, a.out, a.smoke)?;
    recipe.select(a.from.as_deref(), a.only.as_deref())?;
    if a.dry_run {
        if a.json {
            println!("{}", serde_json::to_string_pretty(&recipe)?);
        } else {
            for (stage, kind, dir) in recipe.plan() {
                println!("{stage}\t{kind}\t{}", dir.display());
            }
        }
        return Ok(());
    }
    let report = recipe.run(env)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    eprintln!("done: outputs under {}; report: {}", report.out.display(), report.report.display());
    Ok(())
}

/// Where a report's text goes: a stage's summary to stderr (its stdout stays for data), the report of a
/// command whose output it is (audit, model info, shards stats) to stdout. JSON always goes to stdout.
#[derive(Clone, Copy, PartialEq, Eq)]
enum To {
    Stderr,
    Stdout,
}

/// Prints a report: pretty JSON with `--json`, else its `Display` text.
fn emit<R: serde::Serialize + std::fmt::Display>(report: &R, json: bool, to: To) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
    } else if to == To::Stdout {
        println!("{report}");
    } else {
        eprintln!("{report}");
    }
    Ok(())
}

/// A check that ran and failed (exit code 1, unlike errors: 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CheckFailed(pub String);

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// Issue 19: every flag and argument of every command says what it is in `--help`.
    #[test]
    fn every_argument_has_help() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                let builtin = matches!(arg.get_id().as_str(), "help" | "version");
                if !builtin && arg.get_help().is_none() && arg.get_long_help().is_none() {
                    missing.push(format!("{path} {}", arg.get_long().unwrap_or(arg.get_id().as_str())));
                }
            }
            for sub in cmd.get_subcommands() {
                if cmd.get_name() == "help" {
                    continue;
                }
                if sub.get_about().is_none() && sub.get_name() != "help" {
                    missing.push(format!("{path} {} (no about)", sub.get_name()));
                }
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&super::Cli::command(), "langadapt", &mut missing);
        assert!(missing.is_empty(), "without help: {missing:#?}");
    }

    fn parse(args: &str) -> super::Command {
        let argv = std::iter::once("langadapt").chain(args.split_whitespace());
        <super::Cli as clap::Parser>::try_parse_from(argv).unwrap().command
    }

    /// Issue 19: flags that are not given take the library's defaults (declared once, in the config).
    #[test]
    fn flags_convert_into_the_library_config_with_its_defaults() {
        let super::Command::Wiki(super::wiki::WikiCommand::Ingest(a)) = parse("wiki ingest d.xml --out o") else {
            panic!("not wiki ingest")
        };
        let cfg: langadapt::wiki::IngestConfig = langadapt::config::layered(None, &[], &a).unwrap();
        let expected = langadapt::wiki::IngestConfig::new("d.xml", "o");
        assert_eq!(serde_json::to_value(&cfg).unwrap(), serde_json::to_value(&expected).unwrap());

        let super::Command::Train(a) =
            parse("train --model m --train t --out o --max-steps 3 --mode lora --lora-r 4 --no-decay a,b")
        else {
            panic!("not train")
        };
        let cfg = langadapt::train::TrainConfig::load(None, &*a).unwrap();
        assert_eq!(
            (cfg.mode, cfg.max_steps, cfg.no_decay.clone()),
            (langadapt::train::Mode::Lora, Some(3), vec!["a".into(), "b".into()])
        );
        let lora = cfg.lora.clone().unwrap();
        assert_eq!((lora.r, lora.alpha), (4, 32.0), "one [lora] key from a flag, the others defaulted");
        assert_eq!((cfg.micro_batch, cfg.lr, cfg.seed), (4, 2e-5, 42));

        let e = <super::Cli as clap::Parser>::try_parse_from(["langadapt", "train", "--mode", "partial"]).unwrap_err();
        assert!(e.to_string().contains("[possible values: full, embed-align, lora, sft]"), "{e}");
    }
}
