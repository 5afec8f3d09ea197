//! LoRA adapters in PEFT's layout: `adapter_config.json` + `adapter_model.safetensors`, and merging them.

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};

use super::checkpoint::{read_tensors, write_safetensors, Checkpoint, SaveOptions};
use super::config::{LoraConfig, LoraTarget, SAVABLE_MODULES};
use super::ModelError;

/// PEFT's `adapter_config.json`, the fields we read and write.
#[derive(Debug, Serialize, Deserialize)]
struct PeftConfig {
    peft_type: String,
    #[serde(default)]
    task_type: Option<String>,
    #[serde(default)]
    base_model_name_or_path: Option<String>,
    r: usize,
    lora_alpha: f64,
    #[serde(default)]
    lora_dropout: f32,
    target_modules: serde_json::Value,
    #[serde(default)]
    modules_to_save: Option<Vec<String>>,
    #[serde(default)]
    use_rslora: bool,
    #[serde(default = "none")]
    bias: String,
    #[serde(default)]
    fan_in_fan_out: bool,
    #[serde(default)]
    inference_mode: bool,
}

/// PEFT's `adapter_config.json` form of the LoRA settings.
impl LoraConfig {
    /// Reads PEFT's `adapter_config.json`.
    pub fn load(path: &Path) -> Result<Self, ModelError> {
        let text = std::fs::read_to_string(path).map_err(|e| ModelError::io(path, e))?;
        let bad = |message: String| ModelError::Config { path: path.to_path_buf(), message };
        let peft: PeftConfig = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
        if peft.peft_type != "LORA" {
            return Err(bad(format!("peft_type {:?} is not LORA", peft.peft_type)));
        }
        let targets = match peft.target_modules {
            serde_json::Value::Array(names) => names
                .iter()
                .map(|n| LoraTarget::parse(n.as_str().unwrap_or_default()))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| bad(e.to_string()))?,
            other => return Err(bad(format!("target_modules {other} is not a list of module names"))),
        };
        let cfg = Self {
            r: peft.r,
            alpha: peft.lora_alpha,
            dropout: peft.lora_dropout,
            targets,
            modules_to_save: peft.modules_to_save.unwrap_or_default(),
            use_rslora: peft.use_rslora,
        };
        cfg.validate().map_err(|e| bad(e.to_string()))?;
        Ok(cfg)
    }

    fn to_peft(&self, base: &str) -> PeftConfig {
        PeftConfig {
            peft_type: "LORA".into(),
            task_type: Some("CAUSAL_LM".into()),
            base_model_name_or_path: Some(base.into()),
            r: self.r,
            lora_alpha: self.alpha,
            lora_dropout: self.dropout,
            target_modules: self.targets.iter().map(|t| serde_json::Value::from(t.name())).collect(),
            modules_to_save: (!self.modules_to_save.is_empty()).then(|| self.modules_to_save.clone()),
            use_rslora: self.use_rslora,
            bias: "none".into(),
            fan_in_fan_out: false,
            inference_mode: true,
        }
    }
}

fn none() -> String {
    "none".into()
}

/// PEFT's tensor-name prefix inside `adapter_model.safetensors`.
const PEFT_PREFIX: &str = "base_model.model.";

/// Writes an adapter (its LoRA factors by PEFT name, plus `full` tensors of `modules_to_save`) in PEFT's layout.
pub fn save_adapter(
    adapter: &BTreeMap<String, Tensor>,
    cfg: &LoraConfig,
    full: &BTreeMap<String, Tensor>,
    base: &str,
    dir: &Path,
) -> Result<(), ModelError> {
    std::fs::create_dir_all(dir).map_err(|e| ModelError::io(dir, e))?;
    let mut tensors = adapter.clone();
    for module in &cfg.modules_to_save {
        let Some((_, hf)) = SAVABLE_MODULES.iter().find(|(m, _)| m == module) else { continue };
        let t = full.get(*hf).ok_or_else(|| ModelError::Request(format!("modules_to_save: no tensor {hf}")))?;
        tensors.insert(format!("{PEFT_PREFIX}{hf}"), t.clone());
    }
    write_safetensors(&tensors, &dir.join("adapter_model.safetensors"))?;
    let json = serde_json::to_string_pretty(&cfg.to_peft(base)).map_err(|e| ModelError::Request(e.to_string()))?;
    crate::io::write_atomic(&dir.join("adapter_config.json"), json.as_bytes())
        .map_err(|e| ModelError::io(&dir.join("adapter_config.json"), e))
}

