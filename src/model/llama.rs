//! The LLaMA decoder: every op composed from differentiable candle primitives, logits at every position.

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

use super::config::LlamaConfig;
use super::config::{LoraConfig, LoraTarget};
use super::fused;
use super::linear::linear;
use super::ModelError;

type Result<T> = std::result::Result<T, ModelError>;

/// RMSNorm as transformers computes it: statistics in f32, the weight applied in the model dtype.
#[derive(Debug, Clone)]
struct RmsNorm {
    weight: Tensor,
    eps: f64,
}

impl RmsNorm {
    fn new(size: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        Ok(Self { weight: vb.get_with_hints(size, "weight", candle_nn::Init::Const(1.0))?, eps })
    }
}

impl RmsNorm {
    /// Inference takes candle's fused kernel; training the fused op with a backward pass.
    fn forward_t(&self, xs: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        if train {
            fused::rms_norm(xs, &self.weight, self.eps)
        } else {
            candle_nn::ops::rms_norm(xs, &self.weight, self.eps as f32)
        }
    }
}

/// A projection, optionally with a LoRA update `x Aᵀ Bᵀ · alpha/r` (PEFT's `lora_A`/`lora_B`).
#[derive(Debug, Clone)]
struct Proj {
    weight: Tensor,
    bias: Option<Tensor>,
    lora: Option<LoraPair>,
    /// Distinct per projection, so each draws its own dropout mask from the step's seed.
    id: u64,
}

/// The two low-rank factors of one adapted projection.
#[derive(Debug, Clone)]
struct LoraPair {
    a: Tensor,
    b: Tensor,
    scale: f64,
    dropout: f32,
}

impl Proj {
    fn new(
        id: u64,
        in_dim: usize,
        out_dim: usize,
        bias: bool,
        vb: VarBuilder,
        lora: Option<(&LoraConfig, VarBuilder)>,
    ) -> Result<Self> {
        let weight = vb.get((out_dim, in_dim), "weight")?;
        let bias = if bias { Some(vb.get(out_dim, "bias")?) } else { None };
        let lora = match lora {
            Some((cfg, vb)) => {
                // PEFT's default init: A Kaiming-uniform, B zero, so the adapter starts as the identity update.
                let bound = (1.0 / in_dim as f64).sqrt();
                let a = vb.pp("lora_A").get_with_hints(
                    (cfg.r, in_dim),
                    "weight",
                    candle_nn::Init::Uniform { lo: -bound, up: bound },
                )?;
                let b = vb.pp("lora_B").get_with_hints((out_dim, cfg.r), "weight", candle_nn::Init::Const(0.0))?;
                Some(LoraPair { a, b, scale: cfg.scale(), dropout: cfg.dropout })
            }
            None => None,
        };
        Ok(Self { weight, bias, lora, id })
    }

    fn forward(&self, xs: &Tensor, train: Option<u64>) -> Result<Tensor> {
        let Some(l) = &self.lora else { return Ok(linear(xs, &self.weight, self.bias.as_ref())?) };
        let drop = match train {
            Some(seed) if l.dropout > 0.0 => Some((l.dropout, seed ^ self.id.wrapping_mul(0x9E37_79B9_7F4A_7C15))),
            _ => None,
        };
        Ok(fused::lora_linear(xs, &self.weight, self.bias.as_ref(), (&l.a, &l.b, l.scale), drop)?)
    }
}

/// Cos/sin tables for every position up to the model's context, `[max_pos, head_dim/2]`.
#[derive(Debug, Clone)]
struct Rope {
    cos: Tensor,
    sin: Tensor,
}

