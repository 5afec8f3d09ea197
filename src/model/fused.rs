//! Training ops whose backward keeps less than their composed forms.
//!
//! candle's autograd keeps every intermediate of a composed op alive until backward: softmax over attention
//! scores as max/sub/exp/sum/div holds five `[batch, heads, T, T]` f32 tensors a layer, and log-softmax over a
//! 49k vocabulary three `[tokens, vocab]` f32 tensors. Each op here computes its value on the detached input
//! (candle's fused kernels where they exist; the temporaries are freed at once) and [`attach`]es it to the
//! input with a hand-written backward, so the graph keeps only the input and the output.

use std::sync::Mutex;

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout, Shape, Storage, Tensor, D};

use super::cpu_attention;
use super::kernels::{
    logit_stats, nll_and_grad_cpu, rms_norm_cpu, rms_norm_grad_cpu, swiglu_cpu, swiglu_grad_cpu, AddProductT, CpuOut,
};
use super::linear::linear;

type Result<T> = candle_core::Result<T>;

/// The backward of an attached value: `(inputs, output, gradient of the output)` → gradient of each input.
type Backward = Box<dyn Fn(&[&Tensor], &Tensor, &Tensor) -> Result<Vec<Option<Tensor>>> + Send + Sync>;

/// What [`attach`] puts on the graph: a computed tensor (copied once into the op's storage) or a CPU kernel's
/// output (its buffer moved in).
enum Value {
    Tensor(Tensor),
    Cpu(CpuOut),
}

impl From<Tensor> for Value {
    fn from(t: Tensor) -> Self {
        Value::Tensor(t)
    }
}

impl From<CpuOut> for Value {
    fn from(o: CpuOut) -> Self {
        Value::Cpu(o)
    }
}

/// `value` (computed from the detached `inputs`, one to three) as a function of `inputs` on the autograd graph,
/// with `bwd` as its backward. Untracked inputs (inference) get `value` itself.
fn attach(inputs: &[&Tensor], value: impl Into<Value>, bwd: Backward) -> Result<Tensor> {
    let value = value.into();
    if !inputs.iter().any(|t| t.track_op()) {
        return match value {
            Value::Tensor(t) => Ok(t),
            Value::Cpu(o) => o.into_tensor(),
        };
    }
    let op = Attached { value: Mutex::new(Some(value)), bwd };
    match inputs {
        [x] => x.apply_op1(op),
        [x, y] => x.apply_op2(y, op),
        [x, y, z] => x.apply_op3(y, z, op),
        _ => candle_core::bail!("attach: {} inputs (1 to 3)", inputs.len()),
    }
}

/// The custom op behind [`attach`]: its forward hands over the precomputed value (a CPU kernel's buffer as is,
/// a tensor as one copy into the op's own storage), its backward calls the closure.
struct Attached {
    value: Mutex<Option<Value>>,
    bwd: Backward,
}

impl Attached {
    /// The value, taken (the op's forward runs once).
    fn take(&self) -> Result<Value> {
        let poisoned = || candle_core::Error::Msg("attached value lock poisoned".into());
        let value = self.value.lock().map_err(|_| poisoned())?.take();
        value.ok_or_else(|| candle_core::Error::Msg("attached value already taken".into()))
    }

    /// A tensor value's storage, copied (`x·1 + 0` is exact) into an allocation of its own.
    fn copy<S: BackendStorage>(value: &Tensor, pick: impl Fn(&Storage) -> Option<&S>) -> Result<(S, Shape)> {
        let (s, l) = value.storage_and_layout();
        match pick(&s) {
            Some(s) => Ok((s.affine(l, 1.0, 0.0)?, l.shape().clone())),
            None => candle_core::bail!("attached: the value is on another device than the input"),
        }
    }

    fn cpu(&self) -> Result<(CpuStorage, Shape)> {
        match self.take()? {
            Value::Cpu(o) => Ok((CpuStorage::F32(o.data), o.shape)),
            Value::Tensor(t) => Self::copy(&t, |s| match s {
                Storage::Cpu(s) => Some(s),
                _ => None,
            }),
        }
    }

    #[cfg(feature = "cuda")]
    fn cuda(&self) -> Result<(candle_core::CudaStorage, Shape)> {
        match self.take()? {
            Value::Cpu(_) => candle_core::bail!("attached: a CPU kernel's value for a CUDA input"),
            Value::Tensor(t) => Self::copy(&t, |s| match s {
                Storage::Cuda(s) => Some(s),
                _ => None,
            }),
        }
    }

    fn grads<const N: usize>(&self, args: [&Tensor; N], res: &Tensor, grad: &Tensor) -> Result<[Option<Tensor>; N]> {
        // Detached: a gradient computed from tracked tensors would carry a graph of its own, and every
        // intermediate of this backward would live as long as the gradient does.
        let args = args.map(Tensor::detach);
        let grads = (self.bwd)(&args.each_ref(), &res.detach(), &grad.detach())?;
        grads
            .try_into()
            .map_err(|g: Vec<_>| candle_core::Error::Msg(format!("attached: {} gradients for {N} inputs", g.len())))
    }
}

impl CustomOp1 for Attached {
    fn name(&self) -> &'static str {
        "attached"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
        self.cpu()
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(&self, _: &candle_core::CudaStorage, _: &Layout) -> Result<(candle_core::CudaStorage, Shape)> {
        self.cuda()
    }

    fn bwd(&self, arg: &Tensor, res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let [g] = self.grads([arg], res, grad_res)?;
        Ok(g)
    }
}

