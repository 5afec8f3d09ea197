//! CPU kernels for the softmax-shaped work of scoring, attention and the training loss, and an in-place GEMM sum.
//!
//! candle's CPU softmax and log-softmax call libm's scalar `expf` once per element and allocate a zeroed
//! tensor per step (max, subtract, exp, sum, log): in a scoring run that was ~15% of the CPU time beside the
//! matrix products (`perf`, benches/RESULTS.md). These kernels do a row in two or three passes with an exp
//! that vectorizes, compiled for AVX-512 and AVX2+FMA besides the baseline and chosen at run time.

use std::mem::MaybeUninit;

use candle_core::{CpuStorage, DType, Layout, Shape, Storage, Tensor, D};

/// Lanes each reduction keeps apart, so the loops vectorize (16 f32 = one AVX-512 register).
const LANES: usize = 16;

/// `exp(x)` in f32: Cephes' `expf` (range reduction by ln 2, degree-6 polynomial; within 2 ulp of the exact
/// value), 0 below −87.3 (so −∞ gives 0) and written branch-free so a loop over it vectorizes.
#[inline(always)]
fn exp_f32(x: f32) -> f32 {
    const HI: f32 = 88.376_26;
    const LO: f32 = -87.336_55;
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const C1: f32 = 0.693_359_4;
    const C2: f32 = -2.121_944_4e-4;
    // 1.5 · 2^23: adding it rounds to an integer held in the low mantissa bits.
    const ROUND: f32 = 12_582_912.0;
    let xc = x.clamp(LO, HI);
    let shifted = xc * LOG2E + ROUND;
    let n = shifted - ROUND;
    let r = xc - n * C1 - n * C2;
    let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r + 1.666_666_5e-1)
        * r
        + 0.5;
    let y = p * r * r + r + 1.0;
    let pow2 = f32::from_bits(((shifted.to_bits() as i32 - ROUND.to_bits() as i32 + 127) << 23) as u32);
    let out = y * pow2;
    // NaN compares false both ways and falls through to `out` (NaN), as libm's exp.
    if x < LO {
        0.0
    } else {
        out
    }
}

/// Softmax of `x · scale + bias` into `out` (`x` and `bias` at least as long as `out`), which it fills
/// without reading: the output buffer needs no zeroing first.
#[inline(always)]
fn softmax_row_impl(x: &[f32], bias: &[f32], scale: f32, out: &mut [MaybeUninit<f32>]) {
    let n = out.len();
    let (x, bias) = (&x[..n], &bias[..n]);
    let mut m = [f32::NEG_INFINITY; LANES];
    let split = n - n % LANES;
    for ((o, x), b) in out[..split].chunks_exact_mut(LANES).zip(x.chunks_exact(LANES)).zip(bias.chunks_exact(LANES)) {
        for i in 0..LANES {
            let v = x[i] * scale + b[i];
            o[i].write(v);
            m[i] = if v > m[i] { v } else { m[i] };
        }
    }
    let mut max = m.iter().fold(f32::NEG_INFINITY, |a, &b| if b > a { b } else { a });
    for j in split..n {
        let v = x[j] * scale + bias[j];
        out[j].write(v);
        max = if v > max { v } else { max };
    }
    // SAFETY: every element was written above.
    let out = unsafe { assume_init(out) };
    if max == f32::NEG_INFINITY {
        // Every key masked: no distribution; zeros rather than 0/0.
        out.fill(0.0);
        return;
    }
    let mut s = [0f32; LANES];
    for o in out[..split].chunks_exact_mut(LANES) {
        for i in 0..LANES {
            o[i] = exp_f32(o[i] - max);
            s[i] += o[i];
        }
    }
    let mut sum: f32 = s.iter().sum();
    for o in &mut out[split..] {
        *o = exp_f32(*o - max);
        sum += *o;
    }
    let inv = 1.0 / sum;
    for o in out.iter_mut() {
        *o *= inv;
    }
}

/// `out` as the f32s it holds.
///
/// # Safety
/// Every element of `out` must have been written.
#[inline(always)]
unsafe fn assume_init(out: &mut [MaybeUninit<f32>]) -> &mut [f32] {
    // SAFETY: `MaybeUninit<f32>` has the layout of `f32`, and the caller vouches every element is written.
    unsafe { &mut *(out as *mut [MaybeUninit<f32>] as *mut [f32]) }
}

/// The f32 data of a contiguous CPU tensor, lent to `f`; `what` names the caller in the error otherwise.
fn with_cpu_f32<R>(t: &Tensor, what: &str, f: impl FnOnce(&[f32]) -> R) -> candle_core::Result<R> {
    let (storage, layout) = t.storage_and_layout();
    match (&*storage, layout.contiguous_offsets()) {
        (Storage::Cpu(CpuStorage::F32(data)), Some((o1, o2))) => Ok(f(&data[o1..o2])),
        _ => candle_core::bail!("{what}: contiguous f32 CPU tensor expected"),
    }
}