impl Rope {
    fn new(cfg: &LlamaConfig, dtype: DType, device: &Device) -> Result<Self> {
        let inv_freq = cfg.inv_freq();
        let half = inv_freq.len();
        let n = cfg.max_position_embeddings.max(1);
        let mut angles = Vec::with_capacity(n * half);
        for p in 0..n {
            // f32 products, as transformers computes `inv_freq @ position_ids` in float32.
            angles.extend(inv_freq.iter().map(|&f| p as f32 * f));
        }
        let angles = Tensor::from_vec(angles, (n, half), device)?;
        Ok(Self { cos: angles.cos()?.to_dtype(dtype)?, sin: angles.sin()?.to_dtype(dtype)? })
    }

    /// Rotates `xs` `[b, heads, t, head_dim]` at `positions` `[b, t]`.
    fn apply(&self, xs: &Tensor, positions: &Tensor) -> Result<Tensor> {
        let (b, _, t, d) = xs.dims4()?;
        let flat = positions.flatten_all()?;
        // candle's fused kernel takes per-row tables `[b, t, d/2]`.
        let cos = self.cos.index_select(&flat, 0)?.reshape((b, t, d / 2))?;
        let sin = self.sin.index_select(&flat, 0)?.reshape((b, t, d / 2))?;
        Ok(fused::rope(xs, &cos, &sin)?)
    }
}

#[derive(Debug, Clone)]
struct Attention {
    q: Proj,
    k: Proj,
    v: Proj,
    o: Proj,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
}

#[derive(Debug, Clone)]
struct Mlp {
    gate: Proj,
    up: Proj,
    down: Proj,
}

#[derive(Debug, Clone)]
struct Block {
    input_norm: RmsNorm,
    attn: Attention,
    post_norm: RmsNorm,
    mlp: Mlp,
}

/// Keys and values of earlier positions, for generation one token at a time. Each layer's keys and values
/// live in buffers with room for `capacity` positions, written in place as tokens come (the attention reads
/// views of the filled part), so a step copies only its own keys and values, not the whole cache. Not
/// `Clone`: clones would share the buffers.
#[derive(Debug)]
pub struct KvCache {
    layers: Vec<Option<KvSlot>>,
    /// Positions to make room for at the first write (more are added by doubling).
    capacity: usize,
    /// `[b, s]` 1 for real tokens, 0 for padding, over every cached position.
    key_mask: Option<Tensor>,
    /// Next RoPE position of each row, `[b]` f32 on the model's device.
    next_pos: Option<Tensor>,
}

/// One layer's cached keys and values: buffers `[b, kv_heads, room, head_dim]`, the first `len` positions filled.
#[derive(Debug)]
struct KvSlot {
    k: Tensor,
    v: Tensor,
    len: usize,
}

impl KvSlot {
    /// Writes `k`, `v` `[b, kv_heads, t, head_dim]` after the cached positions (growing the buffers to at least
    /// `capacity`, or by doubling) and returns views of all cached keys and values.
    fn append(slot: &mut Option<KvSlot>, k: &Tensor, v: &Tensor, capacity: usize) -> Result<(Tensor, Tensor)> {
        let len = slot.as_ref().map_or(0, |s| s.len);
        let need = len + k.dim(2)?;
        let room = slot.as_ref().map_or(0, |s| s.k.dim(2).unwrap_or(0));
        if need > room {
            let (b, heads, _, d) = k.dims4()?;
            let room = capacity.max(need).max(2 * room);
            let grown = KvSlot {
                k: Tensor::zeros((b, heads, room, d), k.dtype(), k.device())?,
                v: Tensor::zeros((b, heads, room, d), v.dtype(), v.device())?,
                len,
            };
            if let Some(old) = slot.take() {
                grown.k.slice_set(&old.k.narrow(2, 0, len)?.contiguous()?, 2, 0)?;
                grown.v.slice_set(&old.v.narrow(2, 0, len)?.contiguous()?, 2, 0)?;
            }
            *slot = Some(grown);
        }
        let s = slot.as_mut().ok_or_else(|| ModelError::Request("kv cache slot missing after growing".into()))?;
        s.k.slice_set(&k.contiguous()?, 2, len)?;
        s.v.slice_set(&v.contiguous()?, 2, len)?;
        s.len = need;
        Ok((s.k.narrow(2, 0, need)?, s.v.narrow(2, 0, need)?))
    }
}

