//! AdamW (PyTorch's update rule), the learning-rate schedule and global-norm clipping.

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::{CpuStorage, DType, Layout, Tensor, Var};

use super::config::Schedule;
use super::TrainError;
use crate::model::kernels::{cpu_f32, cpu_f32_mut};

/// Learning rate at optimizer step `step` (0-based): linear warm-up from 0, then decay to `min_lr` at `total`
/// (transformers' `get_cosine_schedule_with_warmup` / `get_linear_schedule_with_warmup`, with a floor).
pub fn learning_rate(schedule: Schedule, lr: f64, min_lr: f64, warmup: usize, total: usize, step: usize) -> f64 {
    if step < warmup {
        return lr * step as f64 / warmup.max(1) as f64;
    }
    let progress = ((step - warmup) as f64 / (total.saturating_sub(warmup)).max(1) as f64).min(1.0);
    match schedule {
        Schedule::Constant => lr,
        Schedule::Linear => min_lr + (lr - min_lr) * (1.0 - progress),
        Schedule::Cosine => min_lr + (lr - min_lr) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()),
    }
}

/// One trained tensor with its moments.
struct Slot {
    name: String,
    var: Var,
    m: Tensor,
    v: Tensor,
    decay: bool,
}

/// One step's constants.
struct Hyper {
    beta1: f64,
    beta2: f64,
    eps: f64,
    weight_decay: f64,
    lr: f64,
    /// Bias corrections `1 − β1^t`, `1 − β2^t`.
    c1: f64,
    c2: f64,
    /// The factor on every gradient (clipping and loss-scale division), applied as the update reads it.
    grad_scale: f64,
}

impl Slot {
    /// The update as tensor ops, on any device and dtype.
    fn update_with_ops(&mut self, g: &Tensor, h: &Hyper) -> candle_core::Result<()> {
        let g = if h.grad_scale != 1.0 { (g * h.grad_scale)? } else { g.clone() };
        let g = &g;
        self.m = ((&self.m * h.beta1)? + (g * (1.0 - h.beta1))?)?;
        self.v = ((&self.v * h.beta2)? + (g.sqr()? * (1.0 - h.beta2))?)?;
        let mut p = self.var.as_tensor().to_dtype(DType::F32)?;
        if self.decay && h.weight_decay > 0.0 {
            p = (p * (1.0 - h.lr * h.weight_decay))?;
        }
        let denom = ((&self.v / h.c2)?.sqrt()? + h.eps)?;
        let update = ((&self.m / h.c1)? / denom)?;
        let p = (p - (update * h.lr)?)?;
        self.var.set(&p.to_dtype(self.var.dtype())?)
    }

    /// The same update written into the moments and the f32 CPU parameter in place, with the same roundings.
    fn update_in_place(&mut self, g: &Tensor, h: &Hyper) -> candle_core::Result<()> {
        let g = g.contiguous()?;
        let scale = h.grad_scale as f32;
        self.m.inplace_op2(&g, &Moment { beta: h.beta1, square: false, scale })?;
        self.v.inplace_op2(&g, &Moment { beta: h.beta2, square: true, scale })?;
        let decay = if self.decay { h.lr * h.weight_decay } else { 0.0 };
        self.var.as_tensor().inplace_op3(&self.m, &self.v, &InPlace { eps: h.eps, lr: h.lr, decay, c1: h.c1, c2: h.c2 })
    }
}

/// AdamW with decoupled weight decay, f32 moments, state saved as safetensors.
pub struct AdamW {
    slots: Vec<Slot>,
    step: u64,
    beta1: f64,
    beta2: f64,
    eps: f64,
    weight_decay: f64,
}

impl AdamW {
    /// An optimizer over `vars`; names containing one of `no_decay` get no weight decay.
    pub fn new(
        vars: Vec<(String, Var)>,
        no_decay: &[String],
        (beta1, beta2, eps, weight_decay): (f64, f64, f64, f64),
    ) -> Result<Self, TrainError> {
        let slots = vars
            .into_iter()
            .map(|(name, var)| {
                // Two buffers: the CPU update writes the moments in place.
                let zeros = || Tensor::zeros(var.shape(), DType::F32, var.device());
                let decay = !no_decay.iter().any(|p| name.contains(p.as_str()));
                Ok(Slot { name, m: zeros()?, v: zeros()?, var, decay })
            })
            .collect::<Result<_, candle_core::Error>>()?;
        Ok(Self { slots, step: 0, beta1, beta2, eps, weight_decay })
    }

    /// The trained variables and their names.
    pub fn vars(&self) -> impl Iterator<Item = (&str, &Var)> {
        self.slots.iter().map(|s| (s.name.as_str(), &s.var))
    }

