//! Training kernels and their launchers: the reconstruction loss and the KL term reduced on the
//! device to one partial per cube, the reparameterisation and its backward, and DP-SGD's ghost
//! norms, clip factors and the fused clipped-gradient product.

use cubecl::prelude::*;

use super::gemm::{multiply_tiles, store_block, zeroed_block};
use super::{elementwise_grid, grid, u32_of, Cube, CubeBuffer, BLOCK};
use crate::{Backend, LatentShape, LinearShape, TrainingOps};

/// d = pred − target: grad = 2·scale·d, and each cube's Σ d² into partials (the host adds the
/// partials in f64).
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
pub(super) fn squared_error<F: Float + CubeElement>(
    pred: &Array<F>,
    target: &Array<F>,
    grad: &mut Array<F>,
    partials: &mut Array<F>,
    len: u32,
    scale: F,
    #[comptime] block: u32,
) {
    let i = ABSOLUTE_POS as u32;
    let mut square = F::new(0.0);
    if i < len {
        let d = pred[i as usize] - target[i as usize];
        square = d * d;
        grad[i as usize] = F::new(2.0) * scale * d;
    }
    cube_sum_into::<F>(square, partials, block);
}

/// Sums `value` over the cube's `block` units (a shared-memory tree) into partials[cube index];
/// every unit of the cube must call it.
#[cube]
fn cube_sum_into<F: Float + CubeElement>(value: F, partials: &mut Array<F>, #[comptime] block: u32) {
    let mut shared = SharedMemory::<F>::new(block as usize);
    shared[UNIT_POS_X as usize] = value;
    sync_cube();
    let mut stride = (block / 2).runtime();
    while stride > 0 {
        if UNIT_POS_X < stride {
            let other = shared[(UNIT_POS_X + stride) as usize];
            shared[UNIT_POS_X as usize] += other;
        }
        sync_cube();
        stride /= 2;
    }
    if UNIT_POS_X == 0 {
        partials[(CUBE_POS_X + CUBE_POS_Y * CUBE_COUNT_X) as usize] = shared[0];
    }
}

/// z[r, j] = μ[r, j] + exp(½ log σ²[r, j])·ε[r, j], head rows [μ | log σ²].
#[cube(launch_unchecked)]
pub(super) fn reparameterize<F: Float + CubeElement>(
    head: &Array<F>,
    eps: &Array<F>,
    z: &mut Array<F>,
    len: u32,
    latent: u32,
) {
    let i = ABSOLUTE_POS as u32;
    if i < len {
        let (r, j) = (i / latent, i % latent);
        let mu = head[(r * 2 * latent + j) as usize];
        let lv = head[(r * 2 * latent + latent + j) as usize];
        z[i as usize] = mu + F::exp(F::new(0.5) * lv) * eps[i as usize];
    }
}

/// The head gradient of the reparameterisation plus β·KL, and each element's KL term
/// −½(1 + log σ² − μ² − σ²), summed per cube into partials (the host adds them in f64).
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
pub(super) fn reparameterize_backward<F: Float + CubeElement>(
    head: &Array<F>,
    eps: &Array<F>,
    grad_z: &Array<F>,
    grad_head: &mut Array<F>,
    partials: &mut Array<F>,
    len: u32,
    latent: u32,
    kl_weight: F,
    #[comptime] block: u32,
) {
    let i = ABSOLUTE_POS as u32;
    let mut kl = F::new(0.0);
    if i < len {
        let (r, j) = (i / latent, i % latent);
        let (mu_at, lv_at) = ((r * 2 * latent + j) as usize, (r * 2 * latent + latent + j) as usize);
        let mu = head[mu_at];
        let lv = head[lv_at];
        let var = F::exp(lv);
        let gz = grad_z[i as usize];
        kl = F::new(-0.5) * (F::new(1.0) + lv - mu * mu - var);
        grad_head[mu_at] = gz + kl_weight * mu;
        grad_head[lv_at] = gz * eps[i as usize] * F::new(0.5) * F::exp(F::new(0.5) * lv)
            + kl_weight * F::new(0.5) * (var - F::new(1.0));
    }
    cube_sum_into::<F>(kl, partials, block);
}

