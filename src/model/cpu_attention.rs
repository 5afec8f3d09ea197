//! Causal attention on the CPU: one task per (batch row, head, block of queries) in the forward and per
//! (batch row, head) in the backward, each running single-threaded GEMMs over its own rows.
//!
//! Through candle's batched matmul a block's products were a dozen small GEMMs (`[groups · 128, 64]` times
//! `[64, keys]`), each split over every thread with a hand-off and a join, and the scores, probabilities and
//! their gradients were separate tensors between them: on the 135M training step attention took ~15% of the
//! time for ~8% of the FLOPs (`perf`). Here a task computes its block's scores, softmax and product while
//! they are in its cache, writes its output rows where the output projection reads them (`[b, t, h · d]`), and
//! the backward sums a head's d k and d v in place over its blocks. Everything is f32.

use std::mem::MaybeUninit;

use candle_core::{CpuStorage, DType, Device, Layout, Storage, Tensor};
use rayon::prelude::*;

use super::kernels::{cpu_f32, gemm_f32, softmax_grad_row, softmax_row, CpuOut, Mat};

type Result<T> = candle_core::Result<T>;

/// A destination written by several tasks at once, each to rows of its own.
#[derive(Clone, Copy)]
struct Shared(*mut f32);

// SAFETY: tasks write disjoint elements through it (each caller says which), and it outlives them.
unsafe impl Send for Shared {}
unsafe impl Sync for Shared {}

impl Shared {
    /// The pointer `at` elements further (a method, so closures capture the wrapper and not the raw pointer).
    fn at(self, at: usize) -> *mut f32 {
        self.0.wrapping_add(at)
    }
}

/// [`gemm_f32`] on the calling thread: the tasks are the parallelism.
///
/// # Safety
/// As [`gemm_f32`].
unsafe fn gemm_into(m: usize, n: usize, k: usize, dst: (*mut f32, usize), add: bool, lhs: Mat, rhs: Mat) {
    // SAFETY: forwarded from the caller.
    unsafe { gemm_f32(m, n, k, dst, add, lhs, rhs, gemm::Parallelism::None) }
}

/// A 4-d f32 CPU operand as stored: its data, first element and strides.
struct Operand<'a> {
    data: &'a [f32],
    start: usize,
    stride: [usize; 4],
}

impl<'a> Operand<'a> {
    /// Reads `l` over `s`, checking that every element it addresses lies in the storage.
    fn new(s: &'a Storage, l: &Layout, what: &str) -> Result<Self> {
        let (Storage::Cpu(CpuStorage::F32(data)), [s0, s1, s2, s3]) = (s, l.stride()) else {
            candle_core::bail!("attention: {what} must be a 4-d f32 CPU tensor, got {:?}", l.dims())
        };
        let last =
            l.start_offset() + l.dims().iter().zip(l.stride()).map(|(d, s)| d.saturating_sub(1) * s).sum::<usize>();
        if last >= data.len() && l.shape().elem_count() > 0 {
            candle_core::bail!("attention: {what} {:?} reaches past its storage", l.dims())
        }
        // A dim of one has stride 0 here, so a mask of one batch row or one head serves them all.
        let mut stride = [*s0, *s1, *s2, *s3];
        for (s, &n) in stride.iter_mut().zip(l.dims()) {
            if n == 1 {
                *s = 0;
            }
        }
        Ok(Self { data, start: l.start_offset(), stride })
    }

    /// The offset of element `[i, j, r, 0]`.
    fn offset(&self, i: usize, j: usize, r: usize) -> usize {
        self.start + i * self.stride[0] + j * self.stride[1] + r * self.stride[2]
    }

    /// Rows `r..` of matrix `[i, j]`, read as they lie.
    fn rows(&self, i: usize, j: usize, r: usize) -> Mat {
        Mat(self.data[self.offset(i, j, r)..].as_ptr(), self.stride[2] as isize, self.stride[3] as isize)
    }

