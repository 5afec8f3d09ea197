//! `config.json` of Hugging Face LLaMA-family checkpoints (the verbatim serde struct and its runtime form) and
//! the LoRA hyper-parameters.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::ModelError;

/// The fields of a Hugging Face `config.json` that the LLaMA architecture reads (LLaMA 1/2/3, Mistral).
///
/// Unknown keys are kept in `extra` so a saved checkpoint writes them back unchanged.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HfConfig {
    /// `llama` or `mistral`.
    #[serde(default)]
    pub model_type: Option<String>,
    /// Rows of the embedding matrix.
    pub vocab_size: usize,
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Width of the MLP.
    pub intermediate_size: usize,
    /// Decoder layers.
    pub num_hidden_layers: usize,
    /// Query heads.
    pub num_attention_heads: usize,
    /// Key/value heads (GQA); defaults to `num_attention_heads`.
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    /// Per-head width; defaults to `hidden_size / num_attention_heads`.
    #[serde(default)]
    pub head_dim: Option<usize>,
    /// Context length the model was trained for.
    #[serde(default = "default_max_positions")]
    pub max_position_embeddings: usize,
    /// RMSNorm epsilon.
    #[serde(default = "default_eps")]
    pub rms_norm_eps: f64,
    /// RoPE base (transformers 5 writes it inside `rope_parameters` instead, kept in `extra`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_theta: Option<f64>,
    /// RoPE scaling (`linear`, `dynamic`, `llama3`).
    #[serde(default)]
    pub rope_scaling: Option<serde_json::Value>,
    /// Whether the LM head shares the embedding matrix.
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// Activation of the MLP (`silu`).
    #[serde(default = "default_act")]
    pub hidden_act: String,
    /// Bias on q/k/v/o projections.
    #[serde(default)]
    pub attention_bias: bool,
    /// Bias on the MLP projections.
    #[serde(default)]
    pub mlp_bias: bool,
    /// Mistral's sliding attention window.
    #[serde(default)]
    pub sliding_window: Option<usize>,
    /// BOS id.
    #[serde(default)]
    pub bos_token_id: Option<serde_json::Value>,
    /// EOS id (an int or a list of ints).
    #[serde(default)]
    pub eos_token_id: Option<serde_json::Value>,
    /// Every other key, written back on save.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

fn default_max_positions() -> usize {
    2048
}
fn default_eps() -> f64 {
    1e-6
}
fn default_theta() -> f64 {
    10_000.0
}
fn default_act() -> String {
    "silu".into()
}

/// How positions are scaled before RoPE.
#[derive(Debug, Clone, PartialEq)]
pub enum RopeScaling {
    /// Plain RoPE.
    None,
    /// Positions divided by `factor` (transformers `linear`).
    Linear {
        /// Scale factor.
        factor: f64,
    },
    /// LLaMA 3.1 frequency-dependent scaling (transformers `llama3`).
    Llama3 {
        /// Scale factor for low frequencies.
        factor: f64,
        /// Wavelength bound (as a fraction of the original context) under which frequencies are scaled.
        low_freq_factor: f64,
        /// Wavelength bound above which frequencies are kept.
        high_freq_factor: f64,
        /// Context of the original model.
        original_max_position_embeddings: usize,
    },
}

/// Runtime configuration of a LLaMA-family model, checked and with defaults resolved.
#[derive(Debug, Clone)]
pub struct LlamaConfig {
    /// Rows of the embedding matrix.
    pub vocab_size: usize,
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Width of the MLP.
    pub intermediate_size: usize,
    /// Decoder layers.
    pub num_layers: usize,
    /// Query heads.
    pub num_heads: usize,
    /// Key/value heads.
    pub num_kv_heads: usize,
    /// Per-head width.
    pub head_dim: usize,
    /// Context length.
    pub max_position_embeddings: usize,
    /// RMSNorm epsilon.
    pub rms_norm_eps: f64,
    /// RoPE base.
    pub rope_theta: f64,
    /// RoPE scaling.
    pub rope_scaling: RopeScaling,
    /// LM head shares the embedding matrix.
    pub tie_word_embeddings: bool,
    /// Bias on attention projections.
    pub attention_bias: bool,
    /// Bias on MLP projections.
    pub mlp_bias: bool,
    /// Sliding attention window (Mistral).
    pub sliding_window: Option<usize>,
    /// BOS id.
    pub bos_token_id: Option<u32>,
    /// EOS ids.
    pub eos_token_ids: Vec<u32>,
}

