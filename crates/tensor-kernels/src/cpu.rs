//! The CPU backend: GEMM through the `gemm` crate (AVX2/AVX-512/FMA micro-kernels picked at run
//! time), element-wise and reduction kernels threaded with rayon above a size threshold.

use rayon::prelude::*;

use crate::{
    cpu_image, noise, Activation, AdamStep, Backend, ChannelSlot, Conv2d, GradientNoise, ImageShape, NoiseKey, Pool2d,
    Transpose,
};

/// Below this many elements an element-wise kernel runs on the calling thread: spawning rayon
/// tasks costs more than the work.
const PARALLEL_MIN: usize = 1 << 15;
/// Chunk length for parallel element-wise kernels.
const CHUNK: usize = 1 << 13;

/// The CPU backend. Buffers are `Vec<f32>`; threads come from the current rayon pool.
#[derive(Clone, Copy, Debug, Default)]
pub struct Cpu;

impl Cpu {
    /// A CPU backend using the current rayon thread pool.
    pub fn new() -> Self {
        Cpu
    }
}

/// Applies `f` to matching chunks of `x` (and `y`), in parallel when large.
fn zip_chunks(x: &mut [f32], y: &[f32], f: impl Fn(&mut [f32], &[f32]) + Sync) {
    if x.len() < PARALLEL_MIN {
        f(x, y);
    } else {
        x.par_chunks_mut(CHUNK).zip(y.par_chunks(CHUNK)).for_each(|(a, b)| f(a, b));
    }
}

/// (row stride, column stride) of a row-major operand with `cols` stored columns, transposed or not.
fn strides(trans: Transpose, stored_cols: usize) -> (isize, isize) {
    match trans {
        Transpose::No => (stored_cols as isize, 1),
        Transpose::Yes => (1, stored_cols as isize),
    }
}

/// e^x for f32 without a libm call, so loops over it vectorise: range reduction x = n·ln2 + r
/// with a two-part ln 2, a degree-6 minimax polynomial for e^r on |r| ≤ ln2/2 (Cephes `expf`),
/// and 2ⁿ built in the exponent bits. Relative error below 2e-7 on [−87, 88]; saturates outside.
#[inline(always)]
fn exp_f32(x: f32) -> f32 {
    let x = x.clamp(-87.0, 88.0);
    // Round to nearest by adding and subtracting 1.5·2²³ (SSE2 has no vector round).
    const ROUNDER: f32 = 12_582_912.0;
    let n = (x * std::f32::consts::LOG2_E + ROUNDER) - ROUNDER;
    let r = x - n * 0.693_359_4 + n * 2.121_944_4e-4;
    let p = 1.987_569_1e-4f32;
    let p = p * r + 1.398_199_9e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 1.666_666_5e-1;
    let p = p * r + 0.5;
    let e_r = p * r * r + r + 1.0;
    e_r * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

#[inline(always)]
fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp_f32(-x))
}

/// Rows per block of the blocked [`Backend::linear`]: a 256 × 784 output block (800 KB) stays in L2,
/// and the weights are packed only rows/256 times (measured best of 64, 256, 1024 for decoding).
const LINEAR_BLOCK_ROWS: usize = 256;

/// row ← act(row + bias).
#[inline]
pub(crate) fn apply_bias_activation(row: &mut [f32], bias: &[f32], act: Activation) {
    match act {
        Activation::Identity => row.iter_mut().zip(bias).for_each(|(v, b)| *v += b),
        Activation::Relu => row.iter_mut().zip(bias).for_each(|(v, b)| *v = (*v + b).max(0.0)),
        Activation::Sigmoid => row.iter_mut().zip(bias).for_each(|(v, b)| *v = sigmoid(*v + b)),
    }
}