impl CustomOp2 for Attached {
    fn name(&self) -> &'static str {
        "attached2"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
        self.cpu()
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        _: &candle_core::CudaStorage,
        _: &Layout,
        _: &candle_core::CudaStorage,
        _: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        self.cuda()
    }

    fn bwd(
        &self,
        a1: &Tensor,
        a2: &Tensor,
        res: &Tensor,
        grad_res: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let [g1, g2] = self.grads([a1, a2], res, grad_res)?;
        Ok((g1, g2))
    }
}

impl CustomOp3 for Attached {
    fn name(&self) -> &'static str {
        "attached3"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        self.cpu()
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        _: &candle_core::CudaStorage,
        _: &Layout,
        _: &candle_core::CudaStorage,
        _: &Layout,
        _: &candle_core::CudaStorage,
        _: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        self.cuda()
    }

    #[allow(clippy::type_complexity)]
    fn bwd(
        &self,
        a1: &Tensor,
        a2: &Tensor,
        a3: &Tensor,
        res: &Tensor,
        grad_res: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let [g1, g2, g3] = self.grads([a1, a2, a3], res, grad_res)?;
        Ok((g1, g2, g3))
    }
}

/// Attention `softmax(q kᵀ · scale + bias) v` as `[b, t, h · d]` (the output projection's input), for `q`
/// `[b, h, t, d]`, `k`/`v` `[b, h / groups, s, d]` (each kv head serves `groups` query heads, GQA; keys before
/// the first query come from a KV cache) and an additive mask `bias` `[b, 1, t, s]` (0 or -inf), over causal
/// blocks of `block` queries: no block sees a key after its last query, and no more than one block's scores
/// exist at a time per task, in the forward and in the backward, which recomputes them. The graph keeps q,
/// the kv heads unrepeated and the output. On the CPU [`cpu_attention`] computes it in f32; on other devices
/// tensor ops do, with scores and softmax in f32 and products in the inputs' dtype.
pub(crate) fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    groups: usize,
    scale: f64,
    bias: Option<&Tensor>,
    block: usize,
) -> Result<Tensor> {
    // With a causal mask smaller blocks skip more keys: at 512 tokens blocks of 128 do 5/8 of one block's work.
    let step = block.clamp(1, CAUSAL_BLOCK);
    if !q.device().is_cpu() {
        return blocked_attention(q, k, v, groups, scale, bias, step);
    }
    let step = cpu_block(step, q.dim(0)? * q.dim(1)?, rayon::current_num_threads());
    let dtype = q.dtype();
    let (scale, bias) = (scale as f32, bias.cloned());
    let value = cpu_attention::forward(&q.detach(), &k.detach(), &v.detach(), bias.as_ref(), groups, scale, step)?;
    let value = match dtype {
        DType::F32 => Value::Cpu(value),
        _ => Value::Tensor(value.into_tensor()?.to_dtype(dtype)?),
    };
    attach(
        &[q, k, v],
        value,
        Box::new(move |args, _, grad| {
            let [q, k, v] = [args[0], args[1], args[2]];
            let (dq, dk, dv) = cpu_attention::backward(q, k, v, bias.as_ref(), grad, groups, scale, step)?;
            Ok(vec![Some(dq.to_dtype(dtype)?), Some(dk.to_dtype(dtype)?), Some(dv.to_dtype(dtype)?)])
        }),
    )
}

/// The CPU kernel's query block for `pairs` (batch row, head) pairs on `threads` threads, at most `step`: each
/// running task holds two `[block, keys]` f32 buffers, and with more threads than pairs smaller blocks keep
/// them all within two `[b, h, step, keys]` blocks, what `scoring_bytes_per_token` budgets.
fn cpu_block(step: usize, pairs: usize, threads: usize) -> usize {
    (step * pairs / threads.max(1)).clamp(1, step)
}