impl HfConfig {
    /// Reads `config.json`.
    pub fn load(path: &Path) -> Result<Self, ModelError> {
        let text = std::fs::read_to_string(path).map_err(|e| ModelError::io(path, e))?;
        serde_json::from_str(&text).map_err(|e| ModelError::Config {
            path: path.to_path_buf(),
            message: format!("line {}, column {}: {e}", e.line(), e.column()),
        })
    }

    /// Checks the architecture and resolves defaults.
    pub fn to_runtime(&self, path: &Path) -> Result<LlamaConfig, ModelError> {
        let bad = |message: String| ModelError::Config { path: path.to_path_buf(), message };
        match self.model_type.as_deref() {
            None | Some("llama") | Some("mistral") => {}
            Some(other) => {
                return Err(bad(format!("model_type {other:?} is not a LLaMA-family model (llama, mistral)")));
            }
        }
        if self.hidden_act != "silu" {
            return Err(bad(format!("hidden_act {:?} is not supported (LLaMA uses silu)", self.hidden_act)));
        }
        let num_heads = self.num_attention_heads;
        if num_heads == 0 || self.hidden_size == 0 || self.vocab_size == 0 || self.num_hidden_layers == 0 {
            return Err(bad("hidden_size, vocab_size, num_attention_heads and num_hidden_layers must be > 0".into()));
        }
        let num_kv_heads = self.num_key_value_heads.unwrap_or(num_heads);
        if num_kv_heads == 0 || num_heads % num_kv_heads != 0 {
            return Err(bad(format!(
                "num_attention_heads {num_heads} is not a multiple of num_key_value_heads {num_kv_heads}"
            )));
        }
        let head_dim = self.head_dim.unwrap_or(self.hidden_size / num_heads);
        // transformers >= 5 writes `rope_parameters: {rope_theta, rope_type, factor, ...}` instead of the
        // top-level `rope_theta` / `rope_scaling` (reading only the old keys used base 10,000 for every such
        // checkpoint: a silently different model).
        let params = self.extra.get("rope_parameters");
        let rope_theta = self.rope_theta.or_else(|| params?.get("rope_theta")?.as_f64()).unwrap_or_else(default_theta);
        let rope_scaling = self.rope_scaling.as_ref().or(params);
        if head_dim == 0 || head_dim % 2 != 0 {
            return Err(bad(format!("head_dim {head_dim} must be even and > 0 for RoPE")));
        }
        Ok(LlamaConfig {
            vocab_size: self.vocab_size,
            hidden_size: self.hidden_size,
            intermediate_size: self.intermediate_size,
            num_layers: self.num_hidden_layers,
            num_heads,
            num_kv_heads,
            head_dim,
            max_position_embeddings: self.max_position_embeddings,
            rms_norm_eps: self.rms_norm_eps,
            rope_theta,
            rope_scaling: parse_rope_scaling(rope_scaling, self.max_position_embeddings).map_err(bad)?,
            tie_word_embeddings: self.tie_word_embeddings,
            attention_bias: self.attention_bias,
            mlp_bias: self.mlp_bias,
            sliding_window: self.sliding_window,
            bos_token_id: self.bos_token_id.as_ref().and_then(|v| v.as_u64()).map(|v| v as u32),
            eos_token_ids: match &self.eos_token_id {
                Some(serde_json::Value::Array(ids)) => {
                    ids.iter().filter_map(|v| v.as_u64()).map(|v| v as u32).collect()
                }
                Some(v) => v.as_u64().map(|v| vec![v as u32]).unwrap_or_default(),
                None => Vec::new(),
            },
        })
    }
}

fn parse_rope_scaling(value: Option<&serde_json::Value>, max_pos: usize) -> Result<RopeScaling, String> {
    let Some(obj) = value.and_then(|v| v.as_object()) else { return Ok(RopeScaling::None) };
    // transformers accepts both `rope_type` (new) and `type` (old).
    let kind = obj.get("rope_type").or_else(|| obj.get("type")).and_then(|v| v.as_str()).unwrap_or("default");
    let num = |key: &str| obj.get(key).and_then(|v| v.as_f64()).ok_or_else(|| format!("rope_scaling.{key} is missing"));
    match kind {
        "default" => Ok(RopeScaling::None),
        "linear" => Ok(RopeScaling::Linear { factor: num("factor")? }),
        "llama3" => Ok(RopeScaling::Llama3 {
            factor: num("factor")?,
            low_freq_factor: num("low_freq_factor")?,
            high_freq_factor: num("high_freq_factor")?,
            original_max_position_embeddings: obj
                .get("original_max_position_embeddings")
                .and_then(|v| v.as_u64())
                .map_or(max_pos, |v| v as usize),
        }),
        other => Err(format!("rope_scaling type {other:?} is not supported (default, linear, llama3)")),
    }
}