/// What scoring reads from one row of logits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RowStats {
    /// The largest logit.
    pub max: f32,
    /// `ln Σ exp(x − max)`: a token's log-probability is `(x − max) − log_sum`.
    pub log_sum: f32,
    /// The first position of the largest logit.
    pub argmax: u32,
}

#[inline(always)]
fn row_stats_impl(x: &[f32]) -> RowStats {
    let n = x.len();
    let split = n - n % LANES;
    let mut m = [f32::NEG_INFINITY; LANES];
    let mut at = [0u32; LANES];
    for (c, chunk) in x[..split].chunks_exact(LANES).enumerate() {
        for i in 0..LANES {
            let gt = chunk[i] > m[i];
            m[i] = if gt { chunk[i] } else { m[i] };
            at[i] = if gt { (c * LANES + i) as u32 } else { at[i] };
        }
    }
    // Lanes hold the first maximum of their own positions; the smallest position among equal maxima wins.
    let (mut max, mut argmax) = (f32::NEG_INFINITY, 0u32);
    for i in 0..LANES {
        if m[i] > max || (m[i] == max && at[i] < argmax) {
            (max, argmax) = (m[i], at[i]);
        }
    }
    for (j, &v) in x.iter().enumerate().skip(split) {
        if v > max {
            (max, argmax) = (v, j as u32);
        }
    }
    let mut s = [0f32; LANES];
    for chunk in x[..split].chunks_exact(LANES) {
        for i in 0..LANES {
            s[i] += exp_f32(chunk[i] - max);
        }
    }
    let mut sum: f32 = s.iter().sum();
    for &v in &x[split..] {
        sum += exp_f32(v - max);
    }
    // A NaN logit is skipped by the max but its exp is NaN, so the sum (and every score of the row) is NaN.
    RowStats { max, log_sum: sum.ln(), argmax }
}

/// Compiles `$imp` again with AVX-512 and with AVX2+FMA enabled and calls the best the CPU has.
macro_rules! dispatch {
    ($(#[$doc:meta])* $vis:vis fn $name:ident = $imp:ident($($arg:ident: $ty:ty),*) $(-> $ret:ty)?) => {
        $(#[$doc])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f")]
                fn v4($($arg: $ty),*) $(-> $ret)? { $imp($($arg),*) }
                #[target_feature(enable = "avx2,fma")]
                fn v3($($arg: $ty),*) $(-> $ret)? { $imp($($arg),*) }
                if std::arch::is_x86_feature_detected!("avx512f") {
                    // SAFETY: the CPU has the features `v4` was compiled for.
                    return unsafe { v4($($arg),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                    // SAFETY: as above, for `v3`.
                    return unsafe { v3($($arg),*) };
                }
            }
            $imp($($arg),*)
        }
    };
}

dispatch! {
    /// `out = softmax(x · scale + bias)` over one row (`x`, `bias` at least as long as `out`).
    pub(crate) fn softmax_row = softmax_row_impl(x: &[f32], bias: &[f32], scale: f32, out: &mut [MaybeUninit<f32>])
}

dispatch! {
    /// Max, argmax and log-sum-exp of one row of logits.
    pub(crate) fn row_stats = row_stats_impl(x: &[f32]) -> RowStats
}

/// [`RowStats`] of each row of `logits` `[rows, vocab]` (f32): the kernel above on the CPU, rows in parallel;
/// the same numbers from tensor ops on other devices (three `[rows, 1]` results cross the bus, not the logits).
pub(crate) fn logit_stats(logits: &Tensor) -> candle_core::Result<Vec<RowStats>> {
    use rayon::prelude::*;
    let (_, vocab) = logits.dims2()?;
    if logits.device().is_cpu() {
        let logits = logits.to_dtype(DType::F32)?.contiguous()?;
        return with_cpu_f32(&logits, "logit_stats", |data| data.par_chunks(vocab).map(row_stats).collect());
    }
    let max = logits.max_keepdim(D::Minus1)?;
    let log_sum = logits.broadcast_sub(&max)?.exp()?.sum_keepdim(D::Minus1)?.log()?;
    let (max, log_sum) = (max.squeeze(D::Minus1)?.to_vec1::<f32>()?, log_sum.squeeze(D::Minus1)?.to_vec1::<f32>()?);
    let argmax = logits.argmax(D::Minus1)?.to_dtype(DType::U32)?.to_vec1::<u32>()?;
    Ok(max
        .into_iter()
        .zip(log_sum)
        .zip(argmax)
        .map(|((max, log_sum), argmax)| RowStats { max, log_sum, argmax })
        .collect())
}

/// `out = w · exp(x − shift)` over one row (`x` at least as long as `out`), filled without reading.
#[inline(always)]
fn scaled_exp_row_impl(x: &[f32], shift: f32, w: f32, out: &mut [MaybeUninit<f32>]) {
    for (o, &x) in out.iter_mut().zip(x) {
        o.write(exp_f32(x - shift) * w);
    }
}

dispatch! {
    /// `out = w · exp(x − shift)` over one row.
    fn scaled_exp_row = scaled_exp_row_impl(x: &[f32], shift: f32, w: f32, out: &mut [MaybeUninit<f32>])
}

/// The token NLL of each row of CPU logits `[rows, vocab]` (f32, contiguous), `logsumexp(x) − x[target]`, and
/// its gradient times the row's weight, `w · (softmax(x) − onehot(target))`: three passes a row (max, sum of
/// exp, the gradient), no `rows × vocab` temporary besides the gradient.
pub(crate) fn nll_and_grad_cpu(logits: &Tensor, targets: &[u32], w: &[f32]) -> candle_core::Result<(Vec<f32>, Tensor)> {
    use rayon::prelude::*;
    let (rows, vocab) = logits.dims2()?;
    if targets.len() != rows || w.len() != rows {
        candle_core::bail!("nll_and_grad_cpu: {rows} rows, {} targets, {} weights", targets.len(), w.len());
    }
    if let Some(t) = targets.iter().find(|&&t| t as usize >= vocab) {
        candle_core::bail!("token id {t} is outside the model's vocabulary of {vocab}");
    }
    let mut out = Vec::with_capacity(rows * vocab);
    let nll = with_cpu_f32(logits, "nll_and_grad_cpu", |data| {
        out.spare_capacity_mut()
            .par_chunks_mut(vocab)
            .zip(data.par_chunks(vocab))
            .enumerate()
            .map(|(r, (o, x))| {
                let stats = row_stats(x);
                let shift = stats.max + stats.log_sum;
                scaled_exp_row(x, shift, w[r], o);
                // SAFETY: scaled_exp_row wrote every element of the row.
                let o = unsafe { assume_init(o) };
                let t = targets[r] as usize;
                o[t] -= w[r];
                shift - x[t]
            })
            .collect::<Vec<f32>>()
    })?;
    // SAFETY: the rows above cover the buffer and each was written whole.
    unsafe { out.set_len(rows * vocab) };
    Ok((nll, Tensor::from_vec(out, (rows, vocab), logits.device())?))
}

/// The f32 slice of contiguous CPU storage (a custom op's input); `what` names it in the error otherwise.
pub(crate) fn cpu_f32<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> candle_core::Result<&'a [f32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::F32(v), Some((a, b))) => Ok(&v[a..b]),
        _ => candle_core::bail!("{what} must be contiguous f32 on the CPU"),
    }
}