/// [`attention`] with tensor ops (GPUs): the same blocks, each a batched product over the kv heads.
fn blocked_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    groups: usize,
    scale: f64,
    bias: Option<&Tensor>,
    step: usize,
) -> Result<Tensor> {
    let (b, h, t, d) = q.dims4()?;
    let qd = q.detach().contiguous()?;
    // The kv heads unrepeated (GQA by grouped products), read in place where a batched product can (a KV
    // cache's views: copying the whole cache would cost more than a decoding step's product). The keys stay a
    // transposed view, which cuBLAS reads, also when a block narrows them.
    let vd = gemm_ready(&v.detach())?;
    let kd = gemm_ready(&k.detach())?.t()?;
    let past = k.dim(2)? - t;
    let mut parts = Vec::with_capacity(t.div_ceil(step));
    for start in (0..t).step_by(step) {
        let len = step.min(t - start);
        let keys = past + start + len;
        let qb = qd.narrow(2, start, len)?.contiguous()?;
        let bias = bias.map(|b| b.narrow(3, 0, keys)).transpose()?;
        let p = block_probs(&qb, &kd.narrow(3, 0, keys)?, groups, scale, bias.as_ref(), start)?.to_dtype(v.dtype())?;
        parts.push(grouped_matmul(&p, &vd.narrow(2, 0, keys)?, groups)?);
    }
    let value = if parts.len() == 1 { parts.remove(0) } else { Tensor::cat(&parts, 2)? };
    let value = value.transpose(1, 2)?.reshape((b, t, h * d))?;
    let bias = bias.cloned();
    attach(
        &[q, k, v],
        value,
        Box::new(move |args, _, grad| {
            // The forward's blocks again (each reads the keys up to its last query), with the kv heads in
            // grouped products: d k and d v come out summed over the query heads that share them.
            let dtype = args[0].dtype();
            let q = args[0].contiguous()?;
            let grad = grad.reshape((b, t, h, d))?.transpose(1, 2)?.contiguous()?;
            let (k, v) = (gemm_ready(args[1])?, gemm_ready(args[2])?);
            let (_, kv, s, _) = k.dims4()?;
            let (kt, vt) = (k.t()?, v.t()?);
            let grouped = |x: &Tensor, len: usize, n: usize| x.reshape((b, kv, groups * len, n));
            // A block's share of d k or d v covers the keys up to its last query: zeros pad the rest.
            let add = |acc: &mut Option<Tensor>, part: Tensor| -> Result<()> {
                let part = part.to_dtype(DType::F32)?;
                let keys = part.dim(2)?;
                add_to(acc, if keys < s { part.pad_with_zeros(2, 0, s - keys)? } else { part })
            };
            let (mut dq, mut dk, mut dv) = (Vec::with_capacity(t.div_ceil(step)), None, None);
            for start in (0..t).step_by(step) {
                let len = step.min(t - start);
                let keys = past + start + len;
                let qb = q.narrow(2, start, len)?.contiguous()?;
                let gb = grad.narrow(2, start, len)?.contiguous()?;
                let bias = bias.as_ref().map(|b| b.narrow(3, 0, keys)).transpose()?;
                let p = block_probs(&qb, &kt.narrow(3, 0, keys)?, groups, scale, bias.as_ref(), start)?;
                add(&mut dv, grouped(&p.to_dtype(dtype)?, len, keys)?.t()?.matmul(&grouped(&gb, len, d)?)?)?;
                let dp = grouped_matmul(&gb, &vt.narrow(3, 0, keys)?, groups)?.to_dtype(DType::F32)?;
                let dot = (&dp * &p)?.sum_keepdim(D::Minus1)?;
                let ds = ((dp.broadcast_sub(&dot)? * &p)? * scale)?.to_dtype(dtype)?;
                dq.push(grouped_matmul(&ds, &k.narrow(2, 0, keys)?, groups)?);
                add(&mut dk, grouped(&ds, len, keys)?.t()?.matmul(&grouped(&qb, len, d)?)?)?;
            }
            let dq = if dq.len() == 1 { dq.remove(0) } else { Tensor::cat(&dq, 2)? };
            let cast = |x: Option<Tensor>| x.map(|x| x.to_dtype(dtype)).transpose();
            Ok(vec![Some(dq), cast(dk)?, cast(dv)?])
        }),
    )
}

/// `acc + part`, or `part` for the first term of a sum.
fn add_to(acc: &mut Option<Tensor>, part: Tensor) -> Result<()> {
    *acc = Some(match acc.take() {
        Some(a) => (a + part)?,
        None => part,
    });
    Ok(())
}

/// `x` itself when a batched matmul can read it in place (unit last stride, batch dims that merge: a KV
/// cache's view of its buffer), else a contiguous copy.
fn gemm_ready(x: &Tensor) -> Result<Tensor> {
    let (st, dims) = (x.stride(), x.dims());
    let fits = st.len() == 4 && st[3] == 1 && (st[0] == st[1] * dims[1] || dims[0] == 1);
    if fits {
        Ok(x.clone())
    } else {
        x.contiguous()
    }
}

/// `a` `[b, h, m, k]` (contiguous) times `x` `[b, h / groups, k, n]`: the `groups` heads that share one of
/// `x`'s heads go through one product with it (GQA without repeating `x`).
fn grouped_matmul(a: &Tensor, x: &Tensor, groups: usize) -> Result<Tensor> {
    let (b, h, m, _) = a.dims4()?;
    let n = x.dim(3)?;
    a.reshape((b, h / groups, groups * m, a.dim(3)?))?.matmul(x)?.reshape((b, h, m, n))
}

/// Softmax probabilities (f32, `[b, h, len, s]`) of the query block `qb` `[b, h, len, d]` starting at row
/// `start`, against transposed keys `kt` `[b, h / groups, d, s]`.
fn block_probs(
    qb: &Tensor,
    kt: &Tensor,
    groups: usize,
    scale: f64,
    bias: Option<&Tensor>,
    start: usize,
) -> Result<Tensor> {
    let mut scores = (grouped_matmul(qb, kt, groups)? * scale)?.to_dtype(DType::F32)?;
    if let Some(bias) = bias {
        scores = scores.broadcast_add(&bias.narrow(2, start, qb.dim(2)?)?)?;
    }
    candle_nn::ops::softmax_last_dim(&scores)
}

/// Queries per block of the attention at most, whatever the memory bound.
const CAUSAL_BLOCK: usize = 128;

/// The training loss `Σᵢ wᵢ · NLLᵢ` (an f32 scalar) of the LM head `logits = hidden · Wᵀ`, for `hidden` `[.., h]`,
/// `weight` `[vocab, h]` and `target`, `token_weight` shaped as `hidden` without its last dim, over blocks of
/// rows: neither the logits nor their gradient ever exist for all tokens at once (at 4,096 tokens a 128k
/// vocabulary makes each 2.1 GB in f32). The loss is the graph's last node, so its gradient is known here up to
/// the scalar backward brings: each block's logits turn into their gradient at once and give their share of
/// d hidden and d W (summed in place on the CPU), and backward only scales those. Three head products a step,
/// as with whole logits; a frozen `W` gets no gradient, and without a tracked input no gradient is computed.
pub(crate) fn head_loss(hidden: &Tensor, weight: &Tensor, target: &Tensor, token_weight: &Tensor) -> Result<Tensor> {
    // ~24 MiB of f32 logits a block: below glibc's largest mmap threshold, so CPU blocks reuse heap memory.
    let block = ((6 << 20) / weight.dim(0)?.max(1)).clamp(16, 1024);
    head_loss_in_blocks(hidden, weight, target, token_weight, block)
}