/// C = α·op(A)·op(B) + β·C on slices through the `gemm` crate.
#[allow(clippy::too_many_arguments)]
fn gemm_slices(
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    trans_a: Transpose,
    b: &[f32],
    trans_b: Transpose,
    c: &mut [f32],
    alpha: f32,
    beta: f32,
    parallelism: gemm::Parallelism,
) {
    assert!(a.len() >= m * k && b.len() >= k * n && c.len() >= m * n, "gemm operand too short");
    let (a_rs, a_cs) = strides(trans_a, if trans_a == Transpose::No { k } else { m });
    let (b_rs, b_cs) = strides(trans_b, if trans_b == Transpose::No { n } else { k });
    // SAFETY: the assert above bounds every index the strides reach: op(A) is m×k inside `a`,
    // op(B) is k×n inside `b`, C is m×n inside `c`; `c` is uniquely borrowed and does not alias
    // `a` or `b` (distinct Rust borrows).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            beta != 0.0,
            a.as_ptr(),
            a_cs,
            a_rs,
            b.as_ptr(),
            b_cs,
            b_rs,
            beta,
            alpha,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// Σ v², with eight independent partial sums so the loop vectorises (a single running f32 sum
/// cannot be reordered by the compiler).
fn squared_norm(row: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 8];
    let mut chunks = row.chunks_exact(8);
    for c in &mut chunks {
        lanes.iter_mut().zip(c).for_each(|(l, v)| *l += v * v);
    }
    let tail: f32 = chunks.remainder().iter().map(|v| v * v).sum();
    lanes.iter().sum::<f32>() + tail
}

impl Backend for Cpu {
    type Buffer = Vec<f32>;

