//! `x Wᵀ + b` for training, with a backward that keeps nothing it does not need.
//!
//! candle's matmul backward computes and keeps the gradient of both operands, trained or not (a LoRA step on a
//! 7B model would hold a full-size gradient for every frozen projection, 13.5 GB in bf16, and spend a third of
//! its backward matmuls on them), and it computes a weight's gradient from tracked tensors, so the gradient
//! carries a graph that keeps the incoming `[tokens, out]` gradient and a zero tensor of the weight's size
//! alive until backward ends. [`LinearOp`] computes both gradients on detached tensors, and none for a frozen
//! weight (one no variable reaches).

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp2, Layout, Shape, Tensor};

/// `xs Wᵀ (+ bias)` for `xs` of shape `[.., in]` and `W` of shape `[out, in]`, as `candle_nn::Linear`
/// computes it; on the autograd graph through [`LinearOp`].
pub(crate) fn linear(xs: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> candle_core::Result<Tensor> {
    // One GEMM over all rows of the batch: candle_nn's Linear broadcasts W over a `[b, t, in]` input and runs b
    // products of t rows, each packing all of W again (a batch of 16 short sequences, or a decoding step's b
    // rows of one token, then costs up to b times the packing and the thread hand-offs).
    let xs = xs.contiguous()?;
    let out = if xs.track_op() || weight.track_op() {
        xs.apply_op2(weight, LinearOp)?
    } else {
        xs.apply_op2_no_bwd(weight, &LinearOp)?
    };
    match bias {
        Some(b) => out.broadcast_add(b),
        None => Ok(out),
    }
}

/// The product `x Wᵀ` as one op: the same GEMM as a matmul with `W.t()` (so the same values); backward gives
/// `dy W` for `x` and `dyᵀ x` for `W` unless `W` is frozen, both computed from detached tensors.
struct LinearOp;

impl LinearOp {
    /// `x` (contiguous, `[.., k]`) times `Wᵀ` on any backend, through the backend's own GEMM.
    fn fwd<S: BackendStorage>(x: &S, xl: &Layout, w: &S, wl: &Layout) -> candle_core::Result<(S, Shape)> {
        let (n, k) = wl.shape().dims2()?;
        let dims = xl.shape().dims();
        if dims.last() != Some(&k) || !xl.is_contiguous() {
            candle_core::bail!("linear: input {dims:?} (contiguous: {}) against weight [{n}, {k}]", xl.is_contiguous());
        }
        let m = xl.shape().elem_count() / k;
        let lhs = Layout::contiguous_with_offset((m, k), xl.start_offset());
        let out = x.matmul(w, (1, m, n, k), &lhs, &wl.transpose(0, 1)?)?;
        let mut shape = dims.to_vec();
        *shape.last_mut().expect("rank >= 1") = n;
        Ok((out, Shape::from(shape)))
    }
}

impl CustomOp2 for LinearOp {
    fn name(&self) -> &'static str {
        "linear"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        xl: &Layout,
        w: &CpuStorage,
        wl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        Self::fwd(x, xl, w, wl)
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        x: &candle_core::CudaStorage,
        xl: &Layout,
        w: &candle_core::CudaStorage,
        wl: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        Self::fwd(x, xl, w, wl)
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let (n, k) = w.dims2()?;
        let g = grad.detach().reshape((grad.elem_count() / n, n))?;
        let gx = if x.track_op() { Some(g.matmul(&w.detach())?.reshape(x.shape())?) } else { None };
        let gw = if w.track_op() { Some(g.t()?.matmul(&x.detach().reshape((x.elem_count() / k, k))?)?) } else { None };
        Ok((gx, gw))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Var};

    /// Values and the input's gradient equal those of the plain matmul; the frozen weight gets no gradient.
    #[test]
    fn frozen_weight_gets_no_gradient_and_the_same_values() {
        let dev = Device::Cpu;
        let w = Tensor::randn(0f32, 1.0, (5, 3), &dev).unwrap();
        let b = Tensor::randn(0f32, 1.0, 5, &dev).unwrap();
        let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (2, 4, 3), &dev).unwrap()).unwrap();
        let h = (x.as_tensor() * 2.0).unwrap();
        let frozen = linear(&h, &w, Some(&b)).unwrap();
        let plain = candle_nn::Module::forward(&candle_nn::Linear::new(w.clone(), Some(b.clone())), &h).unwrap();
        assert_eq!(frozen.dims(), &[2, 4, 5]);
        assert_eq!(
            frozen.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            plain.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        );

        let grads = frozen.sqr().unwrap().sum_all().unwrap().backward().unwrap();
        let plain_grads = plain.sqr().unwrap().sum_all().unwrap().backward().unwrap();
        let gx = |g: &candle_core::backprop::GradStore| g.get(x.as_tensor()).unwrap().flatten_all().unwrap();
        let diff = (gx(&grads) - gx(&plain_grads)).unwrap().abs().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
        assert!(diff < 1e-5, "input gradients differ by {diff}");
        // candle keeps the plain matmul's gradient of `Wᵀ` (15 values) in the store; the frozen op keeps none.
        let held = |g: &candle_core::backprop::GradStore| -> usize {
            g.get_ids().map(|id| g.get_id(*id).unwrap().elem_count()).sum()
        };
        assert_eq!(held(&plain_grads) - held(&grads), 15);
    }

    /// A trained weight (a variable, or a cast of one) gets the plain matmul's gradient, as does the input.
    #[test]
    fn trained_weight_gets_the_plain_gradient() {
        let dev = Device::Cpu;
        let w = Var::from_tensor(&Tensor::randn(0f32, 1.0, (5, 3), &dev).unwrap()).unwrap();
        let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (2, 4, 3), &dev).unwrap()).unwrap();
        let target = Tensor::randn(0f32, 1.0, (2, 4, 5), &dev).unwrap();
        let ours = linear(x.as_tensor(), w.as_tensor(), None).unwrap();
        let plain =
            candle_nn::Module::forward(&candle_nn::Linear::new(w.as_tensor().clone(), None), x.as_tensor()).unwrap();
        let g1 = (ours * &target).unwrap().sum_all().unwrap().backward().unwrap();
        let g2 = (plain * &target).unwrap().sum_all().unwrap().backward().unwrap();
        for v in [&w, &x] {
            let d = (g1.get(v.as_tensor()).unwrap() - g2.get(v.as_tensor()).unwrap()).unwrap();
            assert!(d.abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap() < 1e-5);
        }
        // Through a bf16 cast the gradient still reaches the f32 variable.
        let cast = w.as_tensor().to_dtype(DType::BF16).unwrap();
        let y = linear(&x.as_tensor().to_dtype(DType::BF16).unwrap(), &cast, None).unwrap();
        let grads = y.to_dtype(DType::F32).unwrap().sum_all().unwrap().backward().unwrap();
        assert_eq!(grads.get(w.as_tensor()).unwrap().dtype(), DType::F32);
    }
}