/// [`head_loss`] with `block` rows of logits at a time.
fn head_loss_in_blocks(
    hidden: &Tensor,
    weight: &Tensor,
    target: &Tensor,
    token_weight: &Tensor,
    block: usize,
) -> Result<Tensor> {
    let (vocab, width) = weight.dims2()?;
    let rows = hidden.elem_count() / width;
    let target = target.flatten_all()?.to_dtype(DType::U32)?;
    let tw = token_weight.flatten_all()?.to_dtype(DType::F32)?;
    if (target.dim(0)?, tw.dim(0)?) != (rows, rows) {
        candle_core::bail!(
            "head loss: {rows} rows of hidden states, {} targets, {} token weights",
            target.dim(0)?,
            tw.dim(0)?
        );
    }
    let (want_h, want_w) = (hidden.track_op(), weight.track_op());
    let (h, w) = (hidden.detach().reshape((rows, width))?, weight.detach());
    let cpu_sum = want_w && w.device().is_cpu() && w.dtype() == DType::F32;
    let mut dw = if cpu_sum { Some(Tensor::zeros((vocab, width), DType::F32, w.device())?) } else { None };
    let (mut nll, mut dh) = (Vec::with_capacity(rows.div_ceil(block)), Vec::new());
    for start in (0..rows).step_by(block) {
        let len = block.min(rows - start);
        let hb = h.narrow(0, start, len)?;
        let logits = linear(&hb, &w, None)?.to_dtype(DType::F32)?;
        let (t, g) = (target.narrow(0, start, len)?, tw.narrow(0, start, len)?);
        if !(want_h || want_w) {
            nll.push(rows_nll(&logits, &t)?);
            continue;
        }
        let (n, d) = rows_nll_and_grad(&logits, &t, &g)?;
        drop(logits);
        nll.push(n);
        let d = d.to_dtype(w.dtype())?;
        if want_h {
            dh.push(d.matmul(&w)?);
        }
        if cpu_sum {
            if let Some(acc) = &dw {
                acc.inplace_op3(&d, &hb, &AddProductT)?;
            }
        } else if want_w {
            // Summed in f32 across blocks whatever the weight's dtype.
            add_to(&mut dw, d.t()?.matmul(&hb)?.to_dtype(DType::F32)?)?;
        }
    }
    drop(h);
    let loss = (Tensor::cat(&nll, 0)? * &tw)?.sum_all()?;
    let dh = if want_h { Some(Tensor::cat(&dh, 0)?.reshape(hidden.shape())?) } else { None };
    let dtype = weight.dtype();
    // Taken by the backward, so the unscaled gradients are freed as soon as the scaled ones exist.
    let formed = Mutex::new(Some((dh, dw)));
    attach(
        &[hidden, weight],
        loss,
        Box::new(move |_, _, grad| {
            let taken = formed.lock().map_err(|_| candle_core::Error::Msg("head loss: lock poisoned".into()))?.take();
            let Some((dh, dw)) = taken else {
                candle_core::bail!("head loss: backward runs once per forward (its gradients were formed there)")
            };
            let scale = |t: Tensor| t.broadcast_mul(&grad.to_dtype(t.dtype())?);
            let dw = dw.map(|d| scale(d)?.to_dtype(dtype)).transpose()?;
            Ok(vec![dh.map(scale).transpose()?, dw])
        }),
    )
}

/// `logsumexp(x) − x[target]` per row of f32 logits `[rows, vocab]`: the CPU row kernel (one max pass and one
/// exp pass a row), tensor ops elsewhere.
fn rows_nll(logits: &Tensor, target: &Tensor) -> Result<Tensor> {
    let picked = logits.gather(&target.unsqueeze(1)?, 1)?.squeeze(1)?;
    if !logits.device().is_cpu() {
        return logits.log_sum_exp(D::Minus1)? - picked;
    }
    let stats = logit_stats(logits)?;
    let nll = picked.to_vec1::<f32>()?.iter().zip(&stats).map(|(x, s)| (s.log_sum + s.max) - x).collect::<Vec<_>>();
    Tensor::from_vec(nll, target.shape(), logits.device())
}

/// [`rows_nll`] and its gradient times the row weights `g` (f32, `[rows]`), `g · (softmax(x) − onehot(target))`.
fn rows_nll_and_grad(logits: &Tensor, target: &Tensor, g: &Tensor) -> Result<(Tensor, Tensor)> {
    if logits.device().is_cpu() {
        let (nll, d) = nll_and_grad_cpu(&logits.contiguous()?, &target.to_vec1::<u32>()?, &g.to_vec1::<f32>()?)?;
        return Ok((Tensor::from_vec(nll, target.shape(), logits.device())?, d));
    }
    let nll = rows_nll(logits, target)?;
    let g = g.unsqueeze(1)?;
    let p = candle_nn::ops::softmax_last_dim(&logits.contiguous()?)?;
    Ok((nll, p.broadcast_mul(&g)?.scatter_add(&target.unsqueeze(1)?, &g.neg()?, 1)?))
}

/// Inverted dropout's mask drawn from `seed`: `1/(1-p)` where a unit is kept, 0 where dropped, shaped and typed
/// as `xs`. On the CPU a splitmix64 stream; on a GPU the device generator seeded with `seed`, so no mask crosses
/// the bus (the same seed gives the same mask on the same device, not across devices).
fn keep_mask(xs: &Tensor, p: f32, seed: u64) -> Result<Tensor> {
    let scale = 1.0 / (1.0 - p);
    let keep = if xs.device().is_cpu() {
        let mut rng = crate::rng::SplitMix(seed);
        let keep: Vec<f32> = (0..xs.elem_count()).map(|_| if rng.next_f32() >= p { scale } else { 0.0 }).collect();
        Tensor::from_vec(keep, xs.shape(), xs.device())?
    } else {
        xs.device().set_seed(seed)?;
        let u = Tensor::rand(0f32, 1f32, xs.shape(), xs.device())?;
        (u.ge(f64::from(p))?.to_dtype(DType::F32)? * f64::from(scale))?
    };
    keep.to_dtype(xs.dtype())
}