    /// Matrix `[i, j]` transposed (`[d, rows]`), read in place.
    fn rows_t(&self, i: usize, j: usize) -> Mat {
        Mat(self.data[self.offset(i, j, 0)..].as_ptr(), self.stride[3] as isize, self.stride[2] as isize)
    }
}

/// The additive mask `[b | 1, h | 1, t, s]` (f32, unit last stride), or none: zeros.
struct Bias<'a> {
    rows: Option<Operand<'a>>,
    zeros: Vec<f32>,
}

impl Bias<'_> {
    /// The mask over the first `keys` keys of query `r` (of the t) in batch row `i`, head `j`.
    fn row(&self, i: usize, j: usize, r: usize, keys: usize) -> &[f32] {
        match &self.rows {
            Some(b) => &b.data[b.offset(i, j, r)..][..keys],
            None => &self.zeros[..keys],
        }
    }
}

/// The shapes of one call, checked: q `[b, h, t, d]`, k and v `[b, h / groups, s, d]` with `s ≥ t` (the keys
/// before the first query come from a KV cache), bias `[b | 1, h | 1, t, s]`.
#[derive(Clone, Copy)]
struct Dims {
    b: usize,
    h: usize,
    t: usize,
    d: usize,
    s: usize,
}

impl Dims {
    fn new(q: &Tensor, k: &Tensor, v: &Tensor, bias: Option<&Tensor>, groups: usize) -> Result<Self> {
        let (b, h, t, d) = q.dims4()?;
        let (kb, kv, s, kd) = k.dims4()?;
        if groups == 0 || (kb, kv * groups, kd) != (b, h, d) || v.dims() != k.dims() || s < t {
            candle_core::bail!(
                "attention: q {:?} with {groups} query heads per kv head does not fit k {:?} and v {:?}",
                q.dims(),
                k.dims(),
                v.dims()
            )
        }
        if let Some(m) = bias {
            let m = m.dims();
            if m.len() != 4 || (m[0] != 1 && m[0] != b) || (m[1] != 1 && m[1] != h) || (m[2], m[3]) != (t, s) {
                candle_core::bail!(
                    "attention: mask {m:?} does not fit {t} queries over {s} keys of {b} rows, {h} heads"
                )
            }
        }
        Ok(Self { b, h, t, d, s })
    }

    /// The key count of the block of `len` queries starting at `start`: none after its last query (causal).
    fn keys(&self, start: usize, len: usize) -> usize {
        self.s - self.t + start + len
    }
}

/// The f32 form of `x` with a unit last stride (a mask's view keeps its broadcast strides).
fn f32_rows(x: &Tensor) -> Result<Tensor> {
    let x = x.to_dtype(DType::F32)?;
    if x.stride().last() == Some(&1) {
        Ok(x)
    } else {
        x.contiguous()
    }
}

/// One call's q, k, v and mask as the tasks read them.
struct Inputs<'a> {
    q: Operand<'a>,
    k: Operand<'a>,
    v: Operand<'a>,
    bias: Bias<'a>,
}

/// Widens `q`, `k`, `v` and the mask to f32 with a unit last stride and lends them to `f` as [`Inputs`]
/// (`s` keys: the zero mask's length when there is none).
fn with_inputs<R>(
    (q, k, v): (&Tensor, &Tensor, &Tensor),
    bias: Option<&Tensor>,
    s: usize,
    f: impl FnOnce(&Inputs) -> Result<R>,
) -> Result<R> {
    let (q, k, v, bias) = (f32_rows(q)?, f32_rows(k)?, f32_rows(v)?, bias.map(f32_rows).transpose()?);
    let (qs, ql) = q.storage_and_layout();
    let (ks, kl) = k.storage_and_layout();
    let (vs, vl) = v.storage_and_layout();
    let mask = bias.as_ref().map(|m| m.storage_and_layout());
    let rows = mask.as_ref().map(|(s, l)| Operand::new(s, l, "the mask")).transpose()?;
    f(&Inputs {
        q: Operand::new(&qs, ql, "q")?,
        k: Operand::new(&ks, kl, "k")?,
        v: Operand::new(&vs, vl, "v")?,
        bias: Bias { zeros: if rows.is_none() { vec![0.0; s] } else { Vec::new() }, rows },
    })
}