    /// Applies one update with gradients `grads` (by name) times `grad_scale` (from [`clip_grad_norm`]) at
    /// learning rate `lr`. The factor is applied as each gradient is read: no scaled copy of the gradients.
    pub fn step(&mut self, grads: &BTreeMap<String, Tensor>, lr: f64, grad_scale: f64) -> Result<(), TrainError> {
        self.step += 1;
        let t = self.step as i32;
        let (c1, c2) = (1.0 - self.beta1.powi(t), 1.0 - self.beta2.powi(t));
        let (beta1, beta2, eps, weight_decay) = (self.beta1, self.beta2, self.eps, self.weight_decay);
        let h = Hyper { beta1, beta2, eps, weight_decay, lr, c1, c2, grad_scale };
        for s in &mut self.slots {
            let Some(g) = grads.get(&s.name) else { continue };
            let g = g.to_dtype(DType::F32)?;
            if s.var.device().is_cpu() && s.var.dtype() == DType::F32 {
                s.update_in_place(&g, &h)?;
            } else {
                s.update_with_ops(&g, &h)?;
            }
        }
        Ok(())
    }

    /// Writes the moments and step count to `path` (safetensors).
    pub fn save(&self, path: &Path) -> Result<(), TrainError> {
        let mut tensors = BTreeMap::new();
        for s in &self.slots {
            tensors.insert(format!("m.{}", s.name), s.m.clone());
            tensors.insert(format!("v.{}", s.name), s.v.clone());
        }
        let step = Tensor::new(&[self.step as i64], &candle_core::Device::Cpu)?;
        tensors.insert("step".into(), step);
        crate::model::write_safetensors(&tensors, path)?;
        Ok(())
    }

    /// Restores what `save` wrote; every trained variable must have its moments there.
    pub fn load(&mut self, path: &Path) -> Result<(), TrainError> {
        let device = self.slots.first().map(|s| s.var.device().clone()).unwrap_or(candle_core::Device::Cpu);
        let t = crate::model::read_safetensors(path, &device).map_err(|e| TrainError::Resume(e.to_string()))?;
        let get = |k: &str| t.get(k).cloned().ok_or_else(|| TrainError::Resume(format!("{}: no {k}", path.display())));
        let step = get("step")?;
        self.step = match step.to_vec1::<i64>().ok().as_deref() {
            Some(&[n]) if n >= 0 => n as u64,
            _ => {
                return Err(TrainError::Resume(format!(
                    "{}: `step` must hold one non-negative i64, found {:?} {:?}; the checkpoint is damaged, resume from an earlier one",
                    path.display(),
                    step.dtype(),
                    step.dims()
                )))
            }
        };
        for s in &mut self.slots {
            for (moment, slot) in [("m", &mut s.m), ("v", &mut s.v)] {
                let key = format!("{moment}.{}", s.name);
                let t = get(&key)?;
                if t.dims() != s.var.dims() || t.dtype() != DType::F32 {
                    return Err(TrainError::Resume(format!(
                        "{}: {key} is {:?} {:?}, the parameter is {:?} F32; the checkpoint belongs to another model or is damaged",
                        path.display(),
                        t.dtype(),
                        t.dims(),
                        s.var.dims()
                    )));
                }
                *slot = t;
            }
        }
        Ok(())
    }
}

/// Each gradient's sum of squares, as f32 scalars still on the device (read back with the step's losses in
/// one host read, then given to [`clip_grad_norm`]).
pub fn squared_norms(grads: &BTreeMap<String, Tensor>) -> Result<Vec<Tensor>, TrainError> {
    Ok(grads.values().map(crate::model::kernels::sum_squares).collect::<Result<Vec<_>, _>>()?)
}

/// Global L2 norm of `grads / unscale` from their [`squared_norms`] read back as `squares` (PyTorch
/// `clip_grad_norm_`), and the factor for [`AdamW::step`]: `1 / unscale` (f16's loss scale; 1 otherwise), times
/// `max_norm / norm` when the norm is above `max_norm`. An inf/NaN norm (an f16 overflow) is returned with a
/// factor of 1: the step is skipped.
pub fn clip_grad_norm(squares: &[f32], max_norm: f64, unscale: f64) -> (f64, f64) {
    // Per-tensor sums in f32 on the device, added in f64 here.
    let norm = squares.iter().map(|&s| f64::from(s)).sum::<f64>().sqrt() / unscale;
    if !norm.is_finite() {
        return (norm, 1.0);
    }
    let clip = if max_norm > 0.0 && norm > max_norm { max_norm / (norm + 1e-6) } else { 1.0 };
    (norm, clip / unscale)
}