/// LLaMA's MLP activation `silu(gate) ⊙ up`. The graph keeps the two inputs, not `silu(gate)` and its parts.
pub(crate) fn swiglu(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    let (g, u) = (gate.detach(), up.detach());
    let value = match cpu_f32(&[&g, &u]) {
        true => Value::Cpu(swiglu_cpu(&g.contiguous()?, &u.contiguous()?)?),
        false => Value::Tensor((g.silu()? * u)?),
    };
    attach(
        &[gate, up],
        value,
        Box::new(|args, _, grad| {
            let (gate, up) = (args[0], args[1]);
            if cpu_f32(&[gate, up, grad]) {
                let (dg, du) = swiglu_grad_cpu(&grad.contiguous()?, &gate.contiguous()?, &up.contiguous()?)?;
                return Ok(vec![Some(dg), Some(du)]);
            }
            // silu'(x) = σ(x) (1 + x (1 − σ(x))).
            let sig = candle_nn::ops::sigmoid(gate)?;
            let dsilu = (&sig * ((gate * (sig.affine(-1.0, 1.0))?)? + 1.0)?)?;
            let dgate = ((grad * up)? * dsilu)?;
            let dup = (grad * gate.silu()?)?;
            Ok(vec![Some(dgate), Some(dup)])
        }),
    )
}

/// All f32 on the CPU: the operands the CPU kernels take (made contiguous first; they check shapes themselves).
fn cpu_f32(ts: &[&Tensor]) -> bool {
    ts.iter().all(|t| t.device().is_cpu() && t.dtype() == DType::F32)
}

/// RMSNorm as transformers computes it (statistics in f32, the weight applied in the input's dtype). The graph
/// keeps the input and the output; backward recomputes the statistics.
pub(crate) fn rms_norm(xs: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    let normalized = move |xs: &Tensor| -> Result<(Tensor, Tensor)> {
        let x = xs.to_dtype(DType::F32)?;
        let inv = ((x.sqr()?.mean_keepdim(D::Minus1)? + eps)?.sqrt()?.recip())?;
        Ok((x.broadcast_mul(&inv)?, inv))
    };
    // f32 on the CPU: row kernels (two passes a row each way) instead of seven tensor passes.
    let (x, w) = (xs.detach(), weight.detach());
    let value = match cpu_f32(&[&x, &w]) {
        true => Value::Cpu(rms_norm_cpu(&x.contiguous()?, &w.contiguous()?, eps)?),
        false => Value::Tensor(normalized(&x)?.0.to_dtype(xs.dtype())?.broadcast_mul(&w)?),
    };
    attach(
        &[xs, weight],
        value,
        Box::new(move |args, _, grad| {
            let (xs, weight) = (args[0], args[1]);
            if cpu_f32(&[xs, weight, grad]) {
                let (gx, gw) = rms_norm_grad_cpu(&grad.contiguous()?, &xs.contiguous()?, &weight.contiguous()?, eps)?;
                return Ok(vec![Some(gx), Some(gw)]);
            }
            let (n, inv) = normalized(xs)?;
            let h = weight.dim(0)?;
            // d weight = Σ g ⊙ n over every row; d x = inv ⊙ (dn − n · mean(dn ⊙ n)) with dn = g ⊙ weight.
            let gw = (grad * n.to_dtype(xs.dtype())?)?.reshape((grad.elem_count() / h, h))?.sum(0)?;
            let dn = grad.broadcast_mul(weight)?.to_dtype(DType::F32)?;
            let mean = (&dn * &n)?.mean_keepdim(D::Minus1)?;
            let gx = (dn - n.broadcast_mul(&mean)?)?.broadcast_mul(&inv)?.to_dtype(xs.dtype())?;
            Ok(vec![Some(gx), Some(gw)])
        }),
    )
}

/// Rotary embedding (halves rotated, as LLaMA in transformers) with candle's fused kernel, for `xs`
/// `[b, heads, t, d]` and per-row tables `[b, t, d/2]`. Backward rotates the gradient back (the same kernel with
/// `-sin`), so the graph keeps no product or half.
pub(crate) fn rope(xs: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let value = candle_nn::rotary_emb::rope(&xs.detach().contiguous()?, cos, sin)?;
    let (cos, sin) = (cos.clone(), sin.clone());
    attach(
        &[xs],
        value,
        Box::new(move |_, _, grad| {
            Ok(vec![Some(candle_nn::rotary_emb::rope(&grad.contiguous()?, &cos, &sin.neg()?)?)])
        }),
    )
}

