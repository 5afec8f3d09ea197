//! `langadapt train`: continual pre-training, embedding alignment, LoRA and instruction tuning on token shards.
//!
//! One loop for every mode; modes differ only in which variables the optimizer holds (see `Mode`). Data
//! order, dropout masks, the learning rate and (f16) the loss scale are functions of the seed and the step,
//! so a run resumed from `checkpoints/step-N` continues bit for bit (on CPU) where the uninterrupted run would
//! be. On a GPU the dropout masks come from the device's generator seeded the same way, so a resumed run
//! draws them again, but cuBLAS and the reduction kernels do not promise bit-identical sums from run to run:
//! there a resumed run matches within bf16 tolerance, not bit for bit.

mod config;
mod data;
mod optim;
mod scale;

pub use config::{LoraSection, Mode, Schedule, TrainConfig};
pub use data::{RowRef, Rows};
pub use optim::learning_rate;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::dist::{Communicator, RankEnv};
use crate::manifest::{ManifestBuilder, ManifestError};
use crate::model::{self, Checkpoint, ForwardOptions, LoraConfig, ModelError, Train, Trainable};
use crate::Env;
use data::Batch;
use optim::{clip_grad_norm, squared_norms, AdamW};

/// Errors of the training stage.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A setting is missing or inconsistent.
    #[error("train config: {0}")]
    Config(String),
    /// train.toml or the flags do not fit the config.
    #[error(transparent)]
    Settings(#[from] crate::config::ConfigError),
    /// The token shards cannot be used.
    #[error("train data: {0}")]
    Data(String),
    /// A token shard is truncated or malformed.
    #[error("train data: {}{}{at}: {msg}", path.display(), if at.is_empty() { "" } else { ": " })]
    Shard {
        /// The file.
        path: PathBuf,
        /// Where in it: `row group G` or `row group G, row R (row N of the file)`; empty for the whole file.
        at: String,
        /// What is wrong and what to do.
        msg: String,
        /// The Parquet error, if any.
        #[source]
        source: Option<parquet::errors::ParquetError>,
    },
    /// The ranks of a data-parallel job could not agree or lost one another.
    #[error(transparent)]
    Dist(#[from] crate::dist::DistError),
    /// A checkpoint to resume from is incomplete or from another run.
    #[error("resume: {0}")]
    Resume(String),
    /// File-system error.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The model failed.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// The manifest failed.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// Fetching the model from the Hub failed.
    #[error(transparent)]
    Hub(#[from] crate::hub::HubError),
}

impl From<candle_core::Error> for TrainError {
    fn from(e: candle_core::Error) -> Self {
        TrainError::Model(ModelError::Candle(e))
    }
}

impl TrainError {
    fn io(path: &Path, source: std::io::Error) -> Self {
        TrainError::Io { path: path.to_path_buf(), source }
    }
}

/// One line of `metrics.jsonl`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Metrics {
    /// Optimizer steps done.
    pub step: usize,
    /// Mean loss per trained token of this step.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub loss: Option<f64>,
    /// Learning rate used by this step.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lr: Option<f64>,
    /// Global gradient norm before clipping.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grad_norm: Option<f64>,
    /// Tokens (all positions) per second of this step.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens_per_s: Option<f64>,
    /// Mean validation loss per trained token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub val_loss: Option<f64>,
    /// exp(val_loss).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub val_ppl: Option<f64>,
    /// f16: the loss scale this step's loss was multiplied by.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss_scale: Option<f64>,
    /// f16: steps skipped so far for inf/NaN gradients (this one included).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overflow_steps: Option<u64>,
}

/// `trainer_state.json` of a resumable checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct TrainerState {
    step: usize,
    total_steps: usize,
    /// The run's identity: sha256 of the settings that must not change across a resume.
    run_id: String,
    micro_batches_done: u64,
    /// Ranks that trained it (the global batch is micro_batch × grad_accum × world_size rows).
    #[serde(default = "one")]
    world_size: usize,
    /// f16: the loss scaler after `step`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    loss_scale: Option<scale::LossScale>,
}

fn one() -> usize {
    1
}