impl KvCache {
    /// An empty cache for `layers` layers.
    pub fn new(layers: usize) -> Self {
        Self::with_capacity(layers, 0)
    }

    /// An empty cache whose buffers will hold `positions` positions (prompt + new tokens) without growing.
    pub fn with_capacity(layers: usize, positions: usize) -> Self {
        Self { layers: (0..layers).map(|_| None).collect(), capacity: positions, key_mask: None, next_pos: None }
    }

    /// Positions cached so far (padding included).
    pub fn len(&self) -> usize {
        self.key_mask.as_ref().map_or(0, |m| m.dim(1).unwrap_or(0))
    }

    /// Whether nothing is cached yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What a forward pass reads besides the token ids.
#[derive(Debug, Default)]
pub struct ForwardOptions<'a> {
    /// `[b, t]` u8/u32: 1 for real tokens, 0 for padding (any side). None: all real.
    pub mask: Option<&'a Tensor>,
    /// Cache to read earlier positions from and append these to.
    pub cache: Option<&'a mut KvCache>,
    /// Training mode: every op differentiable, LoRA dropout on with masks drawn from this seed (so a resumed
    /// run draws the same). None: inference, with candle's fused kernels (no backward pass).
    pub train: Option<u64>,
    /// `[b, t]` u32 example ids of packed rows: attention stays within an example and RoPE positions restart
    /// at each example's first token. Not combinable with a cache.
    pub segments: Option<&'a Tensor>,
}

/// A LLaMA-family causal language model.
#[derive(Debug, Clone)]
pub struct Llama {
    cfg: LlamaConfig,
    embed: Tensor,
    layers: Vec<Block>,
    norm: RmsNorm,
    /// The untied LM head's `[vocab, hidden]` weight (no bias, no adapter).
    lm_head: Option<Tensor>,
    rope: Rope,
    device: Device,
    dtype: DType,
    /// Queries per attention block, in inference and training (see [`Llama::with_query_block`]).
    query_block: usize,
    /// Position-only attention masks by (queries, keys, offset), shared by clones.
    masks: MaskCache,
}

type MaskCache =
    std::sync::Arc<std::sync::Mutex<std::collections::HashMap<(usize, usize, usize), std::sync::Arc<ShapeMasks>>>>;

/// The masks of one attention shape that depend on positions only (not on the batch).
#[derive(Debug)]
struct ShapeMasks {
    /// `[t, s]` u8: 1 where query `offset + i` may see key `j` (causal, sliding window).
    visible: Tensor,
    /// `[t, s]` u8: 1 where key `j` is query `offset + i` itself.
    diagonal: Tensor,
    /// `[t, t]` f32: 1 where `j < i`; a row of 0/1 weights times it is the count before each position.
    before: Tensor,
}

/// Default queries per attention block: the f32 scores of one block are `heads × 512 × keys × 4` bytes
/// (a 9-head model at 8,192 keys: 151 MB instead of 2.4 GB for all queries at once).
pub const DEFAULT_QUERY_BLOCK: usize = 512;

impl Llama {
    /// Attention is computed `n` queries at a time (exact softmax per row, so the same numbers), so the scores'
    /// memory grows linearly in the sequence length; training's backward recomputes each block's scores.
    pub fn with_query_block(mut self, n: usize) -> Self {
        self.query_block = n.max(1);
        self
    }

