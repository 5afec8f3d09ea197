//! Training ops whose backward keeps less than their composed forms.
//!
//! candle's autograd keeps every intermediate of a composed op alive until backward: softmax over attention
//! scores as max/sub/exp/sum/div holds five `[batch, heads, T, T]` f32 tensors a layer, and log-softmax over a
//! 49k vocabulary three `[tokens, vocab]` f32 tensors. Each op here computes its value on the detached input
//! (candle's fused kernels where they exist; the temporaries are freed at once) and [`attach`]es it to the
//! input with a hand-written backward, so the graph keeps only the input and the output.

use std::sync::Mutex;

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, DType, Layout, Shape, Storage, Tensor, D};

type Result<T> = candle_core::Result<T>;

/// The backward of an attached value: `(input, output, gradient of the output)` → gradient of the input.
type Backward = Box<dyn Fn(&Tensor, &Tensor, &Tensor) -> Result<Tensor> + Send + Sync>;

/// `value` (computed from `input.detach()`) as a function of `input` on the autograd graph, with `bwd` as its
/// backward. Untracked inputs (inference) get `value` itself.
fn attach(input: &Tensor, value: Tensor, bwd: Backward) -> Result<Tensor> {
    if !input.track_op() {
        return Ok(value);
    }
    input.apply_op1(Attached { value: Mutex::new(Some(value)), bwd })
}

/// The custom op behind [`attach`]: its forward hands over the precomputed value (one copy into the op's own
/// storage), its backward calls the closure.
struct Attached {
    value: Mutex<Option<Tensor>>,
    bwd: Backward,
}

impl Attached {
    fn take(&self) -> Result<Tensor> {
        let value = self.value.lock().map_err(|_| candle_core::Error::Msg("attached value lock poisoned".into()))?;
        value.clone().ok_or_else(|| candle_core::Error::Msg("attached value already taken".into()))
    }

    /// A contiguous copy of `value`'s storage in its own allocation (`x·1 + 0` is exact).
    fn copy<S: BackendStorage>(s: &S, l: &Layout) -> Result<(S, Shape)> {
        Ok((s.affine(l, 1.0, 0.0)?, l.shape().clone()))
    }
}

impl CustomOp1 for Attached {
    fn name(&self) -> &'static str {
        "attached"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
        let value = self.take()?;
        let (s, l) = value.storage_and_layout();
        let out = match &*s {
            Storage::Cpu(s) => Self::copy(s, l),
            _ => candle_core::bail!("attached: the input is on the CPU, its value is not"),
        };
        drop(s);
        *self.value.lock().map_err(|_| candle_core::Error::Msg("attached value lock poisoned".into()))? = None;
        out
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(&self, _: &candle_core::CudaStorage, _: &Layout) -> Result<(candle_core::CudaStorage, Shape)> {
        let value = self.take()?;
        let (s, l) = value.storage_and_layout();
        let out = match &*s {
            Storage::Cuda(s) => Self::copy(s, l),
            _ => candle_core::bail!("attached: the input is on a CUDA device, its value is not"),
        };
        drop(s);
        *self.value.lock().map_err(|_| candle_core::Error::Msg("attached value lock poisoned".into()))? = None;
        out
    }

    fn bwd(&self, arg: &Tensor, res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some((self.bwd)(arg, res, grad_res)?))
    }
}

/// Attention probabilities `softmax(raw · scale + bias)` over the last axis, computed in f32 and returned in
/// `dtype`; `raw` is `q kᵀ` and `bias` the additive mask (0 or -inf), broadcast over `raw`. The graph keeps
/// `raw` and the probabilities only.
pub(crate) fn attention_probs(raw: &Tensor, scale: f64, bias: Option<&Tensor>, dtype: DType) -> Result<Tensor> {
    let mut scores = (raw.detach() * scale)?.to_dtype(DType::F32)?;
    if let Some(bias) = bias {
        scores = scores.broadcast_add(bias)?;
    }
    let probs = candle_nn::ops::softmax_last_dim(&scores)?;
    drop(scores);
    let probs = probs.to_dtype(dtype)?;
    attach(
        raw,
        probs,
        Box::new(move |raw, probs, grad| {
            // d raw = scale · p ⊙ (g − Σ g p), per row.
            let p = probs.to_dtype(DType::F32)?;
            let g = grad.to_dtype(DType::F32)?;
            let dot = (&g * &p)?.sum_keepdim(D::Minus1)?;
            ((g.broadcast_sub(&dot)? * p)? * scale)?.to_dtype(raw.dtype())
        }),
    )
}

/// Per-token negative log-likelihood `logsumexp(logits) − logits[target]` (f32, shape of `target`) for logits
/// `[.., vocab]` in any float dtype. The graph keeps the logits only; backward recomputes the softmax.
pub(crate) fn token_nll(logits: &Tensor, target: &Tensor) -> Result<Tensor> {
    let target = target.to_dtype(DType::U32)?.unsqueeze(D::Minus1)?;
    let nll = {
        let l = logits.detach().to_dtype(DType::F32)?;
        let picked = l.gather(&target, D::Minus1)?;
        (l.log_sum_exp(D::Minus1)? - picked.squeeze(D::Minus1)?)?
    };
    attach(
        logits,
        nll,
        Box::new(move |logits, _, grad| {
            // d logits = g · (softmax(logits) − onehot(target)).
            let g = grad.to_dtype(DType::F32)?.unsqueeze(D::Minus1)?;
            let p = candle_nn::ops::softmax_last_dim(&logits.to_dtype(DType::F32)?.contiguous()?)?;
            p.broadcast_mul(&g)?.scatter_add(&target, &g.neg()?, D::Minus1)?.to_dtype(logits.dtype())
        }),
    )
}