/// What a run did.
#[derive(Debug, Clone, Serialize)]
pub struct TrainReport {
    /// Steps done in total (resumed ones included).
    pub steps: usize,
    /// Loss of the first step of this invocation and of the last step.
    pub first_loss: Option<f64>,
    /// Loss of the last step.
    pub last_loss: Option<f64>,
    /// Last validation loss.
    pub val_loss: Option<f64>,
    /// `out/final`.
    pub final_dir: PathBuf,
    /// Parameters the optimizer trained.
    pub trained_parameters: usize,
}

/// The newest complete `checkpoints/step-N` under a run's `out` (complete ones have `trainer_state.json`;
/// a checkpoint is written under a temporary name and renamed).
pub fn latest_checkpoint(out: &Path) -> Option<PathBuf> {
    std::fs::read_dir(out.join("checkpoints"))
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_str()?.strip_prefix("step-")?.parse::<usize>().ok()?;
            e.path().join("trainer_state.json").is_file().then(|| (name, e.path()))
        })
        .max_by_key(|(n, _)| *n)
        .map(|(_, p)| p)
}

/// Runs training as configured; `resume` is a `checkpoints/step-N` folder of an earlier run with the same
/// settings.
pub fn run(cfg: &TrainConfig, resume: Option<&Path>, env: &Env) -> Result<TrainReport, TrainError> {
    run_ranked(cfg, resume, env, None)
}