/// The same, writable.
pub(crate) fn cpu_f32_mut<'a>(s: &'a mut CpuStorage, l: &Layout, what: &str) -> candle_core::Result<&'a mut [f32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::F32(v), Some((a, b))) => Ok(&mut v[a..b]),
        _ => candle_core::bail!("{what} must be contiguous f32 on the CPU"),
    }
}

/// A CPU kernel's output before it becomes a tensor: an attached op moves the buffer into its graph node
/// (a finished tensor's storage can only be copied there).
#[derive(Debug)]
pub(crate) struct CpuOut {
    /// The values, row-major.
    pub data: Vec<f32>,
    /// Their shape.
    pub shape: Shape,
}

impl CpuOut {
    /// The values as a CPU tensor (no copy).
    pub(crate) fn into_tensor(self) -> candle_core::Result<Tensor> {
        Tensor::from_vec(self.data, self.shape, &candle_core::Device::Cpu)
    }
}

/// `Σ a ⊙ b` over the length of `a` (`b` at least as long), in lanes so the loop vectorizes.
#[inline(always)]
fn dot_impl(a: &[f32], b: &[f32]) -> f32 {
    let (n, b) = (a.len(), &b[..a.len()]);
    let split = n - n % LANES;
    let mut acc = [0f32; LANES];
    for (a, b) in a[..split].chunks_exact(LANES).zip(b.chunks_exact(LANES)) {
        for i in 0..LANES {
            acc[i] += a[i] * b[i];
        }
    }
    acc.iter().sum::<f32>() + a[split..].iter().zip(&b[split..]).map(|(a, b)| a * b).sum::<f32>()
}

/// `dp ← scale · p ⊙ (dp − Σ dp ⊙ p)` over one row: the gradient of softmax scores from that of its output.
#[inline(always)]
fn softmax_grad_row_impl(p: &[f32], dp: &mut [f32], scale: f32) {
    let dot = dot_impl(dp, p);
    for (d, &p) in dp.iter_mut().zip(p) {
        *d = (*d - dot) * p * scale;
    }
}