/// Elements per parallel chunk of the in-place updates.
const CHUNK: usize = 1 << 16;

/// A moment update in place on the CPU, `m ← β m + (1 − β) g` (or `g²` for the second moment): the tensor
/// form's operations in its order and f32 roundings, without its full-size temporaries (an AdamW step on the
/// CPU allocated 14 of them per parameter tensor, each paying fresh page faults above 32 MiB).
struct Moment {
    beta: f64,
    square: bool,
    /// The gradient's factor, as the tensor form's `g · scale` (candle's affine, `g · scale + 0`) rounds it.
    scale: f32,
}

impl candle_core::InplaceOp2 for Moment {
    fn name(&self) -> &'static str {
        "adamw-moment"
    }

    fn cpu_fwd(&self, m: &mut CpuStorage, ml: &Layout, g: &CpuStorage, gl: &Layout) -> candle_core::Result<()> {
        use rayon::prelude::*;
        let (m, g) = (cpu_f32_mut(m, ml, "adamw: a moment")?, cpu_f32(g, gl, "adamw: a gradient")?);
        let (beta, rest, scale) = (self.beta as f32, (1.0 - self.beta) as f32, self.scale);
        m.par_chunks_mut(CHUNK).zip(g.par_chunks(CHUNK)).for_each(|(m, g)| {
            for (m, &g) in m.iter_mut().zip(g) {
                let g = if scale != 1.0 { g * scale + 0.0 } else { g };
                let g = if self.square { g * g } else { g };
                *m = *m * beta + g * rest;
            }
        });
        Ok(())
    }
}

/// The parameter update in place on the CPU, `p ← p (1 − lr·wd) − lr · (m / c1) / (√(v / c2) + ε)`, in the
/// tensor form's order and f32 roundings (its scalars are f64 cast to f32 as candle's `affine` casts them).
struct InPlace {
    eps: f64,
    lr: f64,
    /// `lr · weight_decay`, 0 for a tensor without decay.
    decay: f64,
    c1: f64,
    c2: f64,
}