/// [`run`] as one rank of a data-parallel job (`ranks` from [`RankEnv::from_env`]): the ranks meet at the
/// rendezvous (a rank with other settings or inputs is refused there), rank r trains micro-batches r, r+W, …
/// of each step, gradients are summed before clipping and the optimizer step, and rank 0 alone writes
/// metrics, checkpoints, `final/` and the manifest. A `device = "cuda"` rank uses GPU `LOCAL_RANK`.
pub fn run_ranked(
    cfg: &TrainConfig,
    resume: Option<&Path>,
    env: &Env,
    ranks: Option<&RankEnv>,
) -> Result<TrainReport, TrainError> {
    cfg.validate()?;
    let ranks = ranks.filter(|r| r.world_size > 1);
    let device = match ranks {
        Some(r) if cfg.device == "cuda" => model::parse_device(&format!("cuda:{}", r.local_rank))?,
        _ => model::parse_device(&cfg.device)?,
    };
    let lora = cfg.lora_config()?;
    // A Hub id (`org/name[@revision]`) is fetched into the HF cache; the manifest keeps what was asked for
    // (`model`) and what it resolved to (`model_hub`: repo, revision, commit).
    let resolved =
        crate::hub::resolve_model(&cfg.model.to_string_lossy(), &crate::hub::HubConfig::from_env(env.progress))?;
    let ckpt = Checkpoint::open(&resolved.path)?;
    let mut rows = Rows::load(&cfg.train)?;
    let mut val = cfg.val.as_deref().map(Rows::load).transpose()?;
    let world = ranks.map_or(1, |r| r.world_size);
    let per_step = cfg.micro_batch * cfg.grad_accum * world;
    let total_steps = match (cfg.max_steps, cfg.epochs) {
        (Some(s), _) => s,
        (None, Some(e)) => ((e * rows.len() as f64) / per_step as f64).ceil().max(1.0) as usize,
        (None, None) => unreachable!("validate() requires max_steps or epochs"),
    };
    std::fs::create_dir_all(&cfg.out).map_err(|e| TrainError::io(&cfg.out, e))?;

    let mut args = serde_json::to_value(cfg).unwrap_or_default();
    if let Some(source) = &resolved.hub {
        args["model_hub"] = serde_json::to_value(source).unwrap_or_default();
    }
    let mut manifest = ManifestBuilder::new("train", args, Some(cfg.seed));
    for f in ckpt.files() {
        manifest.add_input(f, &env.progress)?;
    }
    for f in crate::corpus::list_shards(&cfg.train).map_err(|e| TrainError::Data(e.to_string()))? {
        manifest.add_input(&f, &env.progress)?;
    }
    let run_id = manifest.run_id();
    // The run id covers settings and input hashes: ranks that would train different things are refused here.
    let mut comm = ranks.map(|r| connect(r, &run_id, &device)).transpose()?;
    let rank = comm.as_ref().map_or(0, |c| c.rank());
    let root = rank == 0;
    let progress = if root { env.progress } else { crate::Progress { quiet: true } };

    let compute = model::parse_dtype(&cfg.dtype)?;
    let train = match (cfg.mode, &lora) {
        (_, Some(l)) => Train::Matching(&l.modules_to_save),
        (Mode::EmbedAlign, None) => Train::Matching(&cfg.train_modules),
        _ => Train::All,
    };
    let (trainable, start) = match resume {
        None => {
            let t = ckpt.load_trainable(&device, compute, lora.as_ref(), train)?;
            t.seed_adapters(cfg.seed)?;
            (t, None)
        }
        Some(dir) => {
            let state = read_state(dir, &run_id, world)?;
            (restore(&ckpt, dir, &device, compute, lora.as_ref(), train)?, Some(state))
        }
    };
    let vars = trainable.trainable_vars();
    if vars.is_empty() {
        return Err(TrainError::Config(format!("no weights match train_modules {:?}", cfg.train_modules)));
    }
    let trained_parameters = vars.iter().map(|(_, v)| v.elem_count()).sum();
    let mut opt = AdamW::new(vars, &cfg.no_decay, (cfg.beta1, cfg.beta2, cfg.eps, cfg.weight_decay))?;
    let first_step = match (&start, resume) {
        (Some(state), Some(dir)) => {
            opt.load(&dir.join("optimizer.safetensors"))?;
            state.step
        }
        _ => 0,
    };
    let metrics_path = cfg.out.join("metrics.jsonl");
    let mut metrics = if root { Some(open_metrics(&metrics_path, first_step)?) } else { None };

    let bar = progress.items((total_steps - first_step.min(total_steps)) as u64, "train");
    let mut report = TrainReport {
        steps: first_step,
        first_loss: None,
        last_loss: None,
        val_loss: None,
        final_dir: cfg.out.join("final"),
        trained_parameters,
    };
    // Micro-batch `a` of `step` on this rank, counted over all ranks: rank r takes r, r+W, … of the step.
    let micro = |step: usize, a: usize| ((step * cfg.grad_accum + a) * world + rank) as u64;
    let (mut scaler, scale_window) = match cfg.loss_scale() {
        Some((fresh, window)) => (Some(start.as_ref().and_then(|s| s.loss_scale.clone()).unwrap_or(fresh)), window),
        None => (None, 0),
    };
    for step in first_step..total_steps {
        let t0 = Instant::now();
        // f32: the variables themselves; bf16/f16: casts of them, rebuilt after every update.
        let net = trainable.model()?;
        let lr = learning_rate(cfg.schedule, cfg.lr, cfg.min_lr, cfg.warmup_steps, total_steps, step);
        let batches: Vec<Batch> = (0..cfg.grad_accum)
            .map(|a| {
                let idx = rows.indices(cfg.seed, micro(step, a), cfg.micro_batch);
                rows.batch(&idx, &device)
            })
            .collect::<Result<_, _>>()?;
        let mut trained: f64 = batches.iter().map(|b| b.trained_tokens).sum();
        if let Some(c) = comm.as_mut() {
            let t = c.all_reduce_sum(&Tensor::new(&[trained as f32], &device)?)?;
            trained = f64::from(t.to_vec1::<f32>()?[0]);
        }
        let loss_scale = scaler.as_ref().map(|s| s.scale);
        let mut grads: BTreeMap<String, Tensor> = BTreeMap::new();
        let mut sums = Vec::with_capacity(batches.len());
        for (a, batch) in batches.iter().enumerate() {
            // Each micro-batch contributes its share of the step's token-mean loss, so k×b equals k·b.
            let seed = cfg.seed ^ micro(step, a).wrapping_mul(0xA076_1D64_78BD_642F);
            let sum = token_loss_sum(&net, batch, Some(seed))?;
            if trained > 0.0 {
                let mut objective = (&sum / trained)?;
                if let Some(s) = loss_scale {
                    objective = (objective * s)?;
                }
                let g = objective.backward()?;
                for (name, var) in opt.vars() {
                    if let Some(gv) = g.get(var) {
                        let acc = match grads.remove(name) {
                            Some(prev) => (prev + gv)?,
                            None => gv.clone(),
                        };
                        grads.insert(name.to_string(), acc);
                    }
                }
            }
            // Detached: the scalar must not keep this micro-batch's graph (every activation) alive.
            sums.push(sum.detach());
        }
        let unscale = loss_scale.unwrap_or(1.0);
        let (loss_sum, (grad_norm, grad_scale)) = match comm.as_mut() {
            // Data parallel: the loss and the gradients are summed over ranks before their norms.
            Some(c) => {
                let local = Tensor::stack(&sums, 0)?.to_vec1::<f32>()?.iter().map(|&l| f64::from(l)).sum();
                let loss_sum = all_reduce_grads(c.as_mut(), &opt, &mut grads, local, &device)?;
                let norms = squared_norms(&grads)?;
                let squares = match norms.is_empty() {
                    true => Vec::new(),
                    false => Tensor::stack(&norms, 0)?.to_vec1::<f32>()?,
                };
                (loss_sum, clip_grad_norm(&squares, cfg.clip, unscale))
            }
            // One rank: the step's one host read, the micro-batches' losses and the squared norms together.
            None => {
                let losses = sums.len();
                sums.extend(squared_norms(&grads)?);
                let host = Tensor::stack(&sums, 0)?.to_vec1::<f32>()?;
                let loss_sum: f64 = host[..losses].iter().map(|&l| f64::from(l)).sum();
                (loss_sum, clip_grad_norm(&host[losses..], cfg.clip, unscale))
            }
        };
        let apply = match scaler.as_mut() {
            Some(s) => s.update(grad_norm, scale_window),
            None => true,
        };
        if apply {
            opt.step(&grads, lr, grad_scale)?;
        }
        let loss = if trained > 0.0 { loss_sum / trained } else { 0.0 };
        let tokens = (batches.len() * cfg.micro_batch * (rows.seq_len() - 1) * world) as f64;
        let done = step + 1;
        let tokens_per_s = tokens / t0.elapsed().as_secs_f64().max(1e-9);
        write_metrics(
            metrics.as_mut(),
            &metrics_path,
            &Metrics {
                step: done,
                loss: Some(loss),
                lr: Some(lr),
                // A skipped step's norm is inf/NaN, which JSON cannot hold.
                grad_norm: grad_norm.is_finite().then_some(grad_norm),
                tokens_per_s: Some(tokens_per_s),
                loss_scale,
                overflow_steps: scaler.as_ref().map(|s| s.overflow_steps),
                val_loss: None,
                val_ppl: None,
            },
        )?;
        report.first_loss.get_or_insert(loss);
        report.last_loss = Some(loss);
        report.steps = done;
        bar.set_message(format!("loss {loss:.4} lr {lr:.2e} {tokens_per_s:.0} tok/s"));
        bar.inc(1);
        let eval_now = cfg.eval_every > 0 && done % cfg.eval_every == 0;
        if let (Some(val), true, true) = (val.as_mut(), eval_now || done == total_steps, root) {
            let vl = validation_loss(&trainable.model()?, val, cfg, &device)?;
            report.val_loss = Some(vl);
            write_metrics(
                metrics.as_mut(),
                &metrics_path,
                &Metrics { step: done, val_loss: Some(vl), val_ppl: Some(vl.exp()), ..Default::default() },
            )?;
        }
        if root && cfg.save_every > 0 && done % cfg.save_every == 0 && done < total_steps {
            let dir = cfg.out.join("checkpoints").join(format!("step-{done}"));
            save_checkpoint(
                &ckpt,
                &trainable,
                lora.as_ref(),
                &opt,
                &dir,
                &TrainerState {
                    step: done,
                    total_steps,
                    run_id: run_id.clone(),
                    micro_batches_done: (done * cfg.grad_accum * world) as u64,
                    world_size: world,
                    loss_scale: scaler.clone(),
                },
            )?;
        }
    }
    bar.finish_and_clear();
    if !root {
        // Wait for rank 0 to write final/ and the manifest, so every rank's exit status says whether it did.
        if let Some(c) = comm.as_mut() {
            c.barrier()?;
        }
        return Ok(report);
    }
    save_final(&ckpt, &trainable, lora.as_ref(), cfg, &report.final_dir)?;
    manifest.count("steps", report.steps as u64);
    manifest.count("trained_parameters", trained_parameters as u64);
    manifest.count("train_rows", rows.len() as u64);
    // Everything the run wrote: final/, checkpoints/, metrics.jsonl.
    let manifest_path = cfg.out.join("manifest.json");
    let outputs: Vec<(PathBuf, Option<u64>)> = crate::io::files_under(&cfg.out)
        .map_err(|e| TrainError::io(&cfg.out, e))?
        .into_iter()
        .filter(|p| *p != manifest_path)
        .map(|p| (p, None))
        .collect();
    manifest.finish(&cfg.out, &outputs)?.write(&manifest_path)?;
    if let Some(c) = comm.as_mut() {
        c.barrier()?;
    }
    Ok(report)
}