impl LlamaConfig {
    /// RoPE inverse frequencies (`head_dim / 2` of them), scaled as configured.
    pub fn inv_freq(&self) -> Vec<f32> {
        let d = self.head_dim;
        let base: Vec<f64> = (0..d / 2).map(|i| 1.0 / self.rope_theta.powf((2 * i) as f64 / d as f64)).collect();
        match &self.rope_scaling {
            RopeScaling::None => base.iter().map(|&f| f as f32).collect(),
            RopeScaling::Linear { factor } => base.iter().map(|&f| (f / factor) as f32).collect(),
            RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_max_position_embeddings } => {
                // transformers `_compute_llama3_parameters`.
                let old = *original_max_position_embeddings as f64;
                let low_wavelen = old / low_freq_factor;
                let high_wavelen = old / high_freq_factor;
                base.iter()
                    .map(|&f| {
                        let wavelen = 2.0 * std::f64::consts::PI / f;
                        let scaled = if wavelen > low_wavelen { f / factor } else { f };
                        let smooth = (old / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor);
                        let medium = (high_wavelen..=low_wavelen).contains(&wavelen);
                        let out = if medium { (1.0 - smooth) * scaled / factor + smooth * scaled } else { scaled };
                        out as f32
                    })
                    .collect()
            }
        }
    }

    /// Parameters of the model (tied head counted once).
    pub fn num_parameters(&self) -> usize {
        let (h, i, v) = (self.hidden_size, self.intermediate_size, self.vocab_size);
        let q = self.num_heads * self.head_dim;
        let kv = self.num_kv_heads * self.head_dim;
        let attn = h * q + 2 * h * kv + q * h + if self.attention_bias { q + 2 * kv + h } else { 0 };
        let mlp = 3 * h * i + if self.mlp_bias { 2 * i + h } else { 0 };
        let layer = attn + mlp + 2 * h;
        v * h + self.num_layers * layer + h + if self.tie_word_embeddings { 0 } else { v * h }
    }
}

/// A projection LoRA can adapt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoraTarget {
    /// Attention query.
    QProj,
    /// Attention key.
    KProj,
    /// Attention value.
    VProj,
    /// Attention output.
    OProj,
    /// MLP gate.
    GateProj,
    /// MLP up.
    UpProj,
    /// MLP down.
    DownProj,
}

impl LoraTarget {
    /// Every target, in PEFT's usual order.
    pub const ALL: [LoraTarget; 7] = [
        LoraTarget::QProj,
        LoraTarget::KProj,
        LoraTarget::VProj,
        LoraTarget::OProj,
        LoraTarget::GateProj,
        LoraTarget::UpProj,
        LoraTarget::DownProj,
    ];

    /// The module name (`q_proj`, …).
    pub fn name(self) -> &'static str {
        match self {
            LoraTarget::QProj => "q_proj",
            LoraTarget::KProj => "k_proj",
            LoraTarget::VProj => "v_proj",
            LoraTarget::OProj => "o_proj",
            LoraTarget::GateProj => "gate_proj",
            LoraTarget::UpProj => "up_proj",
            LoraTarget::DownProj => "down_proj",
        }
    }

    /// Parses a module name.
    pub fn parse(name: &str) -> Result<Self, ModelError> {
        Self::ALL.into_iter().find(|t| t.name() == name).ok_or_else(|| {
            let known: Vec<_> = Self::ALL.iter().map(|t| t.name()).collect();
            ModelError::Request(format!("unknown LoRA target {name:?}; known: {}", known.join(", ")))
        })
    }
}

/// Modules trained in full beside the adapter (PEFT `modules_to_save`).
pub const SAVABLE_MODULES: [(&str, &str); 2] =
    [("embed_tokens", "model.embed_tokens.weight"), ("lm_head", "lm_head.weight")];

/// LoRA hyper-parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraConfig {
    /// Rank.
    pub r: usize,
    /// Scale numerator (`alpha / r`).
    pub alpha: f64,
    /// Dropout on the adapter input while training.
    pub dropout: f32,
    /// Adapted projections.
    pub targets: Vec<LoraTarget>,
    /// Modules trained in full and saved with the adapter (`embed_tokens`, `lm_head`).
    pub modules_to_save: Vec<String>,
    /// rsLoRA scaling (`alpha / sqrt(r)`).
    pub use_rslora: bool,
}