dispatch! {
    /// `dp ← scale · p ⊙ (dp − Σ dp ⊙ p)` over one row.
    pub(crate) fn softmax_grad_row = softmax_grad_row_impl(p: &[f32], dp: &mut [f32], scale: f32)
}

/// `silu(g) ⊙ u` over one chunk.
#[inline(always)]
fn swiglu_impl(g: &[f32], u: &[f32], out: &mut [MaybeUninit<f32>]) {
    for ((o, &g), &u) in out.iter_mut().zip(g).zip(u) {
        o.write(g / (1.0 + exp_f32(-g)) * u);
    }
}

dispatch! {
    /// `silu(g) ⊙ u` over one chunk.
    fn swiglu_chunk = swiglu_impl(g: &[f32], u: &[f32], out: &mut [MaybeUninit<f32>])
}

/// The gradients of `silu(g) ⊙ u` over one chunk: `dg = d ⊙ u ⊙ σ(g) (1 + g (1 − σ(g)))`, `du = d ⊙ silu(g)`.
#[inline(always)]
fn swiglu_grad_impl(d: &[f32], g: &[f32], u: &[f32], dg: &mut [MaybeUninit<f32>], du: &mut [MaybeUninit<f32>]) {
    for ((((dg, du), &d), &g), &u) in dg.iter_mut().zip(du.iter_mut()).zip(d).zip(g).zip(u) {
        let sig = 1.0 / (1.0 + exp_f32(-g));
        dg.write(d * u * (sig * (1.0 + g * (1.0 - sig))));
        du.write(d * (g * sig));
    }
}

dispatch! {
    /// The gradients of `silu(g) ⊙ u` over one chunk.
    fn swiglu_grad_chunk = swiglu_grad_impl(
        d: &[f32], g: &[f32], u: &[f32], dg: &mut [MaybeUninit<f32>], du: &mut [MaybeUninit<f32>]
    )
}

/// Elements per parallel chunk of the elementwise kernels.
const CHUNK: usize = 1 << 14;

/// A fresh f32 buffer of `len` filled by `f` over parallel chunks of `chunk` slots (the chunk's index and its
/// slots); `f` must write every slot it is given.
pub(crate) fn filled(len: usize, chunk: usize, f: impl Fn(usize, &mut [MaybeUninit<f32>]) + Sync) -> Vec<f32> {
    use rayon::prelude::*;
    let mut out = Vec::with_capacity(len);
    out.spare_capacity_mut()[..len].par_chunks_mut(chunk.max(1)).enumerate().for_each(|(i, o)| f(i, o));
    // SAFETY: `f` writes every slot of its chunk (each caller's kernel fills its whole output slice).
    unsafe { out.set_len(len) };
    out
}

/// Refuses operands a kernel would read past or leave slots unwritten for: `dims` must all equal `want`.
fn same_dims(what: &str, want: &[usize], dims: &[&[usize]]) -> candle_core::Result<()> {
    if let Some(d) = dims.iter().find(|d| **d != want) {
        candle_core::bail!("{what}: operand {d:?} does not match {want:?}");
    }
    Ok(())
}

/// `silu(gate) ⊙ up` for contiguous f32 CPU tensors of one shape, in one pass with the vectorized exp.
pub(crate) fn swiglu_cpu(gate: &Tensor, up: &Tensor) -> candle_core::Result<CpuOut> {
    same_dims("swiglu", gate.dims(), &[up.dims()])?;
    let n = gate.elem_count();
    let out = with_cpu_f32(gate, "swiglu", |g| {
        with_cpu_f32(up, "swiglu", |u| filled(n, CHUNK, |i, o| swiglu_chunk(&g[i * CHUNK..], &u[i * CHUNK..], o)))
    })??;
    Ok(CpuOut { data: out, shape: gate.shape().clone() })
}

/// The gradients of [`swiglu_cpu`] (gate, up) for the gradient `d` of its output, in one pass.
pub(crate) fn swiglu_grad_cpu(d: &Tensor, gate: &Tensor, up: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
    use rayon::prelude::*;
    same_dims("swiglu backward", gate.dims(), &[up.dims(), d.dims()])?;
    let n = gate.elem_count();
    let (mut dg, mut du) = (Vec::with_capacity(n), Vec::with_capacity(n));
    with_cpu_f32(d, "swiglu backward", |d| {
        with_cpu_f32(gate, "swiglu backward", |g| {
            with_cpu_f32(up, "swiglu backward", |u| {
                dg.spare_capacity_mut()[..n]
                    .par_chunks_mut(CHUNK)
                    .zip(du.spare_capacity_mut()[..n].par_chunks_mut(CHUNK))
                    .enumerate()
                    .for_each(|(i, (dg, du))| {
                        let at = i * CHUNK;
                        swiglu_grad_chunk(&d[at..], &g[at..], &u[at..], dg, du)
                    })
            })
        })
    })???;
    // SAFETY: the chunks cover both buffers and the kernel writes every slot of each.
    unsafe {
        dg.set_len(n);
        du.set_len(n);
    }
    Ok((Tensor::from_vec(dg, gate.shape(), gate.device())?, Tensor::from_vec(du, gate.shape(), gate.device())?))
}