/// Joins the job's rendezvous; GPU ranks then set up NCCL when built with it.
fn connect(ranks: &RankEnv, run_id: &str, device: &Device) -> Result<Box<dyn Communicator>, TrainError> {
    let tcp = ranks.connect(run_id)?;
    #[cfg(feature = "nccl")]
    if device.is_cuda() {
        return Ok(Box::new(crate::dist::NcclComm::new(tcp, device)?));
    }
    let _ = device;
    Ok(Box::new(tcp))
}

/// Sums the ranks' gradients (and `loss_sum`, returned) in one flat buffer. A weight without a gradient
/// on this rank sends zeros and a 0 flag; it gets a gradient only if some rank had one, as in one process.
fn all_reduce_grads(
    comm: &mut dyn Communicator,
    opt: &AdamW,
    grads: &mut BTreeMap<String, Tensor>,
    loss_sum: f64,
    device: &Device,
) -> Result<f64, TrainError> {
    let mut parts = Vec::new();
    let mut extras = vec![loss_sum as f32];
    for (name, var) in opt.vars() {
        let g = match grads.get(name) {
            Some(g) => g.to_dtype(DType::F32)?.flatten_all()?,
            None => Tensor::zeros(var.elem_count(), DType::F32, device)?,
        };
        extras.push(if grads.contains_key(name) { 1.0 } else { 0.0 });
        parts.push(g);
    }
    parts.push(Tensor::from_vec(extras, opt.vars().count() + 1, device)?);
    let flat = Tensor::cat(&parts, 0)?;
    // The per-weight gradients go before the sum arrives: at most two flat copies live at once.
    drop(parts);
    grads.clear();
    let sum = comm.all_reduce_sum(&flat)?;
    drop(flat);
    let n = sum.elem_count();
    let flags = sum.narrow(0, n - opt.vars().count() - 1, opt.vars().count() + 1)?.to_vec1::<f32>()?;
    let mut at = 0;
    for ((name, var), flag) in opt.vars().zip(&flags[1..]) {
        let len = var.elem_count();
        if *flag > 0.0 {
            grads.insert(name.to_string(), sum.narrow(0, at, len)?.reshape(var.shape())?.to_dtype(var.dtype())?);
        }
        at += len;
    }
    Ok(f64::from(flags[0]))
}