    /// Builds the model from `vb` (Hugging Face tensor names), with LoRA factors from `lora` when given.
    pub fn new(cfg: &LlamaConfig, vb: VarBuilder, lora: Option<(&LoraConfig, VarBuilder)>) -> Result<Self> {
        let device = vb.device().clone();
        let dtype = vb.dtype();
        let (h, hd) = (cfg.hidden_size, cfg.head_dim);
        let m = vb.pp("model");
        let lm = lora.as_ref().map(|(c, vb)| (*c, vb.pp("base_model").pp("model").pp("model")));
        let proj =
            |l: usize, target: LoraTarget, i: usize, o: usize, bias: bool, vb: VarBuilder, lvb: Option<VarBuilder>| {
                let lora = match (lora.as_ref(), lvb) {
                    (Some((c, _)), Some(lvb)) if c.targets.contains(&target) => Some((*c, lvb)),
                    _ => None,
                };
                Proj::new((l * LoraTarget::ALL.len() + target as usize) as u64, i, o, bias, vb, lora)
            };
        let mut layers = Vec::with_capacity(cfg.num_layers);
        for l in 0..cfg.num_layers {
            let vb = m.pp("layers").pp(l);
            let lvb = lm.as_ref().map(|(_, v)| v.pp("layers").pp(l));
            let a = vb.pp("self_attn");
            let la = lvb.as_ref().map(|v| v.pp("self_attn"));
            let sub = |name: &str| la.as_ref().map(|v| v.pp(name));
            let (q_out, kv_out) = (cfg.num_heads * hd, cfg.num_kv_heads * hd);
            let bias = cfg.attention_bias;
            let attn = Attention {
                q: proj(l, LoraTarget::QProj, h, q_out, bias, a.pp("q_proj"), sub("q_proj"))?,
                k: proj(l, LoraTarget::KProj, h, kv_out, bias, a.pp("k_proj"), sub("k_proj"))?,
                v: proj(l, LoraTarget::VProj, h, kv_out, bias, a.pp("v_proj"), sub("v_proj"))?,
                o: proj(l, LoraTarget::OProj, q_out, h, bias, a.pp("o_proj"), sub("o_proj"))?,
                heads: cfg.num_heads,
                kv_heads: cfg.num_kv_heads,
                head_dim: hd,
            };
            let mv = vb.pp("mlp");
            let lmv = lvb.as_ref().map(|v| v.pp("mlp"));
            let msub = |name: &str| lmv.as_ref().map(|v| v.pp(name));
            let (i, bias) = (cfg.intermediate_size, cfg.mlp_bias);
            let mlp = Mlp {
                gate: proj(l, LoraTarget::GateProj, h, i, bias, mv.pp("gate_proj"), msub("gate_proj"))?,
                up: proj(l, LoraTarget::UpProj, h, i, bias, mv.pp("up_proj"), msub("up_proj"))?,
                down: proj(l, LoraTarget::DownProj, i, h, bias, mv.pp("down_proj"), msub("down_proj"))?,
            };
            layers.push(Block {
                input_norm: RmsNorm::new(h, cfg.rms_norm_eps, vb.pp("input_layernorm"))?,
                attn,
                post_norm: RmsNorm::new(h, cfg.rms_norm_eps, vb.pp("post_attention_layernorm"))?,
                mlp,
            });
        }
        let embed = m.pp("embed_tokens").get_with_hints(
            (cfg.vocab_size, h),
            "weight",
            candle_nn::Init::Randn { mean: 0.0, stdev: 0.02 },
        )?;
        let lm_head =
            if cfg.tie_word_embeddings { None } else { Some(vb.pp("lm_head").get((cfg.vocab_size, h), "weight")?) };
        Ok(Self {
            cfg: cfg.clone(),
            embed,
            layers,
            norm: RmsNorm::new(h, cfg.rms_norm_eps, m.pp("norm"))?,
            lm_head,
            rope: Rope::new(cfg, dtype, &device)?,
            device,
            dtype,
            query_block: DEFAULT_QUERY_BLOCK,
            masks: Default::default(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &LlamaConfig {
        &self.cfg
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The compute dtype.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Logits `[b, t, vocab]` (f32) for token ids `[b, t]`.
    pub fn forward(&self, ids: &Tensor, opts: ForwardOptions<'_>) -> Result<Tensor> {
        let hidden = self.hidden(ids, opts)?;
        self.logits(&hidden)
    }

    /// The final hidden states `[b, t, hidden]` (after the last norm).
    pub fn hidden(&self, ids: &Tensor, opts: ForwardOptions<'_>) -> Result<Tensor> {
        let (b, t) = ids.dims2()?;
        if t == 0 {
            return Err(ModelError::Request("forward: empty input (no tokens)".into()));
        }
        let ForwardOptions { mask, mut cache, train, segments } = opts;
        if segments.is_some() && cache.is_some() {
            return Err(ModelError::Request("forward: segments and a KV cache cannot be combined".into()));
        }
        let segments = segments.map(|s| s.to_dtype(DType::U32)).transpose()?;
        let mask = match mask {
            Some(m) => m.to_dtype(DType::U32)?,
            None => Tensor::ones((b, t), DType::U32, &self.device)?,
        };
        let key_mask = match cache.as_deref().and_then(|c| c.key_mask.as_ref()) {
            Some(prev) => Tensor::cat(&[prev, &mask], 1)?,
            None => mask.clone(),
        };
        let offset = key_mask.dim(1)? - t;
        let masks = self.shape_masks(t, offset + t, offset)?;
        let start = cache.as_deref().and_then(|c| c.next_pos.as_ref());
        let (positions, next) = positions(&mask, start, segments.as_ref(), &masks.before)?;
        // Every position is below the slots seen so far, so only an input that long can be too long; only
        // then is the device asked (a host read) for the exact end.
        if offset + t > self.rope_len() as usize {
            let max = next.max_all()?.to_scalar::<f32>()?;
            if max > self.rope_len() as f32 {
                return Err(ModelError::Request(format!(
                    "input of {max} positions is longer than the model's context ({}); truncate it",
                    self.cfg.max_position_embeddings
                )));
            }
        }
        // A padding slot's position is never seen (masked); clamp it into the table.
        let positions = positions.minimum(f64::from(self.rope_len() - 1))?.to_dtype(DType::U32)?;
        let bias = attention_bias(&key_mask, &masks, segments.as_ref())?;
        let mut xs = self.embed.index_select(&ids.flatten_all()?, 0)?.reshape((b, t, self.cfg.hidden_size))?;
        let ctx = LayerCtx {
            positions: &positions,
            bias: Some(&bias),
            rope: &self.rope,
            train,
            query_block: self.query_block,
        };
        for (l, block) in self.layers.iter().enumerate() {
            let kv = cache.as_deref_mut().map(|c| (&mut c.layers[l], c.capacity));
            xs = block.forward(&xs, &ctx, kv)?;
        }
        if let Some(c) = cache {
            c.key_mask = Some(key_mask);
            c.next_pos = Some(next);
        }
        Ok(self.norm.forward_t(&xs, train.is_some())?)
    }

    /// LM-head logits (f32) of hidden states.
    pub fn logits(&self, hidden: &Tensor) -> Result<Tensor> {
        Ok(self.head(hidden)?.to_dtype(DType::F32)?)
    }

    /// The training loss `Σ weight · (−log p(target))` (f32 scalar) of `target` after `ids`, `weight` and
    /// `target` `[b, t]`: the head runs over blocks of tokens and its gradient is formed there, so the graph
    /// keeps no logits.
    pub fn token_loss(
        &self,
        ids: &Tensor,
        target: &Tensor,
        weight: &Tensor,
        opts: ForwardOptions<'_>,
    ) -> Result<Tensor> {
        let hidden = self.hidden(ids, opts)?;
        Ok(fused::head_loss(&hidden, self.head_weight(), target, weight)?)
    }

    /// LM-head logits in the model dtype.
    fn head(&self, hidden: &Tensor) -> Result<Tensor> {
        Ok(linear(hidden, self.head_weight(), None)?)
    }

    /// The LM head's `[vocab, hidden]` weight (the embedding when tied).
    fn head_weight(&self) -> &Tensor {
        self.lm_head.as_ref().unwrap_or(&self.embed)
    }

    fn rope_len(&self) -> u32 {
        self.rope.cos.dim(0).unwrap_or(0) as u32
    }

    /// The position-only masks of `t` queries at `offset` over `s` keys, built once per shape on the device.
    fn shape_masks(&self, t: usize, s: usize, offset: usize) -> Result<std::sync::Arc<ShapeMasks>> {
        let mut cache = self.masks.lock().expect("mask cache lock");
        if let Some(m) = cache.get(&(t, s, offset)) {
            return Ok(m.clone());
        }
        // Generation asks for a new shape every token: keep the cache small.
        if cache.len() >= 16 {
            cache.clear();
        }
        let m = std::sync::Arc::new(ShapeMasks::new(t, s, offset, self.cfg.sliding_window, &self.device)?);
        cache.insert((t, s, offset), m.clone());
        Ok(m)
    }
}

/// What every layer of one forward pass shares.
struct LayerCtx<'a> {
    positions: &'a Tensor,
    bias: Option<&'a Tensor>,
    rope: &'a Rope,
    train: Option<u64>,
    query_block: usize,
}

impl Block {
    fn forward(&self, xs: &Tensor, ctx: &LayerCtx<'_>, kv: Option<(&mut Option<KvSlot>, usize)>) -> Result<Tensor> {
        let train = ctx.train;
        let h = self.attn.forward(&self.input_norm.forward_t(xs, train.is_some())?, ctx, kv)?;
        let xs = (xs + h)?;
        let n = self.post_norm.forward_t(&xs, train.is_some())?;
        let m = &self.mlp;
        let act = fused::swiglu(&m.gate.forward(&n, train)?, &m.up.forward(&n, train)?)?;
        Ok((xs + m.down.forward(&act, train)?)?)
    }
}

impl Attention {
    fn forward(&self, xs: &Tensor, ctx: &LayerCtx<'_>, kv: Option<(&mut Option<KvSlot>, usize)>) -> Result<Tensor> {
        let LayerCtx { positions, bias, rope, train, query_block } = *ctx;
        let (b, t, _) = xs.dims3()?;
        let hd = self.head_dim;
        // Views, not copies: RoPE and attention make their inputs contiguous inside, so the graph keeps the
        // projections' outputs once.
        let split = |x: Tensor, heads: usize| -> Result<Tensor> { Ok(x.reshape((b, t, heads, hd))?.transpose(1, 2)?) };
        let q = rope.apply(&split(self.q.forward(xs, train)?, self.heads)?, positions)?;
        let mut k = rope.apply(&split(self.k.forward(xs, train)?, self.kv_heads)?, positions)?;
        let mut v = split(self.v.forward(xs, train)?, self.kv_heads)?;
        if let Some((slot, capacity)) = kv {
            (k, v) = KvSlot::append(slot, &k, &v, capacity)?;
        }
        let groups = self.heads / self.kv_heads;
        let scale = 1.0 / (hd as f64).sqrt();
        // Blocks of queries in training too: the backward recomputes each block's scores instead of keeping them.
        // Already `[b, t, heads · head_dim]`, the layout the output projection reads.
        let out = fused::attention(&q, &k, &v, groups, scale, bias, query_block)?;
        self.o.forward(&out, train)
    }
}

impl ShapeMasks {
    fn new(t: usize, s: usize, offset: usize, window: Option<usize>, dev: &Device) -> Result<Self> {
        let queries = Tensor::arange(offset as u32, (offset + t) as u32, dev)?.reshape((t, 1))?;
        let keys = Tensor::arange(0u32, s as u32, dev)?.reshape((1, s))?;
        let mut visible = keys.broadcast_le(&queries)?;
        if let Some(w) = window {
            // q - j < w, i.e. j + w > q.
            visible = (visible * (keys.clone() + w as f64)?.broadcast_gt(&queries)?)?;
        }
        let diagonal = keys.broadcast_eq(&queries)?;
        let order = Tensor::arange(0u32, t as u32, dev)?;
        let before = order.reshape((t, 1))?.broadcast_lt(&order.reshape((1, t))?)?.to_dtype(DType::F32)?;
        Ok(Self { visible, diagonal, before })
    }
}

/// RoPE positions `[b, t]` (f32) and each row's next position `[b]`, with tensor ops on the device: real
/// tokens are counted from `start` (0 without a cache), restarting at 0 where the segment id changes
/// (packed rows). `before` is [`ShapeMasks::before`] for `t`.
fn positions(
    mask: &Tensor,
    start: Option<&Tensor>,
    segments: Option<&Tensor>,
    before: &Tensor,
) -> Result<(Tensor, Tensor)> {
    let (b, t) = mask.dims2()?;
    // Counts as f32 matmuls are exact below 2^24 (candle's CUDA f32 matmul keeps full precision; turning on
    // its TF32 mode, `set_gemm_reduced_precision_f32`, would make positions above 2,048 inexact).
    let real = mask.to_dtype(DType::F32)?;
    let counts = match segments {
        None => real.matmul(before)?,
        Some(seg) => {
            // Runs of equal ids: a run starts where the id changes; run numbers are the cumulative count.
            let starts = if t > 1 {
                let changed = seg.narrow(1, 1, t - 1)?.ne(&seg.narrow(1, 0, t - 1)?)?.to_dtype(DType::F32)?;
                Tensor::cat(&[Tensor::zeros((b, 1), DType::F32, seg.device())?, changed], 1)?
            } else {
                Tensor::zeros((b, 1), DType::F32, seg.device())?
            };
            let run = (starts.matmul(before)? + &starts)?;
            let same_run = run.unsqueeze(2)?.broadcast_eq(&run.unsqueeze(1)?)?.to_dtype(DType::F32)?;
            real.unsqueeze(1)?.matmul(&same_run.broadcast_mul(before)?)?.squeeze(1)?
        }
    };
    let positions = match start {
        Some(s) => counts.broadcast_add(&s.unsqueeze(1)?)?,
        None => counts,
    };
    let next = (positions.narrow(1, t - 1, 1)? + real.narrow(1, t - 1, 1)?)?.squeeze(1)?;
    Ok((positions, next))
}

/// Additive attention bias `[b, 1, t, s]`: 0 where a query may look, -inf elsewhere (causal, sliding window,
/// padding keys except the query itself, other examples of a packed row), with tensor ops on the device.
fn attention_bias(key_mask: &Tensor, masks: &ShapeMasks, segments: Option<&Tensor>) -> Result<Tensor> {
    let (b, s) = key_mask.dims2()?;
    let t = masks.visible.dim(0)?;
    let real = key_mask.to_dtype(DType::U8)?.unsqueeze(1)?;
    let key_ok = real.broadcast_maximum(&masks.diagonal.unsqueeze(0)?)?;
    let mut visible = key_ok.broadcast_mul(&masks.visible.unsqueeze(0)?)?;
    if let Some(seg) = segments {
        // Segments come without a cache, so queries and keys are the same t slots.
        visible = (visible * seg.unsqueeze(2)?.broadcast_eq(&seg.unsqueeze(1)?)?)?;
    }
    let zeros = Tensor::zeros((b, t, s), DType::F32, key_mask.device())?;
    let blocked = Tensor::full(f32::NEG_INFINITY, (b, t, s), key_mask.device())?;
    Ok(visible.where_cond(&zeros, &blocked)?.unsqueeze(1)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The host loops the masks were built with before issue 15: positions and bias per row.
    fn host_reference(
        mask: &[Vec<u32>],
        start: &[u32],
        segments: Option<&[Vec<u32>]>,
        offset: usize,
        keys: &[Vec<u32>],
        window: usize,
    ) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let (mut positions, mut next, mut bias) = (Vec::new(), Vec::new(), Vec::new());
        for (r, row) in mask.iter().enumerate() {
            let mut p = start[r];
            for (i, &m) in row.iter().enumerate() {
                if let Some(seg) = segments {
                    if i > 0 && seg[r][i] != seg[r][i - 1] {
                        p = 0;
                    }
                }
                positions.push(p as f32);
                p += m;
            }
            next.push(p as f32);
            let seg = segments.map(|s| &s[r]);
            for i in 0..row.len() {
                let q = offset + i;
                bias.extend(keys[r].iter().enumerate().map(|(j, &real)| {
                    let same_example = seg.is_none_or(|seg| seg[j] == seg[q]);
                    let visible = j <= q && q - j < window && same_example && (real == 1 || j == q);
                    if visible {
                        0f32
                    } else {
                        f32::NEG_INFINITY
                    }
                }));
            }
        }
        (positions, next, bias)
    }

    /// Issue 15: the masks built with tensor ops equal the host loops they replace, for padding on either
    /// side, packed rows (an id repeated after another restarts the positions but shares attention, as
    /// before), a cache offset with per-row start positions, and a sliding window.
    #[test]
    fn device_masks_equal_the_host_loops() {
        let dev = Device::Cpu;
        let tensor = |rows: &[Vec<u32>]| Tensor::new(rows.to_vec(), &dev).unwrap();
        let mask = vec![vec![0, 0, 1, 1, 1, 1], vec![1, 1, 1, 1, 0, 0], vec![1, 1, 1, 1, 1, 1]];
        let segs = vec![vec![1, 1, 2, 2, 2, 3], vec![5, 5, 5, 5, 5, 5], vec![1, 2, 2, 1, 1, 3]];
        // (segments, cache offset, start positions, sliding window)
        type Case<'a> = (Option<&'a Vec<Vec<u32>>>, usize, Vec<u32>, Option<usize>);
        let cases: [Case; 5] = [
            (None, 0, vec![0; 3], None),
            (Some(&segs), 0, vec![0; 3], None),
            (None, 0, vec![0; 3], Some(3)),
            (None, 4, vec![3, 4, 0], None),
            (None, 4, vec![3, 4, 0], Some(2)),
        ];
        for (segments, offset, start, window) in cases {
            let earlier: Vec<Vec<u32>> = vec![vec![0, 1, 1, 1], vec![1, 1, 1, 1], vec![1, 0, 1, 0]];
            let keys: Vec<Vec<u32>> = if offset == 0 {
                mask.clone()
            } else {
                earlier.iter().zip(&mask).map(|(a, b)| a.iter().chain(b).copied().collect()).collect()
            };
            let (t, s) = (mask[0].len(), keys[0].len());
            let (want_pos, want_next, want_bias) = host_reference(
                &mask,
                &start,
                segments.map(|s| s.as_slice()),
                offset,
                &keys,
                window.unwrap_or(usize::MAX),
            );
            let masks = ShapeMasks::new(t, s, offset, window, &dev).unwrap();
            let seg = segments.map(|s| tensor(s));
            let start_t =
                (offset > 0).then(|| Tensor::new(start.iter().map(|&p| p as f32).collect::<Vec<_>>(), &dev).unwrap());
            let (pos, next) = positions(&tensor(&mask), start_t.as_ref(), seg.as_ref(), &masks.before).unwrap();
            let bias = attention_bias(&tensor(&keys), &masks, seg.as_ref()).unwrap();
            let case = format!("segments {segments:?} offset {offset} window {window:?}");
            assert_eq!(pos.flatten_all().unwrap().to_vec1::<f32>().unwrap(), want_pos, "{case}");
            assert_eq!(next.to_vec1::<f32>().unwrap(), want_next, "{case}");
            assert_eq!(bias.dims(), [3, 1, t, s]);
            assert_eq!(bias.flatten_all().unwrap().to_vec1::<f32>().unwrap(), want_bias, "{case}");
        }
    }
}
