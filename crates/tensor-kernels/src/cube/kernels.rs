//! The CubeCL kernels, one per backend op; host wrappers live in `super`.

use cubecl::prelude::*;

/// `act(v)` for the activation code of [`super::activation_code`] (0 identity, 1 ReLU, 2 sigmoid).
#[cube]
fn activate<F: Float>(v: F, #[comptime] act: u32) -> F {
    let mut out = v;
    if act == 1 {
        out = v.max(F::new(0.0));
    }
    if act == 2 {
        out = F::new(1.0) / (F::new(1.0) + F::exp(-v));
    }
    out
}

/// C = α·op(A)·op(B) + β·C (C m × n row-major; element (i, l) of op(A) at a[i·a_rs + l·a_cs],
/// (l, j) of op(B) at b[l·b_rs + j·b_cs], so the strides express the transposes). Each cube
/// computes one tile × tile block of C through shared-memory tiles of A and B; with β = 0, C
/// is not read.
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments, clippy::manual_div_ceil)] // Kernel code: plain integer ops.
pub(super) fn gemm_tiled<F: Float + CubeElement>(
    a: &Array<F>,
    b: &Array<F>,
    c: &mut Array<F>,
    m: u32,
    n: u32,
    k: u32,
    a_rs: u32,
    a_cs: u32,
    b_rs: u32,
    b_cs: u32,
    alpha: F,
    beta: F,
    #[comptime] tile: u32,
) {
    let mut a_s = SharedMemory::<F>::new((tile * tile) as usize);
    let mut b_s = SharedMemory::<F>::new((tile * tile) as usize);
    let tx = UNIT_POS_X;
    let ty = UNIT_POS_Y;
    let row = CUBE_POS_Y * tile + ty;
    let col = CUBE_POS_X * tile + tx;
    let mut acc = F::new(0.0);
    let tiles = (k + tile - 1) / tile;
    for t in 0..tiles {
        let a_col = t * tile + tx;
        let b_row = t * tile + ty;
        let s = (ty * tile + tx) as usize;
        if row < m && a_col < k {
            a_s[s] = a[(row * a_rs + a_col * a_cs) as usize];
        } else {
            a_s[s] = F::new(0.0);
        }
        if b_row < k && col < n {
            b_s[s] = b[(b_row * b_rs + col * b_cs) as usize];
        } else {
            b_s[s] = F::new(0.0);
        }
        sync_cube();
        #[unroll]
        for i in 0..tile {
            acc += a_s[(ty * tile + i) as usize] * b_s[(i * tile + tx) as usize];
        }
        sync_cube();
    }
    if row < m && col < n {
        let idx = (row * n + col) as usize;
        if beta == F::new(0.0) {
            c[idx] = alpha * acc;
        } else {
            c[idx] = alpha * acc + beta * c[idx];
        }
    }
}

/// x[i, j] ← act(x[i, j] + bias[j]) over the first `len` values of a matrix with `cols` columns.
#[cube(launch_unchecked)]
pub(super) fn bias_activation<F: Float + CubeElement>(
    x: &mut Array<F>,
    bias: &Array<F>,
    len: u32,
    cols: u32,
    #[comptime] act: u32,
) {
    let i = ABSOLUTE_POS as u32;
    if i < len {
        let v = x[i as usize] + bias[(i % cols) as usize];
        x[i as usize] = activate::<F>(v, act);
    }
}

/// grad ← grad ⊙ act′, with act′ written through the activation's output y.
#[cube(launch_unchecked)]
#[allow(clippy::collapsible_if)] // The outer test is resolved when the kernel is expanded.
pub(super) fn activation_backward<F: Float + CubeElement>(
    grad: &mut Array<F>,
    y: &Array<F>,
    len: u32,
    #[comptime] act: u32,
) {
    let i = ABSOLUTE_POS as u32;
    if i < len {
        let yi = y[i as usize];
        if act == 1 {
            if yi <= F::new(0.0) {
                grad[i as usize] = F::new(0.0);
            }
        }
        if act == 2 {
            grad[i as usize] = grad[i as usize] * yi * (F::new(1.0) - yi);
        }
    }
}

/// out[r] = Σⱼ x[r, j]²: one cube of `block` units per row, a shared-memory tree reduction.
/// Cubes past the last row (the cube grid is two-dimensional) do nothing.
#[cube(launch_unchecked)]
pub(super) fn row_squared_norms<F: Float + CubeElement>(
    x: &Array<F>,
    out: &mut Array<F>,
    rows: u32,
    cols: u32,
    #[comptime] block: u32,
) {
    let row = CUBE_POS_X + CUBE_POS_Y * CUBE_COUNT_X;
    if row >= rows {
        terminate!();
    }
    let mut partial = F::new(0.0);
    let mut j = UNIT_POS_X;
    while j < cols {
        let v = x[(row * cols + j) as usize];
        partial += v * v;
        j += block;
    }
    let mut shared = SharedMemory::<F>::new(block as usize);
    shared[UNIT_POS_X as usize] = partial;
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
        out[row as usize] = shared[0];
    }
}

/// out[j] = α·Σᵢ x[i, j] + β·out[j] (β = 0: out not read); one unit per column.
#[cube(launch_unchecked)]
pub(super) fn column_sums<F: Float + CubeElement>(
    x: &Array<F>,
    out: &mut Array<F>,
    rows: u32,
    cols: u32,
    alpha: F,
    beta: F,
) {
    let j = ABSOLUTE_POS as u32;
    if j < cols {
        let mut acc = F::new(0.0);
        for i in 0..rows {
            acc += x[(i * cols + j) as usize];
        }
        if beta == F::new(0.0) {
            out[j as usize] = alpha * acc;
        } else {
            out[j as usize] = alpha * acc + beta * out[j as usize];
        }
    }
}

/// y ← y + α·x over the first `len` values.
#[cube(launch_unchecked)]
pub(super) fn axpy<F: Float + CubeElement>(alpha: F, x: &Array<F>, y: &mut Array<F>, len: u32) {
    let i = ABSOLUTE_POS as u32;
    if i < len {
        y[i as usize] += alpha * x[i as usize];
    }
}

/// x[i, j] ← x[i, j]·factors[i] over `len` values of a matrix with `cols` columns.
#[cube(launch_unchecked)]
pub(super) fn scale_rows<F: Float + CubeElement>(x: &mut Array<F>, factors: &Array<F>, len: u32, cols: u32) {
    let i = ABSOLUTE_POS as u32;
    if i < len {
        x[i as usize] = x[i as usize] * factors[(i / cols) as usize];
    }
}

/// One Adam update per element (Kingma & Ba 2015, PyTorch's form):
/// m ← β₁m + (1 − β₁)g, v ← β₂v + (1 − β₂)g², p ← p − step·m / (√v / √bc₂ + ε).
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
pub(super) fn adam<F: Float + CubeElement>(
    p: &mut Array<F>,
    g: &Array<F>,
    m: &mut Array<F>,
    v: &mut Array<F>,
    len: u32,
    beta1: F,
    beta2: F,
    eps: F,
    step_size: F,
    bc2_sqrt: F,
) {
    let i = ABSOLUTE_POS as u32;
    if i < len {
        let gi = g[i as usize];
        let mi = beta1 * m[i as usize] + (F::new(1.0) - beta1) * gi;
        let vi = beta2 * v[i as usize] + (F::new(1.0) - beta2) * gi * gi;
        m[i as usize] = mi;
        v[i as usize] = vi;
        p[i as usize] = p[i as usize] - step_size * mi / (F::sqrt(vi) / bc2_sqrt + eps);
    }
}