/// Sum over trained positions of −log p(target): the numerator of the token-mean loss.
fn token_loss_sum(model: &model::Llama, batch: &Batch, train: Option<u64>) -> Result<Tensor, TrainError> {
    let opts = ForwardOptions { train, segments: batch.segments.as_ref(), ..Default::default() };
    Ok(model.token_loss(&batch.input, &batch.target, &batch.weight, opts)?)
}

/// Token-mean loss over the validation rows (all, or the first `eval_rows`), in order.
fn validation_loss(
    model: &model::Llama,
    val: &mut Rows,
    cfg: &TrainConfig,
    device: &Device,
) -> Result<f64, TrainError> {
    let n = if cfg.eval_rows > 0 { cfg.eval_rows.min(val.len()) } else { val.len() };
    let (mut sum, mut tokens) = (0f64, 0f64);
    for start in (0..n).step_by(cfg.micro_batch) {
        let idx: Vec<usize> = (start..(start + cfg.micro_batch).min(n)).collect();
        let batch = val.batch(&idx, device)?;
        sum += f64::from(token_loss_sum(model, &batch, None)?.to_scalar::<f32>()?);
        tokens += batch.trained_tokens;
    }
    Ok(if tokens > 0.0 { sum / tokens } else { f64::NAN })
}

