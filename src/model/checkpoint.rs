//! Hugging Face checkpoint directories: find and read the weights, build the model, save back.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use serde::Serialize;

use super::config::LoraConfig;
use super::config::{HfConfig, LlamaConfig};
use super::llama::Llama;
use super::ModelError;
use crate::vocab::Tokenizer;

/// Files copied unchanged from the source checkpoint when saving (tokenizer and generation settings).
const SIDE_FILES: [&str; 5] =
    ["tokenizer.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json"];

/// Parses `cpu`, `cuda` or `cuda:N` and opens that device. A CUDA device that cannot be had (a build without
/// the `cuda` feature, no driver, no such GPU) is one [`ModelError::Device`] line, never a panic.
pub fn parse_device(spec: &str) -> Result<Device, ModelError> {
    let ordinal = match spec {
        "cpu" => return Ok(Device::Cpu),
        "cuda" => 0,
        s => match s.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(n)) => n,
            Some(Err(_)) => return Err(ModelError::Request(format!("device {s:?}: expected cuda:N"))),
            None => return Err(ModelError::Request(format!("device {s:?}: expected cpu, cuda or cuda:N"))),
        },
    };
    if !cfg!(feature = "cuda") {
        return Err(ModelError::Device {
            spec: spec.to_string(),
            message: "this langadapt was built without CUDA; build it with `cargo build --release --features cuda` \
                      (scripts/cuda-toolchain.sh installs the compiler) or use --device cpu"
                .into(),
            source: None,
        });
    }
    Device::new_cuda(ordinal).map_err(|e| ModelError::Device {
        // candle attaches a backtrace when RUST_BACKTRACE is set: the cause stays one line without it.
        source: Some(Box::new(match e {
            candle_core::Error::WithBacktrace { inner, .. } => *inner,
            e => e,
        })),
        spec: spec.to_string(),
        message: format!(
            "cannot open CUDA device {ordinal} (no NVIDIA driver, no GPU, or fewer GPUs; `nvidia-smi` lists them); \
             use --device cpu"
        ),
    })
}

/// Parses `f32`, `f16` or `bf16`.
pub fn parse_dtype(spec: &str) -> Result<DType, ModelError> {
    match spec {
        "f32" | "float32" => Ok(DType::F32),
        "f16" | "float16" => Ok(DType::F16),
        "bf16" | "bfloat16" => Ok(DType::BF16),
        other => Err(ModelError::Request(format!("dtype {other:?}: expected f32, f16 or bf16"))),
    }
}

/// A Hugging Face checkpoint directory, opened but not yet loaded.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    dir: PathBuf,
    /// `config.json` as written.
    pub hf: HfConfig,
    /// The checked runtime configuration.
    pub config: LlamaConfig,
    files: Vec<PathBuf>,
}

/// Which base weights a training run updates; the others are frozen.
#[derive(Debug, Clone, Copy)]
pub enum Train<'a> {
    /// Every base weight (`mode = "full"`).
    All,
    /// Base weights whose name contains one of these parts (embedding alignment's `train_modules`, LoRA's
    /// `modules_to_save`); none when empty.
    Matching(&'a [String]),
}

/// A model for training: trained weights are f32 variables (the optimizer's masters), frozen ones plain
/// tensors in the compute dtype (2 bytes a parameter in bf16, no master, no gradient, no optimizer state).
pub struct Trainable {
    /// Trained base weights by Hugging Face name.
    pub base: VarMap,
    /// Frozen base weights by Hugging Face name, in the compute dtype.
    frozen: BTreeMap<String, Tensor>,
    /// LoRA factors by PEFT name, when training an adapter.
    pub adapter: Option<VarMap>,
    config: LlamaConfig,
    lora: Option<LoraConfig>,
    compute: DType,
    device: Device,
}

