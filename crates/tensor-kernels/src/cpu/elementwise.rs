//! Element-wise and reduction kernels on the CPU, threaded with rayon above a size threshold
//! in fixed chunks (so results never depend on the thread count): bias + activation and its
//! first and second derivatives, column sums, axpy, and Adam with DP-SGD's noise fused in.
//!
//! The values that feed the next step (activations, their gradients, Adam's moments) are stored
//! with subnormals flushed to zero: arithmetic on subnormal f32 takes microcode assists on many
//! x86 cores (about a hundred cycles each), and a diverging run can fill a tenth of Adam's first
//! moments with them. Rust cannot set the MXCSR's FTZ/DAZ bits soundly, so the flush is explicit.

use rayon::prelude::*;

use super::{noise, widest_simd, CHUNK, PARALLEL_MIN};
use crate::{Activation, AdamStep, GradientNoise};

/// e^x for f32 without a libm call, so loops over it vectorise: range reduction x = n·ln2 + r
/// with a two-part ln 2, a degree-6 minimax polynomial for e^r on |r| ≤ ln2/2 (Cephes `expf`),
/// and 2ⁿ built in the exponent bits. Relative error below 2e-7 on [−87, 88]; saturates outside.
#[inline(always)]
pub(super) fn exp_f32(x: f32) -> f32 {
    let x = x.clamp(-87.0, 88.0);
    let (n, two_to_n) = round_log2e(x);
    let r = x - n * 0.693_359_4 + n * 2.121_944_4e-4;
    let p = 1.987_569_1e-4f32;
    let p = p * r + 1.398_199_9e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 1.666_666_5e-1;
    let p = p * r + 0.5;
    let e_r = p * r * r + r + 1.0;
    e_r * two_to_n
}

/// n = x·log₂e rounded to the nearest integer, and 2ⁿ, for x in [−87, 88] (NaN gives NaN and an
/// unspecified power). Rounds by adding and subtracting 1.5·2²³ (SSE2 has no vector round); in
/// [2²³, 2²⁴) a mantissa step is 1, so n is also the difference of the bit patterns. Taking it
/// from there rather than by `n as i32` keeps the loop in vector registers: the cast's NaN and
/// saturation rules made LLVM convert lane by lane (seen in the disassembly).
#[inline(always)]
pub(super) fn round_log2e(x: f32) -> (f32, f32) {
    const ROUNDER: f32 = 12_582_912.0;
    let shifted = x * std::f32::consts::LOG2_E + ROUNDER;
    let n = shifted.to_bits().wrapping_sub(ROUNDER.to_bits());
    (shifted - ROUNDER, f32::from_bits(n.wrapping_add(127) << 23))
}

/// `x`, or 0 where |x| is subnormal (below `f32::MIN_POSITIVE`, about 1.2e-38). NaN passes.
#[inline(always)]
pub(super) fn flush_subnormal(x: f32) -> f32 {
    if x.abs() < f32::MIN_POSITIVE {
        0.0
    } else {
        x
    }
}

#[inline(always)]
pub(super) fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp_f32(-x))
}

/// row ← act(row + bias).
#[inline(always)]
pub(super) fn apply_bias_activation(row: &mut [f32], bias: &[f32], act: Activation) {
    match act {
        Activation::Identity => row.iter_mut().zip(bias).for_each(|(v, b)| *v += b),
        Activation::Relu => row.iter_mut().zip(bias).for_each(|(v, b)| *v = flush_subnormal((*v + b).max(0.0))),
        Activation::Sigmoid => row.iter_mut().zip(bias).for_each(|(v, b)| *v = sigmoid(*v + b)),
    }
}

widest_simd_fn! {
    /// Each row of `block` (rows of `bias.len()` values) ← act(row + bias). A named instance
    /// rather than a closure through [`widest_simd`]: LLVM kept the closure out of line, in
    /// baseline SSE2 (seen in the disassembly).
    pub(super) fn bias_activation_rows(block: &mut [f32], bias: &[f32], act: Activation) = {
        for row in block.chunks_exact_mut(bias.len()) {
            apply_bias_activation(row, bias, act);
        }
    }
}

/// Applies `f` to matching chunks of `x` (and `y`), in parallel when large.
fn zip_chunks(x: &mut [f32], y: &[f32], f: impl Fn(&mut [f32], &[f32]) + Sync) {
    if x.len() < PARALLEL_MIN {
        widest_simd(|| f(x, y));
    } else {
        x.par_chunks_mut(CHUNK).zip(y.par_chunks(CHUNK)).for_each(|(a, b)| widest_simd(|| f(a, b)));
    }
}

/// See [`crate::Backend::bias_activation`].
pub(super) fn bias_activation(x: &mut [f32], bias: &[f32], rows: usize, cols: usize, act: Activation) {
    let bias = &bias[..cols];
    if cols == 0 {
        return;
    }
    let block_kernel = |block: &mut [f32]| bias_activation_rows(block, bias, act);
    let x = &mut x[..rows * cols];
    if x.len() < PARALLEL_MIN {
        block_kernel(x);
    } else {
        // Whole rows per task, about CHUNK values each, so task overhead stays negligible.
        let rows_per_task = (CHUNK / cols).max(1);
        x.par_chunks_mut(rows_per_task * cols).for_each(block_kernel);
    }
}