/// acc[r] += ‖δ_r‖² (‖a_r‖² + 1): one cube of `block` units per row, both squared norms by one
/// shared-memory tree reduction over pairs. Cubes past the last row (the cube grid is
/// two-dimensional) do nothing.
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
pub(super) fn add_ghost_norms<F: Float + CubeElement>(
    delta: &Array<F>,
    act: &Array<F>,
    acc: &mut Array<F>,
    rows: u32,
    delta_cols: u32,
    act_cols: u32,
    #[comptime] block: u32,
) {
    let row = CUBE_POS_X + CUBE_POS_Y * CUBE_COUNT_X;
    if row >= rows {
        terminate!();
    }
    let mut d = F::new(0.0);
    let mut j = UNIT_POS_X;
    while j < delta_cols {
        let v = delta[(row * delta_cols + j) as usize];
        d += v * v;
        j += block;
    }
    let mut a = F::new(0.0);
    j = UNIT_POS_X;
    while j < act_cols {
        let v = act[(row * act_cols + j) as usize];
        a += v * v;
        j += block;
    }
    let mut shared = SharedMemory::<F>::new((2 * block) as usize);
    shared[UNIT_POS_X as usize] = d;
    shared[(block + UNIT_POS_X) as usize] = a;
    sync_cube();
    let mut stride = (block / 2).runtime();
    while stride > 0 {
        if UNIT_POS_X < stride {
            let other_d = shared[(UNIT_POS_X + stride) as usize];
            let other_a = shared[(block + UNIT_POS_X + stride) as usize];
            shared[UNIT_POS_X as usize] += other_d;
            shared[(block + UNIT_POS_X) as usize] += other_a;
        }
        sync_cube();
        stride /= 2;
    }
    if UNIT_POS_X == 0 {
        acc[row as usize] += shared[0] * (shared[block as usize] + F::new(1.0));
    }
}

/// factors[i] = min(1, C / (√squared[i] + 10⁻⁶)) for i < rows: DP-SGD's per-sample clip factors.
#[cube(launch_unchecked)]
pub(super) fn clip_factors<F: Float + CubeElement>(
    squared: &Array<F>,
    factors: &mut Array<F>,
    rows: u32,
    clip_norm: F,
) {
    let i = ABSOLUTE_POS as u32;
    if i < rows {
        let f = clip_norm / (F::sqrt(squared[i as usize]) + F::new(1e-6));
        factors[i as usize] = F::min(f, F::new(1.0));
    }
}

/// The clipped gradient sum of a linear layer, grad_w = Σᵢ fᵢ δᵢ aᵢᵀ (m × n) and grad_b = Σᵢ fᵢ δᵢ
/// (m), for δ: k × m, a: k × n, f: k, as one register-blocked product (see
/// [`gemm_register_blocked`]) of (diag(f) δ)ᵀ with [a | 1]: the clip factors scale δ as its tile
/// is loaded, and output column n, against the column of ones, is the bias gradient. Both tiles
/// are read along their contiguous dimension (m for δ, n for a). The grid covers n + 1 columns.
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
pub(super) fn clipped_linear_grads<F: Float + CubeElement>(
    delta: &Array<F>,
    act: &Array<F>,
    factors: &Array<F>,
    grad_w: &mut Array<F>,
    grad_b: &mut Array<F>,
    m: u32,
    n: u32,
    k: u32,
) {
    let mut a_s = SharedMemory::<F>::new(1024usize);
    let mut b_s = SharedMemory::<F>::new(1024usize);
    let tx = UNIT_POS_X;
    let ty = UNIT_POS_Y;
    let t = ty * 16 + tx;
    let row0 = CUBE_POS_Y * 64;
    let col0 = CUBE_POS_X * 64;
    let mut acc = zeroed_block::<F>();
    let mut k0 = 0u32;
    while k0 < k {
        #[unroll]
        for l in 0..4u32 {
            // Tile element (depth d, row or column c): consecutive units read consecutive c.
            let idx = t + 256 * l;
            let (d, c) = (idx / 64, idx % 64);
            let gd = k0 + d;
            let mut va = F::new(0.0);
            let mut vb = F::new(0.0);
            if gd < k {
                if row0 + c < m {
                    va = factors[gd as usize] * delta[(gd * m + row0 + c) as usize];
                }
                let gc = col0 + c;
                if gc < n {
                    vb = act[(gd * n + gc) as usize];
                } else if gc == n {
                    vb = F::new(1.0);
                }
            }
            a_s[(c * 16 + d) as usize] = va;
            b_s[idx as usize] = vb;
        }
        sync_cube();
        multiply_tiles::<F>(&a_s, &b_s, &mut acc, tx, ty);
        sync_cube();
        k0 += 16;
    }
    store_block::<F>(grad_w, &acc, row0, col0, m, n, F::new(1.0), F::new(0.0));
    // Column n (the sum against the ones) is the bias gradient; it lies in one block column.
    if col0 <= n && n < col0 + 64 && (n - col0) % 16 == tx {
        let j = (n - col0) / 16;
        #[unroll]
        for i in 0..4u32 {
            let row = row0 + ty + 16 * i;
            if row < m {
                grad_b[row as usize] = acc[(i * 4 + j) as usize];
            }
        }
    }
}