/// `1 / sqrt(mean(x²) + eps)` of one row, as the composed form computes it (sum, divide, add, root, invert).
#[inline(always)]
fn inv_rms_impl(x: &[f32], eps: f32) -> f32 {
    1.0 / (dot_impl(x, x) / x.len() as f32 + eps).sqrt()
}

dispatch! {
    /// `1 / sqrt(mean(x²) + eps)` of one row.
    fn inv_rms = inv_rms_impl(x: &[f32], eps: f32) -> f32
}

/// RMSNorm's gradients over one row, given its `inv` = 1/rms: writes `dx = inv · (dn − n · mean(dn ⊙ n))` with
/// `n = x · inv`, `dn = g ⊙ w`, and adds `g ⊙ n` into `gw`.
#[inline(always)]
fn rms_norm_grad_row_impl(g: &[f32], x: &[f32], w: &[f32], inv: f32, dx: &mut [MaybeUninit<f32>], gw: &mut [f32]) {
    let h = x.len();
    let mut dot = 0f32;
    for (((&g, &x), &w), gw) in g.iter().zip(x).zip(w).zip(gw.iter_mut()) {
        let n = x * inv;
        dot += g * w * n;
        *gw += g * n;
    }
    let mean = dot / h as f32;
    for (((dx, &g), &x), &w) in dx.iter_mut().zip(g).zip(x).zip(w) {
        dx.write((g * w - x * inv * mean) * inv);
    }
}

dispatch! {
    /// RMSNorm's gradients over one row.
    fn rms_norm_grad_row = rms_norm_grad_row_impl(
        g: &[f32], x: &[f32], w: &[f32], inv: f32, dx: &mut [MaybeUninit<f32>], gw: &mut [f32]
    )
}

/// RMSNorm `x / rms(x) ⊙ w` over the last dim of contiguous f32 CPU tensors, one pass a row for the statistic
/// and one for the output.
pub(crate) fn rms_norm_cpu(x: &Tensor, w: &Tensor, eps: f64) -> candle_core::Result<CpuOut> {
    let h = rms_width(x, w)?;
    let out = with_cpu_f32(x, "rms_norm", |xs| {
        with_cpu_f32(w, "rms_norm", |w| {
            filled(xs.len(), h, |r, o| {
                let x = &xs[r * h..(r + 1) * h];
                let inv = inv_rms(x, eps as f32);
                for ((o, &x), &w) in o.iter_mut().zip(x).zip(w) {
                    o.write(x * inv * w);
                }
            })
        })
    })??;
    Ok(CpuOut { data: out, shape: x.shape().clone() })
}

/// The width of RMSNorm's rows: the weight's length, which must be `x`'s last dim (the kernels write whole rows).
fn rms_width(x: &Tensor, w: &Tensor) -> candle_core::Result<usize> {
    let h = w.elem_count();
    if h == 0 || x.dims().last() != Some(&h) {
        candle_core::bail!("rms_norm: input {:?} against a weight of {h}", x.dims());
    }
    Ok(h)
}

/// The gradients (x, weight) of [`rms_norm_cpu`] for the gradient `g` of its output: two passes a row, the
/// weight's gradient summed per parallel task and then across tasks.
pub(crate) fn rms_norm_grad_cpu(g: &Tensor, x: &Tensor, w: &Tensor, eps: f64) -> candle_core::Result<(Tensor, Tensor)> {
    use rayon::prelude::*;
    let h = rms_width(x, w)?;
    same_dims("rms_norm backward", x.dims(), &[g.dims()])?;
    let n = x.elem_count();
    // Rows per task: enough to amortize a `[h]` partial sum, few enough to keep both cores busy.
    let rows = (CHUNK / h).max(1);
    let mut dx = Vec::with_capacity(n);
    let gw = with_cpu_f32(g, "rms_norm backward", |gs| {
        with_cpu_f32(x, "rms_norm backward", |xs| {
            with_cpu_f32(w, "rms_norm backward", |w| {
                dx.spare_capacity_mut()[..n]
                    .par_chunks_mut(rows * h)
                    .zip(gs.par_chunks(rows * h).zip(xs.par_chunks(rows * h)))
                    .map(|(dx, (g, x))| {
                        let mut gw = vec![0f32; h];
                        for ((dx, g), x) in dx.chunks_mut(h).zip(g.chunks(h)).zip(x.chunks(h)) {
                            rms_norm_grad_row(g, x, w, inv_rms(x, eps as f32), dx, &mut gw);
                        }
                        gw
                    })
                    .reduce_with(|mut a, b| {
                        a.iter_mut().zip(&b).for_each(|(a, b)| *a += b);
                        a
                    })
                    .unwrap_or_else(|| vec![0f32; h])
            })
        })
    })???;
    // SAFETY: every row of the buffer was written whole.
    unsafe { dx.set_len(n) };
    Ok((Tensor::from_vec(dx, x.shape(), x.device())?, Tensor::from_vec(gw, w.shape(), w.device())?))
}