/// See [`crate::Backend::activation_backward`].
pub(super) fn activation_backward(grad: &mut [f32], y: &[f32], len: usize, act: Activation) {
    let kernel = |g: &mut [f32], y: &[f32]| match act {
        Activation::Identity => {}
        Activation::Relu => {
            g.iter_mut().zip(y).for_each(|(g, y)| *g = if *y <= 0.0 { 0.0 } else { flush_subnormal(*g) })
        }
        Activation::Sigmoid => g.iter_mut().zip(y).for_each(|(g, y)| *g = flush_subnormal(*g * y * (1.0 - y))),
    };
    zip_chunks(&mut grad[..len], &y[..len], kernel);
}

/// See [`crate::Backend::activation_curvature`].
pub(super) fn activation_curvature(grad: &mut [f32], y: &[f32], len: usize, act: Activation) {
    let kernel = |g: &mut [f32], y: &[f32]| match act {
        Activation::Identity | Activation::Relu => g.iter_mut().for_each(|g| *g = 0.0),
        Activation::Sigmoid => g.iter_mut().zip(y).for_each(|(g, y)| *g *= y * (1.0 - y) * (1.0 - 2.0 * y)),
    };
    zip_chunks(&mut grad[..len], &y[..len], kernel);
}

/// See [`crate::Backend::column_sums`].
pub(super) fn column_sums(x: &[f32], rows: usize, cols: usize, out: &mut [f32], alpha: f32, beta: f32) {
    let mut acc = vec![0.0f32; cols];
    for row in x[..rows * cols].chunks(cols.max(1)) {
        acc.iter_mut().zip(row).for_each(|(a, v)| *a += v);
    }
    for (o, a) in out[..cols].iter_mut().zip(acc) {
        *o = if beta == 0.0 { alpha * a } else { alpha * a + beta * *o };
    }
}

/// See [`crate::Backend::axpy`].
pub(super) fn axpy(alpha: f32, x: &[f32], y: &mut [f32], len: usize) {
    zip_chunks(&mut y[..len], &x[..len], |y, x| y.iter_mut().zip(x).for_each(|(y, x)| *y += alpha * x));
}

/// One Adam update of a parameter from its (noised) gradient g (Kingma & Ba 2015, Algorithm 1,
/// with the bias corrections folded into the step size and the denominator).
#[inline(always)]
fn adam_update(p: &mut f32, g: f32, m: &mut f32, v: &mut f32, step: AdamStep, step_size: f32, bc2_sqrt: f32) {
    *m = flush_subnormal(step.beta1 * *m + (1.0 - step.beta1) * g);
    *v = flush_subnormal(step.beta2 * *v + (1.0 - step.beta2) * g * g);
    *p -= step_size * *m / (v.sqrt() / bc2_sqrt + step.eps);
}

widest_simd_fn! {
    /// Adam on one piece of at most [`CHUNK`] values whose first value is the tensor's `first`-th
    /// (where its noise starts). A named instance, as [`bias_activation_rows`] is.
    fn adam_piece(first: usize, p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], step: AdamStep, noise: Option<GradientNoise>) = {
        let step_size = step.lr / (1.0 - step.beta1.powi(step.t as i32));
        let bc2_sqrt = (1.0 - step.beta2.powi(step.t as i32)).sqrt();
        match noise {
            None => {
                for (((p, g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
                    adam_update(p, *g, m, v, step, step_size, bc2_sqrt);
                }
            }
            Some(n) => {
                let mut z = [0.0f32; CHUNK];
                let z = &mut z[..p.len()];
                noise::fill(z, n.key, first as u64);
                for ((((p, g), m), v), z) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()).zip(z.iter()) {
                    adam_update(p, n.scale * (g + n.std * z), m, v, step, step_size, bc2_sqrt);
                }
            }
        }
    }
}

/// See [`crate::Backend::adam`].
pub(super) fn adam(
    param: &mut [f32],
    grad: &[f32],
    moments: (&mut [f32], &mut [f32]),
    len: usize,
    step: AdamStep,
    noise: Option<GradientNoise>,
) {
    let (m, v) = moments;
    let (p, g, m, v) = (&mut param[..len], &grad[..len], &mut m[..len], &mut v[..len]);
    if len < PARALLEL_MIN {
        // The same CHUNK-sized pieces, on this thread.
        let pieces = p.chunks_mut(CHUNK).zip(g.chunks(CHUNK)).zip(m.chunks_mut(CHUNK)).zip(v.chunks_mut(CHUNK));
        pieces.enumerate().for_each(|(c, (((p, g), m), v))| adam_piece(c * CHUNK, p, g, m, v, step, noise));
    } else {
        let pieces =
            p.par_chunks_mut(CHUNK).zip(g.par_chunks(CHUNK)).zip(m.par_chunks_mut(CHUNK)).zip(v.par_chunks_mut(CHUNK));
        pieces.enumerate().for_each(|(c, (((p, g), m), v))| adam_piece(c * CHUNK, p, g, m, v, step, noise));
    }
}