impl Trainable {
    /// Every variable to train (adapter factors and trained base weights), sorted by name.
    pub fn trainable_vars(&self) -> Vec<(String, Var)> {
        let mut out: Vec<(String, Var)> = Vec::new();
        for map in self.adapter.iter().chain([&self.base]) {
            out.extend(map.data().lock().expect("var map lock").iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Draws every `lora_A` factor again from `seed` (PEFT's Kaiming-uniform bound, 1/sqrt(in)), each from
    /// its own stream named after the tensor, so a run's adapters depend on its seed alone.
    pub fn seed_adapters(&self, seed: u64) -> Result<(), ModelError> {
        let Some(adapter) = &self.adapter else { return Ok(()) };
        for (name, var) in adapter.data().lock().expect("var map lock").iter() {
            if !name.contains("lora_A") {
                continue;
            }
            let (rows, cols) = var.dims2()?;
            let bound = (1.0 / cols as f64).sqrt();
            let mut rng = crate::rng::SplitMix(crate::rng::seed_for(seed, name));
            let values: Vec<f32> = (0..rows * cols).map(|_| ((rng.next_f64() * 2.0 - 1.0) * bound) as f32).collect();
            let t = Tensor::from_vec(values, (rows, cols), var.device())?.to_dtype(var.dtype())?;
            var.set(&t)?;
        }
        Ok(())
    }

    /// The model computing in the compute dtype: trained variables cast (the casts are part of the graph, so
    /// gradients arrive at the f32 masters; in f32 the variables themselves), frozen weights as they are.
    pub fn model(&self) -> Result<Llama, ModelError> {
        let device = &self.device;
        let cast = |vm: &VarMap| -> Result<std::collections::HashMap<String, Tensor>, ModelError> {
            let vars = vm.data().lock().expect("var map lock");
            vars.iter().map(|(k, v)| Ok((k.clone(), v.as_tensor().to_dtype(self.compute)?))).collect()
        };
        let mut base = cast(&self.base)?;
        base.extend(self.frozen.iter().map(|(k, t)| (k.clone(), t.clone())));
        let vb = VarBuilder::from_tensors(base, self.compute, device);
        let lvb = match &self.adapter {
            Some(a) => Some(VarBuilder::from_tensors(cast(a)?, self.compute, device)),
            None => None,
        };
        Llama::new(&self.config, vb, self.lora.as_ref().zip(lvb))
    }

    /// The current base weights by Hugging Face name: trained ones in f32, frozen ones in the compute dtype.
    pub fn weights(&self) -> BTreeMap<String, Tensor> {
        let mut out = self.frozen.clone();
        let base = self.base.data().lock().expect("var map lock");
        out.extend(base.iter().map(|(k, v)| (k.clone(), v.as_tensor().clone())));
        out
    }

    /// The LoRA factors by PEFT name (empty without an adapter).
    pub fn adapter_weights(&self) -> BTreeMap<String, Tensor> {
        let Some(adapter) = &self.adapter else { return BTreeMap::new() };
        let vars = adapter.data().lock().expect("var map lock");
        vars.iter().map(|(k, v)| (k.clone(), v.as_tensor().clone())).collect()
    }
}

/// A `VarBuilder` backend for [`Checkpoint::load_trainable`]: each tensor the model asks for is taken out of
/// the checkpoint's (so its memory goes as the model fills) and becomes an f32 variable of `vars` when trained,
/// else a tensor of `frozen` in the compute dtype. Its first error is kept in `failed`, in our words, and wins
/// over candle's wrapping of it.
#[derive(Clone)]
struct LoadIntoVars {
    stored: Arc<Mutex<BTreeMap<String, Tensor>>>,
    vars: VarMap,
    frozen: Arc<Mutex<BTreeMap<String, Tensor>>>,
    /// Parts of the trained names; None: all.
    trained: Option<Vec<String>>,
    compute: DType,
    dir: PathBuf,
    failed: Arc<Mutex<Option<ModelError>>>,
}

impl LoadIntoVars {
    fn fail(&self, name: &str, message: String) -> candle_core::Error {
        let mut failed = self.failed.lock().expect("loader lock");
        failed.get_or_insert(ModelError::Tensor {
            path: self.dir.clone(),
            name: name.to_string(),
            message: message.clone(),
        });
        candle_core::Error::Msg(message)
    }
}

impl candle_nn::var_builder::SimpleBackend for LoadIntoVars {
    fn get(
        &self,
        shape: candle_core::Shape,
        name: &str,
        _init: candle_nn::Init,
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        let stored = self.stored.lock().expect("loader lock").remove(name);
        let t = stored.ok_or_else(|| self.fail(name, "missing from the checkpoint".into()))?;
        if t.shape() != &shape {
            return Err(self.fail(name, format!("shape mismatch, expected: {shape:?}, got: {:?}", t.shape())));
        }
        let trained = self.trained.as_ref().is_none_or(|parts| parts.iter().any(|p| name.contains(p.as_str())));
        if !trained {
            let t = t.to_dtype(self.compute)?.to_device(device)?;
            self.frozen.lock().expect("loader lock").insert(name.to_string(), t.clone());
            return Ok(t);
        }
        let var = Var::from_tensor(&t.to_dtype(dtype)?.to_device(device)?)?;
        let tensor = var.as_tensor().clone();
        self.vars.data().lock().expect("var map lock").insert(name.to_string(), var);
        Ok(tensor)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, device: &Device) -> candle_core::Result<Tensor> {
        let stored = self.stored.lock().expect("loader lock").get(name).cloned();
        stored.ok_or_else(|| self.fail(name, "missing from the checkpoint".into()))?.to_dtype(dtype)?.to_device(device)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.stored.lock().expect("loader lock").contains_key(name)
    }
}

/// How `Checkpoint::save` writes weights.
#[derive(Debug, Clone)]
pub struct SaveOptions {
    /// Largest safetensors file before splitting into `model-0000k-of-0000n.safetensors` + index.
    pub max_shard_bytes: u64,
    /// Store weights in this dtype (None: as given).
    pub dtype: Option<DType>,
}

impl Default for SaveOptions {
    fn default() -> Self {
        // transformers' default `max_shard_size` is 5GB.
        Self { max_shard_bytes: 5_000_000_000, dtype: None }
    }
}

/// A summary of a checkpoint for `model info`.
#[derive(Debug, Clone, Serialize)]
pub struct CheckpointInfo {
    /// The directory.
    pub path: PathBuf,
    /// `model_type` of config.json.
    pub model_type: String,
    /// Parameters (tied head counted once).
    pub parameters: usize,
    /// Stored dtype(s) of the weights.
    pub dtypes: Vec<String>,
    /// Weight files.
    pub files: Vec<PathBuf>,
    /// vocab, hidden, layers, heads, kv heads, head_dim, context.
    pub architecture: BTreeMap<String, serde_json::Value>,
    /// The tokenizer file found, if any, and its vocabulary size.
    pub tokenizer: Option<(PathBuf, usize)>,
}

impl Checkpoint {
    /// Opens `dir`: reads config.json and finds the safetensors weights (single file or sharded with index).
    pub fn open(dir: &Path) -> Result<Self, ModelError> {
        if !dir.is_dir() {
            return Err(ModelError::checkpoint(dir, "not a directory (expected a Hugging Face checkpoint folder)"));
        }
        let config_path = dir.join("config.json");
        if !config_path.is_file() {
            return Err(ModelError::checkpoint(dir, "no config.json (expected a Hugging Face checkpoint folder)"));
        }
        let hf = HfConfig::load(&config_path)?;
        let config = hf.to_runtime(&config_path)?;
        let files = weight_files(dir)?;
        Ok(Self { dir: dir.to_path_buf(), hf, config, files })
    }

    /// The checkpoint directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The safetensors files holding the weights.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// The tokenizer stored with the checkpoint.
    pub fn tokenizer(&self) -> Result<Tokenizer, ModelError> {
        Ok(Tokenizer::from_path(&self.dir)?)
    }

    /// The model, weights read one tensor at a time and converted to `dtype` on `device`: the peak is the
    /// model plus one tensor (a memory map made the whole file resident beside the converted copies: 2× the
    /// weights at load).
    pub fn load(&self, device: &Device, dtype: DType) -> Result<Llama, ModelError> {
        let mut weights = BTreeMap::new();
        for file in &self.files {
            weights.extend(read_safetensors_as(file, device, Some(dtype))?);
        }
        self.build(VarBuilder::from_tensors(weights.into_iter().collect(), dtype, device), None)
    }

    /// The model with a PEFT LoRA adapter applied (not merged): `adapter` holds adapter_config.json and
    /// adapter_model.safetensors; the adapter's `modules_to_save` copies replace the base tensors.
    pub fn load_with_adapter(&self, adapter: &Path, device: &Device, dtype: DType) -> Result<Llama, ModelError> {
        let lora = LoraConfig::load(&adapter.join("adapter_config.json"))?;
        let adapter_file = adapter.join("adapter_model.safetensors");
        let adapter_tensors = read_tensors(&[adapter_file], device)?;
        let mut base = self.read_all(device)?;
        for (name, t) in &adapter_tensors {
            if let Some(rest) = name.strip_prefix("base_model.model.") {
                if base.contains_key(rest) {
                    base.insert(rest.to_string(), t.clone());
                }
            }
        }
        let base = base.into_iter().map(|(k, t)| Ok((k, t.to_dtype(dtype)?))).collect::<Result<_, ModelError>>()?;
        let adapter =
            adapter_tensors.into_iter().map(|(k, t)| Ok((k, t.to_dtype(dtype)?))).collect::<Result<_, ModelError>>()?;
        let vb = VarBuilder::from_tensors(base, dtype, device);
        let lvb = VarBuilder::from_tensors(adapter, dtype, device);
        self.build(vb, Some((&lora, lvb)))
    }

    /// The model for training on `device`, computing in `compute`: base weights `train` selects become f32
    /// variables, the rest stay frozen in `compute`; with `lora`, fresh adapter factors (f32 variables) too.
    pub fn load_trainable(
        &self,
        device: &Device,
        compute: DType,
        lora: Option<&LoraConfig>,
        train: Train<'_>,
    ) -> Result<Trainable, ModelError> {
        // Each weight the model asks for is read once, with no random initialisation first (a 7B model's was
        // minutes and a second copy in memory).
        let loader = LoadIntoVars {
            stored: Arc::new(Mutex::new(self.read_all(device)?)),
            vars: VarMap::new(),
            frozen: Arc::new(Mutex::new(BTreeMap::new())),
            trained: match train {
                Train::All => None,
                Train::Matching(parts) => Some(parts.to_vec()),
            },
            compute,
            dir: self.dir.clone(),
            failed: Arc::new(Mutex::new(None)),
        };
        let adapter = lora.map(|_| VarMap::new());
        let lvb = adapter.as_ref().map(|a| VarBuilder::from_varmap(a, DType::F32, device));
        // Built once to ask for every weight by name and shape (and to check them); `Trainable::model` builds
        // the one that computes.
        let built =
            self.build(VarBuilder::from_backend(Box::new(loader.clone()), DType::F32, device.clone()), lora.zip(lvb));
        if let Some(e) = loader.failed.lock().expect("loader lock").take() {
            return Err(e);
        }
        built?;
        let frozen = std::mem::take(&mut *loader.frozen.lock().expect("loader lock"));
        Ok(Trainable {
            base: loader.vars,
            frozen,
            adapter,
            config: self.config.clone(),
            lora: lora.cloned(),
            compute,
            device: device.clone(),
        })
    }

    fn build(&self, vb: VarBuilder, lora: Option<(&LoraConfig, VarBuilder)>) -> Result<Llama, ModelError> {
        Llama::new(&self.config, vb, lora).map_err(|e| match e {
            ModelError::Candle(c) => ModelError::checkpoint(&self.dir, format!("loading weights: {c}")),
            other => other,
        })
    }

    /// Every tensor of the checkpoint, in its stored dtype.
    pub fn read_all(&self, device: &Device) -> Result<BTreeMap<String, Tensor>, ModelError> {
        read_tensors(&self.files, device)
    }

    /// Writes `weights` as a checkpoint in `out` (config.json with the weights' vocabulary size, safetensors,
    /// and this checkpoint's tokenizer and generation files), each file under a temporary name first.
    pub fn save(&self, weights: &BTreeMap<String, Tensor>, out: &Path, opts: &SaveOptions) -> Result<(), ModelError> {
        std::fs::create_dir_all(out).map_err(|e| ModelError::io(out, e))?;
        let weights: BTreeMap<String, Tensor> = match opts.dtype {
            Some(dt) => {
                weights.iter().map(|(k, t)| Ok((k.clone(), t.to_dtype(dt)?))).collect::<Result<_, ModelError>>()?
            }
            None => weights.clone(),
        };
        let mut hf = self.hf.clone();
        if let Some(embed) = weights.get("model.embed_tokens.weight") {
            hf.vocab_size = embed.dim(0)?;
        }
        // A training run's weights can mix dtypes (f32 trained, bf16 frozen): the config names the one most
        // parameters are stored in.
        let mut by_dtype: BTreeMap<&str, usize> = BTreeMap::new();
        for t in weights.values() {
            *by_dtype.entry(t.dtype().as_str()).or_default() += t.elem_count();
        }
        let most = by_dtype.iter().max_by_key(|(_, n)| **n).map(|(d, _)| *d);
        if let Some(t) = weights.values().find(|t| Some(t.dtype().as_str()) == most) {
            let name = match t.dtype() {
                DType::BF16 => "bfloat16",
                DType::F16 => "float16",
                _ => "float32",
            };
            hf.extra.insert("dtype".into(), name.into());
            hf.extra.remove("torch_dtype");
        }
        let json = serde_json::to_string_pretty(&hf).map_err(|e| ModelError::Request(e.to_string()))?;
        crate::io::write_atomic(&out.join("config.json"), json.as_bytes())
            .map_err(|e| ModelError::io(&out.join("config.json"), e))?;
        write_sharded(&weights, out, opts.max_shard_bytes)?;
        for name in SIDE_FILES {
            let src = self.dir.join(name);
            if src.is_file() && src != out.join(name) {
                std::fs::copy(&src, out.join(name)).map_err(|e| ModelError::io(&src, e))?;
            }
        }
        Ok(())
    }

    /// Architecture, size, dtypes, files and tokenizer, for `model info`.
    pub fn info(&self) -> Result<CheckpointInfo, ModelError> {
        let mut dtypes = Vec::new();
        // SAFETY: read-only map; only the header is parsed (the weights are never read here).
        let st = unsafe { candle_core::safetensors::MmapedSafetensors::multi(&self.files)? };
        for (_, view) in st.tensors() {
            let d = format!("{:?}", view.dtype()).to_lowercase();
            if !dtypes.contains(&d) {
                dtypes.push(d);
            }
        }
        let c = &self.config;
        let architecture = [
            ("vocab_size", c.vocab_size.into()),
            ("hidden_size", c.hidden_size.into()),
            ("intermediate_size", c.intermediate_size.into()),
            ("num_hidden_layers", c.num_layers.into()),
            ("num_attention_heads", c.num_heads.into()),
            ("num_key_value_heads", c.num_kv_heads.into()),
            ("head_dim", c.head_dim.into()),
            ("max_position_embeddings", c.max_position_embeddings.into()),
            ("rope_theta", c.rope_theta.into()),
            ("rope_scaling", format!("{:?}", c.rope_scaling).into()),
            ("tie_word_embeddings", c.tie_word_embeddings.into()),
        ]
        .into_iter()
        .map(|(k, v): (&str, serde_json::Value)| (k.to_string(), v))
        .collect();
        let tokenizer = self.tokenizer().ok().map(|t| (t.path().to_path_buf(), t.vocab_size()));
        Ok(CheckpointInfo {
            path: self.dir.clone(),
            model_type: self.hf.model_type.clone().unwrap_or_else(|| "llama".into()),
            parameters: c.num_parameters(),
            dtypes,
            files: self.files.clone(),
            architecture,
            tokenizer,
        })
    }
}

/// Why pickle-only checkpoints (local or on the Hub) are refused, and how to convert them.
pub const PICKLE_HINT: &str =
    "only pickle weights (.bin/.pt) here; they are not loaded because unpickling runs arbitrary \
     code. Convert once with transformers: AutoModelForCausalLM.from_pretrained(DIR).save_pretrained(OUT, \
     safe_serialization=True)";

/// The safetensors files of a checkpoint directory; pickle-only checkpoints are refused.
fn weight_files(dir: &Path) -> Result<Vec<PathBuf>, ModelError> {
    let index = dir.join("model.safetensors.index.json");
    if index.is_file() {
        let text = std::fs::read_to_string(&index).map_err(|e| ModelError::io(&index, e))?;
        let json: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| ModelError::checkpoint(&index, e.to_string()))?;
        let map = json
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| ModelError::checkpoint(&index, "no weight_map object"))?;
        let mut files: Vec<PathBuf> = Vec::new();
        for v in map.values() {
            let name =
                v.as_str().ok_or_else(|| ModelError::checkpoint(&index, "weight_map values must be file names"))?;
            let path = dir.join(name);
            if !files.contains(&path) {
                if !path.is_file() {
                    return Err(ModelError::checkpoint(&path, "listed in model.safetensors.index.json but missing"));
                }
                files.push(path);
            }
        }
        files.sort();
        return Ok(files);
    }
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return Ok(vec![single]);
    }
    let names: Vec<String> = std::fs::read_dir(dir)
        .map_err(|e| ModelError::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect();
    if names.iter().any(|n| n.ends_with(".bin") || n.ends_with(".pt") || n.ends_with(".pth")) {
        return Err(ModelError::checkpoint(dir, PICKLE_HINT));
    }
    Err(ModelError::checkpoint(dir, "no model.safetensors or model.safetensors.index.json"))
}

/// Reads every tensor of `files` (stored dtype) onto `device`.
pub(crate) fn read_tensors(files: &[PathBuf], device: &Device) -> Result<BTreeMap<String, Tensor>, ModelError> {
    let mut out = BTreeMap::new();
    for file in files {
        out.extend(read_safetensors_as(file, device, None)?);
    }
    Ok(out)
}

/// One tensor's entry in a safetensors header.
#[derive(serde::Deserialize)]
struct HeaderEntry {
    dtype: String,
    shape: Vec<usize>,
    data_offsets: (u64, u64),
}

/// The tensors of one safetensors file, read one tensor's bytes at a time: the peak is the tensors plus the
/// largest of them, not the whole file plus the tensors (candle's `safetensors::load` reads the file into one
/// buffer first: 2× a 7B shard, or 2× a 7B run's 54 GB of AdamW moments, in host memory).
pub(crate) fn read_safetensors(path: &Path, device: &Device) -> Result<BTreeMap<String, Tensor>, ModelError> {
    read_safetensors_as(path, device, None)
}

/// [`read_safetensors`], with floating-point tensors converted to `float` one at a time as they are read.
fn read_safetensors_as(
    path: &Path,
    device: &Device,
    float: Option<DType>,
) -> Result<BTreeMap<String, Tensor>, ModelError> {
    use std::io::{Read, Seek, SeekFrom};
    let bad = |m: String| ModelError::checkpoint(path, format!("cannot read safetensors: {m}"));
    let mut f = std::fs::File::open(path).map_err(|e| ModelError::io(path, e))?;
    let len = f.metadata().map_err(|e| ModelError::io(path, e))?.len();
    let mut n = [0u8; 8];
    f.read_exact(&mut n).map_err(|e| bad(format!("no header ({e})")))?;
    let n = u64::from_le_bytes(n);
    if n > 100_000_000 || 8 + n > len {
        return Err(bad(format!("header of {n} bytes in a file of {len}")));
    }
    let mut header = vec![0u8; n as usize];
    f.read_exact(&mut header).map_err(|e| ModelError::io(path, e))?;
    let mut entries: BTreeMap<String, serde_json::Value> =
        serde_json::from_slice(&header).map_err(|e| bad(format!("header: {e}")))?;
    entries.remove("__metadata__");
    let mut entries: Vec<(String, HeaderEntry)> = entries
        .into_iter()
        .map(|(k, v)| Ok((k.clone(), serde_json::from_value(v).map_err(|e| bad(format!("tensor {k}: {e}")))?)))
        .collect::<Result<_, ModelError>>()?;
    // In file order, so the reads go front to back.
    entries.sort_by_key(|(_, e)| e.data_offsets.0);
    let mut out = BTreeMap::new();
    for (name, e) in entries {
        let dtype = match e.dtype.as_str() {
            "F32" => DType::F32,
            "F16" => DType::F16,
            "BF16" => DType::BF16,
            "F64" => DType::F64,
            "I64" => DType::I64,
            "U32" => DType::U32,
            "U8" => DType::U8,
            other => return Err(bad(format!("tensor {name}: dtype {other} is not supported"))),
        };
        let (start, end) = e.data_offsets;
        let want = e.shape.iter().product::<usize>() as u64 * dtype.size_in_bytes() as u64;
        if end < start || end - start != want || 8 + n + end > len {
            return Err(bad(format!("tensor {name}: bytes {start}..{end} for shape {:?} {dtype:?}", e.shape)));
        }
        let mut bytes = vec![0u8; want as usize];
        f.seek(SeekFrom::Start(8 + n + start)).map_err(|e| ModelError::io(path, e))?;
        f.read_exact(&mut bytes).map_err(|e| ModelError::io(path, e))?;
        let t = Tensor::from_raw_buffer(&bytes, dtype, &e.shape, device)?;
        drop(bytes);
        let t = match float {
            Some(to) if dtype.is_float() && dtype != to => t.to_dtype(to)?,
            _ => t,
        };
        out.insert(name, t);
    }
    Ok(out)
}

/// Writes one safetensors file (with transformers' `format: pt` metadata) under a temporary name, then renames.
pub(crate) fn write_safetensors(tensors: &BTreeMap<String, Tensor>, path: &Path) -> Result<(), ModelError> {
    let tmp = crate::io::tmp_path(path);
    let meta = std::collections::HashMap::from([("format".to_string(), "pt".to_string())]);
    // safetensors wants contiguous tensors; candle's `View` impl copies to CPU.
    let tensors: Vec<(String, Tensor)> =
        tensors.iter().map(|(k, t)| Ok((k.clone(), t.contiguous()?))).collect::<Result<_, ModelError>>()?;
    safetensors::serialize_to_file(tensors.iter().map(|(k, t)| (k.as_str(), t)), Some(meta), &tmp)
        .map_err(|e| ModelError::checkpoint(path, format!("cannot write safetensors: {e}")))?;
    std::fs::rename(&tmp, path).map_err(|e| ModelError::io(path, e))
}

/// Writes `model.safetensors`, or shards of at most `max_bytes` with `model.safetensors.index.json`.
pub fn write_sharded(weights: &BTreeMap<String, Tensor>, out: &Path, max_bytes: u64) -> Result<(), ModelError> {
    let size = |t: &Tensor| (t.elem_count() * t.dtype().size_in_bytes()) as u64;
    let total: u64 = weights.values().map(size).sum();
    let mut shards: Vec<BTreeMap<String, Tensor>> = vec![BTreeMap::new()];
    let mut current = 0u64;
    for (name, t) in weights {
        let last = shards.last_mut().expect("at least one shard");
        if current + size(t) > max_bytes && !last.is_empty() {
            shards.push(BTreeMap::new());
            current = 0;
        }
        current += size(t);
        shards.last_mut().expect("at least one shard").insert(name.clone(), t.clone());
    }
    // A stale layout from an earlier save must not shadow the new one.
    for stale in ["model.safetensors", "model.safetensors.index.json"] {
        let _ = std::fs::remove_file(out.join(stale));
    }
    if shards.len() == 1 {
        return write_safetensors(&shards[0], &out.join("model.safetensors"));
    }
    let n = shards.len();
    let mut weight_map = BTreeMap::new();
    for (i, shard) in shards.iter().enumerate() {
        let name = format!("model-{:05}-of-{n:05}.safetensors", i + 1);
        write_safetensors(shard, &out.join(&name))?;
        weight_map.extend(shard.keys().map(|k| (k.clone(), serde_json::Value::from(name.clone()))));
    }
    let index = serde_json::json!({ "metadata": { "total_size": total }, "weight_map": weight_map });
    let path = out.join("model.safetensors.index.json");
    crate::io::write_atomic(&path, index.to_string().as_bytes()).map_err(|e| ModelError::io(&path, e))
}

impl std::fmt::Display for CheckpointInfo {
    /// The tab-separated table `model info` prints.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "path\t{}", self.path.display())?;
        writeln!(f, "model_type\t{}", self.model_type)?;
        writeln!(f, "parameters\t{} ({:.1}M)", self.parameters, self.parameters as f64 / 1e6)?;
        writeln!(f, "dtype\t{}", self.dtypes.join(", "))?;
        for (k, v) in &self.architecture {
            writeln!(f, "{k}\t{v}")?;
        }
        for w in &self.files {
            writeln!(f, "weights\t{}", w.display())?;
        }
        match &self.tokenizer {
            Some((path, size)) => write!(f, "tokenizer\t{} ({size} ids)", path.display()),
            None => write!(f, "tokenizer\tnone"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `write_safetensors` writes reads back equal, dtypes kept; a file cut short names the tensor whose
    /// bytes are missing.
    #[test]
    fn safetensors_read_back_one_tensor_at_a_time() {
        let dev = Device::Cpu;
        let tensors = BTreeMap::from([
            ("a.weight".to_string(), Tensor::arange(0f32, 12.0, &dev).unwrap().reshape((3, 4)).unwrap()),
            ("b.weight".to_string(), Tensor::arange(0f32, 5.0, &dev).unwrap().to_dtype(DType::BF16).unwrap()),
            ("ids".to_string(), Tensor::new(&[7u32, 9], &dev).unwrap()),
        ]);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.safetensors");
        write_safetensors(&tensors, &path).unwrap();
        let back = read_tensors(std::slice::from_ref(&path), &dev).unwrap();
        assert_eq!(back.len(), 3);
        for (name, t) in &tensors {
            let b = &back[name];
            assert_eq!((b.dtype(), b.dims()), (t.dtype(), t.dims()), "{name}");
            let (x, y) = (
                b.to_dtype(DType::F32).unwrap().flatten_all().unwrap(),
                t.to_dtype(DType::F32).unwrap().flatten_all().unwrap(),
            );
            assert_eq!(x.to_vec1::<f32>().unwrap(), y.to_vec1::<f32>().unwrap(), "{name}");
        }
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 4]).unwrap();
        let err = read_tensors(std::slice::from_ref(&path), &dev).unwrap_err().to_string();
        assert!(err.contains("cannot read safetensors: tensor") && err.contains("bytes"), "{err}");
    }
}