/// Softmax probabilities `[len, keys]` of the queries `start..start + len` of head `j` in batch row `i`:
/// `softmax(q kᵀ · scale + bias)`, row by row, with the scores computed into `scores`.
#[allow(clippy::too_many_arguments)]
fn block_probs(
    x: &Inputs,
    (i, j, kvh): (usize, usize, usize),
    start: usize,
    len: usize,
    keys: usize,
    d: usize,
    scale: f32,
    scores: &mut [f32],
) -> Vec<f32> {
    // SAFETY: q's rows and k's rows (transposed) lie in their storage (checked by `Operand::new`), and
    // `scores` holds len × keys.
    unsafe { gemm_into(len, keys, d, (scores.as_mut_ptr(), keys), false, x.q.rows(i, j, start), x.k.rows_t(i, kvh)) };
    let mut probs = Vec::with_capacity(len * keys);
    let out: &mut [MaybeUninit<f32>] = &mut probs.spare_capacity_mut()[..len * keys];
    for (r, (s, o)) in scores.chunks_exact(keys).zip(out.chunks_exact_mut(keys)).enumerate() {
        softmax_row(s, x.bias.row(i, j, start + r, keys), scale, o);
    }
    // SAFETY: softmax_row wrote each of the len rows.
    unsafe { probs.set_len(len * keys) };
    probs
}

/// `softmax(q kᵀ · scale + bias) v` as `[b, t, h · d]` (f32, as a buffer to move into a graph node), for q
/// `[b, h, t, d]`, k and v `[b, h / groups, s, d]` and an additive mask `[b | 1, h | 1, t, s]`, in causal
/// blocks of `step` queries.
pub(crate) fn forward(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    bias: Option<&Tensor>,
    groups: usize,
    scale: f32,
    step: usize,
) -> Result<CpuOut> {
    let n = Dims::new(q, k, v, bias, groups)?;
    let (step, Dims { b, h, t, d, .. }) = (step.max(1), n);
    let blocks = t.div_ceil(step);
    with_inputs((q, k, v), bias, n.s, |x| {
        let mut out = Vec::<f32>::with_capacity(b * t * h * d);
        let dst = Shared(out.as_mut_ptr());
        (0..b * h * blocks).into_par_iter().for_each(|task| {
            let (i, j, block) = (task / (h * blocks), task / blocks % h, task % blocks);
            let (start, kvh) = (block * step, j / groups);
            let len = step.min(t - start);
            let keys = n.keys(start, len);
            let mut scores = vec![0f32; len * keys];
            let p = block_probs(x, (i, j, kvh), start, len, keys, d, scale, &mut scores);
            let (at, p) = (dst.at(((i * t + start) * h + j) * d), Mat(p.as_ptr(), keys as isize, 1));
            // SAFETY: this task alone writes these rows (queries start..start + len of batch row i, rows of
            // h · d of which head j owns the d at j · d); v's rows lie in its storage.
            unsafe { gemm_into(len, d, keys, (at, h * d), false, p, x.v.rows(i, kvh, 0)) };
        });
        // SAFETY: the tasks wrote every row of every head.
        unsafe { out.set_len(b * t * h * d) };
        Ok(CpuOut { data: out, shape: (b, t, h * d).into() })
    })
}