    fn name(&self) -> &'static str {
        "cpu"
    }

    fn zeros(&self, len: usize) -> Vec<f32> {
        vec![0.0; len]
    }

    fn upload(&self, data: &[f32]) -> Vec<f32> {
        data.to_vec()
    }

    fn download(&self, buf: &Vec<f32>) -> Vec<f32> {
        buf.clone()
    }

    fn read(&self, buf: &Vec<f32>, out: &mut [f32]) {
        out.copy_from_slice(&buf[..out.len()]);
    }

    fn write(&self, buf: &mut Vec<f32>, data: &[f32]) {
        buf[..data.len()].copy_from_slice(data);
    }

    fn len(&self, buf: &Vec<f32>) -> usize {
        buf.len()
    }

    fn copy(&self, src: &Vec<f32>, dst: &mut Vec<f32>, len: usize) {
        dst[..len].copy_from_slice(&src[..len]);
    }

    fn gemm(
        &self,
        m: usize,
        n: usize,
        k: usize,
        a: &Vec<f32>,
        trans_a: Transpose,
        b: &Vec<f32>,
        trans_b: Transpose,
        c: &mut Vec<f32>,
        alpha: f32,
        beta: f32,
    ) {
        if m == 0 || n == 0 {
            return;
        }
        if k == 0 {
            c[..m * n].iter_mut().for_each(|v| *v *= beta);
            return;
        }
        gemm_slices(
            m,
            n,
            k,
            a,
            trans_a,
            b,
            trans_b,
            c,
            alpha,
            beta,
            gemm::Parallelism::Rayon(rayon::current_num_threads()),
        );
    }

    fn linear(
        &self,
        a: &Vec<f32>,
        w: &Vec<f32>,
        bias: &Vec<f32>,
        out: &mut Vec<f32>,
        rows: usize,
        in_dim: usize,
        out_dim: usize,
        act: Activation,
    ) {
        if rows <= LINEAR_BLOCK_ROWS {
            self.gemm(rows, out_dim, in_dim, a, Transpose::No, w, Transpose::Yes, out, 1.0, 0.0);
            self.bias_activation(out, bias, rows, out_dim, act);
            return;
        }
        // Row blocks in parallel, each a single-threaded GEMM followed by the bias and activation
        // while the block is still in cache. Each block's arithmetic is the same whatever the
        // thread count.
        let (a, w, bias) = (&a[..rows * in_dim], &w[..in_dim * out_dim], &bias[..out_dim]);
        out[..rows * out_dim].par_chunks_mut(LINEAR_BLOCK_ROWS * out_dim).enumerate().for_each(|(blk, o)| {
            let r = o.len() / out_dim;
            let a_blk = &a[blk * LINEAR_BLOCK_ROWS * in_dim..][..r * in_dim];
            gemm_slices(
                r,
                out_dim,
                in_dim,
                a_blk,
                Transpose::No,
                w,
                Transpose::Yes,
                o,
                1.0,
                0.0,
                gemm::Parallelism::None,
            );
            o.chunks_mut(out_dim).for_each(|row| apply_bias_activation(row, bias, act));
        });
    }

    fn bias_activation(&self, x: &mut Vec<f32>, bias: &Vec<f32>, rows: usize, cols: usize, act: Activation) {
        let bias = &bias[..cols];
        if cols == 0 {
            return;
        }
        let block_kernel =
            |block: &mut [f32]| block.chunks_mut(cols).for_each(|row| apply_bias_activation(row, bias, act));
        let x = &mut x[..rows * cols];
        if x.len() < PARALLEL_MIN {
            block_kernel(x);
        } else {
            // Whole rows per task, about CHUNK values each, so task overhead stays negligible.
            let rows_per_task = (CHUNK / cols).max(1);
            x.par_chunks_mut(rows_per_task * cols).for_each(block_kernel);
        }
    }

    fn activation_backward(&self, grad: &mut Vec<f32>, y: &Vec<f32>, len: usize, act: Activation) {
        let kernel = |g: &mut [f32], y: &[f32]| match act {
            Activation::Identity => {}
            Activation::Relu => g.iter_mut().zip(y).for_each(|(g, y)| {
                if *y <= 0.0 {
                    *g = 0.0
                }
            }),
            Activation::Sigmoid => g.iter_mut().zip(y).for_each(|(g, y)| *g *= y * (1.0 - y)),
        };
        zip_chunks(&mut grad[..len], &y[..len], kernel);
    }

    fn activation_curvature(&self, grad: &mut Vec<f32>, y: &Vec<f32>, len: usize, act: Activation) {
        let kernel = |g: &mut [f32], y: &[f32]| match act {
            Activation::Identity | Activation::Relu => g.iter_mut().for_each(|g| *g = 0.0),
            Activation::Sigmoid => g.iter_mut().zip(y).for_each(|(g, y)| *g *= y * (1.0 - y) * (1.0 - 2.0 * y)),
        };
        zip_chunks(&mut grad[..len], &y[..len], kernel);
    }

    fn column_sums(&self, x: &Vec<f32>, rows: usize, cols: usize, out: &mut Vec<f32>, alpha: f32, beta: f32) {
        let mut acc = vec![0.0f32; cols];
        for row in x[..rows * cols].chunks(cols.max(1)) {
            acc.iter_mut().zip(row).for_each(|(a, v)| *a += v);
        }
        for (o, a) in out[..cols].iter_mut().zip(acc) {
            *o = if beta == 0.0 { alpha * a } else { alpha * a + beta * *o };
        }
    }

    fn add_ghost_norms(
        &self,
        delta: &Vec<f32>,
        delta_cols: usize,
        act: &Vec<f32>,
        act_cols: usize,
        rows: usize,
        acc: &mut Vec<f32>,
    ) {
        for (i, a) in acc[..rows].iter_mut().enumerate() {
            let d = squared_norm(&delta[i * delta_cols..(i + 1) * delta_cols]);
            *a += d * (squared_norm(&act[i * act_cols..(i + 1) * act_cols]) + 1.0);
        }
    }

    fn axpy(&self, alpha: f32, x: &Vec<f32>, y: &mut Vec<f32>, len: usize) {
        zip_chunks(&mut y[..len], &x[..len], |y, x| y.iter_mut().zip(x).for_each(|(y, x)| *y += alpha * x));
    }

    fn squared_error(&self, pred: &Vec<f32>, target: &Vec<f32>, grad: &mut Vec<f32>, len: usize, scale: f32) -> f64 {
        let kernel = |g: &mut [f32], p: &[f32], t: &[f32]| -> f64 {
            let mut sum = 0.0f64;
            for ((g, p), t) in g.iter_mut().zip(p).zip(t) {
                let d = p - t;
                sum += f64::from(d * d);
                *g = 2.0 * scale * d;
            }
            sum
        };
        let (g, p, t) = (&mut grad[..len], &pred[..len], &target[..len]);
        if len < PARALLEL_MIN {
            kernel(g, p, t)
        } else {
            // Fixed chunking and an ordered sum keep the result independent of the thread count.
            let partial: Vec<f64> = g
                .par_chunks_mut(CHUNK)
                .zip(p.par_chunks(CHUNK))
                .zip(t.par_chunks(CHUNK))
                .map(|((g, p), t)| kernel(g, p, t))
                .collect();
            partial.iter().sum()
        }
    }

    fn fill_standard_normal(&self, out: &mut Vec<f32>, len: usize, key: NoiseKey) {
        let out = &mut out[..len];
        if len < PARALLEL_MIN {
            noise::fill(out, key, 0);
        } else {
            out.par_chunks_mut(CHUNK).enumerate().for_each(|(c, chunk)| noise::fill(chunk, key, (c * CHUNK) as u64));
        }
    }

    fn clip_factors(&self, squared_norms: &Vec<f32>, rows: usize, clip_norm: f64, factors: &mut Vec<f32>) {
        for (f, &s) in factors[..rows].iter_mut().zip(&squared_norms[..rows]) {
            *f = (clip_norm / (f64::from(s).sqrt() + 1e-6)).min(1.0) as f32;
        }
    }

    fn clipped_linear_grads(
        &self,
        delta: &Vec<f32>,
        out_dim: usize,
        act: &Vec<f32>,
        in_dim: usize,
        rows: usize,
        factors: &Vec<f32>,
        grad_weight: &mut Vec<f32>,
        grad_bias: &mut Vec<f32>,
    ) {
        let mut scaled = delta[..rows * out_dim].to_vec();
        for (row, f) in scaled.chunks_mut(out_dim.max(1)).zip(&factors[..rows]) {
            row.iter_mut().for_each(|v| *v *= f);
        }
        self.gemm(out_dim, in_dim, rows, &scaled, Transpose::Yes, act, Transpose::No, grad_weight, 1.0, 0.0);
        self.column_sums(&scaled, rows, out_dim, grad_bias, 1.0, 0.0);
    }

    fn reparameterize(&self, head: &Vec<f32>, eps: &Vec<f32>, z: &mut Vec<f32>, rows: usize, latent: usize) {
        for r in 0..rows {
            let h = &head[r * 2 * latent..(r + 1) * 2 * latent];
            let (mu, logvar) = h.split_at(latent);
            for j in 0..latent {
                z[r * latent + j] = mu[j] + (0.5 * logvar[j]).exp() * eps[r * latent + j];
            }
        }
    }

    fn reparameterize_backward(
        &self,
        head: &Vec<f32>,
        eps: &Vec<f32>,
        grad_z: &Vec<f32>,
        grad_head: &mut Vec<f32>,
        rows: usize,
        latent: usize,
        kl_weight: f32,
    ) -> f64 {
        let mut kl = 0.0f64;
        for r in 0..rows {
            for j in 0..latent {
                let mu = head[r * 2 * latent + j];
                let lv = head[r * 2 * latent + latent + j];
                let var = lv.exp();
                let e = eps[r * latent + j];
                let gz = grad_z[r * latent + j];
                kl += -0.5 * f64::from(1.0 + lv - mu * mu - var);
                grad_head[r * 2 * latent + j] = gz + kl_weight * mu;
                grad_head[r * 2 * latent + latent + j] =
                    gz * e * 0.5 * (0.5 * lv).exp() + kl_weight * 0.5 * (var - 1.0);
            }
        }
        kl
    }

    fn adam(
        &self,
        param: &mut Vec<f32>,
        grad: &Vec<f32>,
        m: &mut Vec<f32>,
        v: &mut Vec<f32>,
        len: usize,
        step: AdamStep,
        noise: Option<GradientNoise>,
    ) {
        let bc1 = 1.0 - step.beta1.powi(step.t as i32);
        let bc2 = 1.0 - step.beta2.powi(step.t as i32);
        let step_size = step.lr / bc1;
        let bc2_sqrt = bc2.sqrt();
        let update = |p: &mut f32, g: f32, m: &mut f32, v: &mut f32| {
            *m = step.beta1 * *m + (1.0 - step.beta1) * g;
            *v = step.beta2 * *v + (1.0 - step.beta2) * g * g;
            *p -= step_size * *m / (v.sqrt() / bc2_sqrt + step.eps);
        };
        let kernel = |first: usize, p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]| match noise {
            None => {
                p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()).for_each(|(((p, g), m), v)| update(p, *g, m, v))
            }
            Some(n) => {
                // At most CHUNK values per call: the noise for them fits a stack buffer.
                let mut z = [0.0f32; CHUNK];
                let z = &mut z[..p.len()];
                noise::fill(z, n.key, first as u64);
                for ((((p, g), m), v), z) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()).zip(z.iter()) {
                    update(p, n.scale * (g + n.std * z), m, v);
                }
            }
        };
        let (p, g, m, v) = (&mut param[..len], &grad[..len], &mut m[..len], &mut v[..len]);
        if len < PARALLEL_MIN {
            // The same CHUNK-sized pieces, on this thread.
            let pieces = p.chunks_mut(CHUNK).zip(g.chunks(CHUNK)).zip(m.chunks_mut(CHUNK)).zip(v.chunks_mut(CHUNK));
            pieces.enumerate().for_each(|(c, (((p, g), m), v))| kernel(c * CHUNK, p, g, m, v));
        } else {
            let pieces = p
                .par_chunks_mut(CHUNK)
                .zip(g.par_chunks(CHUNK))
                .zip(m.par_chunks_mut(CHUNK))
                .zip(v.par_chunks_mut(CHUNK));
            pieces.enumerate().for_each(|(c, (((p, g), m), v))| kernel(c * CHUNK, p, g, m, v));
        }
    }

    fn all_finite(&self, x: &Vec<f32>, len: usize) -> bool {
        x[..len].iter().all(|v| v.is_finite())
    }

    fn conv2d(
        &self,
        x: &Vec<f32>,
        shape: ImageShape,
        conv: Conv2d,
        weight: &Vec<f32>,
        bias: &Vec<f32>,
        act: Activation,
        out: &mut Vec<f32>,
        slot: ChannelSlot,
    ) {
        cpu_image::conv2d(x, shape, conv, weight, bias, act, out, slot);
    }

    fn pool2d(&self, x: &Vec<f32>, shape: ImageShape, pool: Pool2d, out: &mut Vec<f32>, slot: ChannelSlot) {
        cpu_image::pool2d(x, shape, pool, out, slot);
    }

    fn resize_bilinear(&self, x: &Vec<f32>, shape: ImageShape, out_h: usize, out_w: usize, out: &mut Vec<f32>) {
        cpu_image::resize_bilinear(x, shape, out_h, out_w, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::standard_normal_at;
    use rand::{Rng, SeedableRng};

    fn random(len: usize, seed: u64) -> Vec<f32> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        (0..len).map(|_| rng.gen_range(-1.0..1.0)).collect()
    }

    fn assert_close(got: &[f32], want: &[f32], tol: f32) {
        assert_eq!(got.len(), want.len());
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!((g - w).abs() <= tol * (1.0 + w.abs()), "index {i}: got {g}, want {w}");
        }
    }

    /// Reference GEMM in f64 with explicit indexing.
    fn naive_gemm(m: usize, n: usize, k: usize, a: &[f32], ta: Transpose, b: &[f32], tb: Transpose) -> Vec<f32> {
        let at = |i: usize, p: usize| match ta {
            Transpose::No => a[i * k + p],
            Transpose::Yes => a[p * m + i],
        };
        let bt = |p: usize, j: usize| match tb {
            Transpose::No => b[p * n + j],
            Transpose::Yes => b[j * k + p],
        };
        let mut c = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k).map(|p| f64::from(at(i, p)) * f64::from(bt(p, j))).sum::<f64>() as f32;
            }
        }
        c
    }

    #[test]
    fn gemm_matches_naive_for_every_transpose_and_awkward_shapes() {
        let cpu = Cpu::new();
        for &(m, n, k) in &[(1, 101, 255), (60, 60, 60), (129, 7, 33), (3, 1, 1)] {
            for ta in [Transpose::No, Transpose::Yes] {
                for tb in [Transpose::No, Transpose::Yes] {
                    let a = random(m * k, 1);
                    let b = random(k * n, 2);
                    let c0 = random(m * n, 3);
                    let mut c = c0.clone();
                    cpu.gemm(m, n, k, &a, ta, &b, tb, &mut c, 0.5, 2.0);
                    let prod = naive_gemm(m, n, k, &a, ta, &b, tb);
                    let want: Vec<f32> = prod.iter().zip(&c0).map(|(p, c)| 0.5 * p + 2.0 * c).collect();
                    assert_close(&c, &want, 1e-4);
                }
            }
        }
    }

    #[test]
    fn gemm_is_bitwise_identical_across_thread_counts() {
        // The training-step shapes, large enough for the gemm crate to split the work.
        let (m, n, k) = (128, 512, 784);
        let a = random(m * k, 8);
        let b = random(k * n, 9);
        let run = |threads: usize, ta: Transpose| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| {
                let mut c = vec![0.0; m * n];
                Cpu::new().gemm(m, n, k, &a, ta, &b, Transpose::No, &mut c, 1.0, 0.0);
                c
            })
        };
        for ta in [Transpose::No, Transpose::Yes] {
            let one = run(1, ta);
            assert_eq!(one, run(2, ta));
            assert_eq!(one, run(4, ta));
        }
    }

    #[test]
    fn blocked_linear_matches_gemm_plus_bias_activation() {
        let cpu = Cpu::new();
        for &(rows, i, o) in &[(1, 3, 5), (64, 7, 9), (201, 33, 784)] {
            let a = random(rows * i, 11);
            let w = random(o * i, 12);
            let bias = random(o, 13);
            for act in [Activation::Identity, Activation::Relu, Activation::Sigmoid] {
                let mut want = vec![0.0; rows * o];
                let prod = naive_gemm(rows, o, i, &a, Transpose::No, &w, Transpose::Yes);
                want.copy_from_slice(&prod);
                cpu.bias_activation(&mut want, &bias, rows, o, act);
                let mut got = vec![f32::NAN; rows * o];
                cpu.linear(&a, &w, &bias, &mut got, rows, i, o, act);
                assert_close(&got, &want, 1e-4);
                let single = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap().install(|| {
                    let mut c = vec![0.0; rows * o];
                    cpu.linear(&a, &w, &bias, &mut c, rows, i, o, act);
                    c
                });
                assert_eq!(got, single, "thread count changed the result");
            }
        }
    }

    #[test]
    fn gemm_with_zero_beta_ignores_nan_in_output() {
        let cpu = Cpu::new();
        let mut c = vec![f32::NAN; 4];
        cpu.gemm(2, 2, 1, &vec![1.0, 2.0], Transpose::No, &vec![3.0, 4.0], Transpose::No, &mut c, 1.0, 0.0);
        assert_eq!(c, vec![3.0, 4.0, 6.0, 8.0]);
    }

    #[test]
    fn fast_exp_is_accurate() {
        let mut worst = 0.0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let want = f64::from(x).exp();
            worst = worst.max(((f64::from(exp_f32(x)) - want) / want).abs());
            x += 0.01;
        }
        assert!(worst < 3e-7, "relative error {worst}");
        assert!(sigmoid(-200.0) > 0.0 && sigmoid(-200.0) < 1e-37);
        assert_eq!(sigmoid(200.0), 1.0);
    }

    #[test]
    fn bias_activation_and_backward() {
        let cpu = Cpu::new();
        let mut x = vec![-1.0, 0.5, 2.0, -3.0];
        cpu.bias_activation(&mut x, &vec![0.5, -1.0], 2, 2, Activation::Relu);
        assert_eq!(x, vec![0.0, 0.0, 2.5, 0.0]);
        let mut g = vec![1.0; 4];
        cpu.activation_backward(&mut g, &x, 4, Activation::Relu);
        assert_eq!(g, vec![0.0, 0.0, 1.0, 0.0]);
        let mut s = vec![0.0, 2.0];
        cpu.bias_activation(&mut s, &vec![0.0, 0.0], 1, 2, Activation::Sigmoid);
        assert_close(&s, &[0.5, 1.0 / (1.0 + (-2.0f32).exp())], 1e-6);
        let mut gs = vec![1.0, 1.0];
        cpu.activation_backward(&mut gs, &s, 2, Activation::Sigmoid);
        assert_close(&gs, &[0.25, s[1] * (1.0 - s[1])], 1e-6);
        // σ″(x) = σ(1 − σ)(1 − 2σ): zero at 0, and checked by a central difference of σ′ at 2.
        let mut curv = vec![1.0, 1.0];
        cpu.activation_curvature(&mut curv, &s, 2, Activation::Sigmoid);
        let d1 = |x: f32| {
            let v = 1.0 / (1.0 + (-x).exp());
            v * (1.0 - v)
        };
        assert!(curv[0].abs() < 1e-7);
        assert!((curv[1] - (d1(2.001) - d1(1.999)) / 0.002).abs() < 1e-3, "{}", curv[1]);
        let mut r = vec![3.0];
        cpu.activation_curvature(&mut r, &vec![0.5], 1, Activation::Relu);
        assert_eq!(r, vec![0.0]);
    }

    #[test]
    fn reductions() {
        let cpu = Cpu::new();
        let x = vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let mut sums = vec![1.0; 3];
        cpu.column_sums(&x, 2, 3, &mut sums, 2.0, 1.0);
        assert_eq!(sums, vec![11.0, 15.0, 19.0]);
        // Rows of δ: (1, 2, 3), (4, 5, 6) → 14, 77; rows of a: (1, 1), (0, 2) → 2, 4.
        let mut acc = vec![1.0, 0.0];
        cpu.add_ghost_norms(&x, 3, &vec![1.0, 1.0, 0.0, 2.0], 2, 2, &mut acc);
        assert_eq!(acc, vec![1.0 + 14.0 * 3.0, 77.0 * 5.0]);
    }

    #[test]
    fn adam_matches_hand_computed_first_step() {
        // First step of Adam moves each parameter by lr·sign(g) (up to ε).
        let cpu = Cpu::new();
        let mut p = vec![1.0, -1.0];
        let g = vec![0.5, -2.0];
        let (mut m, mut v) = (vec![0.0; 2], vec![0.0; 2]);
        cpu.adam(&mut p, &g, &mut m, &mut v, 2, AdamStep::new(0.1, 1), None);
        assert_close(&p, &[0.9, -0.9], 1e-6);
        assert_close(&m, &[0.05, -0.2], 1e-6);
    }

    #[test]
    fn noise_is_standard_normal_and_independent_of_chunking() {
        let cpu = Cpu::new();
        let key = NoiseKey { offset: 11, ..NoiseKey::from_u64(7, 3) };
        let n = 100_000;
        let mut big = vec![0.0; n];
        cpu.fill_standard_normal(&mut big, n, key);
        let mean = big.iter().map(|&v| f64::from(v)).sum::<f64>() / n as f64;
        let var = big.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>() / n as f64 - mean * mean;
        assert!(mean.abs() < 0.02, "mean {mean}");
        assert!((var - 1.0).abs() < 0.02, "variance {var}");
        for i in [0u64, 1, 8191, 8192, 99_999] {
            assert_eq!(big[i as usize], standard_normal_at(key, i), "index {i}");
        }
        let mut small = vec![0.0; 10];
        cpu.fill_standard_normal(&mut small, 10, key);
        assert_eq!(&small[..], &big[..10]);
        // Starting at an odd position continues the same stream.
        let mut shifted = vec![0.0; 5];
        cpu.fill_standard_normal(&mut shifted, 5, NoiseKey { offset: 12, ..key });
        assert_eq!(&shifted[..], &big[1..6]);
        // Adam with fused noise equals Adam on the explicitly noised gradient.
        let g = random(n, 4);
        let noisy: Vec<f32> = g.iter().zip(&big).map(|(v, z)| 0.5 * (v + 2.0 * z)).collect();
        let start = random(n, 5);
        let (mut p1, mut m1, mut v1) = (start.clone(), vec![0.1; n], vec![0.2; n]);
        let (mut p2, mut m2, mut v2) = (start, vec![0.1; n], vec![0.2; n]);
        cpu.adam(&mut p1, &noisy, &mut m1, &mut v1, n, AdamStep::new(0.01, 3), None);
        let fused = GradientNoise { std: 2.0, scale: 0.5, key };
        cpu.adam(&mut p2, &g, &mut m2, &mut v2, n, AdamStep::new(0.01, 3), Some(fused));
        assert_eq!((p1, m1, v1), (p2, m2, v2));
    }

    #[test]
    fn noise_passes_a_kolmogorov_smirnov_test() {
        // D = sup |F_n(x) − Φ(x)|; for n = 200 000 the 0.1 % critical value is 1.95/√n ≈ 0.0044.
        let n = 200_000;
        let mut z = vec![0.0; n];
        Cpu::new().fill_standard_normal(&mut z, n, NoiseKey::from_u64(123, 0));
        z.sort_by(f32::total_cmp);
        let phi = |x: f64| 0.5 * libm_erfc(-x / std::f64::consts::SQRT_2);
        let d = z
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                let f = phi(f64::from(v));
                (f - i as f64 / n as f64).abs().max(((i + 1) as f64 / n as f64 - f).abs())
            })
            .fold(0.0, f64::max);
        assert!(d < 1.95 / (n as f64).sqrt(), "KS statistic {d}");
        // Same key, same noise; another key, other noise.
        let mut again = vec![0.0; 100];
        Cpu::new().fill_standard_normal(&mut again, 100, NoiseKey::from_u64(123, 0));
        let mut other = vec![0.0; 100];
        Cpu::new().fill_standard_normal(&mut other, 100, NoiseKey::from_u64(124, 0));
        let mut first = vec![0.0; 100];
        Cpu::new().fill_standard_normal(&mut first, 100, NoiseKey::from_u64(123, 0));
        assert_eq!(again, first);
        assert_ne!(again, other);
    }

    /// erfc by its continued-fraction-free Chebyshev fit (Numerical Recipes `erfcc`, |ε| < 1.2e-7).
    fn libm_erfc(x: f64) -> f64 {
        let z = x.abs();
        let t = 1.0 / (1.0 + 0.5 * z);
        let r = t
            * (-z * z - 1.265_512_23
                + t * (1.000_023_68
                    + t * (0.374_091_96
                        + t * (0.096_784_18
                            + t * (-0.186_288_06
                                + t * (0.278_868_07
                                    + t * (-1.135_203_98
                                        + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77)))))))))
                .exp();
        if x >= 0.0 {
            r
        } else {
            2.0 - r
        }
    }

    #[test]
    fn reparameterize_backward_matches_finite_differences() {
        let cpu = Cpu::new();
        let (rows, d) = (3, 2);
        let head = random(rows * 2 * d, 5);
        let eps = random(rows * d, 6);
        let wz = random(rows * d, 7); // loss = Σ wz ⊙ z + w·KL
        let w = 0.3f32;
        let loss = |h: &Vec<f32>| -> f64 {
            let mut z = vec![0.0; rows * d];
            cpu.reparameterize(h, &eps, &mut z, rows, d);
            let mut gh = vec![0.0; rows * 2 * d];
            let kl = cpu.reparameterize_backward(h, &eps, &wz, &mut gh, rows, d, w);
            z.iter().zip(&wz).map(|(a, b)| f64::from(a * b)).sum::<f64>() + f64::from(w) * kl
        };
        let mut grad = vec![0.0; rows * 2 * d];
        cpu.reparameterize_backward(&head, &eps, &wz, &mut grad, rows, d, w);
        for i in 0..head.len() {
            let mut hp = head.clone();
            let mut hm = head.clone();
            hp[i] += 1e-3;
            hm[i] -= 1e-3;
            let fd = (loss(&hp) - loss(&hm)) / 2e-3;
            assert!((fd as f32 - grad[i]).abs() < 1e-3, "index {i}: fd {fd}, analytic {}", grad[i]);
        }
    }
}