/// A LoRA-adapted projection `x Wᵀ (+ bias) + scale · B A drop(x)` with a frozen `W`, as one op: the graph
/// keeps `x`, the factors and the output, not the dropped input, the rank-r product, the update and the base
/// output (four `[tokens, features]` tensors a projection); backward draws the dropout mask again.
/// `drop`: dropout probability and seed, when training.
pub(crate) fn lora_linear(
    xs: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    (a, b, scale): (&Tensor, &Tensor, f64),
    drop: Option<(f32, u64)>,
) -> Result<Tensor> {
    let forward = |xs: &Tensor, a: &Tensor, b: &Tensor| -> Result<Tensor> {
        let dropped = match drop {
            Some((p, seed)) => (xs * keep_mask(xs, p, seed)?)?,
            None => xs.clone(),
        };
        // The scale goes on the rank-r product, the smallest tensor.
        let update = (dropped.broadcast_matmul(&a.t()?)? * scale)?.broadcast_matmul(&b.t()?)?;
        linear(xs, weight, bias)? + update
    };
    if weight.track_op() || !(xs.track_op() || a.track_op() || b.track_op()) {
        return forward(xs, a, b);
    }
    let value = forward(&xs.detach(), &a.detach(), &b.detach())?;
    let weight = weight.clone();
    attach(
        &[xs, a, b],
        value,
        Box::new(move |args, _, grad| {
            let [xs, a, b] = [args[0], args[1], args[2]];
            let out = b.dim(0)?;
            let features = a.dim(1)?;
            let rows = xs.elem_count() / features;
            let g = grad.reshape((rows, out))?;
            let mask = drop
                .map(|(p, seed)| keep_mask(xs, p, seed))
                .transpose()?
                .map(|m| m.reshape((rows, features)))
                .transpose()?;
            let x = xs.reshape((rows, features))?;
            let dropped = match &mask {
                Some(m) => (&x * m)?,
                None => x,
            };
            let u = (dropped.matmul(&a.t()?)? * scale)?;
            let gb = g.t()?.matmul(&u)?;
            let gu = (g.matmul(b)? * scale)?;
            let ga = gu.t()?.matmul(&dropped)?;
            let mut gd = gu.matmul(a)?;
            if let Some(m) = &mask {
                gd = (gd * m)?;
            }
            let gx = (g.matmul(&weight)? + gd)?.reshape(xs.shape())?;
            Ok(vec![Some(gx), Some(ga), Some(gb)])
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// Repeats each of the kv heads `n` times (GQA), `[b, kv, s, d]` → `[b, kv·n, s, d]`: the composed form.
    fn repeat_kv(xs: &Tensor, n: usize) -> Result<Tensor> {
        let (b, kv, s, d) = xs.dims4()?;
        xs.unsqueeze(2)?.expand((b, kv, n, s, d))?.reshape((b, kv * n, s, d))
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        let d = (a.to_dtype(DType::F32).unwrap() - b.to_dtype(DType::F32).unwrap()).unwrap();
        d.abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar().unwrap()
    }

    /// Blocked attention's output and the gradients of q, k and v equal the composed softmax's (f32 and bf16),
    /// with a causal -inf bias, for one block and for blocks that do not divide the length, with every query
    /// head its own kv head and with two query heads a kv head (GQA, compared with repeated kv heads): the CPU
    /// kernel and the tensor ops other devices run.
    #[test]
    fn blocked_attention_matches_the_composed_softmax() {
        let dev = Device::Cpu;
        let var = |h: usize| Var::from_tensor(&Tensor::randn(0f32, 1.0, (2, h, 5, 4), &dev).unwrap()).unwrap();
        let bias = Tensor::from_vec(
            (0..25).map(|i| if i % 5 > i / 5 { f32::NEG_INFINITY } else { 0.0 }).collect::<Vec<_>>(),
            (1, 1, 5, 5),
            &dev,
        )
        .unwrap();
        let target = Tensor::randn(0f32, 1.0, (2, 5, 24), &dev).unwrap();
        let cases = [(DType::F32, 5, 1), (DType::F32, 2, 2), (DType::BF16, 3, 2)];
        for ((dtype, block, groups), tensor_ops) in cases.into_iter().flat_map(|c| [(c, false), (c, true)]) {
            let (q, k, v) = (var(6), var(6 / groups), var(6 / groups));
            let cast = |x: &Var| x.as_tensor().to_dtype(dtype).unwrap();
            let (qc, kc, vc) = (cast(&q), cast(&k), cast(&v));
            let fused = match tensor_ops {
                false => attention(&qc, &kc, &vc, groups, 0.5, Some(&bias), block).unwrap(),
                true => blocked_attention(&qc, &kc, &vc, groups, 0.5, Some(&bias), block).unwrap(),
            };
            let (kr, vr) = (repeat_kv(&kc, groups).unwrap(), repeat_kv(&vc, groups).unwrap());
            let scores = (qc.matmul(&kr.t().unwrap()).unwrap() * 0.5).unwrap().to_dtype(DType::F32).unwrap();
            let probs = candle_nn::ops::softmax(&scores.broadcast_add(&bias).unwrap(), D::Minus1).unwrap();
            let composed = probs.to_dtype(dtype).unwrap().matmul(&vr).unwrap();
            let composed = composed.transpose(1, 2).unwrap().reshape((2, 5, 24)).unwrap();
            let tol = if dtype == DType::F32 { 1e-5 } else { 3e-2 };
            let case = format!("{dtype:?} block {block} groups {groups} tensor ops {tensor_ops}");
            assert!(max_diff(&fused, &composed) <= tol, "{case}: values");
            let loss = |o: &Tensor| (o.to_dtype(DType::F32).unwrap() * &target).unwrap().sum_all().unwrap();
            let gf = loss(&fused).backward().unwrap();
            let gc = loss(&composed).backward().unwrap();
            for (name, x) in [("q", &q), ("k", &k), ("v", &v)] {
                let (g, want) = (gf.get(x.as_tensor()).unwrap(), gc.get(x.as_tensor()).unwrap());
                let d = max_diff(g, want);
                // bf16 rounds relative to the magnitude: gradients summed over heads and rows reach a few
                // units, where one bf16 step is 1/32.
                let scale = if dtype == DType::F32 { 1.0 } else { max_abs(want).max(1.0) };
                assert!(d <= tol * scale, "{case}: gradient of {name} differs by {d} (largest {scale})");
            }
        }
    }

    /// Many threads over few (row, head) pairs get smaller blocks, so the tasks' buffers stay within the budget.
    #[test]
    fn cpu_blocks_shrink_when_threads_outnumber_row_head_pairs() {
        assert_eq!(cpu_block(128, 4 * 9, 2), 128, "the 135M training batch on two cores");
        assert_eq!(cpu_block(128, 9, 64), 18, "one row of a 9-head model on 64 threads");
        assert_eq!(cpu_block(128, 32, 32), 128);
        assert_eq!(cpu_block(7, 1, 256), 1);
    }

    fn max_abs(a: &Tensor) -> f32 {
        a.to_dtype(DType::F32).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar().unwrap()
    }

    /// The fused LoRA projection's values and gradients (input, A, B) equal the composed ops', dropout included.
    #[test]
    fn lora_linear_matches_the_composed_projection() {
        let dev = Device::Cpu;
        let var = |shape: (usize, usize, usize)| {
            let t = Tensor::randn(0f32, 1.0, shape, &dev).unwrap();
            Var::from_tensor(&if shape.0 == 1 { t.squeeze(0).unwrap() } else { t }).unwrap()
        };
        let (x, a, b) = (var((2, 5, 6)), var((1, 3, 6)), var((1, 4, 3)));
        let w = Tensor::randn(0f32, 1.0, (4, 6), &dev).unwrap();
        let bias = Tensor::randn(0f32, 1.0, 4, &dev).unwrap();
        let target = Tensor::randn(0f32, 1.0, (2, 5, 4), &dev).unwrap();
        let h = (x.as_tensor() * 1.0).unwrap();
        let fused = lora_linear(&h, &w, Some(&bias), (a.as_tensor(), b.as_tensor(), 2.0), Some((0.25, 7))).unwrap();
        let mask = keep_mask(&h, 0.25, 7).unwrap();
        let update = ((&h * &mask).unwrap().broadcast_matmul(&a.as_tensor().t().unwrap()).unwrap() * 2.0)
            .unwrap()
            .broadcast_matmul(&b.as_tensor().t().unwrap())
            .unwrap();
        let composed = (h.broadcast_matmul(&w.t().unwrap()).unwrap().broadcast_add(&bias).unwrap() + update).unwrap();
        assert!(max_diff(&fused, &composed) <= 1e-5);
        let gf = (fused * &target).unwrap().sum_all().unwrap().backward().unwrap();
        let gc = (composed * &target).unwrap().sum_all().unwrap().backward().unwrap();
        for (name, v) in [("x", &x), ("A", &a), ("B", &b)] {
            let d = max_diff(gf.get(v.as_tensor()).unwrap(), gc.get(v.as_tensor()).unwrap());
            assert!(d <= 1e-4, "{name}: gradients differ by {d}");
        }
    }

    /// SwiGLU's values and gradients equal `silu(gate) * up` composed.
    #[test]
    fn swiglu_matches_the_composed_form() {
        let dev = Device::Cpu;
        // 21 elements (the kernels' scalar tail) and 35,000 (three parallel chunks, the last a short one).
        for shape in [(3, 7), (5, 7000)] {
            let g = Var::from_tensor(&Tensor::randn(0f32, 2.0, shape, &dev).unwrap()).unwrap();
            let u = Var::from_tensor(&Tensor::randn(0f32, 1.0, shape, &dev).unwrap()).unwrap();
            let target = Tensor::randn(0f32, 1.0, shape, &dev).unwrap();
            let fused = swiglu(g.as_tensor(), u.as_tensor()).unwrap();
            let composed = (g.as_tensor().silu().unwrap() * u.as_tensor()).unwrap();
            // Relative to the largest value: the kernel's exp is within 2 ulp of libm's, and values reach ~20.
            let (d, largest) = (max_diff(&fused, &composed), max_abs(&composed).max(1.0));
            assert!(d <= 1e-6 * largest, "{shape:?}: {d} (largest {largest})");
            let gf = (fused * &target).unwrap().sum_all().unwrap().backward().unwrap();
            let gc = (composed * &target).unwrap().sum_all().unwrap().backward().unwrap();
            for v in [&g, &u] {
                assert!(max_diff(gf.get(v.as_tensor()).unwrap(), gc.get(v.as_tensor()).unwrap()) <= 1e-5, "{shape:?}");
            }
        }
    }

    /// RMSNorm's values and gradients (input and weight) equal the composed form's.
    #[test]
    fn rms_norm_matches_the_composed_form() {
        let dev = Device::Cpu;
        // Rows of 8 (scalar tail only) and of 37 over 1,000 rows (vector lanes, a tail, and several parallel
        // tasks whose weight-gradient sums are added).
        for (rows, h) in [(6, 8), (1000, 37)] {
            let x = Var::from_tensor(&Tensor::randn(0f32, 2.0, (2, rows / 2, h), &dev).unwrap()).unwrap();
            let w = Var::from_tensor(&Tensor::randn(1f32, 0.5, h, &dev).unwrap()).unwrap();
            let target = Tensor::randn(0f32, 1.0, (2, rows / 2, h), &dev).unwrap();
            let fused = rms_norm(x.as_tensor(), w.as_tensor(), 1e-5).unwrap();
            let xs = x.as_tensor();
            let var = (xs.sqr().unwrap().mean_keepdim(D::Minus1).unwrap() + 1e-5).unwrap();
            let composed = xs.broadcast_div(&var.sqrt().unwrap()).unwrap().broadcast_mul(w.as_tensor()).unwrap();
            assert!(max_diff(&fused, &composed) <= 1e-5, "{rows}x{h}");
            let gf = (fused * &target).unwrap().sum_all().unwrap().backward().unwrap();
            let gc = (composed * &target).unwrap().sum_all().unwrap().backward().unwrap();
            for (name, v) in [("x", &x), ("weight", &w)] {
                let want = gc.get(v.as_tensor()).unwrap();
                let d = max_diff(gf.get(v.as_tensor()).unwrap(), want);
                // The weight's gradient sums 1,000 rows: relative to its size.
                assert!(d <= 1e-5 * max_abs(want).max(10.0), "{rows}x{h} {name}: gradients differ by {d}");
            }
        }
    }

    /// RoPE's values and gradient equal the composed rotation of halves.
    #[test]
    fn rope_matches_the_composed_rotation() {
        let dev = Device::Cpu;
        let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (2, 3, 4, 6), &dev).unwrap()).unwrap();
        let angles = Tensor::randn(0f32, 2.0, (2, 4, 3), &dev).unwrap();
        let (cos, sin) = (angles.cos().unwrap(), angles.sin().unwrap());
        let target = Tensor::randn(0f32, 1.0, (2, 3, 4, 6), &dev).unwrap();
        let h = (x.as_tensor() * 1.0).unwrap();
        let fused = rope(&h, &cos, &sin).unwrap();
        let (c, s) = (cos.unsqueeze(1).unwrap(), sin.unsqueeze(1).unwrap());
        let x1 = h.narrow(D::Minus1, 0, 3).unwrap();
        let x2 = h.narrow(D::Minus1, 3, 3).unwrap();
        let r1 = (x1.broadcast_mul(&c).unwrap() - x2.broadcast_mul(&s).unwrap()).unwrap();
        let r2 = (x1.broadcast_mul(&s).unwrap() + x2.broadcast_mul(&c).unwrap()).unwrap();
        let composed = Tensor::cat(&[r1, r2], D::Minus1).unwrap();
        assert!(max_diff(&fused, &composed) <= 1e-5);
        let gf = (fused * &target).unwrap().sum_all().unwrap().backward().unwrap();
        let gc = (composed * &target).unwrap().sum_all().unwrap().backward().unwrap();
        assert!(max_diff(gf.get(x.as_tensor()).unwrap(), gc.get(x.as_tensor()).unwrap()) <= 1e-5);
    }

    /// The blocked head loss and its gradients (hidden states and a trained head, under an upstream scale)
    /// equal the composed head + log-softmax + gather + weighted sum's, also in bf16; a frozen head gets no
    /// gradient and untracked inputs give the value alone.
    #[test]
    fn head_loss_matches_log_softmax_and_gather() {
        let dev = Device::Cpu;
        // 37 logits a row: two full vector chunks of the CPU kernels and a tail, in blocks of 3 rows over 40
        // rows; a vocabulary of 9000 at the default size: blocks of 699 rows, 1500 rows are three blocks, the
        // last a short one.
        for (vocab, rows, block) in [(37, 40, 3), (9000, 1500, 699)] {
            let hidden = Var::from_tensor(&Tensor::randn(0f32, 1.0, (rows / 4, 4, 6), &dev).unwrap()).unwrap();
            let weight = Var::from_tensor(&Tensor::randn(0f32, 1.0, (vocab, 6), &dev).unwrap()).unwrap();
            let target: Vec<u32> = (0..rows as u32).map(|i| (i * 7919) % vocab as u32).collect();
            let target = Tensor::from_vec(target, (rows / 4, 4), &dev).unwrap();
            let mask: Vec<f32> = (0..rows).map(|i| if i % 5 == 3 { 0.0 } else { 1.0 + (i % 3) as f32 }).collect();
            let mask = Tensor::from_vec(mask, (rows / 4, 4), &dev).unwrap();
            for dtype in [DType::F32, DType::BF16] {
                let (h, w) = (hidden.as_tensor().to_dtype(dtype).unwrap(), weight.as_tensor().to_dtype(dtype).unwrap());
                let fused = head_loss_in_blocks(&h, &w, &target, &mask, block).unwrap();
                let logits = h.broadcast_matmul(&w.t().unwrap()).unwrap().to_dtype(DType::F32).unwrap();
                let logp = candle_nn::ops::log_softmax(&logits, D::Minus1).unwrap();
                let nll = logp.gather(&target.unsqueeze(2).unwrap(), D::Minus1).unwrap().squeeze(2).unwrap().neg();
                let composed = (nll.unwrap() * &mask).unwrap().sum_all().unwrap();
                let case = format!("vocab {vocab} {dtype:?}");
                let (f, c) = (fused.to_scalar::<f32>().unwrap(), composed.to_scalar::<f32>().unwrap());
                assert!((f - c).abs() <= 1e-5 * c.abs(), "{case}: loss {f} vs {c}");
                let gf = (fused * 0.37).unwrap().backward().unwrap();
                let gc = (composed * 0.37).unwrap().backward().unwrap();
                for (name, x) in [("hidden", &hidden), ("weight", &weight)] {
                    let (g, want) = (gf.get(x.as_tensor()).unwrap(), gc.get(x.as_tensor()).unwrap());
                    let d = max_diff(g, want);
                    let tol = if dtype == DType::F32 { 1e-4 } else { 3e-2 * max_abs(want).max(1.0) };
                    assert!(d <= tol, "{case}: gradient of {name} differs by {d}");
                }
            }
            let frozen = weight.as_tensor().detach();
            let loss = head_loss_in_blocks(hidden.as_tensor(), &frozen, &target, &mask, block).unwrap();
            let grads = loss.backward().unwrap();
            assert!(grads.get(&frozen).is_none() && grads.get(hidden.as_tensor()).is_some(), "frozen head");
            let plain = head_loss_in_blocks(&hidden.as_tensor().detach(), &frozen, &target, &mask, block).unwrap();
            assert!(!plain.track_op(), "no tracked input, no graph");
            assert_eq!(plain.to_scalar::<f32>().unwrap(), loss.to_scalar::<f32>().unwrap());
        }
    }
}