/// The gradients of q, k and v (f32, their shapes) of [`forward`]'s output, from that output's gradient
/// `grad` `[b, t, h · d]`. Each (batch row, head) task recomputes its blocks' probabilities and sums its d k
/// and d v over them in place; heads that share a kv head are summed after.
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    bias: Option<&Tensor>,
    grad: &Tensor,
    groups: usize,
    scale: f32,
    step: usize,
) -> Result<(Tensor, Tensor, Tensor)> {
    let n = Dims::new(q, k, v, bias, groups)?;
    let Dims { b, h, t, d, s } = n;
    if grad.dims() != [b, t, h * d] {
        candle_core::bail!("attention backward: gradient {:?} for an output of [{b}, {t}, {}]", grad.dims(), h * d)
    }
    let grad = grad.to_dtype(DType::F32)?.contiguous()?;
    let (gs, gl) = grad.storage_and_layout();
    let Storage::Cpu(gs) = &*gs else { candle_core::bail!("attention backward: the gradient is not on the CPU") };
    let go = cpu_f32(gs, gl, "attention backward: the gradient")?;
    let step = step.max(1);
    let blocks = t.div_ceil(step);
    let (mut dq, mut dk, mut dv) = (
        Vec::<f32>::with_capacity(b * h * t * d),
        Vec::<f32>::with_capacity(b * h * s * d),
        Vec::<f32>::with_capacity(b * h * s * d),
    );
    let (dq_at, dk_at, dv_at) = (Shared(dq.as_mut_ptr()), Shared(dk.as_mut_ptr()), Shared(dv.as_mut_ptr()));
    with_inputs((q, k, v), bias, s, |x| {
        (0..b * h).into_par_iter().for_each(|task| {
            let (i, j) = (task / h, task % h);
            let kvh = j / groups;
            let (dk, dv) = (dk_at.at(task * s * d), dv_at.at(task * s * d));
            // The last block reads every key, so it writes all of this head's d k and d v; earlier blocks add
            // to their keys' rows.
            for block in (0..blocks).rev() {
                let (start, last) = (block * step, block + 1 == blocks);
                let len = step.min(t - start);
                let keys = n.keys(start, len);
                let mut buf = vec![0f32; len * keys];
                let p = block_probs(x, (i, j, kvh), start, len, keys, d, scale, &mut buf);
                // The output gradient's rows of head j: row (i, start + r) of h · d, the head's d at j · d.
                let go = Mat(go[((i * t + start) * h + j) * d..].as_ptr(), (h * d) as isize, 1);
                let pt = Mat(p.as_ptr(), 1, keys as isize);
                // SAFETY: every operand lies in its storage; this task alone writes head j of batch row i in
                // d q and its own [s, d] slices of d k and d v; `buf` is its own.
                unsafe {
                    // d v += pᵀ · d out
                    gemm_into(keys, d, len, (dv, d), !last, pt, go);
                    // d p = d out · vᵀ, turned into d scores in place below
                    gemm_into(len, keys, d, (buf.as_mut_ptr(), keys), false, go, x.v.rows_t(i, kvh));
                }
                for (dp, p) in buf.chunks_exact_mut(keys).zip(p.chunks_exact(keys)) {
                    softmax_grad_row(p, dp, scale);
                }
                let (ds, ds_t) = (Mat(buf.as_ptr(), keys as isize, 1), Mat(buf.as_ptr(), 1, keys as isize));
                let dq = dq_at.at(((i * h + j) * t + start) * d);
                // SAFETY: as above.
                unsafe {
                    // d q = d scores · k
                    gemm_into(len, d, keys, (dq, d), false, ds, x.k.rows(i, kvh, 0));
                    // d k += d scoresᵀ · q
                    gemm_into(keys, d, len, (dk, d), !last, ds_t, x.q.rows(i, j, start));
                }
            }
        });
        Ok(())
    })?;
    // SAFETY: every task wrote its head's t rows of d q and, through its last block, all s rows of d k and d v.
    unsafe {
        dq.set_len(b * h * t * d);
        dk.set_len(b * h * s * d);
        dv.set_len(b * h * s * d);
    }
    let dq = Tensor::from_vec(dq, (b, h, t, d), &Device::Cpu)?;
    let kv = h / groups;
    Ok((dq, sum_groups(dk, (b, kv, s, d), groups)?, sum_groups(dv, (b, kv, s, d), groups)?))
}