impl candle_core::InplaceOp3 for InPlace {
    fn name(&self) -> &'static str {
        "adamw-update"
    }

    fn cpu_fwd(
        &self,
        p: &mut CpuStorage,
        pl: &Layout,
        m: &CpuStorage,
        ml: &Layout,
        v: &CpuStorage,
        vl: &Layout,
    ) -> candle_core::Result<()> {
        use rayon::prelude::*;
        let p = cpu_f32_mut(p, pl, "adamw: a parameter")?;
        let (m, v) = (cpu_f32(m, ml, "adamw: a moment")?, cpu_f32(v, vl, "adamw: a moment")?);
        let keep = (1.0 - self.decay) as f32;
        let (inv_c1, inv_c2) = ((1.0 / self.c1) as f32, (1.0 / self.c2) as f32);
        let (eps, lr) = (self.eps as f32, self.lr as f32);
        let decay = self.decay > 0.0;
        p.par_chunks_mut(CHUNK).zip(m.par_chunks(CHUNK)).zip(v.par_chunks(CHUNK)).for_each(|((p, m), v)| {
            for ((p, &m), &v) in p.iter_mut().zip(m).zip(v) {
                let w = if decay { *p * keep } else { *p };
                let update = (m * inv_c1) / ((v * inv_c2).sqrt() + eps);
                *p = w - update * lr;
            }
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_warms_up_then_decays_to_the_floor() {
        let lr = |s, step| learning_rate(s, 1.0, 0.1, 10, 110, step);
        assert_eq!(lr(Schedule::Cosine, 0), 0.0);
        assert_eq!(lr(Schedule::Cosine, 5), 0.5);
        assert_eq!(lr(Schedule::Cosine, 10), 1.0);
        assert!((lr(Schedule::Cosine, 60) - 0.55).abs() < 1e-12);
        assert!((lr(Schedule::Cosine, 110) - 0.1).abs() < 1e-12);
        assert!((lr(Schedule::Linear, 60) - 0.55).abs() < 1e-12);
        assert_eq!(lr(Schedule::Constant, 100), 1.0);
    }

    #[test]
    fn adamw_matches_pytorch_first_steps() {
        // Numbers printed by PyTorch 2.15 (float32):
        //   p = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
        //   opt = torch.optim.AdamW([p], lr=0.1, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)
        //   for g in ([0.5, 0.25], [-0.5, 1.0], [0.125, -0.75]):
        //       p.grad = torch.tensor(g); opt.step(); print(p.tolist())
        // (as float32: 0.8990000486373901 -> 0.89900005, and so on)
        let torch: [[f32; 2]; 3] = [[0.899_000_05, -2.098], [0.903_364_2, -2.184_339_5], [0.895_338_65, -2.199_826]];
        let dev = candle_core::Device::Cpu;
        let var = Var::from_tensor(&Tensor::new(&[1f32, -2.0], &dev).unwrap()).unwrap();
        let mut opt = AdamW::new(vec![("w".into(), var.clone())], &[], (0.9, 0.999, 1e-8, 0.01)).unwrap();
        for (g, want) in [[0.5f32, 0.25], [-0.5, 1.0], [0.125, -0.75]].into_iter().zip(torch) {
            let grads = BTreeMap::from([("w".to_string(), Tensor::new(&g, &dev).unwrap())]);
            opt.step(&grads, 0.1, 1.0).unwrap();
            let p: Vec<f32> = var.as_tensor().to_vec1().unwrap();
            for (got, want) in p.iter().zip(want) {
                assert!((got - want).abs() <= 2e-7, "{p:?} vs PyTorch {want:?}");
            }
        }
    }

    /// The in-place CPU update gives the tensor-op form's bits, with and without weight decay, over steps.
    #[test]
    fn in_place_update_equals_the_tensor_ops_bit_for_bit() {
        let dev = candle_core::Device::Cpu;
        let p0 = Tensor::randn(0f32, 1.0, 70_001, &dev).unwrap();
        for decay in [true, false] {
            let slot = |p: &Tensor| {
                let zeros = || Tensor::zeros(70_001, DType::F32, &dev).unwrap();
                let var = Var::from_tensor(&p.copy().unwrap()).unwrap();
                Slot { name: "w".into(), var, m: zeros(), v: zeros(), decay }
            };
            let (mut a, mut b) = (slot(&p0), slot(&p0));
            for t in 1..=3 {
                let g = Tensor::randn(0f32, 0.5, 70_001, &dev).unwrap();
                let (c1, c2) = (1.0 - 0.9f64.powi(t), 1.0 - 0.95f64.powi(t));
                // A clipped step's factor on the last one.
                let grad_scale = if t == 3 { 0.3 } else { 1.0 };
                let h = Hyper { beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay: 0.1, lr: 3e-4, c1, c2, grad_scale };
                a.update_in_place(&g, &h).unwrap();
                b.update_with_ops(&g, &h).unwrap();
            }
            let bits = |t: &Tensor| t.to_vec1::<f32>().unwrap().iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(a.var.as_tensor()), bits(b.var.as_tensor()), "parameters, decay {decay}");
            assert_eq!(bits(&a.m), bits(&b.m), "first moments");
            assert_eq!(bits(&a.v), bits(&b.v), "second moments");
        }
    }

    /// Issue 19 (5): a damaged optimizer file is an error naming the file, never a panic.
    #[test]
    fn damaged_optimizer_state_is_refused_without_a_panic() {
        let dev = candle_core::Device::Cpu;
        let dir = tempfile::tempdir().unwrap();
        let var = Var::from_tensor(&Tensor::new(&[1f32, -2.0], &dev).unwrap()).unwrap();
        let mut opt = AdamW::new(vec![("w".into(), var)], &[], (0.9, 0.999, 1e-8, 0.0)).unwrap();
        let zeros = Tensor::zeros(2, DType::F32, &dev).unwrap();
        let write = |step: Tensor, m: Tensor| {
            let path = dir.path().join("optimizer.safetensors");
            let t = BTreeMap::from([("step".to_string(), step), ("m.w".into(), m), ("v.w".into(), zeros.clone())]);
            crate::model::write_safetensors(&t, &path).unwrap();
            path
        };
        let empty = Tensor::zeros(0, DType::I64, &dev).unwrap();
        let path = write(empty, zeros.clone());
        let err = opt.load(&path).unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "resume: {}: `step` must hold one non-negative i64, found I64 [0]; the checkpoint is damaged, resume \
                 from an earlier one",
                path.display()
            )
        );
        let path = write(Tensor::new(&[3i64], &dev).unwrap(), Tensor::zeros(3, DType::F32, &dev).unwrap());
        let err = opt.load(&path).unwrap_err().to_string();
        assert!(
            err.ends_with(
                "m.w is F32 [3], the parameter is [2] F32; the checkpoint belongs to another model or is damaged"
            ),
            "{err}"
        );
        let path = write(Tensor::new(&[3i64], &dev).unwrap(), zeros.clone());
        opt.load(&path).unwrap();
        assert_eq!(opt.step, 3);
    }
}