/// `checkpoints/step-N/`: the weights (full HF checkpoint, or the PEFT adapter), optimizer moments and state.
fn save_checkpoint(
    ckpt: &Checkpoint,
    t: &Trainable,
    lora: Option<&LoraConfig>,
    opt: &AdamW,
    dir: &Path,
    state: &TrainerState,
) -> Result<(), TrainError> {
    let tmp = dir.with_extension("tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| TrainError::io(&tmp, e))?;
    save_weights(ckpt, t, lora, &tmp)?;
    opt.save(&tmp.join("optimizer.safetensors"))?;
    let json = serde_json::to_string_pretty(state).unwrap_or_default();
    std::fs::write(tmp.join("trainer_state.json"), json).map_err(|e| TrainError::io(&tmp, e))?;
    // The folder appears complete or not at all.
    let _ = std::fs::remove_dir_all(dir);
    std::fs::rename(&tmp, dir).map_err(|e| TrainError::io(dir, e))
}

/// Full weights as `dir/model/`, or the adapter as `dir/adapter/`.
fn save_weights(ckpt: &Checkpoint, t: &Trainable, lora: Option<&LoraConfig>, dir: &Path) -> Result<(), TrainError> {
    match lora {
        Some(l) => {
            let base = ckpt.dir().display().to_string();
            model::save_adapter(&t.adapter_weights(), l, &t.weights(), &base, &dir.join("adapter"))?;
        }
        None => ckpt.save(&t.weights(), &dir.join("model"), &Default::default())?,
    }
    Ok(())
}

/// `final/`: a Hugging Face checkpoint (for LoRA the merged one when `merge_lora`), and `final/adapter/`.
fn save_final(
    ckpt: &Checkpoint,
    t: &Trainable,
    lora: Option<&LoraConfig>,
    cfg: &TrainConfig,
    dir: &Path,
) -> Result<(), TrainError> {
    std::fs::create_dir_all(dir).map_err(|e| TrainError::io(dir, e))?;
    match lora {
        None => ckpt.save(&t.weights(), dir, &Default::default())?,
        Some(l) => {
            let adapter = dir.join("adapter");
            model::save_adapter(&t.adapter_weights(), l, &t.weights(), &ckpt.dir().display().to_string(), &adapter)?;
            if cfg.merge_lora {
                model::merge_lora(ckpt.dir(), &adapter, dir)?;
            }
        }
    }
    Ok(())
}

fn read_state(dir: &Path, run_id: &str, world_size: usize) -> Result<TrainerState, TrainError> {
    let path = dir.join("trainer_state.json");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| TrainError::Resume(format!("{}: {e} (not a checkpoints/step-N folder?)", path.display())))?;
    let state: TrainerState =
        serde_json::from_str(&text).map_err(|e| TrainError::Resume(format!("{}: {e}", path.display())))?;
    if state.run_id != run_id {
        return Err(TrainError::Resume(format!(
            "{} was written by a run with other settings or inputs (run id {}, this run {run_id}); resume with \
             the same config",
            dir.display(),
            state.run_id
        )));
    }
    if state.world_size != world_size {
        return Err(TrainError::Resume(format!(
            "{} was written by a run on {} rank(s), this one has {world_size}: the global batch would change; \
             resume with the same number of ranks",
            dir.display(),
            state.world_size
        )));
    }
    Ok(state)
}

/// The trainable model as it was at a checkpoint.
fn restore(
    ckpt: &Checkpoint,
    dir: &Path,
    device: &Device,
    compute: DType,
    lora: Option<&LoraConfig>,
    train: Train<'_>,
) -> Result<Trainable, TrainError> {
    match lora {
        None => Ok(Checkpoint::open(&dir.join("model"))?.load_trainable(device, compute, None, train)?),
        Some(l) => {
            let t = ckpt.load_trainable(device, compute, Some(l), train)?;
            let file = dir.join("adapter").join("adapter_model.safetensors");
            let saved = model::read_safetensors(&file, device).map_err(|e| TrainError::Resume(e.to_string()))?;
            let missing = |k: &str| TrainError::Resume(format!("{}: no tensor {k}", file.display()));
            if let Some(adapter) = &t.adapter {
                for (name, var) in adapter.data().lock().expect("var map lock").iter() {
                    var.set(saved.get(name).ok_or_else(|| missing(name))?)?;
                }
            }
            for (name, var) in t.base.data().lock().expect("var map lock").iter() {
                if let Some(v) = saved.get(&format!("base_model.model.{name}")) {
                    var.set(v)?;
                }
            }
            Ok(t)
        }
    }
}