impl<R: Runtime> TrainingOps for Cube<R> {
    fn squared_error(
        &self,
        pred: &CubeBuffer,
        target: &CubeBuffer,
        grad: &mut CubeBuffer,
        len: usize,
        scale: f32,
    ) -> f64 {
        let partials = self.scratch(len.div_ceil(BLOCK as usize));
        let args = (
            self.arg("squared_error", "pred", pred, len),
            self.arg("squared_error", "target", target, len),
            self.arg("squared_error", "grad", grad, len),
            self.arg("squared_error", "partials", &partials, len.div_ceil(BLOCK as usize)),
        );
        let (pred, target, grad, sums) = args;
        launch_1d!(self, squared_error, len, pred, target, grad, sums, u32_of(len), scale, BLOCK);
        self.download(&partials)[..len.div_ceil(BLOCK as usize)].iter().map(|&v| f64::from(v)).sum()
    }
    fn reparameterize(&self, head: &CubeBuffer, eps: &CubeBuffer, z: &mut CubeBuffer, shape: LatentShape) {
        let LatentShape { rows, latent } = shape;
        let len = rows * latent;
        let args = (
            self.arg("reparameterize", "head", head, 2 * len),
            self.arg("reparameterize", "eps", eps, len),
            self.arg("reparameterize", "z", z, len),
        );
        let (head, eps, z) = args;
        launch_1d!(self, reparameterize, len, head, eps, z, u32_of(len), u32_of(latent));
    }
    fn reparameterize_backward(
        &self,
        head: &CubeBuffer,
        eps: &CubeBuffer,
        grad_z: &CubeBuffer,
        grad_head: &mut CubeBuffer,
        shape: LatentShape,
        kl_weight: f32,
    ) -> f64 {
        let LatentShape { rows, latent } = shape;
        let len = rows * latent;
        let partials = self.scratch(len.div_ceil(BLOCK as usize));
        let op = "reparameterize_backward";
        let args = (
            self.arg(op, "head", head, 2 * len),
            self.arg(op, "eps", eps, len),
            self.arg(op, "grad_z", grad_z, len),
            self.arg(op, "grad_head", grad_head, 2 * len),
            self.arg(op, "partials", &partials, len.div_ceil(BLOCK as usize)),
        );
        let (head, eps, grad_z, grad_head, sums) = args;
        launch_1d!(
            self,
            reparameterize_backward,
            len,
            head,
            eps,
            grad_z,
            grad_head,
            sums,
            u32_of(len),
            u32_of(latent),
            kl_weight,
            BLOCK
        );
        self.download(&partials)[..len.div_ceil(BLOCK as usize)].iter().map(|&v| f64::from(v)).sum()
    }
    /// acc\[r\] += ‖δ_r‖² (‖a_r‖² + 1), as [`crate::TrainingOps::add_ghost_norms`].
    fn add_ghost_norms(&self, delta: &CubeBuffer, act: &CubeBuffer, shape: LinearShape, acc: &mut CubeBuffer) {
        let LinearShape { rows, in_dim, out_dim } = shape;
        if rows == 0 {
            return;
        }
        const REDUCE: u32 = 128;
        // SAFETY: cube r reads row r (< rows) of δ and a and updates acc[r].
        unsafe {
            add_ghost_norms::launch_unchecked::<f32, R>(
                &self.client,
                grid(rows),
                CubeDim::new_1d(REDUCE),
                self.arg("add_ghost_norms", "delta", delta, rows * out_dim),
                self.arg("add_ghost_norms", "act", act, rows * in_dim),
                self.arg("add_ghost_norms", "acc", acc, rows),
                u32_of(rows),
                u32_of(out_dim),
                u32_of(in_dim),
                REDUCE,
            )
        }
    }
    fn clip_factors(&self, squared_norms: &CubeBuffer, rows: usize, clip_norm: f64, factors: &mut CubeBuffer) {
        let (norms, factors) = (
            self.arg("clip_factors", "squared_norms", squared_norms, rows),
            self.arg("clip_factors", "factors", factors, rows),
        );
        launch_1d!(self, clip_factors, rows, norms, factors, u32_of(rows), clip_norm as f32);
    }
    /// One fused kernel: the clip factors scale δ as it is loaded, and the bias gradient is the
    /// product's extra column against a column of ones.
    fn clipped_linear_grads(
        &self,
        delta: &CubeBuffer,
        act: &CubeBuffer,
        shape: LinearShape,
        factors: &CubeBuffer,
        grad_weight: &mut CubeBuffer,
        grad_bias: &mut CubeBuffer,
    ) {
        let LinearShape { rows, in_dim, out_dim } = shape;
        if out_dim == 0 {
            return;
        }
        // SAFETY: δ holds rows·out_dim, a rows·in_dim and factors rows values; the kernel
        // bounds-checks every index against them and writes only below out_dim·in_dim and out_dim.
        unsafe {
            clipped_linear_grads::launch_unchecked::<f32, R>(
                &self.client,
                CubeCount::Static(u32_of(in_dim + 1).div_ceil(64), u32_of(out_dim).div_ceil(64), 1),
                CubeDim::new_2d(16, 16),
                self.arg("clipped_linear_grads", "delta", delta, rows * out_dim),
                self.arg("clipped_linear_grads", "act", act, rows * in_dim),
                self.arg("clipped_linear_grads", "factors", factors, rows),
                self.arg("clipped_linear_grads", "grad_weight", grad_weight, out_dim * in_dim),
                self.arg("clipped_linear_grads", "grad_bias", grad_bias, out_dim),
                u32_of(out_dim),
                u32_of(in_dim),
                u32_of(rows),
            )
        }
    }
}