impl LoraConfig {
    /// The factor the update is multiplied by.
    pub fn scale(&self) -> f64 {
        if self.use_rslora {
            self.alpha / (self.r as f64).sqrt()
        } else {
            self.alpha / self.r as f64
        }
    }

    /// Checks rank, targets and modules.
    pub fn validate(&self) -> Result<(), ModelError> {
        if self.r == 0 {
            return Err(ModelError::Request("LoRA rank r must be > 0".into()));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(ModelError::Request(format!("LoRA dropout {} must be in [0, 1)", self.dropout)));
        }
        for m in &self.modules_to_save {
            if !SAVABLE_MODULES.iter().any(|(name, _)| name == m) {
                return Err(ModelError::Request(format!(
                    "modules_to_save: {m:?} is not a module langadapt trains in full (embed_tokens, lm_head)"
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn llama31() -> HfConfig {
        serde_json::from_value(serde_json::json!({
            "model_type": "llama", "vocab_size": 128256, "hidden_size": 4096, "intermediate_size": 14336,
            "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
            "max_position_embeddings": 131072, "rope_theta": 500000.0, "rms_norm_eps": 1e-5,
            "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                             "original_max_position_embeddings": 8192, "rope_type": "llama3"},
            "tie_word_embeddings": false, "torch_dtype": "bfloat16"
        }))
        .unwrap()
    }

    #[test]
    fn llama3_rope_frequencies_follow_transformers() {
        let cfg = llama31().to_runtime(Path::new("config.json")).unwrap();
        let f = cfg.inv_freq();
        assert_eq!(f.len(), 64);
        // transformers `_compute_llama3_parameters` for Llama-3.1-8B: high, medium (smoothed) and low frequencies.
        for (i, want) in [
            (0, 1.0),
            (20, 0.016560440080994446),
            (30, 0.0013718935677611381),
            (35, 9.556212353964683e-05),
            (40, 3.428102195952591e-05),
            (63, 3.068925988914511e-07),
        ] {
            assert!((f64::from(f[i]) - want).abs() <= 1e-5 * want, "inv_freq[{i}] = {} vs {want}", f[i]);
        }
    }

    #[test]
    fn llama31_8b_has_8b_parameters_and_keeps_unknown_keys() {
        let hf = llama31();
        assert_eq!(hf.to_runtime(Path::new("config.json")).unwrap().num_parameters(), 8_030_261_248);
        assert_eq!(hf.extra["torch_dtype"], "bfloat16");
    }

    #[test]
    fn unsupported_rope_scaling_is_named() {
        let mut hf = llama31();
        hf.rope_scaling = Some(serde_json::json!({"rope_type": "yarn", "factor": 4.0}));
        let err = hf.to_runtime(Path::new("c/config.json")).unwrap_err().to_string();
        assert_eq!(err, "c/config.json: rope_scaling type \"yarn\" is not supported (default, linear, llama3)");
    }

    /// transformers >= 5 writes RoPE settings as `rope_parameters`; read with the old keys only, a random
    /// SmolLM2-shaped model saved by transformers 5 (rope_theta 100,000) scored -3178.57 against
    /// transformers' -3177.63 on 449 tokens (base 10,000 used); with them the scores agree.
    #[test]
    fn transformers5_rope_parameters_are_read() {
        let mut v = serde_json::to_value(llama31()).unwrap();
        let obj = v.as_object_mut().unwrap();
        let scaling = obj.remove("rope_scaling").unwrap();
        obj.remove("rope_theta");
        let mut params = scaling.as_object().unwrap().clone();
        params.insert("rope_theta".into(), 500000.0.into());
        obj.insert("rope_parameters".into(), params.into());
        let new: HfConfig = serde_json::from_value(v).unwrap();
        let (old, new) = (llama31().to_runtime(Path::new("a")).unwrap(), new.to_runtime(Path::new("b")).unwrap());
        assert_eq!((new.rope_theta, new.inv_freq()), (500000.0, old.inv_freq()));
        let plain: HfConfig = serde_json::from_value(serde_json::json!({
            "vocab_size": 10, "hidden_size": 8, "intermediate_size": 16, "num_hidden_layers": 1,
            "num_attention_heads": 2, "rope_parameters": {"rope_theta": 100000.0, "rope_type": "default"}
        }))
        .unwrap();
        let rt = plain.to_runtime(Path::new("c")).unwrap();
        assert_eq!((rt.rope_theta, rt.inv_freq()[1]), (100000.0, (1.0 / 100000f64.powf(0.5)) as f32));
        // Written back as read: no top-level rope_theta appears.
        assert!(serde_json::to_value(&plain).unwrap().get("rope_theta").is_none());
    }
}