/// Opens `metrics.jsonl` for appending, dropping lines past `keep_step` (a resumed run rewrites them).
fn open_metrics(path: &Path, keep_step: usize) -> Result<std::fs::File, TrainError> {
    let kept: Vec<String> = match std::fs::read_to_string(path) {
        Ok(text) if keep_step > 0 => text
            .lines()
            .filter(|l| serde_json::from_str::<Metrics>(l).is_ok_and(|m| m.step <= keep_step))
            .map(str::to_string)
            .collect(),
        _ => Vec::new(),
    };
    let mut body = kept.join("\n");
    if !body.is_empty() {
        body.push('\n');
    }
    std::fs::write(path, body).map_err(|e| TrainError::io(path, e))?;
    std::fs::OpenOptions::new().append(true).open(path).map_err(|e| TrainError::io(path, e))
}

/// Appends `m` (rank 0 only: other ranks have no file).
fn write_metrics(file: Option<&mut std::fs::File>, path: &Path, m: &Metrics) -> Result<(), TrainError> {
    let Some(file) = file else { return Ok(()) };
    let line = serde_json::to_string(m).unwrap_or_default();
    writeln!(file, "{line}").map_err(|e| TrainError::io(path, e))
}

impl crate::stage::Stage for TrainConfig {
    fn kind(&self) -> &'static str {
        "train"
    }
    fn paths_mut(&mut self) -> Vec<crate::stage::PathKey<'_>> {
        use crate::stage::Need;
        let mut v = vec![
            ("model".to_string(), &mut self.model, Need::Checkpoint),
            ("train".to_string(), &mut self.train, Need::Input),
        ];
        v.extend(self.val.as_mut().map(|p| ("val".to_string(), p, Need::Input)));
        v
    }
    fn set_out(&mut self, dir: &Path) {
        self.out = dir.into();
    }
    fn smoke(&mut self) {
        let steps = crate::stage::SMOKE_STEPS;
        self.max_steps = Some(self.max_steps.unwrap_or(steps).min(steps));
        self.epochs = None;
        self.grad_accum = 1;
        self.warmup_steps = self.warmup_steps.min(1);
        self.eval_every = self.eval_every.min(steps);
        self.save_every = self.save_every.min(steps / 2);
    }
    fn trained_model_data(&self, model: &Path) -> Option<PathBuf> {
        crate::stage::same_path(&self.out.join("final"), model).then(|| self.train.clone())
    }
    /// An interrupted run continues from its newest complete checkpoint.
    fn resumable(&self, dir: &Path, interrupted: bool) -> bool {
        interrupted && latest_checkpoint(dir).is_some()
    }
    fn run(&self, ctx: &crate::stage::StageCtx) -> Result<(), crate::stage::StageError> {
        // `run` fetches a Hub model itself, so its manifest records the name and revision asked for.
        let cfg = self;
        let resume = if ctx.resume { latest_checkpoint(ctx.dir) } else { None };
        match run(cfg, resume.as_deref(), ctx.env) {
            // Checkpoints of a run with other settings: start over.
            Err(TrainError::Resume(why)) if resume.is_some() => {
                if !ctx.env.progress.quiet {
                    eprintln!("{}: not resuming ({why}); starting over", ctx.dir.display());
                }
                std::fs::remove_dir_all(ctx.dir).map_err(|e| TrainError::io(ctx.dir, e))?;
                run(cfg, None, ctx.env)?;
            }
            r => {
                r?;
            }
        }
        Ok(())
    }
}

impl std::fmt::Display for TrainReport {
    /// The one-line summary `train` prints.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let loss = |l: Option<f64>| l.map_or("-".into(), |l| format!("{l:.4}"));
        write!(
            f,
            "train: {} steps, loss {} -> {}, {} parameters trained; checkpoint in {}",
            self.steps,
            loss(self.first_loss),
            loss(self.last_loss),
            self.trained_parameters,
            self.final_dir.display()
        )
    }
}