/// What `merge_lora` did.
#[derive(Debug, Clone, Serialize)]
pub struct MergeReport {
    /// Projections whose weight absorbed `B·A·scale`.
    pub merged_projections: usize,
    /// Tensors replaced by the adapter's full copies (`modules_to_save`).
    pub replaced_modules: Vec<String>,
}

/// Folds the PEFT adapter in `adapter` into the checkpoint `base` and writes a full checkpoint to `out`.
pub fn merge_lora(base: &Path, adapter: &Path, out: &Path) -> Result<MergeReport, ModelError> {
    let cfg = LoraConfig::load(&adapter.join("adapter_config.json"))?;
    let ckpt = Checkpoint::open(base)?;
    let adapter_file = adapter.join("adapter_model.safetensors");
    if !adapter_file.is_file() {
        return Err(ModelError::checkpoint(
            adapter,
            "no adapter_model.safetensors (pickle adapter_model.bin is not loaded; re-save the adapter with safetensors)",
        ));
    }
    let adapter_tensors = read_tensors(std::slice::from_ref(&adapter_file), &candle_core::Device::Cpu)?;
    let mut weights = ckpt.read_all(&candle_core::Device::Cpu)?;
    let mut merged = 0;
    let mut replaced = Vec::new();
    for (key, a) in &adapter_tensors {
        let Some(rest) = key.strip_prefix(PEFT_PREFIX) else {
            return Err(tensor_err(&adapter_file, key, "not under base_model.model."));
        };
        if let Some(module) = rest.strip_suffix(".lora_A.weight") {
            let b_key = format!("{PEFT_PREFIX}{module}.lora_B.weight");
            let b = adapter_tensors.get(&b_key).ok_or_else(|| tensor_err(&adapter_file, &b_key, "missing"))?;
            let w_key = format!("{module}.weight");
            let w = weights.get(&w_key).ok_or_else(|| tensor_err(base, &w_key, "adapted weight missing in base"))?;
            // W' = W + scale · B A, computed in f64 so the merge adds no rounding of its own.
            let delta = (b.to_dtype(DType::F64)?.matmul(&a.to_dtype(DType::F64)?)? * cfg.scale())?;
            if delta.dims() != w.dims() {
                return Err(tensor_err(&adapter_file, key, "B·A shape does not match the base weight"));
            }
            let new = (w.to_dtype(DType::F64)? + delta)?.to_dtype(w.dtype())?;
            weights.insert(w_key, new);
            merged += 1;
        } else if rest.ends_with(".lora_B.weight") {
            continue;
        } else if let Some(old) = weights.get(rest) {
            if old.dims() != a.dims() {
                return Err(tensor_err(&adapter_file, key, "shape differs from the base tensor"));
            }
            weights.insert(rest.to_string(), a.to_dtype(old.dtype())?);
            replaced.push(rest.to_string());
        } else {
            return Err(tensor_err(&adapter_file, key, "no such tensor in the base checkpoint"));
        }
    }
    ckpt.save(&weights, out, &SaveOptions::default())?;
    Ok(MergeReport { merged_projections: merged, replaced_modules: replaced })
}

fn tensor_err(path: &Path, name: &str, message: &str) -> ModelError {
    ModelError::Tensor { path: path.to_path_buf(), name: name.to_string(), message: message.to_string() }
}

impl std::fmt::Display for MergeReport {
    /// The one-line summary `model merge-lora` prints.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "merge-lora: {} projections merged, {} modules replaced ({})",
            self.merged_projections,
            self.replaced_modules.len(),
            self.replaced_modules.join(", ")
        )
    }
}