/// Per-query-head gradients `[b, kv · groups, s, d]` summed over the heads that share a kv head.
fn sum_groups(parts: Vec<f32>, (b, kv, s, d): (usize, usize, usize, usize), groups: usize) -> Result<Tensor> {
    if groups == 1 {
        return Tensor::from_vec(parts, (b, kv, s, d), &Device::Cpu);
    }
    let size = s * d;
    let mut out = vec![0f32; b * kv * size];
    out.par_chunks_mut(size).enumerate().for_each(|(c, o)| {
        let heads = &parts[c * groups * size..][..groups * size];
        o.copy_from_slice(&heads[..size]);
        for part in heads.chunks_exact(size).skip(1) {
            o.iter_mut().zip(part).for_each(|(o, p)| *o += p);
        }
    });
    Tensor::from_vec(out, (b, kv, s, d), &Device::Cpu)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `softmax(q kᵀ · scale + bias) v` in f64, element by element: the reference, `[b, t, h · d]`.
    fn reference(q: &Tensor, k: &Tensor, v: &Tensor, bias: &Tensor, groups: usize, scale: f64) -> Vec<f64> {
        let (b, h, t, d) = q.dims4().unwrap();
        let s = k.dim(2).unwrap();
        let f = |x: &Tensor| {
            x.to_dtype(DType::F64).unwrap().contiguous().unwrap().flatten_all().unwrap().to_vec1::<f64>().unwrap()
        };
        let (q, k, v) = (f(q), f(k), f(v));
        let mask = f(&bias.broadcast_as((b, h, t, s)).unwrap());
        let mut out = vec![0f64; b * t * h * d];
        for i in 0..b {
            for j in 0..h {
                let kv = j / groups;
                for r in 0..t {
                    let past = s - t;
                    let keys: Vec<usize> = (0..=past + r).collect();
                    let logits: Vec<f64> = keys
                        .iter()
                        .map(|&c| {
                            let dot: f64 = (0..d)
                                .map(|e| {
                                    q[((i * h + j) * t + r) * d + e] * k[((i * (h / groups) + kv) * s + c) * d + e]
                                })
                                .sum();
                            dot * scale + mask[((i * h + j) * t + r) * s + c]
                        })
                        .collect();
                    let max = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    if max == f64::NEG_INFINITY {
                        continue;
                    }
                    let w: Vec<f64> = logits.iter().map(|l| (l - max).exp()).collect();
                    let sum: f64 = w.iter().sum();
                    for e in 0..d {
                        let o: f64 =
                            keys.iter().map(|&c| w[c] / sum * v[((i * (h / groups) + kv) * s + c) * d + e]).sum();
                        out[((i * t + r) * h + j) * d + e] = o;
                    }
                }
            }
        }
        out
    }

    /// The kernel against f64 over a KV cache's strided views (keys before the first query), a mask that pads
    /// one row's first keys and masks one query's every key, GQA, one query (a decoding step) and blocks that
    /// do not divide the length.
    #[test]
    fn forward_matches_f64_over_cache_views_masks_and_blocks() {
        let dev = Device::Cpu;
        let (b, h, kv, d, past) = (2, 4, 2, 8, 3);
        for (t, step) in [(9, 4), (9, 128), (9, 1), (1, 128)] {
            let s = past + t;
            let q = Tensor::randn(0f32, 1.0, (b, h, t, d), &dev).unwrap();
            // The cache holds 20 slots per kv head; the keys are a view of its first s.
            let cache = |_| Tensor::randn(0f32, 1.0, (b, kv, 20, d), &dev).unwrap().narrow(2, 0, s).unwrap();
            let (k, v) = (cache(0), cache(1));
            assert!(!k.is_contiguous());
            let mut mask = vec![0f32; b * t * s];
            for r in 0..t {
                for c in 0..s {
                    // Row 0 is causal; row 1 also pads its first two keys.
                    if c > past + r {
                        mask[r * s + c] = f32::NEG_INFINITY;
                    }
                    if c > past + r || c < 2 {
                        mask[(t + r) * s + c] = f32::NEG_INFINITY;
                    }
                }
            }
            if t > 1 {
                // Every key of row 1's first query masked: its output is zeros.
                mask[t * s..t * s + s].fill(f32::NEG_INFINITY);
            }
            let bias = Tensor::from_vec(mask, (b, 1, t, s), &dev).unwrap();
            let got = forward(&q, &k, &v, Some(&bias), h / kv, 0.35, step).unwrap();
            assert_eq!(got.shape.dims(), &[b, t, h * d]);
            let got = got.data;
            let want = reference(&q, &k, &v, &bias, h / kv, 0.35);
            let worst = got.iter().zip(&want).map(|(g, w)| (f64::from(*g) - w).abs()).fold(0f64, f64::max);
            assert!(worst <= 1e-6, "t {t}, block {step}: {worst}");
            if t > 1 {
                assert!(got[t * h * d..(t * h + h) * d].iter().all(|&x| x == 0.0), "a fully masked query gives zeros");
            }
        }
    }

    /// The backward's d q, d k and d v equal candle's autograd through the composed softmax (kv heads repeated
    /// for GQA), with keys before the first query and a padded row, in blocks that do and do not divide t.
    #[test]
    fn backward_matches_autograd_of_the_composed_form() {
        let dev = Device::Cpu;
        let (b, h, kv, t, d, past) = (2, 4, 2, 7, 8, 2);
        let s = past + t;
        let var = |dims: (usize, usize, usize, usize)| candle_core::Var::randn(0f32, 1.0, dims, &dev).unwrap();
        let (q, k, v) = (var((b, h, t, d)), var((b, kv, s, d)), var((b, kv, s, d)));
        let mask: Vec<f32> = (0..b * t * s)
            .map(|x| {
                let (row, r, c) = (x / (t * s), x / s % t, x % s);
                if c > past + r || (row == 1 && c < 2) {
                    f32::NEG_INFINITY
                } else {
                    0.0
                }
            })
            .collect();
        let bias = Tensor::from_vec(mask, (b, 1, t, s), &dev).unwrap();
        let grad = Tensor::randn(0f32, 1.0, (b, t, h * d), &dev).unwrap();
        let repeat =
            |x: &Tensor| x.unsqueeze(2).unwrap().expand((b, kv, h / kv, s, d)).unwrap().reshape((b, h, s, d)).unwrap();
        let scores = (q.matmul(&repeat(&k).t().unwrap()).unwrap() * 0.35).unwrap().broadcast_add(&bias).unwrap();
        let out = candle_nn::ops::softmax(&scores, candle_core::D::Minus1).unwrap().matmul(&repeat(&v)).unwrap();
        let out = out.transpose(1, 2).unwrap().reshape((b, t, h * d)).unwrap();
        let want = (out * &grad).unwrap().sum_all().unwrap().backward().unwrap();
        for step in [3, 128] {
            let (dq, dk, dv) = backward(&q, &k, &v, Some(&bias), &grad, h / kv, 0.35, step).unwrap();
            for (name, got, x) in [("q", dq, &q), ("k", dk, &k), ("v", dv, &v)] {
                let want = want.get(x).unwrap();
                assert_eq!(got.dims(), want.dims(), "{name}");
                let diff = (got - want).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap();
                let diff = diff.to_scalar::<f32>().unwrap();
                assert!(diff <= 1e-5, "block {step}: d {name} differs by {diff}");
            }
        }
    }
}