/// `Σ x²` over one chunk.
#[inline(always)]
fn sum_squares_impl(x: &[f32]) -> f32 {
    dot_impl(x, x)
}

dispatch! {
    /// `Σ x²` over one chunk.
    fn sum_squares_chunk = sum_squares_impl(x: &[f32]) -> f32
}

/// `Σ x²` of a tensor as an f32 scalar on its device: on the CPU (f32) one parallel pass with the chunks' sums
/// added in f64, elsewhere `sqr` and `sum_all` (a squared copy of the tensor first).
pub(crate) fn sum_squares(t: &Tensor) -> candle_core::Result<Tensor> {
    use rayon::prelude::*;
    if t.device().is_cpu() && t.dtype() == DType::F32 {
        let t = t.contiguous()?;
        let sum = with_cpu_f32(&t, "sum_squares", |x| {
            x.par_chunks(CHUNK).map(|c| f64::from(sum_squares_chunk(c))).sum::<f64>()
        })?;
        return Tensor::new(sum as f32, t.device());
    }
    t.to_dtype(DType::F32)?.sqr()?.sum_all()
}

/// A strided f32 matrix for [`gemm_f32`]: its first element, row stride and column stride (in elements).
#[derive(Clone, Copy)]
pub(crate) struct Mat(pub *const f32, pub isize, pub isize);

/// `dst = lhs · rhs`, or `dst += lhs · rhs` with `add`, for `[m, k]` times `[k, n]` into a row-major `dst`
/// (its first element and row stride), through gemm with `par`.
///
/// # Safety
/// Each matrix must lie inside its allocation under its strides, and `dst` must overlap neither operand nor
/// anything another thread touches meanwhile.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn gemm_f32(
    m: usize,
    n: usize,
    k: usize,
    dst: (*mut f32, usize),
    add: bool,
    lhs: Mat,
    rhs: Mat,
    par: gemm::Parallelism,
) {
    // SAFETY: forwarded from the caller; gemm reads `dst` only with `add`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.0,
            1,
            dst.1 as isize,
            add,
            lhs.0,
            lhs.2,
            lhs.1,
            rhs.0,
            rhs.2,
            rhs.1,
            1.0f32,
            1.0f32,
            false,
            false,
            false,
            par,
        )
    }
}

/// `acc += aᵀ · b` in place on the CPU, for contiguous f32 `acc` `[n, k]`, `a` `[m, n]` and `b` `[m, k]`: a
/// weight gradient summed over blocks of rows in one buffer (a product per block would be a fresh `[n, k]`
/// buffer, and an add, each time).
pub(crate) struct AddProductT;