/// Inverted dropout with a mask drawn from `seed`, so training is reproducible and resumable. On the CPU the
/// mask is a splitmix64 stream; on a GPU it is drawn there by the device generator seeded with `seed`, so no
/// mask crosses the bus (the same seed gives the same mask on the same device, not across devices). Backward
/// draws the mask again instead of keeping it.
pub(crate) fn dropout(xs: &Tensor, p: f32, seed: u64) -> Result<Tensor> {
    let value = (xs.detach() * keep_mask(xs, p, seed)?)?;
    attach(xs, value, Box::new(move |xs, _, grad| grad * keep_mask(xs, p, seed)?))
}

/// `1/(1-p)` where a unit is kept, 0 where dropped, shaped and typed as `xs`.
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

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        let d = (a.to_dtype(DType::F32).unwrap() - b.to_dtype(DType::F32).unwrap()).unwrap();
        d.abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar().unwrap()
    }

    /// Probabilities and the gradient of `raw` equal the composed softmax's (f32 and bf16), with a causal
    /// -inf bias; the fused op keeps fewer values in the graph.
    #[test]
    fn attention_probs_match_the_composed_softmax() {
        let dev = Device::Cpu;
        let raw = Var::from_tensor(&Tensor::randn(0f32, 2.0, (2, 3, 5, 5), &dev).unwrap()).unwrap();
        let bias = Tensor::from_vec(
            (0..25).map(|i| if i % 5 > i / 5 { f32::NEG_INFINITY } else { 0.0 }).collect::<Vec<_>>(),
            (5, 5),
            &dev,
        )
        .unwrap();
        let weights = Tensor::randn(0f32, 1.0, (2, 3, 5, 5), &dev).unwrap();
        for dtype in [DType::F32, DType::BF16] {
            let x = raw.as_tensor().to_dtype(dtype).unwrap();
            let fused = attention_probs(&x, 0.125, Some(&bias), dtype).unwrap();
            let composed = candle_nn::ops::softmax(
                &(&x * 0.125).unwrap().to_dtype(DType::F32).unwrap().broadcast_add(&bias).unwrap(),
                D::Minus1,
            )
            .unwrap()
            .to_dtype(dtype)
            .unwrap();
            let tol = if dtype == DType::F32 { 1e-6 } else { 1e-2 };
            assert!(max_diff(&fused, &composed) <= tol, "{dtype:?} values");
            let loss = |p: &Tensor| (p.to_dtype(DType::F32).unwrap() * &weights).unwrap().sum_all().unwrap();
            let gf = loss(&fused).backward().unwrap();
            let gc = loss(&composed).backward().unwrap();
            let d = max_diff(gf.get(raw.as_tensor()).unwrap(), gc.get(raw.as_tensor()).unwrap());
            assert!(d <= tol, "{dtype:?} gradients differ by {d}");
        }
    }

    /// Dropout's values and gradient are those of `x · mask` with the mask drawn from the seed.
    #[test]
    fn dropout_draws_the_same_mask_in_backward() {
        let dev = Device::Cpu;
        let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (3, 64), &dev).unwrap()).unwrap();
        let h = (x.as_tensor() * 1.0).unwrap();
        let y = dropout(&h, 0.25, 7).unwrap();
        let mask = keep_mask(&h, 0.25, 7).unwrap();
        assert_eq!(max_diff(&y, &(h.detach() * &mask).unwrap()), 0.0);
        let dropped = mask.flatten_all().unwrap().to_vec1::<f32>().unwrap().iter().filter(|&&m| m == 0.0).count();
        assert!((20..=76).contains(&dropped), "{dropped} of 192 dropped at p = 0.25");
        let w = Tensor::randn(0f32, 1.0, (3, 64), &dev).unwrap();
        let g = (y * &w).unwrap().sum_all().unwrap().backward().unwrap();
        assert_eq!(max_diff(g.get(x.as_tensor()).unwrap(), &(w * mask).unwrap()), 0.0);
    }

    /// The NLL and the gradient of the logits equal log-softmax + gather's, also in bf16.
    #[test]
    fn token_nll_matches_log_softmax_and_gather() {
        let dev = Device::Cpu;
        let logits = Var::from_tensor(&Tensor::randn(0f32, 3.0, (2, 4, 11), &dev).unwrap()).unwrap();
        let target = Tensor::new(&[[0u32, 10, 3, 3], [7, 1, 0, 9]], &dev).unwrap();
        let weight = Tensor::new(&[[1f32, 0.0, 1.0, 1.0], [1.0, 1.0, 1.0, 0.0]], &dev).unwrap();
        for dtype in [DType::F32, DType::BF16] {
            let x = logits.as_tensor().to_dtype(dtype).unwrap();
            let fused = token_nll(&x, &target).unwrap();
            let logp = candle_nn::ops::log_softmax(&x.to_dtype(DType::F32).unwrap(), D::Minus1).unwrap();
            let composed =
                logp.gather(&target.unsqueeze(2).unwrap(), D::Minus1).unwrap().squeeze(2).unwrap().neg().unwrap();
            assert!(max_diff(&fused, &composed) <= 1e-5, "{dtype:?} values");
            let gf = (fused * &weight).unwrap().sum_all().unwrap().backward().unwrap();
            let gc = (composed * &weight).unwrap().sum_all().unwrap().backward().unwrap();
            let tol = if dtype == DType::F32 { 1e-6 } else { 1e-2 };
            let d = max_diff(gf.get(logits.as_tensor()).unwrap(), gc.get(logits.as_tensor()).unwrap());
            assert!(d <= tol, "{dtype:?} gradients differ by {d}");
        }
    }
}
