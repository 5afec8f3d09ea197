//! `x Wᵀ + b`, with no gradient for a frozen `W`.
//!
//! candle's matmul backward computes and keeps the gradient of both operands, trained or not: a LoRA step on a
//! 7B model would hold a full-size gradient for every frozen projection (13.5 GB in bf16) and spend a third
//! of its backward matmuls on them. A frozen weight (one no variable reaches) therefore goes through
//! [`FrozenMatmul`], a custom op over the input alone whose backward returns `dy W` and nothing for `W`.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Storage, Tensor};

/// `xs Wᵀ (+ bias)` for `xs` of shape `[.., in]` and `W` of shape `[out, in]`, as `candle_nn::Linear`
/// computes it; when `xs` is on the autograd graph and `W` is not, `W` gets no gradient.
pub(crate) fn linear(xs: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> candle_core::Result<Tensor> {
    let out = if xs.track_op() && !weight.track_op() {
        xs.contiguous()?.apply_op1(FrozenMatmul { weight: weight.clone() })?
    } else {
        candle_nn::Module::forward(&candle_nn::Linear::new(weight.clone(), None), xs)?
    };
    match bias {
        Some(b) => out.broadcast_add(b),
        None => Ok(out),
    }
}

/// The product `x Wᵀ` with a constant `W`: the same GEMM as a matmul with `W.t()` (so the same values), and
/// a backward for `x` only.
struct FrozenMatmul {
    weight: Tensor,
}

impl FrozenMatmul {
    /// `x` (contiguous, `[.., k]`) times `Wᵀ` on any backend, through the backend's own GEMM.
    fn fwd<S: BackendStorage>(&self, x: &S, xl: &Layout, w: &S, wl: &Layout) -> candle_core::Result<(S, Shape)> {
        let (n, k) = wl.shape().dims2()?;
        let dims = xl.shape().dims();
        if dims.last() != Some(&k) || !xl.is_contiguous() {
            candle_core::bail!(
                "frozen-matmul: input {:?} (contiguous: {}) against weight [{n}, {k}]",
                dims,
                xl.is_contiguous()
            );
        }
        let m = xl.shape().elem_count() / k;
        let lhs = Layout::contiguous_with_offset((m, k), xl.start_offset());
        let out = x.matmul(w, (1, m, n, k), &lhs, &wl.transpose(0, 1)?)?;
        let mut shape = dims.to_vec();
        *shape.last_mut().expect("rank >= 1") = n;
        Ok((out, Shape::from(shape)))
    }
}

impl CustomOp1 for FrozenMatmul {
    fn name(&self) -> &'static str {
        "frozen-matmul"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (w, wl) = self.weight.storage_and_layout();
        match &*w {
            Storage::Cpu(w) => self.fwd(storage, layout, w, wl),
            _ => candle_core::bail!("frozen-matmul: the input is on the CPU, the weight is not"),
        }
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        storage: &candle_core::CudaStorage,
        layout: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        let (w, wl) = self.weight.storage_and_layout();
        match &*w {
            Storage::Cuda(w) => self.fwd(storage, layout, w, wl),
            _ => candle_core::bail!("frozen-matmul: the input is on a CUDA device, the weight is not"),
        }
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let n = self.weight.dim(0)?;
        let rows = grad_res.elem_count() / n;
        Ok(Some(grad_res.reshape((rows, n))?.matmul(&self.weight)?.reshape(arg.shape())?))
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

    /// A trained weight (a variable, or a cast of one) still gets its gradient through the plain matmul.
    #[test]
    fn trained_weight_keeps_its_gradient() {
        let dev = Device::Cpu;
        let w = Var::from_tensor(&Tensor::randn(0f32, 1.0, (5, 3), &dev).unwrap()).unwrap();
        let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (4, 3), &dev).unwrap()).unwrap();
        let cast = w.as_tensor().to_dtype(DType::BF16).unwrap();
        let y = linear(&x.as_tensor().to_dtype(DType::BF16).unwrap(), &cast, None).unwrap();
        let grads = y.to_dtype(DType::F32).unwrap().sum_all().unwrap().backward().unwrap();
        assert!(grads.get(w.as_tensor()).is_some());
    }
}