impl candle_core::InplaceOp3 for AddProductT {
    fn name(&self) -> &'static str {
        "add-product-t"
    }

    fn cpu_fwd(
        &self,
        acc: &mut CpuStorage,
        al: &Layout,
        a: &CpuStorage,
        l1: &Layout,
        b: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<()> {
        let (&[n, k], &[m, n1], &[m2, k2]) = (al.dims(), l1.dims(), l2.dims()) else {
            candle_core::bail!(
                "add-product-t: 2-d operands expected, got {:?} {:?} {:?}",
                al.dims(),
                l1.dims(),
                l2.dims()
            )
        };
        if (n1, m2, k2) != (n, m, k) {
            candle_core::bail!("add-product-t: [{n}, {k}] += [{m}, {n1}]ᵀ · [{m2}, {k2}] does not fit");
        }
        let acc = cpu_f32_mut(acc, al, "add-product-t: the sum")?;
        let (a, b) = (cpu_f32(a, l1, "add-product-t: a")?, cpu_f32(b, l2, "add-product-t: b")?);
        let threads = rayon::current_num_threads();
        let par = if threads > 1 { gemm::Parallelism::Rayon(threads) } else { gemm::Parallelism::None };
        // SAFETY: the three slices hold exactly [n, k], [m, n] and [m, k] row-major (checked above) and `acc`
        // is borrowed mutably; aᵀ is `a` read with its strides swapped.
        unsafe {
            let (at, b) = (Mat(a.as_ptr(), 1, n as isize), Mat(b.as_ptr(), k as isize, 1));
            gemm_f32(n, k, m, (acc.as_mut_ptr(), k), true, at, b, par)
        };
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ulps(a: f32, b: f32) -> u32 {
        (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs() as u32
    }

    #[test]
    fn exp_is_within_two_ulp_of_the_exact_value_over_its_range() {
        let mut worst = 0;
        let mut x = -87.3f32;
        while x < 88.3 {
            let want = (x as f64).exp() as f32;
            worst = worst.max(ulps(exp_f32(x), want));
            x += 0.000_37;
        }
        assert!(worst <= 2, "worst error {worst} ulp");
        assert_eq!(exp_f32(0.0), 1.0);
        assert_eq!(exp_f32(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp_f32(-100.0), 0.0);
        assert!(exp_f32(f32::NAN).is_nan());
    }

    fn softmax(x: &[f32], bias: &[f32], scale: f32) -> Vec<f32> {
        let mut out = vec![MaybeUninit::uninit(); x.len()];
        softmax_row(x, bias, scale, &mut out);
        // SAFETY: softmax_row writes every element.
        out.into_iter().map(|v| unsafe { v.assume_init() }).collect()
    }

    /// Rows of awkward lengths (not multiples of the lanes) with masked entries, against f64.
    #[test]
    fn softmax_row_matches_f64_softmax_with_masks_and_odd_lengths() {
        let mut seed = 7u64;
        let mut rand = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % 10_000) as f32 / 500.0 - 10.0
        };
        for n in [1, 15, 16, 17, 100, 513] {
            let x: Vec<f32> = (0..n).map(|_| rand()).collect();
            let bias: Vec<f32> = (0..n).map(|j| if j % 3 == 1 { f32::NEG_INFINITY } else { 0.0 }).collect();
            let out = softmax(&x, &bias, 0.125);
            let logits: Vec<f64> = x.iter().zip(&bias).map(|(&x, &b)| f64::from(x) * 0.125 + f64::from(b)).collect();
            let max = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let sum: f64 = logits.iter().map(|l| (l - max).exp()).sum();
            for (j, (&o, l)) in out.iter().zip(&logits).enumerate() {
                let want = (l - max).exp() / sum;
                assert!((f64::from(o) - want).abs() <= 1e-6 * want.max(1e-30), "n {n} j {j}: {o} vs {want}");
            }
        }
        assert_eq!(softmax(&[1.0, 2.0, 3.0], &[f32::NEG_INFINITY; 3], 1.0), [0.0; 3], "a fully masked row");
    }

    #[test]
    fn row_stats_give_the_first_argmax_and_the_log_sum_exp() {
        let mut x: Vec<f32> = (0..1000).map(|i| ((i * 37) % 101) as f32 * 0.1 - 3.0).collect();
        x[40] = 9.0;
        x[500] = 9.0;
        x[999] = 9.0;
        let s = row_stats(&x);
        assert_eq!((s.max, s.argmax), (9.0, 40));
        let want = x.iter().map(|&v| (f64::from(v) - 9.0).exp()).sum::<f64>().ln();
        assert!((f64::from(s.log_sum) - want).abs() < 1e-6, "{} vs {want}", s.log_sum);
        // The maximum in the scalar tail only.
        let s =
            row_stats(&[0.0; 17].iter().enumerate().map(|(i, _)| if i == 16 { 1.0 } else { 0.0 }).collect::<Vec<_>>());
        assert_eq!((s.max, s.argmax), (1.0, 16));
        assert!(row_stats(&[0.0, f32::NAN, 1.0]).log_sum.is_nan());
    }

    /// `acc += aᵀ b` in place equals the product and add as tensors, over several calls; misfit shapes are
    /// refused by name.
    #[test]
    fn add_product_t_accumulates_the_transposed_product() {
        let dev = candle_core::Device::Cpu;
        let acc = Tensor::randn(0f32, 1.0, (37, 19), &dev).unwrap();
        let mut want = acc.copy().unwrap();
        for m in [5, 64] {
            let a = Tensor::randn(0f32, 1.0, (m, 37), &dev).unwrap();
            let b = Tensor::randn(0f32, 1.0, (m, 19), &dev).unwrap();
            acc.inplace_op3(&a, &b, &AddProductT).unwrap();
            want = (want + a.t().unwrap().matmul(&b).unwrap()).unwrap();
        }
        let diff = (acc - &want).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(diff <= 1e-5, "differs by {diff}");
        let a = Tensor::zeros((4, 36), DType::F32, &dev).unwrap();
        let b = Tensor::zeros((4, 19), DType::F32, &dev).unwrap();
        let err = want.inplace_op3(&a, &b, &AddProductT).unwrap_err().to_string();
        assert!(err.contains("[37, 19] += [4, 36]ᵀ · [4, 19] does not fit"), "{err}");
    }

    /// The NLL and its weighted gradient per row match log-softmax in f64; a target past the vocabulary is
    /// refused with the id and the vocabulary size.
    #[test]
    fn nll_and_grad_match_log_softmax() {
        let dev = candle_core::Device::Cpu;
        let (rows, vocab) = (3, 45);
        let x: Vec<f32> = (0..rows * vocab).map(|i| ((i * 29) % 53) as f32 * 0.2 - 5.0).collect();
        let (targets, w) = ([0u32, 44, 17], [1.0f32, 0.0, 2.5]);
        let logits = Tensor::from_vec(x.clone(), (rows, vocab), &dev).unwrap();
        let (nll, grad) = nll_and_grad_cpu(&logits, &targets, &w).unwrap();
        let grad = grad.to_vec2::<f32>().unwrap();
        for r in 0..rows {
            let row: Vec<f64> = x[r * vocab..(r + 1) * vocab].iter().map(|&v| f64::from(v)).collect();
            let lse = row.iter().map(|v| v.exp()).sum::<f64>().ln();
            let t = targets[r] as usize;
            assert!((f64::from(nll[r]) - (lse - row[t])).abs() < 1e-5, "row {r}: nll {}", nll[r]);
            for (j, &g) in grad[r].iter().enumerate() {
                let want = f64::from(w[r]) * ((row[j] - lse).exp() - if j == t { 1.0 } else { 0.0 });
                assert!((f64::from(g) - want).abs() < 1e-6, "row {r} col {j}: {g} vs {want}");
            }
        }
        let err = nll_and_grad_cpu(&logits, &[0, 45, 1], &w).unwrap_err().to_string();
        assert!(err.contains("token id 45 is outside the model's vocabulary of 45"), "{err}");
    }

    /// The softmax-gradient row kernel matches its formula in f64, over lengths with and without a tail.
    #[test]
    fn softmax_grad_rows_match_the_formula() {
        for n in [5, 16, 37] {
            let p: Vec<f32> = (0..n).map(|j| ((j * 7) % 11) as f32 / 60.0).collect();
            let g: Vec<f32> = (0..n).map(|j| ((j * 5) % 13) as f32 * 0.3 - 1.5).collect();
            let mut d = g.clone();
            softmax_grad_row(&p, &mut d, 0.25);
            let dot: f64 = p.iter().zip(&g).map(|(&p, &g)| f64::from(p) * f64::from(g)).sum();
            for j in 0..n {
                let want = 0.25 * f64::from(p[j]) * (f64::from(g[j]) - dot);
                assert!((f64::from(d[j]) - want).abs() < 1e-6, "n {n} j {j}: {} vs {want}", d[j]);
            }
        }
    }

    /// The sum of squares of 3 million values is within 1e-6 of the f64 sum (a single f32 accumulator drifts
    /// by ~1e-4 there), with an odd tail; other dtypes take the tensor path.
    #[test]
    fn sum_squares_is_close_to_the_f64_sum() {
        let dev = candle_core::Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, 3_000_001, &dev).unwrap();
        let want: f64 = x.to_vec1::<f32>().unwrap().iter().map(|&v| f64::from(v) * f64::from(v)).sum();
        let got = f64::from(sum_squares(&x).unwrap().to_scalar::<f32>().unwrap());
        assert!((got - want).abs() <= 1e-6 * want, "{got} vs {want}");
        let half = sum_squares(&x.to_dtype(DType::BF16).unwrap()).unwrap().to_scalar::<f32>().unwrap();
        assert!((f64::from(half) - want).abs() <= 1e-2 * want, "bf16: {half} vs {want}");
    }

    /// The elementwise and row kernels refuse operands they would read past or leave slots unwritten for.
    #[test]
    fn kernels_refuse_operands_of_other_shapes() {
        let dev = candle_core::Device::Cpu;
        let t = |dims: &[usize]| Tensor::zeros(dims, DType::F32, &dev).unwrap();
        let err = rms_norm_cpu(&t(&[2, 8]), &t(&[7]), 1e-5).unwrap_err().to_string();
        assert!(err.contains("rms_norm: input [2, 8] against a weight of 7"), "{err}");
        let err = rms_norm_grad_cpu(&t(&[2, 7]), &t(&[2, 8]), &t(&[8]), 1e-5).unwrap_err().to_string();
        assert!(err.contains("rms_norm backward: operand [2, 7] does not match [2, 8]"), "{err}");
        let err = swiglu_cpu(&t(&[3, 4]), &t(&[3, 3])).unwrap_err().to_string();
        assert!(err.contains("swiglu: operand [3, 3] does not match [3, 4]"), "{err}");
        let err = swiglu_grad_cpu(&t(&[12]), &t(&[3, 4]), &t(&[3, 4])).unwrap_err().to_string();
        assert!(err.contains("swiglu backward: operand [12] does not match [3, 4]"), "{err}");
    }
}
